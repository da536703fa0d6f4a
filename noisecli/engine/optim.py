"""The optimizer's side of a step: the lr schedule, the loss, AdamW's parameter groups."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from noisecli.engine.regularize import classification_loss
from noisecli.spec import TrainSpec


def lr_at(t: TrainSpec, step: int, total_steps: int) -> float:
    """Linear warmup (nanoGPT's), then constant, cosine or linear decay to min_lr at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / (t.warmup_steps + 1)
    if t.lr_schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1.0 - progress
    return t.min_lr + coeff * (t.lr - t.min_lr)


def loss_fn(out: torch.Tensor, y, task: str, reduction: str = "mean", label_smoothing: float = 0.0) -> torch.Tensor:
    """MSE for regression, else cross-entropy (its ignore_index rows left out); the training loss
    may smooth the labels or take mixup's `Mixed` targets (engine/regularize.py), evaluation never."""
    out = out.float()
    if task == "regression":
        return F.mse_loss(out, y, reduction=reduction)
    return classification_loss(out, y, reduction, label_smoothing)


def adamw(params: list[torch.Tensor], like: list[torch.Tensor], t: TrainSpec,
          device: torch.device) -> torch.optim.AdamW:
    """AdamW over `params` with nanoGPT's split, decided on `like` (the same tensors, or each
    member's own when `params` are stacked): matrices and embeddings decay, biases and norm
    gains do not. Fused where torch has the kernel (CUDA; CPU since torch 2.4, transformers'
    Trainer default): one kernel over every tensor, a tenth faster per step than foreach on a
    small model (benchmarks/vs_transformers.py) and a third of its time on a stack's tensors;
    foreach elsewhere (MPS). Both are elementwise, so a stack still gets one AdamW per member."""
    decay = [p for p, q in zip(params, like) if q.dim() >= 2]
    no_decay = [p for p, q in zip(params, like) if q.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **fast)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_value(t: TrainSpec) -> float:
    return t.grad_clip if t.grad_clip > 0 else math.inf
