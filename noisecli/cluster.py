"""`sweep --backend submitit`: a sweep's pending points as one job array, through submitit
(Slurm, or submitit's `local` and `debug` executors to try the same path on one machine).

Each array task trains one point through `points.train_point`, the path `train` and the
local backend use, so skip, lock, resume and changed-spec rules are the same everywhere.
Preemption and time limits: submitit sends the job its preemption signal (SIGUSR2) ahead of
the end; the point then finishes its step, saves like a Ctrl-C, and only then asks
submitit to requeue it (`PointJob.checkpoint`); the requeued task resumes from that save.
The job ids go to <sweep>/jobs.json, which `sweep --status` reads.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from noisecli.errors import Interrupted, SpecError
from noisecli.jobs import read_jobs
from noisecli.points import Outcome, train_point
from noisecli.runs import RunFolder
from noisecli.signals import StopRequest
from noisecli.spec import spec_from_dict, spec_to_dict

CLUSTERS = ("slurm", "local", "debug")


@dataclass
class ClusterOptions:
    cluster: str = "slurm"
    partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int | None = None
    time_limit: int = 60  # minutes, per job (a requeued job gets as long again)
    array_parallelism: int | None = None
    slurm: dict[str, str] = field(default_factory=dict)  # extra Slurm parameters (--slurm KEY=VALUE)
    wait: bool = True

    def executor_parameters(self, name: str) -> dict[str, Any]:
        params: dict[str, Any] = {"name": f"noisecli-{name}", "timeout_min": self.time_limit,
                                  "gpus_per_node": self.gpus_per_job, "tasks_per_node": 1, "nodes": 1}
        if self.cpus_per_job:
            params["cpus_per_task"] = self.cpus_per_job
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.array_parallelism:
            params["slurm_array_parallelism"] = self.array_parallelism
        if self.slurm:
            params["slurm_additional_parameters"] = dict(self.slurm)
        return params


def cluster_options(backend: str, cluster: str | None, partition: str | None, gpus: int | None,
                    cpus: int | None, time_limit: int | None, parallelism: int | None, slurm: list[str] | None,
                    no_wait: bool, jobs: int, devices: str | None) -> ClusterOptions | None:
    """The submitit options from the command line, or None for the local backend; every
    option that does not fit the backend is named."""
    given = {"--cluster": cluster, "--partition": partition, "--gpus-per-job": gpus, "--cpus-per-job": cpus,
             "--time-limit": time_limit, "--array-parallelism": parallelism, "--slurm": slurm or None,
             "--no-wait": no_wait or None}
    if backend == "local":
        wrong = [k for k, v in given.items() if v is not None]
        if wrong:
            raise SpecError(f"{', '.join(wrong)}: only with --backend submitit")
        return None
    if backend != "submitit":
        raise SpecError(f"--backend: {backend!r} is not one of local, submitit")
    if jobs != 1 or devices:
        raise SpecError("--jobs/--devices: the cluster places the points with --backend submitit; "
                        "ask for GPUs with --gpus-per-job")
    if cluster is not None and cluster not in CLUSTERS:
        raise SpecError(f"--cluster: {cluster!r} is not one of {', '.join(CLUSTERS)}")
    extra = {}
    for item in slurm or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise SpecError(f"--slurm: {item!r} is not KEY=VALUE (e.g. --slurm qos=high)")
        extra[key.strip().replace("-", "_")] = value
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise SpecError("--backend submitit: submitit is not installed; pip install 'noisecli[cluster]'") from None
    if (cluster or "slurm") == "slurm" and shutil.which("srun") is None:
        raise SpecError("--cluster slurm: no Slurm on this machine (srun is not on PATH); submit from a login "
                        "node, or try the same path here with --cluster local")
    return ClusterOptions(cluster or "slurm", partition, gpus or 0, cpus, time_limit or 60, parallelism, extra,
                          wait=not no_wait)


class PointJob:
    """What an array task runs (pickled by submitit): one point, trained through `train_point`."""

    def __init__(self, runs_dir: str):
        self.runs_dir = runs_dir

    def __call__(self, payload: dict) -> dict:
        import submitit

        stop = StopRequest()
        preempt = submitit.JobEnvironment._usr_sig()  # the signal submitit's scheduler sends ahead of the end
        requeue = signal.getsignal(preempt)  # submitit's: checkpoint() below, then requeue and exit
        signal.signal(preempt, lambda signum, frame: stop.request(signum))
        outcome = train_point(spec_from_dict(payload), Path(self.runs_dir), lambda *a: None, stop)
        if outcome.state == "interrupted" and stop.signum == preempt and callable(requeue):
            requeue(preempt, None)  # saved already: requeue (exits this process)
        return outcome.__dict__

    def checkpoint(self, payload: dict):
        """submitit asks what to run after a requeue: the same point, which resumes from its save."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(PointJob(self.runs_dir), payload)


def submit(points: list, sweep_dir: Path, plan_name: str, options: ClusterOptions) -> list:
    """Submit the points as one job array; the job ids are written to <sweep>/jobs.json."""
    import submitit

    from noisecli.runs import atomic_write  # at call time: tests replace it to fill the disk

    executor = submitit.AutoExecutor(folder=sweep_dir / ".submitit", cluster=options.cluster)
    executor.update_parameters(**options.executor_parameters(plan_name))
    payloads = [spec_to_dict(p.spec) for p in points]
    jobs = executor.map_array(PointJob(str(sweep_dir)), payloads)
    known = read_jobs(sweep_dir)
    known.update({p.name: {"job_id": str(j.job_id), "cluster": options.cluster, "submitted": time.time()}
                  for p, j in zip(points, jobs)})
    atomic_write(sweep_dir / "jobs.json", json.dumps(known, indent=2) + "\n")
    return jobs


class ClusterRunner:
    """Waits for a submitted array like `sweep_run.SweepRunner` runs points: the same display
    and the same outcomes. Progress is read from the points' status files (the runs folder
    is shared with the jobs). A Ctrl-C stops the waiting, not the jobs."""

    def __init__(self, points: list, sweep_dir: Path, display, options: ClusterOptions, plan_name: str, stop):
        self.points, self.sweep_dir, self.display = points, sweep_dir, display
        self.options, self.plan_name, self.stop = options, plan_name, stop
        self.outcomes: list = []

    def run(self) -> list:
        if not self.points:
            return self.outcomes
        jobs = submit(self.points, self.sweep_dir, self.plan_name, self.options)
        waiting = dict(zip((p.name for p in self.points), jobs))
        started: set[str] = set()
        with self.stop.catching(second_sigint_stops_now=False):
            while waiting and not self.stop.requested:
                for name, job in list(waiting.items()):
                    status = RunFolder(self.sweep_dir / name).read_status_quiet()
                    if name not in started and (status.get("state") == "running" or job.done()):
                        started.add(name)
                        self.display.started(name)
                    if status.get("total_steps"):
                        self.display.progress(name, status.get("step", 0), status["total_steps"])
                    if job.done():
                        del waiting[name]
                        self.outcomes.append(self._outcome(name, job))
                        self.display.finished(self.outcomes[-1])
                time.sleep(0.5)
        if self.stop.requested:
            ids = ", ".join(sorted({str(j.job_id).split("_")[0] for j in waiting.values()}))
            raise Interrupted(self.stop.signum, f"stopped waiting; {len(waiting)} points keep running as jobs "
                              f"({ids}); the same command with --status shows them; once they are done, "
                              "`noisecli report` reads them")
        return self.outcomes

    @staticmethod
    def _outcome(name: str, job) -> Outcome:
        try:
            result = job.result()
        except Exception as e:  # noqa: BLE001 - the job failed outside train_point (killed, out of memory)
            first = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
            return Outcome(name, "failed", f"job {job.job_id}: {first[-1][:200] if first else type(e).__name__} "
                           f"(log: {job_log(job)})")
        outcome = Outcome(**result)
        if outcome.state == "failed":  # what the point printed around its failure is in the job's log
            outcome.message = f"{outcome.message} (job log: {job_log(job)})"
        return outcome


def job_log(job) -> Path:
    """The job's submitit log of stderr (its traceback, if it died), or of stdout where that is the
    one it wrote."""
    err, out = Path(job.paths.stderr), Path(job.paths.stdout)
    return out if not err.exists() and out.exists() else err
