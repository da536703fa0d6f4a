"""One run: the Trainer assembles the engine's parts from a spec and drives the loop.

Lifecycle (torchtune's): `setup()` builds everything from the spec in memory and raises
SpecError on bad input before anything is written; `open_run()` claims the run folder
(fresh, resume or already completed, see engine/session.py); `train()` runs the loop; the
lock is released in `close()`. The step (engine/step.py) never reads a value back to the
host: losses and grad norms are summed on the device and read once per evaluation
(engine/evaluation.py). What the user sees goes through `display` (a `display.Display`),
and why to stop early comes through `stop` (a `signals.StopRequest`), so the loop knows
neither terminals nor signals. Under torchrun (`world`) the step runs as `step.DDP` and
rank 0 alone writes the run folder.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path
from typing import Any

import torch

from noisecli import metrics
from noisecli.data import Dataset, load_dataset
from noisecli.data.batches import Batches
from noisecli.display import Display, TrainDisplay, describe_run, say
from noisecli.distributed import World
from noisecli.engine import evaluation, probes
from noisecli.engine.device import Precision, oversubscribed, resolve_device, run_threads
from noisecli.engine.loop import train_until_done
from noisecli.engine.optim import adamw, clip_value
from noisecli.engine.regularize import Mixup, check_regularizers
from noisecli.engine.session import RunSession
from noisecli.engine.state import Interval, TrainState, checkpoint, restore
from noisecli.engine.step import DDP, NoiseHooks, OneProcess, train_step
from noisecli.errors import Interrupted, NoisecliError, RunError, SpecError
from noisecli.models import build_model
from noisecli.noise import NoiseContext, build_noises
from noisecli.signals import StopRequest
from noisecli.spec import Spec, spec_to_dict

MEASURED = ("val", "train")  # the splits each evaluation measures, in this order


class Trainer:
    def __init__(self, spec: Spec, runs_dir: Path | str = "runs", quiet: bool = False,
                 display: Display | None = None, stop: StopRequest | None = None, world: World | None = None):
        self.spec = spec
        self.world = world or World()
        self.session = RunSession(Path(runs_dir) / spec.name, self.world)
        self.run = self.session.folder
        self.stop = stop or StopRequest()
        self.display = display or TrainDisplay(quiet=quiet or not self.world.main, stop=self.stop)

    # ------------------------------------------------------------------ setup (writes nothing)

    def setup(self) -> "Trainer":
        spec, t = self.spec, self.spec.train
        self.device = self.world.device_for(resolve_device(spec.device))
        if t.batch_size % self.world.size:
            raise SpecError(f"train.batch_size: {t.batch_size} does not split among {self.world.size} processes; "
                            f"use a multiple of {self.world.size} (it is the global batch, shared by the ranks)")
        if t.batch_size < self.world.size * t.grad_accum:
            shared = f" on each of {self.world.size} processes" if self.world.distributed else ""
            raise SpecError(f"train.batch_size: {t.batch_size} examples cannot fill train.grad_accum {t.grad_accum} "
                            f"micro-batches{shared}; lower grad_accum or raise batch_size")
        self.precision = Precision(t.precision, self.device)
        torch.manual_seed(spec.seed)
        self.data: Dataset = load_dataset(spec.data).to(self.device)
        metrics.check_watched((t.early_stopping or {}).get("metric"), self.data.task)
        check_regularizers(t, spec.data.kind, self.data)
        if spec.eval.robustness is not None and not self.data.has_test:
            raise SpecError("eval.robustness: measured on the test split, and this data has none "
                            "(data.test_fraction is 0 and the data brings none); set data.test_fraction > 0")
        self.batches = Batches(self.data, t.batch_size, spec.seed, t.eval_batches, self.device)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps, _ = t.step_budget(self.steps_per_epoch)
        self.eval_every = t.eval_every or self.steps_per_epoch

        self.raw_model = build_model(spec.model, self.data).to(self.device)
        self.model = self.eval_model = torch.compile(self.raw_model) if t.compile else self.raw_model
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        self.optimizer = adamw(self.params, self.params, t, self.device)
        self.clip = clip_value(t)
        self.mixup = Mixup(t.mixup["alpha"], spec.seed, self.device) if t.mixup else None

        self.noise_ctx = NoiseContext(self.raw_model, self.data, self.total_steps, self.device, spec.seed,
                                      self.world, micro_batches=t.grad_accum,
                                      recomputes=bool(spec.model.gradient_checkpointing))
        self.noises = build_noises(spec.noise, self.noise_ctx)
        self.hooks = NoiseHooks([self.noises])
        self.state = TrainState(Interval(self.device, tracked=spec.output.tracker != "none"))
        # everything above could refuse the spec; from DDP's start on the ranks talk
        self.strategy = DDP(self) if self.world.distributed else OneProcess(self)
        return self

    # ------------------------------------------------------------------ the run folder

    def open_run(self, restart: bool = False) -> str:
        """Claim the run folder: 'fresh', 'resume' (state loaded) or 'completed'."""
        outcome, status, saved = self.session.claim(spec_to_dict(self.spec), restart, self.display,
                                                    self.total_steps)
        if outcome == "completed":
            return outcome
        if saved is not None:
            restore(self, saved)
            self.strategy.reseed()
        s = self.state
        self.run.write_metrics(s.rows)  # rows past the checkpoint (a crash after writing them) are dropped
        self.run.write_status(state="running", starts=status.get("starts", 0) + 1, step=s.step,
                              epoch=self.epoch, error=None, total_steps=self.total_steps,
                              steps_per_epoch=self.steps_per_epoch,
                              best_val_loss=None if math.isinf(s.best_val) else s.best_val,
                              dataset=self.data.info, device=str(self.device), precision=self.precision.name)
        return outcome

    def close(self) -> None:
        self.session.close()

    def save_checkpoint(self, *names: str) -> None:
        """The one way a checkpoint is written (last.pt by default, and any other names given).

        The model in it is the one evaluation sees: a kind that keeps a perturbation in the
        weights between steps (anticorrelated) takes it out first and puts it back after,
        and its state dict holds what exact resume needs to put it back on load.
        """
        self.hooks.each("before_eval")
        try:
            state = checkpoint(self)
            for name in names or ("last.pt",):
                self.run.save_checkpoint(state, name)
        finally:
            self.hooks.each("after_eval")

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def epoch(self) -> int:
        return self.state.epoch(self.steps_per_epoch)

    # ------------------------------------------------------------------ training

    def train_step(self) -> tuple[float, list[float]]:
        """One optimizer step with every noise hook in place; no host sync."""
        lr, factors = train_step(self.strategy, self.state.step)
        return lr, factors[0]

    def train(self) -> dict[str, Any]:
        """Train to the end (or to a stop request), then mark the run completed."""
        for noise in self.noises:
            noise.attach(self.raw_model)
        self.model.train()
        try:  # torchrun passes a terminal's Ctrl-C on as a second SIGINT: not a "stop now"
            with self.stop.catching(second_sigint_stops_now=not self.world.distributed):
                with self.display.progress(self.total_steps, self.state.step, self.run.name) as self.bar:
                    stopped_after = train_until_done(self, lambda: self.world.any(self.stop.requested))
                    if stopped_after is not None:
                        self.state.elapsed += stopped_after
                        raise self.save_interrupted()
                return self.finish()  # its measurements are inside the same handling: a failure is recorded
        except (Interrupted, RunError):  # recorded where they were raised
            raise
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoint stands
            self.run.write_status(state="interrupted", error="stopped without saving (second Ctrl-C); "
                                  "resumes from the last evaluation")
            raise Interrupted(signal.SIGINT, "stopped at once; run the same command to resume from "
                              "the last evaluation") from None
        except Exception as e:  # noqa: BLE001 - any other failure is recorded, never lost
            raise self.failed(e) from e
        finally:
            self.hooks.each("detach")

    def advance(self) -> None:
        self.bar.advance()

    def failed(self, e: Exception) -> NoisecliError:
        return self.session.failed(e, self.state.step)

    @property
    def active(self) -> bool:
        """Still training: not stopped early (the loop's driver protocol)."""
        return self.state.stopped_early is None

    def finish(self) -> dict[str, Any]:
        """The run reached its last step (or stopped early): the verdict's numbers in final.json,
        the run marked completed, the summary shown."""
        s = self.state
        final_test = probes.verdict_numbers(self)
        summary = evaluation.final_summary(s, final_test, self.data.task)
        self.run.write_text("final.json", json.dumps(summary, indent=2) + "\n")
        self.session.log_final(summary, s.step)
        if self.spec.output.checkpoint == "none":
            self.run.drop_checkpoints()
        status = self.run.write_status(state="completed", step=s.step, epoch=self.epoch, error=None,
                                       best_val_loss=s.best_val, best_step=s.best_step,
                                       stopped_early=s.stopped_early)
        self.display.summary(self.state.rows, self.data.task == "classification", self.run.path)
        for line in (s.stopped_early, evaluation.verdict_line(s, final_test)):
            if line:
                self.display.note(line)
        return status

    def save_interrupted(self) -> Interrupted:
        """A stop was asked for: save where we are; the error to raise."""
        self.save_checkpoint()
        self.run.write_status(state="interrupted", step=self.state.step, epoch=self.epoch)
        return Interrupted(self.stop.signum or signal.SIGTERM, f"state saved at step {self.state.step} of "
                           f"{self.total_steps} in {self.run.path}; run the same command to resume")

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, lr: float, factors: list[float], seconds: float) -> dict[str, Any]:
        self.model.eval()
        self.hooks.each("before_eval")
        sums = {split: evaluation.measure(self, split) for split in MEASURED}
        self.hooks.each("after_eval")
        self.model.train()
        row = self.record(lr, factors, seconds, sums)
        self.bar.show(row)
        return row

    def record(self, lr: float, factors: list[float], seconds: float, sums: dict[str, dict]) -> dict[str, Any]:
        """An evaluation's row from the interval and each split's named sums (a stack measures
        every member at once and hands each its sums here): logged, checked, checkpointed."""
        s = self.state
        row, step_losses = evaluation.row(self, s, lr, factors, seconds, sums)
        pending = len(s.interval.step_losses or ())
        s.rows.append(row)
        s.interval.reset()
        self.session.log(s.step - pending, step_losses, row)
        error = evaluation.divergence(row)
        if error:
            self.run.write_metrics(s.rows)  # the bad row is shown; last.pt stays the last good state
            self.run.write_status(state="diverged", step=s.step, epoch=self.epoch, error=error)
            raise RunError(f"run {self.run.name!r} diverged: {error}")
        improved = row["val_loss"] < s.best_val
        s.best_val = min(s.best_val, row["val_loss"])
        if improved:  # the selected checkpoint (on val); the verdict's test numbers are measured here
            s.best_step = s.step
            s.best_test = probes.verdict_numbers(self) or None
        why = evaluation.early_stop(self.spec.train.early_stopping, s, row)
        s.stopped_early = why if s.step < self.total_steps else None  # patience spent at the end: no early stop
        self.save_checkpoint(*evaluation.checkpoint_names(self.spec.output.checkpoint, improved, s.step))
        self.run.write_metrics(s.rows)
        self.run.write_status(state="running", step=s.step, epoch=self.epoch, best_val_loss=s.best_val,
                              val_loss=row["val_loss"], best_step=s.best_step)
        return row


def train_run(spec: Spec, runs_dir: Path | str, quiet: bool = False, restart: bool = False,
              threads: int | None = None) -> dict[str, Any] | None:
    """`noisecli train`: build, claim the run folder, say what is trained, train (or resume);
    a completed run is left as it is. Returns the final status, or None if there was nothing to do.
    `threads`: torch's CPU threads (`--threads`); a resumed run keeps the count it started with."""
    world = World.from_env()  # several processes under torchrun
    trainer = Trainer(spec, runs_dir, quiet=quiet, world=world).setup()
    finished = False
    try:
        outcome = trainer.open_run(restart=restart)
        if outcome == "completed":
            trainer.display.note(f"run {spec.name!r} is already completed ({trainer.run.path}); "
                                 "nothing to do. Use --restart to train it again.")
            finished = True
            return None
        with run_threads([trainer], threads) as n:
            trainer.display.note(describe_run(trainer))
            if outcome == "resume":
                kept = f" with the {n} thread{'s' if n > 1 else ''} it started with" if threads not in (None, n) else ""
                trainer.display.note(f"resuming {spec.name!r} from step {trainer.state.step} of "
                                     f"{trainer.total_steps}{kept}")
            warning = oversubscribed(n, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
            if warning and not world.rank:
                say(warning)
            status = trainer.train()
            finished = True
            return status
    except Interrupted:  # every rank agreed on the step to stop after: they leave together too
        finished = True
        raise
    finally:
        trainer.close()
        world.stop(together=finished)
