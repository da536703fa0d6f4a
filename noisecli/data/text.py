"""Character-level text: CPython's bundled pydoc topics, or any UTF-8 file."""

from __future__ import annotations

from pathlib import Path

import torch

from noisecli.data import Dataset
from noisecli.errors import SpecError
from noisecli.spec import DataSpec


def encode(spec: DataSpec, text: str) -> tuple[torch.Tensor, int, dict]:
    """Token ids, vocabulary size and a note: the sorted characters of the text by default,
    or the ids of `data.tokenizer` (a Hugging Face tokenizer, for pretrained `hf` models)."""
    if spec.tokenizer is None:
        chars = sorted(set(text))
        stoi = {c: i for i, c in enumerate(chars)}
        return torch.tensor([stoi[c] for c in text], dtype=torch.long), len(chars), {}
    from noisecli.hub import import_transformers, load_local

    transformers = import_transformers("data.tokenizer")
    tokenizer = load_local(transformers.AutoTokenizer, spec.tokenizer, "data.tokenizer")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long), len(tokenizer), {"tokenizer": spec.tokenizer, "tokens": len(ids)}


def make_text_dataset(spec: DataSpec, text: str, info: dict | None = None) -> Dataset:
    """Token ids of the text; the last `val_fraction` is validation (nanoGPT's split)."""
    ids, vocab_size, note = encode(spec, text)
    n_val = int(len(ids) * spec.val_fraction)
    train, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
    block = spec.block_size
    if len(val) <= block or len(train) <= block:
        unit = "characters" if spec.tokenizer is None else "tokens"
        raise SpecError(f"data.block_size: {block} is too long for this text ({len(train)} train and "
                        f"{len(val)} validation {unit}); lower data.block_size or data.val_fraction")
    if spec.train_size is not None:
        # train_size counts distinct windows: keep that many start positions
        if spec.train_size > len(train) - block:
            raise SpecError(f"data.train_size: {spec.train_size} is more than the "
                            f"{len(train) - block} windows in the training text")
        train = train[: spec.train_size + block]
    info = {"characters": len(text), "vocab_size": vocab_size, **note, **(info or {})}
    return Dataset(spec.kind, "lm", train, None, val, None, vocab_size, block_size=block, info=info)


def load_pydoc(spec: DataSpec) -> Dataset:
    from pydoc_data.topics import topics  # ships inside CPython

    return make_text_dataset(spec, "".join(topics[k] for k in sorted(topics)))


def load_text(spec: DataSpec) -> Dataset:
    path = Path(spec.path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"data.path: {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SpecError(f"data.path: cannot read {path}: {e.strerror}") from None
    if not text:
        raise SpecError(f"data.path: {path} is empty")
    return make_text_dataset(spec, text, {"file": str(path)})
