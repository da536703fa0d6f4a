"""`data.kind: sft`: instruction data, one padded sequence per example, loss on the response only.

Examples come from a JSONL, JSON or CSV file, or a folder written by `save_to_disk`:
`data.prompt` and `data.response` name the columns, or `data.messages` names a column of
chat messages, rendered with the tokenizer's chat template (the last assistant message is
the response). Token ids are characters by default (id 0 is padding), or those of
`data.tokenizer`.

Each example is prompt + response, right-padded to `data.max_length` (or to the longest
example when unset). One fixed length, not per-batch padding: the step then has static
shapes and never reads a length back to the host. Right padding also means causal
attention never lets a real token see padding and positions need no shift, for `gpt` and
`hf` models alike. Targets are the next token on response positions and IGNORE (-100)
elsewhere, so the loss and every evaluation count response tokens only. A response cut
by max_length is truncated and counted (`status.json` -> dataset.truncated); an example
whose prompt alone fills max_length, or whose response is empty, is an error naming it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch

from noisecli.data import IGNORE, Dataset, carve_test, split_indices, subsample
from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest

VAL_SPLITS = ("validation", "valid", "val")


def load_sft(spec: DataSpec) -> Dataset:
    if spec.messages and spec.tokenizer is None:
        raise SpecError("data.messages: rendering messages needs a chat template: set data.tokenizer "
                        "(a Hugging Face tokenizer with one), or use data.prompt and data.response")
    splits = _read_rows(Path(spec.path))
    pairs = {name: _pairs(rows, spec, name) for name, rows in splits.items()}
    texts = [] if spec.messages else [t for ps in pairs.values() for pair in ps for t in pair]
    encode_pair, vocab, pad_id, note = _encoder(spec, texts)
    encoded = {name: [encode_pair(p, r) for p, r in ps] for name, ps in pairs.items()}
    longest = max(len(p) + len(r) for ex in encoded.values() for p, r in ex)
    length = spec.max_length or longest
    truncated = 0
    tensors = {}
    for name, examples in encoded.items():
        x = torch.full((len(examples), length), pad_id, dtype=torch.long)
        y = torch.full((len(examples), length), IGNORE, dtype=torch.long)
        for i, (p, r) in enumerate(examples):
            if len(p) >= length:
                raise SpecError(f"data.max_length: example {i} of {name!r} has a prompt of {len(p)} tokens, "
                                f"which leaves no room for its response in {length}; raise data.max_length")
            seq = (p + r)[:length]
            truncated += len(p) + len(r) > length
            x[i, :len(seq)] = torch.tensor(seq)
            # the target at position t is token t + 1, scored only where that token is the response's
            y[i, len(p) - 1: len(seq) - 1] = torch.tensor(seq[len(p):])
        tensors[name] = (x, y)
    (x_tr, y_tr), (x_va, y_va), test, where = _splits(spec, tensors)
    keep = subsample(len(x_tr), spec.train_size, spec.seed)
    if keep is not None:
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    x_te, y_te = test if test is not None else (None, None)
    info = {"source": spec.path, "examples": len(x_tr) + len(x_va) + (0 if x_te is None else len(x_te)), **where,
            "max_length": length, "truncated": int(truncated),
            "response_tokens": int((y_tr != IGNORE).sum()), **note}
    return Dataset(spec.kind, "sft", x_tr, y_tr, x_va, y_va, vocab, block_size=length, pad_id=pad_id, info=info,
                   x_test=x_te, y_test=y_te)


def _splits(spec: DataSpec, tensors: dict) -> tuple:
    """(train, validation, test or None, where each held-out split came from): a split the data
    brings is kept; the test split is carved from the training examples first, then validation."""
    x_all, y_all = tensors["train"]
    test, where = tensors.get("test"), {}
    val_fraction = spec.val_fraction
    if test is not None:
        if len(test[0]) == 0:
            raise SpecError(f"data.path: the 'test' split of {spec.path} has no examples")
        where["test"] = "its own test split"
    elif spec.test_fraction > 0:
        rest, te = carve_test(len(x_all), spec.test_fraction, spec.seed)
        test, (x_all, y_all) = (x_all[te], y_all[te]), (x_all[rest], y_all[rest])
        val_fraction = min(0.99, spec.val_fraction / (1 - spec.test_fraction))  # still a share of the whole
        where["test"] = f"{spec.test_fraction:g} of the examples"
    if "validation" in tensors:
        return (x_all, y_all), tensors["validation"], test, {"validation": "its own validation split", **where}
    tr, va = split_indices(len(x_all), val_fraction, spec.seed)
    return ((x_all[tr], y_all[tr]), (x_all[va], y_all[va]), test,
            {"validation": f"{spec.val_fraction:g} of the examples", **where})


def _read_rows(path: Path) -> dict[str, list[dict]]:
    """{'train': rows[, 'validation': rows]} from a save_to_disk folder or a .jsonl/.json/.csv file."""
    if path.is_dir():
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


def _pairs(rows: list[dict], spec: DataSpec, split: str) -> list[tuple[str, object]]:
    """(prompt, response) per row; with data.messages, the messages themselves (rendered later)."""
    columns = list(rows[0])
    wanted = [spec.messages] if spec.messages else [spec.prompt, spec.response]
    for key, col in zip(["messages"] if spec.messages else ["prompt", "response"], wanted):
        if col not in columns:
            raise SpecError(f"data.{key}: no column {col!r} in the {split!r} examples of {spec.path}"
                            f"{suggest(col, columns)} (columns: {', '.join(map(str, columns))})")
    pairs = []
    for i, row in enumerate(rows):
        if spec.messages:
            pairs.append(_split_messages(row[spec.messages], i, split))
            continue
        prompt, response = row.get(spec.prompt), row.get(spec.response)
        if not isinstance(prompt, str) or not isinstance(response, str):
            raise SpecError(f"data.path: example {i} of {split!r}: {spec.prompt!r} and {spec.response!r} "
                            "must be text")
        if not response:
            raise SpecError(f"data.response: example {i} of {split!r} has an empty response; nothing to learn "
                            "from it (remove it, or check data.response)")
        pairs.append((prompt, response))
    return pairs


def _split_messages(messages, i: int, split: str) -> tuple[list, list]:
    """(the conversation before the last assistant message, the whole conversation)."""
    if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        raise SpecError(f"data.messages: example {i} of {split!r} must be a list of {{role, content}} messages")
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"]:
        raise SpecError(f"data.messages: example {i} of {split!r} must end with a non-empty assistant message "
                        "(the response the loss is on)")
    return messages[:-1], messages


def _encoder(spec: DataSpec, texts: list[str]):
    """(encode_pair(prompt, response) -> (prompt ids, response ids), vocabulary size, padding id,
    a note for the run). With messages, `prompt` is the conversation before the last assistant
    message and `response` the whole conversation, both rendered with the chat template."""
    if spec.tokenizer is None:
        chars = sorted(set().union(*map(set, texts)))
        stoi = {c: i + 1 for i, c in enumerate(chars)}  # id 0 is padding
        return ((lambda p, r: ([stoi[c] for c in p], [stoi[c] for c in r])), len(chars) + 1, 0,
                {"vocab": "characters, 0 = padding"})
    from noisecli.hub import import_transformers, load_local  # lazy: only Hugging Face tokenizers and datasets need it

    transformers = import_transformers("data.tokenizer")
    # a tokenizer's own code never runs (as for text data, see text.encode)
    tok = load_local(transformers.AutoTokenizer, spec.tokenizer, "data.tokenizer", trust_remote_code=False)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise SpecError(f"data.tokenizer: {spec.tokenizer} has neither a pad nor an end-of-sequence token to pad with")
    if spec.messages and not getattr(tok, "chat_template", None):
        raise SpecError(f"data.messages: the tokenizer {spec.tokenizer} has no chat template")

    def encode_pair(prompt, response) -> tuple[list[int], list[int]]:
        if isinstance(prompt, str):
            return (tok(prompt, add_special_tokens=False)["input_ids"],
                    tok(response, add_special_tokens=False)["input_ids"])
        before = _ids(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        whole = _ids(tok.apply_chat_template(response, tokenize=True))
        if whole[:len(before)] != before:  # the template, or a merge across the boundary, moved tokens
            raise SpecError(f"data.messages: with {spec.tokenizer}'s chat template, the rendered prompt is not a "
                            "prefix of the rendered conversation, so the response cannot be told apart")
        return before, whole[len(before):]

    return encode_pair, len(tok), pad, {"tokenizer": spec.tokenizer}


def _ids(out) -> list[int]:
    """apply_chat_template gives a list of ids, or (in newer transformers) a mapping with input_ids."""
    return list(out["input_ids"] if hasattr(out, "keys") else out)
