"""Datasets: each loader returns a `Dataset` of tensors that is moved to the device whole.

The datasets noisecli targets are small, so the hot path never touches a DataLoader:
batches are index operations on tensors already on the device (see `batches.py`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import torch

from noisecli import catalog
from noisecli.errors import SpecError
from noisecli.metrics import IGNORE  # noqa: F401 - a target the loss and every evaluation skip (data's own name)
from noisecli.spec import DataSpec


@dataclass
class Dataset:
    name: str
    task: str  # "classification" | "regression" | "lm" (a token stream) | "sft" (padded examples)
    x_train: torch.Tensor  # (N, D) features, (T,) token ids for "lm", (N, T) padded ids for "sft"
    y_train: torch.Tensor | None  # (N,) labels, (N, K) targets, None for "lm", (N, T) next ids or IGNORE for "sft"
    x_val: torch.Tensor
    y_val: torch.Tensor | None
    n_outputs: int  # classes, regression targets, or vocabulary size
    image_shape: tuple[int, ...] | None = None  # (C, H, W) when the rows are images
    block_size: int | None = None  # "lm": the context; "sft": the padded length
    pad_id: int | None = None  # a padding id that noise must leave alone
    info: dict[str, Any] = field(default_factory=dict)  # shown to the user, saved in the run
    x_test: torch.Tensor | None = None  # the test split (None: the data has none and test_fraction is 0)
    y_test: torch.Tensor | None = None
    # sft: the padding id is also the end-of-sequence token each example ends with (a tokenizer
    # without a pad token pads with its EOS), so an example's real length is one past its last
    # non-padding id; data/sft.py decides it from the data, noise/embedding.py reads it
    pad_ends: bool = False

    @property
    def is_tokens(self) -> bool:
        """Inputs are token ids (a stream cut into windows, or padded examples)."""
        return self.task in ("lm", "sft")

    @property
    def is_stream(self) -> bool:
        """One long token stream, batched as random windows of block_size."""
        return self.task == "lm"

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1]) if not self.is_tokens else 0

    @property
    def n_train(self) -> int:
        """Examples in the training split; for a text stream, the number of distinct windows."""
        if self.is_stream:
            return int(self.x_train.numel()) - self.block_size
        return int(self.x_train.shape[0])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def split_sizes(self) -> dict[str, int]:
        """Examples (token streams: tokens) per split, for the run header and `validate --show`."""
        size = (lambda t: int(t.numel())) if self.is_stream else (lambda t: int(t.shape[0]))  # noqa: E731
        splits = {"train": self.x_train, "val": self.x_val, "test": self.x_test}
        return {name: size(t) for name, t in splits.items() if t is not None}

    def to(self, device: torch.device) -> "Dataset":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        self.x_train, self.y_train = move(self.x_train), move(self.y_train)
        self.x_val, self.y_val = move(self.x_val), move(self.y_val)
        self.x_test, self.y_test = move(self.x_test), move(self.y_test)
        return self


def load_dataset(spec: DataSpec) -> Dataset:
    """Build the dataset named by `spec.kind` on the CPU; DataError-like problems are SpecErrors."""
    entry = catalog.DATASETS[spec.kind]
    module, func = entry.target.split(":")
    loader = getattr(importlib.import_module(module), func)
    ds = loader(spec)
    ds.info.setdefault("train_examples", ds.n_train)
    if ds.has_test:
        ds.info.setdefault("test_examples", ds.split_sizes()["test"])
    return ds


def carve_test(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split carved from n examples before anything else is split off: (the rest, test),
    a seeded shuffle with its own stream, so the test examples do not depend on val_fraction."""
    if n < 3:
        raise SpecError(f"data: only {n} example(s); need at least 3 to hold out test and validation "
                        "splits (or set data.test_fraction=0)")
    g = torch.Generator().manual_seed(seed + 7)
    perm = torch.randperm(n, generator=g)
    n_test = min(max(1, round(n * test_fraction)), n - 2)
    return perm[n_test:].sort().values, perm[:n_test].sort().values


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded shuffle split; at least one example on each side."""
    if n < 2:
        raise SpecError(f"data: only {n} example(s); need at least 2 to hold out a validation split")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    return perm[n_val:], perm[:n_val]


def subsample(n: int, size: int | None, seed: int, what: str = "data.train_size") -> torch.Tensor | None:
    if size is None:
        return None
    if size > n:
        raise SpecError(f"{what}: {size} is more than the {n} training examples available")
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randperm(n, generator=g)[:size]
