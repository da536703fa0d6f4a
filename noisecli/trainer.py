"""The training loop: clipped AdamW with noise hooks, clean evaluation, checkpoints, resume.

Lifecycle (torchtune's): `setup()` builds everything from the spec in memory and raises
SpecError on bad input before anything is written; `open_run()` claims the run folder
through `RunFolder.claim` (fresh, resume or already completed); `train()` runs the loop;
the lock is released in `close()`. The step never reads a value back to the host: losses
and grad norms are summed on the device and read once per evaluation. What the user sees
goes through `display` (a `display.Display`), and why to stop early comes through `stop`
(a `signals.StopRequest`), so the loop knows neither terminals nor signals.

Under torchrun (`world`, see distributed.py) every rank draws the global batch and its
input noise, keeps its rows, and scales its summed loss so that DDP's average of the
ranks' gradients is the gradient of the global batch's mean loss; evaluations split each
batch across ranks and sum; rank 0 alone writes the run folder.
"""

from __future__ import annotations

import math
import signal
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from noisecli.data import IGNORE, Dataset, load_dataset
from noisecli.data.batches import Batches
from noisecli.display import Display, TrainDisplay
from noisecli.distributed import World, rank_seed
from noisecli.errors import BadInput, Interrupted, NoisecliError, RunError, SpecError
from noisecli.models import build_model
from noisecli.noise import NoiseContext, build_noises
from noisecli.runs import CHECKPOINT_FORMAT, FollowerRunFolder, RunFolder, first_line
from noisecli.signals import StopRequest
from noisecli.trackers import Tracker, open_tracker
from noisecli.spec import Spec, TrainSpec, spec_to_dict



def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device: {name!r} asked for, but this torch sees no CUDA device; use device=cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device: {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError("device: 'mps' asked for, but MPS is not available here; use device=cpu")
    return torch.device(name)


def lr_at(t: TrainSpec, step: int, total_steps: int) -> float:
    """Linear warmup (nanoGPT's), then constant, cosine or linear decay to min_lr at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / (t.warmup_steps + 1)
    if t.lr_schedule == "constant":
        return t.lr
    progress = min(1.0, (step - t.warmup_steps) / max(1, total_steps - t.warmup_steps))
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress)) if t.lr_schedule == "cosine" else 1.0 - progress
    return t.min_lr + coeff * (t.lr - t.min_lr)


def loss_fn(out: torch.Tensor, y: torch.Tensor, task: str, reduction: str = "mean") -> torch.Tensor:
    out = out.float()
    if task == "regression":
        return F.mse_loss(out, y, reduction=reduction)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction=reduction)


class Trainer:
    def __init__(self, spec: Spec, runs_dir: Path | str = "runs", quiet: bool = False,
                 display: Display | None = None, stop: StopRequest | None = None, world: World | None = None):
        self.spec = spec
        self.world = world or World()
        self.run = (RunFolder if self.world.main else FollowerRunFolder)(Path(runs_dir) / spec.name)
        self.stop = stop or StopRequest()
        self.display = display or TrainDisplay(quiet=quiet or not self.world.main, stop=self.stop)
        self.tracker: Tracker = Tracker()  # `none` until a run is opened
        self.step_losses: list[torch.Tensor] | None = None
        self._locked = False

    # ------------------------------------------------------------------ setup (writes nothing)

    def setup(self) -> "Trainer":
        spec, t = self.spec, self.spec.train
        self.device = self.world.device_for(resolve_device(spec.device))
        if t.batch_size % self.world.size:
            raise SpecError(f"train.batch_size: {t.batch_size} does not split among {self.world.size} processes; "
                            f"use a multiple of {self.world.size} (it is the global batch, shared by the ranks)")
        if t.precision == "fp16" and self.device.type != "cuda":
            raise SpecError(f"train.precision: fp16 needs a CUDA device (device is {self.device.type}); "
                            "use fp32 or bf16")
        precision = t.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.precision = precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype else nullcontext()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")

        torch.manual_seed(spec.seed)
        self.data: Dataset = load_dataset(spec.data).to(self.device)
        self.batches = Batches(self.data, t.batch_size, spec.seed, t.eval_batches, self.device)
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.total_steps = t.epochs * self.steps_per_epoch
        if t.max_steps is not None:
            self.total_steps = min(self.total_steps, t.max_steps)
        self.eval_every = t.eval_every or self.steps_per_epoch

        self.raw_model = build_model(spec.model, self.data).to(self.device)
        self.model = self.eval_model = torch.compile(self.raw_model) if t.compile else self.raw_model
        self.params = [p for p in self.raw_model.parameters() if p.requires_grad]
        # nanoGPT's split: matrices and embeddings decay, biases and norm gains do not
        decay = [p for p in self.params if p.dim() >= 2]
        no_decay = [p for p in self.params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        fast = {"fused": True} if self.device.type == "cuda" else {"foreach": True}
        self.optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), **fast)
        self.clip = t.grad_clip if t.grad_clip > 0 else math.inf

        self.noise_ctx = NoiseContext(self.raw_model, self.data, self.total_steps, self.device, spec.seed,
                                      self.world)
        self.noises = build_noises(spec.noise, self.noise_ctx)
        self.step = 0
        self.rows: list[dict[str, Any]] = []
        self.best_val = math.inf
        self.elapsed = 0.0
        self._reset_interval()
        if self.world.distributed:  # everything above could refuse the spec; from here the ranks talk
            self._start_ddp()
        return self

    def _start_ddp(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        self.world.start(self.device)
        ddp = DistributedDataParallel(self.raw_model, device_ids=[self.device.index] if self.device.type == "cuda"
                                      else None)
        self.model = torch.compile(ddp) if self.spec.train.compile else ddp
        # evaluation runs the plain model: ranks see different numbers of eval batches, and
        # DDP's forward would try to broadcast buffers on each of them
        self.eval_model = self.raw_model
        self._reseed_rank_streams()

    def _reseed_rank_streams(self) -> None:
        """Dropout masks and per-rank noise differ between ranks (identical masks on every rank
        hurt accuracy: transformers issue 31412); rank 0 keeps the stream of a single process."""
        if not self.world.rank:
            return
        torch.manual_seed(rank_seed(self.spec.seed, self.world.rank, self.step))
        for i, noise in enumerate(self.noises):
            if noise.per_rank:
                noise.generator.manual_seed(rank_seed(self.spec.seed, self.world.rank, self.step, stream=i + 1))

    def describe(self) -> str:
        """One line saying what is about to be trained, so a wrong setting shows before the run does."""
        d, spec = self.data, self.spec
        if d.is_stream:
            sizes = (f"{d.x_train.numel():,} train / {d.x_val.numel():,} val tokens, vocab {d.n_outputs}, "
                     f"context {d.block_size}")
        elif d.is_tokens:
            sizes = (f"{d.x_train.shape[0]:,} train / {d.x_val.shape[0]:,} val examples padded to "
                     f"{d.block_size} tokens, vocab {d.n_outputs}, loss on response tokens")
        else:
            sizes = f"{d.x_train.shape[0]:,} train / {d.x_val.shape[0]:,} val examples, {d.task}"
        return (f"{self.run.name}: {d.name} ({sizes}); {spec.model.kind} "
                f"({sum(p.numel() for p in self.params):,} parameters); noise {spec.noise_label}; "
                f"{self.device.type} {self.precision}"
                f"{f' x {self.world.size} processes' if self.world.distributed else ''}; {self.total_steps:,} steps")

    def _reset_interval(self) -> None:
        self.sum_loss = torch.zeros((), device=self.device)
        self.sum_gn = torch.zeros((), device=self.device)
        self.skipped = torch.zeros((), device=self.device)  # steps a GradScaler skipped (inf/nan gradients)
        self.interval_steps = 0

    # ------------------------------------------------------------------ the run folder

    def open_run(self, restart: bool = False) -> str:
        """Claim the run folder: 'fresh', 'resume' (state loaded) or 'completed'. With several
        processes rank 0 claims and tells the others, which then read the same checkpoint."""
        if self.world.main:
            try:
                outcome, status, state = self._claim(restart)
            except BadInput as e:
                self.world.broadcast(("refused", e.problems))
                raise
            self.world.broadcast((outcome, None))
        else:
            outcome, problems = self.world.broadcast(None)
            if outcome == "refused":
                raise BadInput(problems)  # rank 0 says it; the others leave quietly
            status, state = {}, self.run.load_checkpoint() if outcome == "resume" else None
        if outcome == "completed":
            return outcome
        self.step_losses = [] if self.spec.output.tracker != "none" else None  # kept on the device
        if state is not None:
            self._load_state(state)
            self._reseed_rank_streams()
        self.run.write_metrics(self.rows)  # rows past the checkpoint (a crash after writing them) are dropped
        self.run.write_status(state="running", starts=status.get("starts", 0) + 1, step=self.step,
                              epoch=self.epoch, error=None, total_steps=self.total_steps,
                              steps_per_epoch=self.steps_per_epoch,
                              best_val_loss=None if math.isinf(self.best_val) else self.best_val,
                              dataset=self.data.info, device=str(self.device), precision=self.precision)
        return outcome

    def _claim(self, restart: bool) -> tuple[str, dict, dict | None]:
        outcome, status, state = self.run.claim(spec_to_dict(self.spec), restart, self.display, self.total_steps)
        self._locked = True
        if outcome == "completed":
            return outcome, status, state
        try:
            self.tracker = open_tracker(self.spec.output.tracker, self.run.path, spec_to_dict(self.spec))
        except SpecError:
            self._locked = False
            self.run.undo_claim()  # what this call wrote goes; an earlier attempt's files stay
            raise
        return outcome, status, state

    def close(self) -> None:
        self.tracker.close()
        self.tracker = Tracker()
        if self._locked:
            self.run.release_lock()
            self._locked = False

    # ------------------------------------------------------------------ state

    def save_checkpoint(self, *names: str) -> None:
        """The one way a checkpoint is written (last.pt by default, and any other names given).

        The model in it is the one evaluation sees: a kind that keeps a perturbation in the
        weights between steps (anticorrelated) takes it out first and puts it back after,
        and its state dict holds what exact resume needs to put it back on load.
        """
        for noise in self.noises:
            noise.before_eval()
        try:
            state = self._state()
            for name in names or ("last.pt",):
                self.run.save_checkpoint(state, name)
        finally:
            for noise in self.noises:
                noise.after_eval()

    def _state(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state(), "batches": self.batches.state_dict(),
               "noise": [n.state_dict() for n in self.noises]}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: _own(v) for k, v in self.raw_model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "rng": rng,
            "interval": {"loss": self.sum_loss, "grad_norm": self.sum_gn, "steps": self.interval_steps,
                         "skipped": self.skipped,
                         # a tracker's per-step losses not sent yet (an interruption between evaluations)
                         "step_losses": torch.stack(self.step_losses).cpu() if self.step_losses else None},
            "rows": self.rows,
            "best_val_loss": self.best_val,
            "elapsed": self.elapsed,
            "spec": spec_to_dict(self.spec),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.batches.load_state_dict(state["rng"]["batches"])
        for noise, s in zip(self.noises, state["rng"]["noise"]):
            noise.load_state_dict(s)
        self.sum_loss = state["interval"]["loss"].to(self.device)
        self.sum_gn = state["interval"]["grad_norm"].to(self.device)
        self.interval_steps = state["interval"]["steps"]
        if "skipped" in state["interval"]:
            self.skipped = state["interval"]["skipped"].to(self.device)
        pending = state["interval"].get("step_losses")
        if self.step_losses is not None and pending is not None:
            self.step_losses = list(pending.to(self.device).unbind())
        self.rows = list(state["rows"])
        self.best_val = state["best_val_loss"]
        self.elapsed = state["elapsed"]

    @property
    def epoch(self) -> int:
        return math.ceil(self.step / self.steps_per_epoch)

    # ------------------------------------------------------------------ training

    def train_step(self) -> tuple[float, list[float]]:
        """One optimizer step with every noise hook in place; no host sync."""
        t, opt, step = self.spec.train, self.optimizer, self.step
        lr = lr_at(t, step, self.total_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        factors = [noise.factor(step) for noise in self.noises]

        x, y = self.batches.next()  # the global batch, and its input noise, on every rank
        for noise, f in zip(self.noises, factors):
            x = noise.transform_input(x, f, y)
        if self.world.distributed:
            targets = (y != IGNORE).sum() if self.data.task == "sft" else y.numel()
            self.noise_ctx.global_batch = x.shape[0]
            x, y = self.world.share(x), self.world.share(y)
        for noise, f in zip(self.noises, factors):
            noise.before_forward(f)
        with self.autocast:
            out = self.model(x)
            if self.world.distributed:  # DDP averages over ranks: the mean over the global batch's targets
                loss = loss_fn(out, y, self.data.task, reduction="sum") * (self.world.size / targets)
            else:
                loss = loss_fn(out, y, self.data.task)  # against clean targets
        self.scaler.scale(loss).backward()
        for noise, f in zip(self.noises, factors):
            noise.after_backward(f)
        self.scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        for noise, f in zip(self.noises, factors):
            noise.on_gradients(f)
        self.scaler.step(opt)
        self.scaler.update()
        opt.zero_grad(set_to_none=True)
        for noise, f in zip(self.noises, factors):
            noise.after_step(f)

        self.sum_loss += loss.detach()
        if self.step_losses is not None:  # for a tracker: sent at the next evaluation, no sync here
            self.step_losses.append(loss.detach())
        if self.scaler.is_enabled():
            # an overflowed step is skipped by the scaler by design; its inf norm says nothing of
            # divergence, so it is counted (on the device) and left out of the interval's norm
            finite = torch.isfinite(grad_norm)
            self.skipped += ~finite
            grad_norm = torch.where(finite, grad_norm, 0.0)
        self.sum_gn += grad_norm.detach()
        self.interval_steps += 1
        self.step += 1
        return lr, factors

    def train(self) -> dict[str, Any]:
        """Train to the end (or to a stop request), then mark the run completed."""
        for noise in self.noises:
            noise.attach(self.raw_model)
        self.model.train()
        try:  # torchrun passes a terminal's Ctrl-C on as a second SIGINT: not a "stop now"
            with self.stop.catching(second_sigint_stops_now=not self.world.distributed):
                self._loop()
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
            for noise in self.noises:
                noise.detach()
        return self.finish()

    def failed(self, e: Exception) -> NoisecliError:
        """Record an unexpected failure (traceback in error.log, status failed); the error to raise.
        Bad input found only inside the loop stays bad input (exit 2), recorded all the same."""
        log = self.run.path / "error.log"
        msg = first_line(e, 200)
        if self.world.distributed and any(w in str(e) for w in ("gloo", "NCCL", "Connection", "peer")):
            msg = f"another process of this run stopped ({msg[:160]}); see torchrun's report"
        try:
            self.run.write_error_log(traceback.format_exc())
            self.run.write_status(state="failed", error=msg, step=self.step)
            where = f"traceback in {log}"
        except OSError as write_error:  # a full disk: say so; the status may still read `running`
            where = f"and it could not be recorded in the run folder: {write_error}"
        if isinstance(e, BadInput):
            return type(e)([f"{p} (run {self.run.name!r} stopped at step {self.step}; {where})" for p in e.problems])
        return RunError(f"run {self.run.name!r} failed at step {self.step}: {msg} ({where})")

    def finish(self) -> dict[str, Any]:
        """The run reached its last step: mark it completed and show the summary."""
        if self.spec.output.checkpoint == "none":
            self.run.drop_checkpoints()
        status = self.run.write_status(state="completed", step=self.step, epoch=self.epoch, error=None,
                                       best_val_loss=self.best_val)
        self.display.summary(self.rows, self.data.task == "classification", self.run.path)
        return status

    def save_interrupted(self) -> Interrupted:
        """A stop was asked for: save where we are; the error to raise."""
        self.save_checkpoint()
        self.run.write_status(state="interrupted", step=self.step, epoch=self.epoch)
        return Interrupted(self.stop.signum or signal.SIGTERM, f"state saved at step {self.step} of "
                           f"{self.total_steps} in {self.run.path}; run the same command to resume")

    def _loop(self) -> None:
        """step, evaluate every eval_every steps and at the end, checkpoint at each evaluation;
        on a stop request, save where we are and raise Interrupted."""
        with self.display.progress(self.total_steps, self.step, self.run.name) as bar:
            tick = time.perf_counter()
            stopping = False
            while self.step < self.total_steps:
                if self.world.any(self.stop.requested):  # every rank stops after the same step
                    stopping = True
                    break
                lr, factors = self.train_step()
                bar.advance()
                if self.step % self.eval_every == 0 or self.step == self.total_steps:
                    row = self._evaluate(lr, factors, time.perf_counter() - tick)
                    bar.show(row)
                    tick = time.perf_counter()
            stopping = stopping or self.world.any(self.stop.requested)  # asked during the last step
            if stopping:
                self.elapsed += time.perf_counter() - tick
                raise self.save_interrupted()

    @torch.no_grad()
    def measure(self, split: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Summed loss, correct predictions and the number of targets over a split, noise off
        (eval mode), all on the device. Padded examples count their response tokens only.
        With several processes each rank measures its share of every batch (summed in _evaluate)."""
        total = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        count = torch.zeros((), device=self.device)
        for x, y in self.batches.eval_batches(split):
            x, y = self.world.share(x), self.world.share(y)
            with self.autocast:
                out = self.eval_model(x)
            total += loss_fn(out, y, self.data.task, reduction="sum")  # IGNORE targets add nothing
            if self.data.task == "classification":
                correct += (out.argmax(-1) == y).sum()
            count += (y != IGNORE).sum() if self.data.task == "sft" else y.numel()
        return total, correct, count

    def _evaluate(self, lr: float, factors: list[float], seconds: float) -> dict[str, Any]:
        self.model.eval()
        for noise in self.noises:
            noise.before_eval()
        val = self.measure("val")
        train = self.measure("train")
        for noise in self.noises:
            noise.after_eval()
        self.model.train()
        return self.record(lr, factors, seconds, val, train)

    def record(self, lr: float, factors: list[float], seconds: float, val: tuple, train: tuple) -> dict[str, Any]:
        """An evaluation's row from the interval's sums and `measure`'s (loss sum, correct, count) for
        val and train: logged, checked for divergence, checkpointed. (Batched sweeps measure many
        members at once and hand each its numbers here.)"""
        (val_sum, val_correct, n_val), (train_sum, _, n_train) = val, train
        # one sum over ranks and one host sync for everything this interval accumulated; each
        # rank's loss is W x its share of the global mean, the grad norm the same on every rank
        W = self.world.size
        steps = torch.stack(self.step_losses) if self.step_losses else torch.zeros(0, device=self.device)
        n = self.interval_steps
        stepped = (n - self.skipped).clamp(min=1)  # the grad norm is the mean over steps the optimizer took
        totals = self.world.sum(torch.cat([torch.stack([self.sum_loss / n / W, self.sum_gn / stepped / W, val_sum,
                                                        val_correct, train_sum, n_val, n_train,
                                                        self.skipped / W]), steps.float()]))
        train_loss, grad_norm, val_sum, val_correct, train_sum, n_val, n_train, skipped = totals[:8].tolist()
        step_losses = (totals[8:] / W).tolist()
        self.elapsed += seconds
        row: dict[str, Any] = {
            "epoch": self.epoch, "step": self.step,
            "train_loss": train_loss, "clean_train_loss": train_sum / n_train, "val_loss": val_sum / n_val,
        }
        if self.data.task == "classification":
            row["val_acc"] = val_correct / n_val
        row.update(lr=lr, noise_factor=factors[0])
        if len(self.noises) > 1:  # a list of kinds: each one's own factor, as its schedule has it now
            row.update({f"noise_factor_{n.kind}": f for n, f in zip(self.spec.noise, factors)})
        row.update(grad_norm=grad_norm)
        if self.scaler.is_enabled():
            row.update(skipped_steps=round(skipped))
        row.update(
                   samples_per_s=self.interval_steps * self.spec.train.batch_size / max(seconds, 1e-9),
                   seconds=self.elapsed)
        self.rows.append(row)
        self._reset_interval()
        if self.step_losses:
            self.tracker.log_steps(self.step - len(self.step_losses), step_losses)
            self.step_losses = []
        self.tracker.log_eval(row)

        if not all(math.isfinite(row[k]) for k in ("train_loss", "clean_train_loss", "val_loss", "grad_norm")):
            self.run.write_metrics(self.rows)  # the bad row is shown; last.pt stays the last good state
            error = (f"non-finite loss or gradient by step {self.step} (train_loss={row['train_loss']}, "
                     f"val_loss={row['val_loss']}, grad_norm={row['grad_norm']}); lower train.lr or the "
                     "noise factor")
            self.run.write_status(state="diverged", step=self.step, epoch=self.epoch, error=error)
            raise RunError(f"run {self.run.name!r} diverged: {error}")

        improved = row["val_loss"] < self.best_val
        self.best_val = min(self.best_val, row["val_loss"])
        policy = self.spec.output.checkpoint
        self.save_checkpoint("last.pt", *(["best.pt"] if policy == "best" and improved else []),
                             *([f"step_{self.step:07d}.pt"] if policy == "every" else []))
        self.run.write_metrics(self.rows)
        self.run.write_status(state="running", step=self.step, epoch=self.epoch, best_val_loss=self.best_val,
                              val_loss=row["val_loss"])
        return row


def _own(t: torch.Tensor) -> torch.Tensor:
    """A tensor that is a view into a larger one (a batched sweep's member) is copied, since
    torch.save would write the whole storage it views; any other tensor is saved as it is."""
    if t.untyped_storage().nbytes() != t.numel() * t.element_size():
        return t.detach().clone()
    return t


def train_run(spec: Spec, runs_dir: Path | str, quiet: bool = False, restart: bool = False) -> dict[str, Any] | None:
    """`noisecli train`: build, claim the run folder, say what is trained, train (or resume);
    a completed run is left as it is. Returns the final status, or None if there was nothing to do."""
    world = World.from_env()  # several processes under torchrun
    trainer = Trainer(spec, runs_dir, quiet=quiet, world=world).setup()
    try:
        outcome = trainer.open_run(restart=restart)
        if outcome == "completed":
            trainer.display.note(f"run {spec.name!r} is already completed ({trainer.run.path}); "
                                 "nothing to do. Use --restart to train it again.")
            return None
        trainer.display.note(trainer.describe())
        if outcome == "resume":
            trainer.display.note(f"resuming {spec.name!r} from step {trainer.step} of {trainer.total_steps}")
        return trainer.train()
    finally:
        trainer.close()
        world.stop()
