"""What noise injection claims to buy besides a lower loss, measured at the selected checkpoint and
at the end (`eval.robustness`, `eval.sharpness`): robustness to test-time perturbation of the
input, and flatness of the solution. Both use fixed seeds, so every run of a sweep sees the same
perturbations and the numbers compare across runs.

Robustness: the test split's metrics with each input perturbed at each level: continuous inputs
get Gaussian noise of level x the feature's standard deviation on the training split; token
inputs have each token replaced, with probability level, by a uniform random token (never
padding, and never replaced by it). Summarised as the mean over levels (the area under the robustness curve over its
levels), `robust_test_<metric>`.

Sharpness (average-case): the mean increase of the clean training loss when every parameter
tensor p gets a Gaussian perturbation of norm rho x |p|, over `draws` draws; the weights are
put back exactly (copied back, not subtracted).
"""

from __future__ import annotations

from typing import Any

import torch

from noisecli import metrics
from noisecli.engine.evaluation import measure as measure_split, split_metrics, to_host

SEED = 20_241_210  # the probes' own stream, the same for every run


def _perturbed(run, x: torch.Tensor, level: float, g: torch.Generator, std: torch.Tensor | None) -> torch.Tensor:
    d = run.data
    if d.is_tokens:
        replace = torch.rand(x.shape, generator=g, device=x.device) < level
        if d.pad_id is not None:
            replace &= x != d.pad_id
        if d.pad_id is None:
            random = torch.randint(0, d.n_outputs, x.shape, generator=g, device=x.device)
        else:  # uniform over the other tokens: a replacement never writes padding either
            random = torch.randint(0, d.n_outputs - 1, x.shape, generator=g, device=x.device)
            random += (random >= d.pad_id).to(random.dtype)
        return torch.where(replace, random, x)
    return x + level * std * torch.randn(x.shape, generator=g, device=x.device, dtype=x.dtype)


@torch.no_grad()
def robustness(run, levels: list[float], split: str = "test") -> dict[str, Any]:
    """The split's metrics at every level, and their means over levels (robust_test_*: the verdict
    measures test; `noisecli eval --robustness` any split)."""
    d = run.data
    std = None if d.is_tokens else d.x_train.float().std(0, unbiased=False)
    curve: dict[str, list[float]] = {}
    for i, level in enumerate(levels):
        g = torch.Generator(device=run.device).manual_seed(SEED + i)
        sums = measure_split(run, split, perturb=lambda x: _perturbed(run, x, level, g, std))
        for name, value in metrics.split_values(d.task, split, to_host(run.world, sums), every_metric=True).items():
            curve.setdefault(name, []).append(value)
    means = {f"robust_{name}": sum(values) / len(values) for name, values in curve.items()}
    return {"levels": list(levels), "curve": curve, **means}


def _train_loss(run) -> tuple[torch.Tensor, torch.Tensor]:
    sums = measure_split(run, "train")
    return sums["loss"], sums["count"]


@torch.no_grad()
def sharpness(run, rho: float, draws: int) -> float:
    """Mean over draws of L(w + e) - L(w) on the clean training split, |e_p| = rho |p| per tensor."""
    params = [p for p in run.raw_model.parameters() if p.requires_grad]
    g = torch.Generator(device=run.device).manual_seed(SEED)
    clean_loss, count = _train_loss(run)
    saved = [p.detach().clone() for p in params]
    total = torch.zeros((), device=run.device)
    try:
        for _ in range(draws):
            for p in params:
                e = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
                p.add_(e * (rho * p.norm() / e.norm().clamp_min(1e-12)))
            total += _train_loss(run)[0]
            for p, s in zip(params, saved):
                p.copy_(s)
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)
    values = to_host(run.world, {"perturbed": total, "clean": clean_loss, "count": count})
    return (values["perturbed"] / draws - values["clean"]) / values["count"]


def measure(run) -> dict[str, Any]:
    """Every probe the spec asks for, in the eval bracket (noise off): {} when none is asked."""
    e = run.spec.eval
    if e.robustness is None and e.sharpness is None:
        return {}
    run.model.eval()
    run.hooks.each("before_eval")
    try:
        out: dict[str, Any] = {}
        if e.robustness is not None and run.data.has_test:
            out["robustness"] = robustness(run, e.robustness["levels"])
        if e.sharpness is not None:
            out["sharpness"] = sharpness(run, e.sharpness["rho"], e.sharpness["draws"])
        return out
    finally:
        run.hooks.each("after_eval")
        run.model.train()


def verdict_numbers(run) -> dict[str, Any]:
    """What final.json records of a checkpoint beside its val row: the test split's metrics, and
    the probes the spec asks for (robust_test_* and the robustness curve, sharpness)."""
    out: dict[str, Any] = split_metrics(run, "test") if run.data.has_test else {}
    probes = measure(run)
    if "robustness" in probes:
        r = probes["robustness"]
        out.update({k: v for k, v in r.items() if k.startswith("robust_")})
        out["robustness"] = {"levels": r["levels"], **r["curve"]}
    if "sharpness" in probes:
        out["sharpness"] = probes["sharpness"]
    return out
