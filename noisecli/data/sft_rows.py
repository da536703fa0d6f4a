"""`data.kind: sft`, its rows: read from a file or a saved dataset, and checked one by one.

A row becomes either a (prompt text, completion text) pair, `data.template` already applied
(a format text, or plain prompt then response), or a list of chat messages (`data.messages`,
or a pair under `data.template: chat`), rendered later by the tokenizer's chat template.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest

VAL_SPLITS = ("validation", "valid", "val")


def read_rows(path: Path) -> dict[str, list[dict]]:
    """{'train': rows[, 'validation': rows][, 'test': rows]} from a save_to_disk folder or a .jsonl/.json/.csv file."""
    if path.is_dir():
        return _saved_rows(path)
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except ValueError as e:
                        raise SpecError(f"data.path: {path.name} line {number}: not JSON ({e})") from None
        elif path.suffix == ".json":
            rows = json.loads(text)
        elif path.suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
        else:
            raise SpecError(f"data.path: {path.name}: expected a .jsonl, .json or .csv file, or a save_to_disk folder")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise SpecError(f"data.path: cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise SpecError(f"data.path: {path.name} must hold a non-empty list of objects (one per example)")
    return {"train": rows}


def _saved_rows(path: Path) -> dict[str, list[dict]]:
    from noisecli.hub import load_saved_dataset  # lazy: only Hugging Face tokenizers and datasets need it

    saved = load_saved_dataset(str(path), "data.path")
    splits = dict(saved) if hasattr(saved, "keys") else {"train": saved}
    if "train" not in splits:
        raise SpecError(f"data.path: {path} has splits {', '.join(splits)} but no 'train' split")
    val = next((n for n in VAL_SPLITS if n in splits), None)
    out = {"train": splits["train"].to_list()}
    if val:
        out["validation"] = splits[val].to_list()
    if "test" in splits:
        out["test"] = splits["test"].to_list()
    return out


def examples(rows: list[dict], spec: DataSpec, split: str) -> list:
    """Per row: (prompt text, completion text), or the row's chat messages."""
    columns = list(rows[0])
    keys = ["messages"] if spec.messages else ["prompt", "response"]
    for key in keys:
        col = getattr(spec, key)
        if col not in columns:
            raise SpecError(f"data.{key}: no column {col!r} in the {split!r} examples of {spec.path}"
                            f"{suggest(col, columns)} (columns: {', '.join(map(str, columns))})")
    if spec.messages:
        return [check_messages(row[spec.messages], spec.loss_on, i, split) for i, row in enumerate(rows)]
    out = []
    for i, row in enumerate(rows):
        prompt, response = row.get(spec.prompt), row.get(spec.response)
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise SpecError(f"data.path: example {i} of {split!r}: {spec.prompt!r} and {spec.response!r} "
                            "must be text")
        if not response:
            raise SpecError(f"data.response: example {i} of {split!r} has an empty response; nothing to learn "
                            "from it (remove it, or check data.response)")
        out.append(apply_template(spec.template, prompt, response))
    return out


def apply_template(template: str | None, prompt: str, response: str):
    """(prompt text, completion text) for a format text: the template up to {response}, its
    {prompt} filled in, then the response and the rest of the template (which is scored with
    it); 'chat': a user and an assistant message. Only the two names are replaced, never parsed
    as a Python format string, so braces in the data or the template stay as they are."""
    if template is None:
        return prompt, response
    if template == "chat":
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    head, tail = template.split("{response}")
    before, after = head.split("{prompt}")
    return before + prompt + after, response + tail


def check_messages(messages, loss_on: str, i: int, split: str) -> list:
    """A conversation as a list of {role, content} messages, with what data.loss_on scores in it."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise SpecError(f"data.messages: example {i} of {split!r} must be a list of {{role, content}} messages")
    if loss_on == "last" and (messages[-1]["role"] != "assistant" or not messages[-1]["content"]):
        raise SpecError(f"data.messages: example {i} of {split!r} must end with a non-empty assistant message "
                        "(data.loss_on: last scores it)")
    if loss_on == "assistant" and not any(m["role"] == "assistant" and m["content"] for m in messages):
        raise SpecError(f"data.messages: example {i} of {split!r} has no non-empty assistant message "
                        "(data.loss_on: assistant scores the assistant turns)")
    return messages
