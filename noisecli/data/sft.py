"""`data.kind: sft`: instruction data, one padded sequence per example, loss on the scored tokens only.

Examples come from a JSONL, JSON or CSV file, or a folder written by `save_to_disk`
(`sft_rows.py`): `data.prompt` and `data.response` name the columns, or `data.messages` names a
column of chat messages, rendered with the tokenizer's chat template. `sft_tokens.py` turns
each into token ids and the tokens the loss scores (`data.eos`, `bos`, `template`, `tokenize`,
`loss_on`), characters by default (id 0 is padding) or those of `data.tokenizer`.

Each example is right-padded to `data.max_length` (or to the longest example when unset). One
fixed length, not per-batch padding: the step then has static shapes and never reads a length
back to the host (NEFTune's `length: batch` finds each batch's collated length on the device,
noise/embedding.py). Right padding also means causal attention never lets a real token see
padding and positions need no shift, for `gpt` and `hf` models alike. Targets are the next
token where that token is scored and IGNORE (-100) elsewhere, so the loss and every evaluation
count scored tokens only. An example cut by max_length is truncated and counted (`status.json`
-> dataset.truncated); one whose first scored token lies past max_length is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from noisecli.data import IGNORE, Dataset, carve_test, split_indices, subsample
from noisecli.data.sft_rows import examples, read_rows
from noisecli.data.sft_tokens import Encoded, encoder
from noisecli.errors import SpecError
from noisecli.spec import DataSpec

# what the run's header says the loss is on (info["loss_on"])
SCORED = {"assistant": "assistant turns", "last": "the last assistant turn", "all": "every token"}


def load_sft(spec: DataSpec) -> Dataset:
    if spec.messages and spec.tokenizer is None:
        raise SpecError("data.messages: rendering messages needs a chat template: set data.tokenizer "
                        "(a Hugging Face tokenizer with one), or use data.prompt and data.response")
    items = {name: examples(rows, spec, name) for name, rows in read_rows(Path(spec.path)).items()}
    enc = encoder(spec, items)
    encoded = {name: [_scored_as_asked(enc.encode(item, f"example {i} of {name!r}"), spec.loss_on)
                      for i, item in enumerate(split)] for name, split in items.items()}
    every = [e for split in encoded.values() for e in split]
    length = spec.max_length or max(len(e.ids) for e in every)
    tensors = {name: _tensors(split, length, enc.pad, name) for name, split in encoded.items()}
    pad_ends, misread = _padding_rule(torch.cat([x for x, _ in tensors.values()]), every, length, enc.pad)
    (x_tr, y_tr), (x_va, y_va), test, where = _splits(spec, tensors)
    keep = subsample(len(x_tr), spec.train_size, spec.seed)
    if keep is not None:
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    x_te, y_te = test if test is not None else (None, None)
    info = {"source": spec.path, "examples": len(x_tr) + len(x_va) + (0 if x_te is None else len(x_te)), **where,
            "max_length": length, "truncated": sum(len(e.ids) > length for e in every),
            "response_tokens": int((y_tr != IGNORE).sum()),
            "loss_on": _scored(spec, getattr(enc, "tags", False)),
            **enc.note, **({"noise_misreads": misread} if misread else {})}
    return Dataset(spec.kind, "sft", x_tr, y_tr, x_va, y_va, enc.vocab, block_size=length, pad_id=enc.pad,
                   info=info, x_test=x_te, y_test=y_te, pad_ends=pad_ends)


def held_out(spec: DataSpec) -> tuple[str, list, object]:
    """(split, its examples, the encoder) for `noisecli eval --generate`: the test split's examples
    if the data has one, else validation's, in the order load_sft's tensors hold them, each the
    row's (prompt, completion) or messages, and the encoder load_sft tokenized them with. The
    splitting is load_sft's own (`_splits` on each row's index), so the rows are the same ones."""
    items = {name: examples(rows, spec, name) for name, rows in read_rows(Path(spec.path)).items()}
    order = {name: (torch.arange(len(split)),) * 2 for name, split in items.items()}
    _, (val, _), test, _ = _splits(spec, order)
    if test is not None:
        split, source, index = "test", "test" if "test" in items else "train", test[0]
    else:
        split, source, index = "val", "validation" if "validation" in items else "train", val
    return split, [items[source][i] for i in index.tolist()], encoder(spec, items)


def _scored(spec: DataSpec, tags: bool) -> str:
    if spec.messages is None and spec.template != "chat":  # pairs: assistant and last are the response
        return "every token" if spec.loss_on == "all" else "response tokens"
    return "assistant tokens ({% generation %} tags)" if spec.loss_on == "assistant" and tags else SCORED[spec.loss_on]


def _scored_as_asked(e: Encoded, loss_on: str) -> Encoded:
    """loss_on: all scores every token; the first token is never a target (nothing predicts it)."""
    scored = [True] * len(e.ids) if loss_on == "all" else e.scored
    return Encoded(e.ids, [False] + scored[1:])


def _tensors(split: list[Encoded], length: int, pad: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y), (N, length) each: ids right-padded, and at t the token t + 1 where it is scored."""
    x = torch.full((len(split), length), pad, dtype=torch.long)
    y = torch.full((len(split), length), IGNORE, dtype=torch.long)
    for i, e in enumerate(split):
        first = next((t for t, s in enumerate(e.scored) if s), None)
        if first is None:
            raise SpecError(f"data.loss_on: example {i} of {name!r} has no token to score; check the example")
        if first >= length:
            raise SpecError(f"data.max_length: example {i} of {name!r} has a prompt of {first} tokens, which leaves no "
                            f"room for its response in {length}; raise data.max_length")
        ids = torch.tensor(e.ids[:length])
        scored = torch.tensor(e.scored[:length])
        x[i, :len(ids)] = ids
        y[i, :len(ids) - 1] = torch.where(scored[1:], ids[1:], IGNORE)
    return x, y


def _padding_rule(x: torch.Tensor, every: list[Encoded], length: int, pad: int) -> tuple[bool, int]:
    """(pad_ends, how many examples the noise misreads): noise tells an example's real length from
    its ids alone, as one past its last non-padding id, plus one when the padding id is also the
    EOS that ends the examples (a tokenizer without a pad token); the rule that reads more examples
    right is taken, and the examples it still misreads (a padding id inside them) are counted."""
    real = torch.tensor([min(len(e.ids), length) for e in every])
    last = ((x != pad) * torch.arange(1, length + 1)).amax(1)  # (N,): one past the last non-padding id
    off = [int((last != real).sum()), int(((last + 1).clamp(max=length) != real).sum())]
    pad_ends = off[1] < off[0]
    return pad_ends, off[pad_ends]


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
