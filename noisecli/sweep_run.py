"""Running a sweep's points: one after another in this process, or in worker processes.

Each point goes through the same path as `noisecli train` (setup, open_run under the
run's lock, train), so skip, resume and refusal behave exactly as they do for one run.
Workers start their own process group: a Ctrl-C reaches the parent alone, which passes
exactly one SIGINT on to each worker, so every running point saves before it stops.
"""

from __future__ import annotations

import os
import queue
import signal
from pathlib import Path
from typing import Callable

from noisecli.cluster import ClusterRunner, submit
from noisecli.display import SweepDisplay
from noisecli.errors import Interrupted, RunError, SpecError
from noisecli.points import Outcome, train_point
from noisecli.runs import RunFolder
from noisecli.signals import StopRequest
from noisecli.spec import Spec, spec_from_dict, spec_to_dict
from noisecli.sweep import check_existing, form_groups
from noisecli.validate import stack_refusal

FAILED = ("failed", "diverged")


def train_points(specs: list[Spec], runs_dir: Path, report: Callable[[str, int, int], None],
                 stop: StopRequest | None = None, threads: int | None = None) -> list[Outcome]:
    """One point as `train` trains it, or a group of points as one stack (`sweep --batched`);
    `threads`: see `point_threads`."""
    if len(specs) == 1:
        return [train_point(specs[0], runs_dir, report, stop, threads)]
    from noisecli.batched import train_group  # torch (batched imports it at its top)

    return train_group(specs, runs_dir, report, stop, threads)


def worker_threads(jobs: int, planned: int) -> int:
    """Each worker's share of the cores (N workers x all cores each oversubscribes the CPU and
    makes the sweep many times slower than running the points in turn). A function of the
    command and the plan (`planned`: the groups of the points this command was given, done or
    not), never of how many happen to be left, so a rerun trains a point as the first run did."""
    return max(1, (os.cpu_count() or 1) // max(1, min(jobs, planned)))


def _worker(payload: list[list[dict]], runs_dir: str, device: str | None, threads: int, tasks, results,
            progress) -> None:
    os.setpgrp()  # terminal signals go to the parent, which forwards one to each worker
    import torch

    torch.set_num_threads(threads)
    try:
        while True:
            index = tasks.get()
            if index is None:
                return
            specs = [spec_from_dict(d) for d in payload[index]]
            for spec in specs:
                if device:
                    spec.device = device
                results.put(("start", spec.name, None))
            try:
                outcomes = train_points(specs, Path(runs_dir), lambda n, d, t: progress.put((n, d, t)),
                                        threads=threads)
            except Exception as e:  # noqa: BLE001 - said for each point, not a worker dying without a word
                why = f"{type(e).__name__}: {next(iter(str(e).splitlines()), '')[:200]}"
                outcomes = [Outcome(spec.name, "failed", why) for spec in specs]
            for outcome in outcomes:
                results.put(("done", outcome.name, outcome))
            if any(o.state == "interrupted" for o in outcomes):
                return
    except KeyboardInterrupt:
        return


class SweepRunner:
    """Runs the points; a signal, or stdout's reader going away (`noisecli sweep ... | head`),
    arrives as a request on `stop` (shared with the display) and stops the sweep the same way:
    running points save, the rest wait for the next run."""

    def __init__(self, points: list, runs_dir: Path, display, jobs: int = 1, devices: list[str] | None = None,
                 fail_fast: bool = False, stop: StopRequest | None = None, groups: list[list] | None = None,
                 planned: int | None = None):
        self.points, self.runs_dir, self.display = points, runs_dir, display
        self.groups = groups or [[p] for p in points]  # each group trains as one (sweep --batched)
        self.planned = planned or len(self.groups)  # groups in the plan, done ones too (worker_threads)
        self.devices = devices or []
        self.jobs = max(jobs, len(self.devices) or 1)
        self.fail_fast = fail_fast
        self.stop = stop or StopRequest()
        self.fail_fast_stopped = False
        self.outcomes: list[Outcome] = []

    def run(self) -> list[Outcome]:
        if not self.points:
            return self.outcomes
        with self.stop.catching(second_sigint_stops_now=False):
            if self.jobs == 1 and not self.devices:
                self._run_here()
            else:
                self._run_workers()
        if self.stop.requested or any(o.state == "interrupted" for o in self.outcomes):
            raise Interrupted(self.stop.signum or signal.SIGINT,
                              "sweep stopped; running points saved their state. Run the same command "
                              "again to resume")
        return self.outcomes

    def _finish(self, outcome: Outcome) -> bool:
        """Record an outcome; True when the sweep should stop (fail-fast)."""
        self.outcomes.append(outcome)
        self.display.finished(outcome)
        return self.fail_fast and outcome.state in FAILED

    def _run_here(self) -> None:
        for group in self.groups:
            if self.stop.requested:
                return
            for point in group:
                self.display.started(point.name)
            outcomes = train_points([p.spec for p in group], self.runs_dir, self.display.progress, self.stop)
            stop = [self._finish(o) for o in outcomes]
            if any(stop) or any(o.state == "interrupted" for o in outcomes):
                return

    def _run_workers(self) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # torch and fork do not mix
        tasks, results, progress = ctx.Queue(), ctx.Queue(), ctx.Queue()
        workers = self._start_workers(ctx, tasks, results, progress)
        try:
            self._follow(workers, results, progress)
        finally:
            for proc in workers:
                proc.join(timeout=120)
                if proc.is_alive():
                    proc.kill()
        self._account_for_the_rest()

    def _start_workers(self, ctx, tasks, results, progress) -> list:
        payload = [[spec_to_dict(p.spec) for p in group] for group in self.groups]
        for i in range(len(self.groups)):
            tasks.put(i)
        n_workers = min(self.jobs, len(self.groups))
        threads = worker_threads(self.jobs, self.planned)
        workers = []
        for w in range(n_workers):
            device = self.devices[w % len(self.devices)] if self.devices else None
            workers.append(ctx.Process(target=_worker, args=(payload, str(self.runs_dir), device, threads, tasks,
                                                             results, progress), daemon=False))
            tasks.put(None)  # one stop marker per worker, after the points
        for proc in workers:
            proc.start()
        return workers

    def _signal_workers(self, workers: list, signum: int) -> None:
        for proc in workers:
            if proc.is_alive():
                os.kill(proc.pid, signum)

    def _follow(self, workers: list, results, progress) -> None:
        """Show the workers' progress and record their outcomes until every point is reported
        or every worker is gone; pass a stop request on to them once."""
        forwarded = False
        pending = len(self.points)
        while (pending and any(p.is_alive() for p in workers)) or not results.empty():
            if self.stop.requested and not forwarded:
                forwarded = True
                # workers save on SIGINT and SIGTERM; Python ignores SIGPIPE, so that one is sent as SIGTERM
                self._signal_workers(workers, signal.SIGTERM if self.stop.signum == signal.SIGPIPE
                                     else self.stop.signum)
            while True:
                try:
                    name, done, total = progress.get_nowait()
                except queue.Empty:
                    break
                self.display.progress(name, done, total)
            try:
                kind, name, outcome = results.get(timeout=0.2)
            except queue.Empty:
                continue
            if kind == "start":
                self.display.started(name)
                continue
            pending -= 1
            if self._finish(outcome) and not forwarded:
                forwarded = True  # fail-fast: the others save and stop
                self.stop.clear()
                self._signal_workers(workers, signal.SIGTERM)
                self.fail_fast_stopped = True

    def _account_for_the_rest(self) -> None:
        reported = {o.name for o in self.outcomes}
        if not self.stop.requested and not self.fail_fast_stopped:
            for p in self.points:  # a worker that died without a word (killed, out of memory)
                if p.name not in reported:
                    self._finish(Outcome(p.name, "failed", "its worker process died; run the sweep again"))
        if self.fail_fast_stopped:  # points stopped by --fail-fast are not an interruption of the sweep
            self.outcomes = [o for o in self.outcomes if o.state != "interrupted"] + \
                            [Outcome(o.name, "stopped", "stopped by --fail-fast; resumes on the next run")
                             for o in self.outcomes if o.state == "interrupted"]

def run_sweep(plan, points: list, sweep_dir: Path, jobs: int, devices: list[str], fail_fast: bool,
              quiet: bool, cluster=None, max_batch: int | None = None) -> list[Outcome]:
    """Run a sweep's points under `sweep_dir` with its screen; RunError if any point failed.

    A point folder trained with other settings is refused before anything runs; the plan is
    written to sweep.json. With `cluster` (cluster.ClusterOptions) the pending points are
    submitted as a job array instead, and waited for unless `cluster.wait` is off. With
    `max_batch`, points that differ only in noise factor and seed train as stacks of at most
    that many (`sweep --batched`)."""
    import json

    check_existing(plan, sweep_dir)
    if devices:  # a device that is not here is bad input, said before anything runs
        from noisecli.engine.device import resolve_device  # torch: only to check --devices

        for device in devices:
            try:
                resolve_device(device)
            except SpecError as e:
                raise SpecError(f"--devices: {e.problems[0].removeprefix('device: ')}") from None
    _write_plan(sweep_dir, json.dumps(plan.to_dict(), indent=2, default=str) + "\n")
    done = [_completed(p, sweep_dir) for p in points]  # known without a worker, a device or torch
    skipped = [o for o in done if o is not None]
    pending = [p for p, o in zip(points, done) if o is None]
    if cluster is not None and not cluster.wait:
        return _submit_only(plan, pending, skipped, sweep_dir, cluster, quiet)
    stop = StopRequest()
    display = SweepDisplay(plan.name, len(points), quiet, stop=stop)
    if cluster is not None:
        runner = ClusterRunner(pending, sweep_dir, display, cluster, plan.name, stop)
    else:
        groups, planned = None, len(points)
        if max_batch:
            groups, notes = form_groups(pending, max_batch, stack_refusal)
            for note in notes:
                display.note(note)
            planned = len(form_groups(points, max_batch, stack_refusal)[0])
        runner = SweepRunner(pending, sweep_dir, display, jobs, devices, fail_fast, stop, groups, planned)
    with display:
        for outcome in skipped:
            display.finished(outcome)
        outcomes = skipped + runner.run()
    display.summary(outcomes, sweep_dir)
    failed = [o for o in outcomes if o.state in FAILED]
    if failed:
        raise RunError(f"{len(failed)} of {len(points)} points failed: {', '.join(o.name for o in failed[:5])}"
                       f"{', ...' if len(failed) > 5 else ''}")
    return outcomes


def _write_plan(sweep_dir: Path, text: str) -> None:
    """The sweep's folder and its sweep.json, before any point runs. A runs folder that is a
    file, read-only or full is bad input said in one line (exit 2), as `train` says it, and
    leaves nothing behind: the folders this made are removed again."""
    from noisecli.runs import atomic_write  # at call time: tests replace it to fill the disk

    made = [p for p in (sweep_dir, *sweep_dir.parents) if not p.exists()]  # innermost first
    what, path = "create", sweep_dir
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        what, path = "write", sweep_dir / "sweep.json"
        atomic_write(path, text)
    except OSError as e:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                pass
        raise SpecError(f"--runs-dir: cannot {what} {e.filename or path}: {e.strerror or e}") from None


def _submit_only(plan, pending: list, skipped: list[Outcome], sweep_dir: Path, cluster, quiet: bool) -> list[Outcome]:
    """--no-wait: submit, say the job ids and how to follow them, return."""
    jobs = submit(pending, sweep_dir, plan.name, cluster) if pending else []
    if not quiet:
        ids = sorted({str(j.job_id).split("_")[0] for j in jobs})
        print(f"sweep {plan.name}: {len(jobs)} points submitted to {cluster.cluster} as job "
              f"{', '.join(ids) or '-'} ({len(skipped)} already completed). Follow them: the same command with "
              f"--status in place of --no-wait; compare them: noisecli report {sweep_dir}", flush=True)
    return skipped


def _completed(point, sweep_dir: Path) -> Outcome | None:
    """A point whose run folder says it is completed (its settings were checked to match)."""
    status = RunFolder(sweep_dir / point.name).read_status_quiet()
    if status.get("state") != "completed":
        return None
    return Outcome(point.name, "skipped", "already completed", status.get("val_loss"), status.get("best_val_loss"))
