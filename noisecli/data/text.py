"""Text for language models: CPython's bundled pydoc topics, any UTF-8 file, or a saved
Hugging Face dataset; as characters, or through a Hugging Face tokenizer (data.tokenizer)."""

from __future__ import annotations

from pathlib import Path

import torch

from noisecli.data import Dataset
from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest


def encode(spec: DataSpec, texts: list[str]) -> tuple[list[torch.Tensor], int, dict]:
    """Token ids of each text, the vocabulary size and a note: the sorted characters of all the
    texts by default, or the ids of `data.tokenizer` (a Hugging Face tokenizer, for pretrained
    `hf` models). A kind without a `tokenizer` option (markov) is characters."""
    tokenizer_name = getattr(spec, "tokenizer", None)
    if tokenizer_name is None:
        chars = sorted(set().union(*map(set, texts)))
        stoi = {c: i for i, c in enumerate(chars)}
        return [torch.tensor([stoi[c] for c in t], dtype=torch.long) for t in texts], len(chars), {}
    from noisecli.hub import import_transformers, load_local  # lazy: only Hugging Face tokenizers and datasets need it

    transformers = import_transformers("data.tokenizer")
    # a tokenizer's own code never runs: model.trust_remote_code speaks for the model's folder only
    tokenizer = load_local(transformers.AutoTokenizer, tokenizer_name, "data.tokenizer", trust_remote_code=False)
    ids = [torch.tensor(tokenizer(t, add_special_tokens=False)["input_ids"], dtype=torch.long) for t in texts]
    return ids, len(tokenizer), {"tokenizer": tokenizer_name, "tokens": sum(len(i) for i in ids)}


def make_text_dataset(spec: DataSpec, text: str, info: dict | None = None, val_text: str | None = None,
                      test_text: str | None = None) -> Dataset:
    """Token ids of the text, split at the end (nanoGPT's split): the last `test_fraction` is the
    test text and the `val_fraction` before it validation, unless the source has its own."""
    given = [t for t in (val_text, test_text) if t is not None]
    (ids, *own), vocab_size, note = encode(spec, [text, *given])
    own_val = own.pop(0) if val_text is not None else None
    own_test = own.pop(0) if test_text is not None else None
    test = own_test
    if test is None and spec.test_fraction > 0:
        n_test = int(len(ids) * spec.test_fraction)
        ids, test = ids[: len(ids) - n_test], ids[len(ids) - n_test:]
    val = own_val
    if val is None:
        n_val = int((len(ids) + (0 if own_test is not None or test is None else len(test))) * spec.val_fraction)
        ids, val = ids[: len(ids) - n_val], ids[len(ids) - n_val:]
    train, block = ids, spec.block_size
    if min(len(train), len(val), len(test) if test is not None else block + 1) <= block:
        unit = "characters" if getattr(spec, "tokenizer", None) is None else "tokens"
        sizes = f"{len(train)} train, {len(val)} validation" + (f", {len(test)} test" if test is not None else "")
        raise SpecError(f"data.block_size: {block} is too long for this text ({sizes} {unit}); lower "
                        "data.block_size" + (" or data.val_fraction/test_fraction" if val_text is None else ""))
    if spec.train_size is not None:
        # train_size counts distinct windows: keep that many start positions
        if spec.train_size > len(train) - block:
            raise SpecError(f"data.train_size: {spec.train_size} is more than the "
                            f"{len(train) - block} windows in the training text")
        train = train[: spec.train_size + block]
    info = {"characters": len(text) + sum(len(t) for t in given), "vocab_size": vocab_size, **note, **(info or {})}
    return Dataset(spec.kind, "lm", train, None, val, None, vocab_size, block_size=block, info=info, x_test=test)


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


VAL_SPLITS = ("validation", "valid", "val")


def load_hf(spec: DataSpec) -> Dataset:
    """A saved Hugging Face dataset: its `train` split (or the dataset itself) is the training
    text, its `validation` split the validation text and its `test` split the test text; a split
    it lacks is cut from the end of the training text. Documents are joined by a blank line, as
    in a text file."""
    from noisecli.hub import load_saved_dataset  # lazy: only Hugging Face tokenizers and datasets need it

    saved = load_saved_dataset(spec.path, "data.path")
    splits = dict(saved) if hasattr(saved, "keys") else {"train": saved}
    if "train" not in splits:
        raise SpecError(f"data.path: {spec.path} has splits {', '.join(splits)} but no 'train' split")
    val_name = next((n for n in VAL_SPLITS if n in splits), None)
    test_name = "test" if "test" in splits else None
    texts = {}
    for name in [n for n in ("train", val_name, test_name) if n]:
        columns = splits[name].column_names
        if spec.column not in columns:
            raise SpecError(f"data.column: {spec.column!r} is not a column of the {name!r} split of "
                            f"{spec.path}{suggest(spec.column, columns)} (columns: {', '.join(columns)})")
        values = splits[name][spec.column]
        if not all(isinstance(v, str) for v in values):
            raise SpecError(f"data.column: {spec.column!r} of {spec.path} does not hold text in every row")
        texts[name] = "\n\n".join(values)
    info = {"folder": spec.path, "validation": val_name or f"{spec.val_fraction:g} of the text, from its end",
            "test": test_name or f"last {spec.test_fraction:g} of the text"}
    return make_text_dataset(spec, texts["train"], info, val_text=texts.get(val_name), test_text=texts.get(test_name))
