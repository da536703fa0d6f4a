"""On-device batching: a seeded permutation per epoch for tables, random windows for text.

Nothing here reads a value back to the host, so a training step never waits on the device.
Evaluation uses fixed batches (the whole split for tables, a fixed set of windows for
text) so successive evaluations are comparable.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch

from noisecli.data import Dataset
from noisecli.errors import SpecError


def _check_sizes(ds: Dataset, batch_size: int, eval_batches: int) -> None:
    """Text batches are windows gathered into new tensors, (batch_size, block_size) each, and the
    evaluation windows (eval_batches x batch_size) are drawn once and kept: past the number of
    windows the training text has, a number only allocates until memory runs out. (A table's
    batch is a slice of the split, so a batch_size above its size is simply the whole split.)"""
    if not ds.is_stream:
        return
    if batch_size > ds.n_train:
        raise SpecError(f"train.batch_size: {batch_size:,} is more than the {ds.n_train:,} windows of the "
                        "training text; lower train.batch_size")
    if eval_batches * batch_size > ds.n_train:
        raise SpecError(f"train.eval_batches: {eval_batches:,} batches of {batch_size} windows is more than the "
                        f"{ds.n_train:,} windows of the training text; lower train.eval_batches")


class Batches:
    def __init__(self, ds: Dataset, batch_size: int, seed: int, eval_batches: int, device: torch.device):
        self.ds, self.batch_size, self.device = ds, batch_size, device
        _check_sizes(ds, batch_size, eval_batches)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.perm: torch.Tensor | None = None
        self.pos = 0
        if ds.is_stream:
            self.steps_per_epoch = max(1, ds.x_train.numel() // (batch_size * ds.block_size))
            # fixed evaluation windows, the same for every run and seed, so runs compare on equal terms
            g = torch.Generator().manual_seed(12345)
            n_eval = eval_batches * batch_size
            self._eval_starts = {split: torch.randint(tokens.numel() - ds.block_size, (n_eval,), generator=g).to(device)
                                 for split, tokens in self._splits().items()}  # drawn in this order: train, val, test
            self._offsets = torch.arange(ds.block_size, device=device)
        else:
            self.steps_per_epoch = math.ceil(ds.n_train / batch_size)

    def _windows(self, tokens: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + self._offsets  # (B, T)
        return tokens[idx], tokens[idx + 1]

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next training batch (x, y)."""
        ds, b = self.ds, self.batch_size
        if ds.is_stream:
            starts = torch.randint(ds.x_train.numel() - ds.block_size, (b,), generator=self.generator,
                                   device=self.device)
            return self._windows(ds.x_train, starts)
        if self.perm is None or self.pos >= self.perm.numel():
            self.perm = torch.randperm(ds.n_train, generator=self.generator, device=self.device)
            self.pos = 0
        idx = self.perm[self.pos: self.pos + b]
        self.pos += b
        return ds.x_train[idx], ds.y_train[idx]

    def _splits(self) -> dict[str, tuple]:
        ds = self.ds
        splits = {"train": (ds.x_train, ds.y_train), "val": (ds.x_val, ds.y_val), "test": (ds.x_test, ds.y_test)}
        if ds.is_stream:
            return {name: x for name, (x, _) in splits.items() if x is not None}
        return {name: xy for name, xy in splits.items() if xy[0] is not None}

    def eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A split's evaluation batches (train, val or test), the same at every evaluation."""
        ds = self.ds
        if ds.is_stream:
            tokens = self._splits()[split]
            for starts in self._eval_starts[split].split(self.batch_size):
                yield self._windows(tokens, starts)
            return
        x, y = self._splits()[split]
        size = self.batch_size if ds.is_tokens else max(self.batch_size, 1024)  # padded sequences are big
        for i in range(0, x.shape[0], size):
            yield x[i: i + size], y[i: i + size]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(),
                "perm": None if self.perm is None else self.perm.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm = None if state["perm"] is None else state["perm"].to(self.device)
        self.pos = state["pos"]
