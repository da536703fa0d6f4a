"""`noisecli eval RUN --generate N`: held-out prompts -> responses -> a JSONL file and its summary.

The prompts are the first N examples of the test split if the data has one, else of the
validation split, in the order the run's dataset holds them (`data/sft.py` `held_out`: the rows,
fractions and seed training split with). Each is fed exactly as training formatted it, by the
data module's own encoder: the ids before the response (data.template applied, the BOS, joint or
separate tokenization), or for chat messages the conversation before its last assistant message,
rendered by the tokenizer's chat template with its generation prompt. The reference is what
training scored after that prompt, up to its end of sequence, decoded as the response is
(characters, or the tokenizer's decode), so the two compare like for like.

Decoding is a plain loop on the model's logits (no KV cache: the models are small), one prompt
at a time, in eval mode, under no_grad and the run's autocast: greedy (argmax) by default, or
drawn at a temperature after nucleus (top-p) filtering, on the CPU from a generator seeded by
(seed, the prompt's index), so a prompt's response depends on neither N nor the device's RNG.
A response ends at the end-of-sequence id where the data ends responses with one (data.eos for
pairs; the tokenizer's EOS for chat templates), or after max_new_tokens: by default the padded
length training used (data.max_length, else the longest example) minus the prompt. The prompt is
never truncated: a --max-new-tokens that would run a prompt past the model's context (gpt: its
position table, data.max_length; hf: max_position_embeddings) is refused with the most that fits.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from noisecli.data.sft import held_out
from noisecli.errors import SpecError
from noisecli.runs import atomic_write

MATCH_RULE = "the generated response equals the reference after stripping whitespace at both ends"


@dataclass
class Prompt:
    index: int  # its place in the split
    ids: list[int]  # what the model is fed
    reference: list[int]  # what training scored after it, its end-of-sequence id left off


@dataclass(frozen=True)
class Options:
    """--generate N and the options that go with it, checked (see `options`)."""

    count: int
    max_new_tokens: int | None = None
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int = 0
    out: Path | None = None

    def check(self, spec, run_dir: Path) -> None:
        """Before anything is built: instruction data, and a run folder the file can go in."""
        if spec.data.kind != "sft":
            raise SpecError(f"--generate: run {run_dir.name!r} trained on {spec.data.kind!r} data; generating "
                            "responses needs instruction data (data.kind: sft), prompts with their responses")
        if self.out is None and not os.access(run_dir, os.W_OK):
            raise SpecError(f"--generate: cannot write in the run folder {run_dir}; name a file elsewhere with "
                            "--out FILE")

    def run(self, trainer, spec, run_dir: Path, checkpoint: Path) -> dict[str, Any]:
        """Every response, the file written whole, and the summary for eval's result."""
        split, prompts, available, decode, stops = held_out_prompts(spec.data, self.count)
        model = trainer.raw_model.eval()
        budgets = _budgets(prompts, trainer.data.block_size, context_length(model), self.max_new_tokens)
        rows = []
        for p, budget in zip(prompts, budgets):
            tokens, ended = respond(model, p.ids, budget, stops, self.picker(p.index), trainer.device,
                                    trainer.precision.autocast)
            rows.append(_row(p, tokens, ended, decode))
        path = self.out or run_dir / f"generations-{checkpoint.stem}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        try:
            atomic_write(path, text)
        except OSError as e:  # a full disk, a folder made read-only meanwhile: one line naming the file
            raise SpecError(f"{'--out' if self.out else '--generate'}: cannot write {path} "
                            f"({e.strerror or e})") from None
        return self.summary(rows, split, available, bool(stops), path)

    def picker(self, index: int) -> Callable[[torch.Tensor], int]:
        """The next token from a prompt's last logits: argmax, or a seeded draw."""
        if self.temperature == 0:
            return lambda logits: int(logits.argmax())
        # a tuple of ints hashes the same in every process (PYTHONHASHSEED salts only str and bytes)
        generator = torch.Generator().manual_seed(hash((self.seed, index)) & (2 ** 63 - 1))
        return lambda logits: draw(logits, self.temperature, self.top_p, generator)

    def summary(self, rows: list[dict], split: str, available: int, eos: bool, path: Path) -> dict[str, Any]:
        n = len(rows)
        matches = sum(r["exact_match"] for r in rows)
        return {"file": str(path), "split": split, "prompts": n, "available": available,
                "decoding": "greedy" if self.temperature == 0 else "sampled",
                **({"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
                   if self.temperature else {}),
                "max_new_tokens": self.max_new_tokens,
                "mean_tokens": sum(r["generated_tokens"] for r in rows) / n,
                "mean_reference_tokens": sum(r["reference_tokens"] for r in rows) / n,
                "exact_match": matches / n, "exact_matches": matches, "exact_match_rule": MATCH_RULE,
                "ended_with_eos": sum(r["ended_with_eos"] for r in rows) if eos else None}


def options(count: int | None, max_new_tokens: int | None = None, temperature: float | None = None,
            top_p: float | None = None, seed: int | None = None, out: Path | None = None) -> Options | None:
    """eval's generation options checked before anything is loaded; None without --generate."""
    given = {"--max-new-tokens": max_new_tokens, "--temperature": temperature, "--top-p": top_p, "--seed": seed,
             "--out": out}
    if count is None:
        extra = next((flag for flag, value in given.items() if value is not None), None)
        if extra:
            raise SpecError(f"{extra}: only with --generate N (how many held-out prompts to answer)")
        return None
    if count < 1:
        raise SpecError(f"--generate: {count}; give how many held-out prompts to answer, at least 1")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise SpecError(f"--max-new-tokens: {max_new_tokens}; at least 1 (default: the data's max_length "
                        "minus each prompt)")
    t = 0.0 if temperature is None else temperature
    if not (t >= 0 and math.isfinite(t)):
        raise SpecError(f"--temperature: {temperature:g}; 0 (greedy, the default) or a number > 0 to sample")
    p = 1.0 if top_p is None else top_p
    if not 0 < p <= 1:
        raise SpecError(f"--top-p: {top_p:g}; the share of probability the draw keeps, in (0, 1], e.g. 0.9")
    if t == 0 and (top_p is not None or seed is not None):
        flag = "--top-p" if top_p is not None else "--seed"
        raise SpecError(f"{flag}: greedy decoding (temperature 0, the default) draws nothing; add --temperature "
                        "T > 0 to sample")
    if out is not None:
        _check_out(out)
    return Options(count, max_new_tokens, t, p, 0 if seed is None else seed, out)


def _check_out(out: Path) -> None:
    if out.is_dir():
        raise SpecError(f"--out: {out} is a folder; name a file in it, e.g. {out / 'generations.jsonl'}")
    if out.parent.is_file():
        raise SpecError(f"--out: {out.parent} is a file, not a folder")
    if not out.parent.is_dir():
        raise SpecError(f"--out: folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise SpecError(f"--out: cannot write in {out.parent} (permission denied)")


def held_out_prompts(data_spec, count: int) -> tuple[str, list[Prompt], int, Callable[[list[int]], str], set[int]]:
    """(split, its first `count` prompts, how many it has, the decoder, the end-of-sequence ids)."""
    split, items, enc = held_out(data_spec)
    chats = any(isinstance(item, list) for item in items)
    eos = getattr(enc.tok, "eos_token_id", None) if chats else (enc.eos if data_spec.eos else None)
    stops = set() if eos is None else {eos}
    prompts = [_prompt(enc, item, i, f"example {i} of {split!r}", stops) for i, item in enumerate(items[:count])]
    return split, prompts, len(items), _decoder(enc), stops


def _prompt(enc, item, index: int, where: str, stops: set[int]) -> Prompt:
    """The ids training put before the (last) response, and the response's ids up to its EOS."""
    if isinstance(item, list):  # chat messages: the conversation before its last assistant message
        turns = [k for k, m in enumerate(item) if m["role"] == "assistant"]
        if not turns:
            raise SpecError(f"--generate: {where} has no assistant message to compare a response with")
        before = enc.render(item[:turns[-1]], where, generation=True)
        ids = enc.render(item[:turns[-1] + 1], where)
        if ids[:len(before)] != before:
            raise SpecError(f"--generate: {where}: the chat template does not render the conversation before its "
                            "last assistant message as a prefix of it, so there is no prompt to feed")
        start = len(before)
    else:
        e = enc.encode(item, where)
        ids, start = e.ids, e.scored.index(True)  # pairs: the response's tokens, as the loss found them
    reference = ids[start:]
    end = next((t for t, i in enumerate(reference) if i in stops), len(reference))
    return Prompt(index, ids[:start], reference[:end])


def _decoder(enc) -> Callable[[list[int]], str]:
    if hasattr(enc, "stoi"):  # characters: padding (0) and the EOS id have no character
        chars = {i: c for c, i in enc.stoi.items()}
        return lambda ids: "".join(chars.get(i, "") for i in ids)
    return lambda ids: enc.tok.decode(ids)


def context_length(model) -> int | None:
    """The longest sequence the model takes: gpt's position table, an hf model's max_position_embeddings;
    None for a model that does not say (kind: python)."""
    size = getattr(model, "block_size", None)
    if not isinstance(size, int):
        size = getattr(getattr(getattr(model, "model", None), "config", None), "max_position_embeddings", None)
    return size if isinstance(size, int) else None


def _budgets(prompts: list[Prompt], length: int, context: int | None, asked: int | None) -> list[int]:
    """Each prompt's most new tokens: --max-new-tokens, else the padded length training used minus the prompt."""
    budgets = [asked if asked is not None else max(1, length - len(p.ids)) for p in prompts]
    over = [(p, b) for p, b in zip(prompts, budgets) if context is not None and len(p.ids) + b > context]
    if over:
        p, b = max(over, key=lambda pb: len(pb[0].ids))
        room = context - len(p.ids)
        most = f"at most {room}" if room > 0 else "no room is left after it"
        raise SpecError(f"--max-new-tokens: {b} new tokens after the {len(p.ids)}-token prompt of example {p.index} "
                        f"run past the model's context of {context} tokens; {most} (prompts are never truncated)")
    return budgets


@torch.no_grad()
def respond(model, prompt: list[int], budget: int, stops: set[int], pick: Callable[[torch.Tensor], int],
            device, autocast) -> tuple[list[int], bool]:
    """(the new tokens, whether an EOS ended them): one forward per token over the whole sequence."""
    ids = torch.tensor([prompt], dtype=torch.long, device=device)
    new: list[int] = []
    for _ in range(budget):
        with autocast:
            logits = model(ids)[0, -1]
        token = pick(logits.float().cpu())
        if token in stops:
            return new, True
        new.append(token)
        ids = torch.cat([ids, torch.tensor([[token]], dtype=torch.long, device=device)], 1)
    return new, False


def draw(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """A token from softmax(logits / T), keeping only the most likely tokens that together first reach top_p."""
    probs = torch.softmax(logits / temperature, -1)
    if top_p < 1:
        ranked, order = probs.sort(descending=True)
        outside = ranked.cumsum(0) - ranked >= top_p  # the tokens before it already hold top_p
        probs = probs.index_fill(0, order[outside], 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))


def exact_match(generated: str, reference: str) -> bool:
    return generated.strip() == reference.strip()


def _row(p: Prompt, tokens: list[int], ended: bool, decode: Callable[[list[int]], str]) -> dict[str, Any]:
    generated, reference = decode(tokens), decode(p.reference)
    return {"index": p.index, "prompt": decode(p.ids), "reference": reference, "generated": generated,
            "generated_tokens": len(tokens), "reference_tokens": len(p.reference), "ended_with_eos": ended,
            "exact_match": exact_match(generated, reference)}


def render(summary: dict[str, Any]) -> str:
    """The summary eval prints under its metrics."""
    s = summary
    how = "greedy" if s["decoding"] == "greedy" else (f"sampled at temperature {s['temperature']:g}, "
                                                      f"top-p {s['top_p']:g}, seed {s['seed']}")
    budget = (f"at most {s['max_new_tokens']} new tokens" if s["max_new_tokens"] is not None
              else "up to the data's max_length")
    of = f"the first {s['prompts']} of {s['available']}" if s["prompts"] < s["available"] else f"all {s['prompts']}"
    lines = [f"generation: {of} prompts of the {s['split']} split, {how}, {budget}",
             f"  mean length     {s['mean_tokens']:.2f} tokens (reference: {s['mean_reference_tokens']:.2f})",
             f"  exact match     {s['exact_match']:.3f} ({s['exact_matches']} of {s['prompts']}: {MATCH_RULE})"]
    if s["ended_with_eos"] is not None:
        lines.append(f"  ended at EOS    {s['ended_with_eos']} of {s['prompts']}")
    lines.append(f"  wrote {s['file']}")
    return "\n".join(lines) + "\n"
