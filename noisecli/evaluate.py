"""`noisecli eval`: a saved checkpoint evaluated exactly as training evaluated it.

The run's model and data are rebuilt from the run folder's resolved spec (so the same
split, the same fixed evaluation windows, the same precision), the checkpoint is loaded
with `weights_only=True`, and the engine's own `evaluation.measure` runs with every noise off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from noisecli import metrics
from noisecli.errors import DamagedFile, SpecError
from noisecli.runs import read_checkpoint
from noisecli.spec import read_saved_spec, spec_from_dict

NAMED = ("last", "best", "prev")


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """last | best | prev (in the run's checkpoints/), or a file path."""
    if checkpoint in NAMED:
        path = run_dir / "checkpoints" / f"{checkpoint}.pt"
        if not path.is_file():
            hint = {"best": "it is written only with output.checkpoint: best",
                    "prev": "it appears from the second evaluation on"}.get(checkpoint, "the run has not "
                                                                                      "reached an evaluation yet")
            raise SpecError(f"--checkpoint: {run_dir} has no {checkpoint}.pt ({hint})")
        return path
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise SpecError(f"--checkpoint: {checkpoint!r} is not last, best, prev or an existing file")
    return path


def levels_option(text: str | None) -> list[float] | None:
    """--robustness 0.1,0.3: the levels, each a number >= 0."""
    if text is None:
        return None
    try:
        levels = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        levels = []
    if not levels or any(not (v >= 0) or v == float("inf") for v in levels):
        raise SpecError(f"--robustness: {text!r} is not a comma-separated list of levels >= 0, e.g. 0.1,0.3")
    return levels


def evaluate(run_dir: Path, checkpoint: str = "last", split: str = "val", device: str | None = None,
             metric_names: list[str] | None = None, levels: list[float] | None = None,
             rho: float | None = None, draws: int = 8, generation=None) -> dict[str, Any]:
    """{checkpoint, step, ...} and every metric of the run's task on the split (`metrics.columns`:
    val_loss, val_acc, ... or, with split 'train', clean_train_loss, clean_train_acc, ...), or
    only `metric_names`; with `levels`, the split's metrics under input perturbation at each level
    (robust_<split>_* and the curve, as final.json holds them); with `rho`, the sharpness; with
    `generation` (generate.Options, --generate N), responses to held-out prompts and their summary."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpecError(f"eval: {run_dir}: no such run folder")
    raw = read_saved_spec(run_dir / "spec.yaml")
    if raw is None:
        raise SpecError(f"eval: {run_dir}: no readable spec.yaml, so not a noisecli run folder")
    if device is not None:
        raw["device"] = device
    spec = spec_from_dict(raw, base_dir=run_dir)
    if generation is not None:  # refused before anything is built: data that is not instruction data
        generation.check(spec, run_dir)
    from noisecli.engine import evaluation  # torch, only when a checkpoint is evaluated

    trainer, state, path = restore(spec, run_dir, checkpoint)
    task = trainer.data.task
    chosen = metrics.named(task, metric_names) if metric_names else metrics.for_task(task)
    if split == "test" and not trainer.data.has_test:
        raise SpecError(f"--split test: run {run_dir.name!r} has no test split (data.test_fraction is 0 and "
                        "its data brings none)")
    trainer.model.eval()
    sums = evaluation.measure(trainer, split)
    values = evaluation.to_host(trainer.world, sums)  # one host read (vector sums too)

    out: dict[str, Any] = {"run": str(run_dir), "checkpoint": str(path), "step": state.get("step"),
                           "epoch": state.get("epoch"), "split": split}
    keep = {metrics.column(m, split) for m in chosen}
    out.update({k: v for k, v in metrics.split_values(task, split, values, every_metric=True).items() if k in keep})
    out.update(_probes(trainer, split, keep, levels, rho, draws))
    if generation is not None:
        out["generation"] = generation.run(trainer, spec, run_dir, path)
    return out


def restore(spec, run_dir: Path, checkpoint: str):
    """(trainer, checkpoint contents, its path): the run's Trainer built in memory (nothing is
    written) holding the checkpoint's weights and noise state, for `eval` and `export`."""
    from noisecli.trainer import Trainer  # torch, only when a checkpoint is read

    path = checkpoint_path(run_dir, checkpoint)
    try:
        state = read_checkpoint(path)
    except DamagedFile as e:
        raise SpecError(f"--checkpoint: {e.problems[0]}") from None
    skip_init_source(spec, state)
    trainer = Trainer(spec, run_dir.parent, quiet=True).setup()
    load_checkpoint(trainer, state, path, run_dir)
    return trainer, state, path


def skip_init_source(spec, state: dict) -> None:
    """A checkpoint that holds every weight replaces what model.init started the run from, so
    that source is not read (it may have moved since); one of LoRA adapters alone still needs it."""
    if state.get("model_part", "all") == "all":
        spec.model.init = None


def load_checkpoint(trainer, state: dict, path: Path, run_dir: Path) -> None:
    """The checkpoint's weights and noise state into the trainer, as evaluation saw them (also
    what `export` writes out)."""
    from noisecli.engine.state import load_model_state  # torch, only when a checkpoint is evaluated

    try:
        load_model_state(trainer.raw_model, state)
        noise_states = state.get("rng", {}).get("noise", [])
        for noise, s in zip(trainer.noises, noise_states):
            noise.load_state_dict(s)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SpecError(f"--checkpoint: {path} does not fit the model of run {run_dir.name!r} "
                        f"({str(e).splitlines()[0][:160]})") from None
    for noise in trainer.noises:  # the model as evaluation saw it (Anti-PGD's clean point)
        noise.before_eval()


def _probes(trainer, split: str, keep: set[str], levels: list[float] | None, rho: float | None,
            draws: int) -> dict[str, Any]:
    """robust_<column> and the curve of the kept columns under perturbation at `levels`; sharpness."""
    from noisecli.engine import probes  # torch, only when a checkpoint is evaluated

    out: dict[str, Any] = {}
    if levels:
        r = probes.robustness(trainer, levels, split)
        kept = [k for k in r["curve"] if k in keep]
        out.update({f"robust_{k}": r[f"robust_{k}"] for k in kept})
        out["robustness"] = {"levels": r["levels"], **{k: r["curve"][k] for k in kept}}
    if rho is not None:
        out["sharpness"] = probes.sharpness(trainer, rho, draws)
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['run']}: {Path(result['checkpoint']).name} at step {result['step']} "
             f"(epoch {result['epoch']}), {result['split']} split, noise off"]
    width = max(len(k) for k in result)
    names = [k for k in metrics.every_column() if k in result]
    for k in names:
        lines.append(f"  {k:<{width}}  {result[k]:.6f}")
    for k in names:
        if f"robust_{k}" in result:
            lines.append(f"  {'robust_' + k:<{width}}  {result['robust_' + k]:.6f}  (mean over levels)")
    if "robustness" in result:
        curve = result["robustness"]
        levels = "  ".join(f"{level:>9g}" for level in curve["levels"])
        lines.append(f"  {'level':<{width}}  {levels}")
        for k in names:
            lines.append(f"  {k:<{width}}  " + "  ".join(f"{v:>9.4f}" for v in curve[k]))
    if "sharpness" in result:
        lines.append(f"  {'sharpness':<{width}}  {result['sharpness']:.6g}")
    return "\n".join(lines) + "\n"
