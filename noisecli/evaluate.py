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


def evaluate(run_dir: Path, checkpoint: str = "last", split: str = "val", device: str | None = None) -> dict[str, Any]:
    """{checkpoint, step, ...} and every metric of the run's task on the split (`metrics.columns`:
    val_loss, val_acc, ... or, with split 'train', clean_train_loss, clean_train_acc, ...)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpecError(f"eval: {run_dir}: no such run folder")
    raw = read_saved_spec(run_dir / "spec.yaml")
    if raw is None:
        raise SpecError(f"eval: {run_dir}: no readable spec.yaml, so not a noisecli run folder")
    if device is not None:
        raw["device"] = device
    spec = spec_from_dict(raw, base_dir=run_dir)
    path = checkpoint_path(run_dir, checkpoint)

    from noisecli.engine import evaluation  # torch, only when a checkpoint is evaluated
    from noisecli.trainer import Trainer  # torch, as above

    try:
        state = read_checkpoint(path)
    except DamagedFile as e:
        raise SpecError(f"--checkpoint: {e.problems[0]}") from None

    trainer = Trainer(spec, run_dir.parent, quiet=True).setup()  # builds in memory; writes nothing
    try:
        trainer.raw_model.load_state_dict(state["model"])
        noise_states = state.get("rng", {}).get("noise", [])
        for noise, s in zip(trainer.noises, noise_states):
            noise.load_state_dict(s)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise SpecError(f"--checkpoint: {path} does not fit the model of run {run_dir.name!r} "
                        f"({str(e).splitlines()[0][:160]})") from None
    for noise in trainer.noises:  # the model as evaluation saw it (Anti-PGD's clean point)
        noise.before_eval()
    if split == "test" and not trainer.data.has_test:
        raise SpecError(f"--split test: run {run_dir.name!r} has no test split (data.test_fraction is 0 and "
                        "its data brings none)")
    trainer.model.eval()
    sums = evaluation.measure(trainer, split)
    values = evaluation.to_host(trainer.world, sums)  # one host read (vector sums too)

    out: dict[str, Any] = {"run": str(run_dir), "checkpoint": str(path), "step": state.get("step"),
                           "epoch": state.get("epoch"), "split": split}
    out.update(metrics.split_values(trainer.data.task, split, values, every_metric=True))
    return out


def render(result: dict[str, Any]) -> str:
    lines = [f"{result['run']}: {Path(result['checkpoint']).name} at step {result['step']} "
             f"(epoch {result['epoch']}), {result['split']} split, noise off"]
    width = max(len(k) for k in result)
    for k in metrics.every_column():
        if k in result:
            lines.append(f"  {k:<{width}}  {result[k]:.6f}")
    return "\n".join(lines) + "\n"
