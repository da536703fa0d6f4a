"""An evaluation: the splits' named sums (noise off), the one host read, the row, and the policies
that act on it (when to evaluate, what counts as diverged, which checkpoints to write)."""

from __future__ import annotations

import math
from typing import Any

import torch

from noisecli import metrics
from noisecli.engine.optim import loss_fn
from noisecli.engine.state import TrainState


def evaluation_due(step: int, eval_every: int, total_steps: int) -> bool:
    """Every eval_every steps, and at the last step wherever it falls."""
    return step % eval_every == 0 or step == total_steps


def summed_loss(task: str):
    return lambda out, y: loss_fn(out, y, task, reduction="sum")


def add_sums(into: dict[str, torch.Tensor], sums: dict[str, Any], device: torch.device, shape: tuple = ()) -> None:
    """Add a batch's named sums into running float totals (created at zero on first sight, in
    the sum's own shape: per class, per bin, per member ...; `shape` for a plain number)."""
    for name, value in sums.items():
        if name not in into:
            into[name] = torch.zeros(value.shape if torch.is_tensor(value) else shape, device=device)
        into[name] += value


@torch.no_grad()
def measure(run, split: str, perturb=None) -> dict[str, torch.Tensor]:
    """A split's named sums over its evaluation batches, with the model in eval mode as it is
    (the caller brackets noise off), all on the device; `perturb` (robustness) transforms each
    batch's inputs first. With several processes each rank measures its share of every batch
    (summed over ranks in `row`)."""
    task, sums = run.data.task, {}
    for x, y in run.batches.eval_batches(split):
        x = x if perturb is None else perturb(x)
        x, y = run.world.share(x), run.world.share(y)
        with run.precision.autocast:
            out = run.eval_model(x)
        add_sums(sums, metrics.metric_sums(out, y, task, summed_loss(task)), run.device)
        add_sums(sums, {"count": metrics.count(y, task)}, run.device)
    return sums


def to_host(world, named: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Named sums summed over ranks in one vector and read to the host once: a float for each
    0-dim sum, a list for each vector sum (per class, per bin, ...), keyed as given."""
    flat = torch.cat([v.reshape(-1).float() for v in named.values()]) if named else torch.zeros(0)
    totals = world.sum(flat).tolist()
    out, at = {}, 0
    for name, v in named.items():
        n = v.numel()
        out[name] = totals[at] if v.dim() == 0 else totals[at: at + n]
        at += n
    return out


def split_metrics(run, split: str) -> dict[str, float]:
    """Every metric of the run's task on one split (test: at a new best and at the end), noise
    off, with its own host read."""
    run.model.eval()
    run.hooks.each("before_eval")
    try:
        sums = measure(run, split)
    finally:
        run.hooks.each("after_eval")
        run.model.train()
    return metrics.split_values(run.data.task, split, to_host(run.world, sums), every_metric=True)


def row(run, state: TrainState, lr: float, factors: list[float], seconds: float,
        split_sums: dict[str, dict[str, torch.Tensor]]) -> tuple[dict[str, Any], list[float]]:
    """An evaluation's row from the interval's sums and each split's named sums: one sum over
    ranks and one host read for everything. Each rank's training loss is W x its share of
    the global mean; the grad norm is the same on every rank. Also each step's loss (for a tracker)."""
    W, interval, n = run.world.size, state.interval, state.interval.steps
    s = interval.sums
    stepped = (n - s["skipped"]).clamp(min=1)  # the grad norm is the mean over steps the optimizer took
    steps = torch.stack(interval.step_losses) if interval.step_losses else torch.zeros(0, device=run.device)
    named = {"train_loss": s["loss"] / n / W, "grad_norm": s["grad_norm"] / stepped / W, "skipped": s["skipped"] / W}
    named.update({f"{split}/{k}": v for split, sums in split_sums.items() for k, v in sums.items()})
    values = to_host(run.world, {**named, "step_losses": steps})
    step_losses = [v / W for v in values.pop("step_losses")]
    per_split = {split: {k: values[f"{split}/{k}"] for k in sums} for split, sums in split_sums.items()}
    state.elapsed += seconds
    out: dict[str, Any] = {"epoch": state.epoch(run.steps_per_epoch), "step": state.step,
                           "train_loss": values["train_loss"], **metrics.row_values(run.data.task, per_split),
                           "lr": lr, "noise_factor": factors[0]}
    if len(run.noises) > 1:  # a list of kinds: each one's own factor, as its schedule has it now
        out.update({f"noise_factor_{n.kind}": f for n, f in zip(run.spec.noise, factors)})
    out["grad_norm"] = values["grad_norm"]
    if run.precision.scaler.is_enabled():
        out["skipped_steps"] = round(values["skipped"])
    out.update(samples_per_s=n * run.spec.train.batch_size / max(seconds, 1e-9), seconds=state.elapsed)
    return out, step_losses


DIVERGENCE_KEYS = ("train_loss", "clean_train_loss", "val_loss", "grad_norm")


def divergence(row: dict[str, Any]) -> str | None:
    """Why this row means the run diverged (a non-finite loss or gradient norm), or None."""
    if all(math.isfinite(row[k]) for k in DIVERGENCE_KEYS):
        return None
    return (f"non-finite loss or gradient by step {row['step']} (train_loss={row['train_loss']}, "
            f"val_loss={row['val_loss']}, grad_norm={row['grad_norm']}); lower train.lr or the noise factor")


def early_stop(rule: dict | None, state: TrainState, row: dict[str, Any]) -> str | None:
    """train.early_stopping after this evaluation's row: why to stop now, or None. Updates the
    patience counter in `state` (checkpointed, so a resumed run keeps counting)."""
    if rule is None:
        return None
    value, higher = row[rule["metric"]], metrics.higher_is_better(rule["metric"])
    gain = None if state.best_watched is None else (value - state.best_watched) * (1 if higher else -1)
    if gain is None or gain > rule["min_delta"]:
        state.best_watched, state.since_best = value, 0
        return None
    state.since_best += 1
    if state.since_best < rule["patience"]:
        return None
    return (f"early stopping: {rule['metric']} did not improve by more than {rule['min_delta']:g} for "
            f"{rule['patience']} evaluations (best {state.best_watched:.6g}); stopped at step {row['step']}")


def final_summary(state: TrainState, final_test: dict[str, float], task: str) -> dict:
    """The verdict's numbers (final.json): the selected checkpoint (best val loss) and the final
    one, each with its val metrics and, where the data has a test split, its test metrics."""
    rows = {r["step"]: r for r in state.rows}
    val = lambda r: {k: v for k, v in r.items() if k.startswith(metrics.SPLIT_PREFIX["val"])}  # noqa: E731
    last = state.rows[-1] if state.rows else {}
    selected = rows.get(state.best_step, {})
    out = {"task": task, "selection": "val_loss",
           "selected": {"step": state.best_step, **val(selected), **(state.best_test or {})},
           "final": {"step": last.get("step"), **val(last), **final_test},
           "stopped_early": state.stopped_early}
    return out


def verdict_line(state: TrainState, final_test: dict[str, float]) -> str | None:
    """The test split's numbers, for the end of `train`: at the selected checkpoint and the final one."""
    if not final_test:
        return None
    show = lambda d: ", ".join(f"{k} {v:.4f}" for k, v in d.items() if isinstance(v, float))  # noqa: E731
    return (f"test at the selected checkpoint (best val loss, step {state.best_step}): {show(state.best_test or {})}; "
            f"at the last step: {show(final_test)} (final.json)")


def checkpoint_names(policy: str, improved: bool, step: int) -> list[str]:
    """The files this evaluation writes under `output.checkpoint` (last.pt always, while training)."""
    return ["last.pt", *(["best.pt"] if policy == "best" and improved else []),
            *([f"step_{step:07d}.pt"] if policy == "every" else [])]
