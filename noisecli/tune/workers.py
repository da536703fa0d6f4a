"""Where a tune's workers run: in this process, in N local processes sharing the storage
(their threads split the cores as sweep's workers do), or as N array tasks of a cluster job
(submitit), each pulling trials from the shared study until the budget is spent.

A Ctrl-C reaches this process alone (workers start their own process group); it passes one
SIGINT to each worker, which saves its trial and queues it again. On a cluster, the preemption
signal does the same before submitit requeues the task (as a sweep point's job does).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from noisecli.errors import Interrupted
from noisecli.signals import StopRequest
from noisecli.tune.spec import load_tune
from noisecli.tune.study import open_storage
from noisecli.tune.summary import snapshot, write_snapshot


@dataclass
class Payload:
    """What a worker process is given: enough to read the tune spec and open the storage again."""

    path: str
    trials: int | None
    storage: str
    tune_dir: str
    worker: int = 0
    threads: int | None = None
    device: str | None = None
    deadline: float | None = None
    quiet: bool = False
    max_batch: int | None = None  # --batched


def work_here(p: Payload, stop: StopRequest | None = None) -> list:
    """One worker's loop in this process; its results (tune.trial.Result)."""
    from noisecli.tune.trial import Worker, work  # torch: only a worker trains

    tune = load_tune(p.path, p.trials)  # read again from the file (a worker process is given its path)
    tune_dir = Path(p.tune_dir)
    storage = open_storage(p.storage, tune_dir)
    w = Worker(tune, storage, tune_dir, p.worker, p.threads, p.device, p.deadline, p.quiet, p.max_batch,
               stop or StopRequest(), on_told=lambda studies: write_snapshot(tune_dir, snapshot(tune, studies,
                                                                                             p.storage)))
    with w.stop.catching(second_sigint_stops_now=True):
        return work(w)


def _process_main(payload: dict) -> None:
    os.setpgrp()  # terminal signals go to the parent, which forwards one to each worker
    import torch

    p = Payload(**payload)
    if p.threads:
        torch.set_num_threads(p.threads)
    results = work_here(p)
    raise SystemExit(130 if any(r.state == "interrupted" for r in results) else 0)


def run_processes(p: Payload, jobs: int) -> None:
    """`--jobs N`: N worker processes; a stop request is passed on to each once; Interrupted when
    the command was stopped."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # torch and fork do not mix
    stop = StopRequest()
    procs = [ctx.Process(target=_process_main, args=(asdict(Payload(**{**asdict(p), "worker": i})),))
             for i in range(jobs)]
    with stop.catching(second_sigint_stops_now=False):
        for proc in procs:
            proc.start()
        forwarded = False
        while any(proc.is_alive() for proc in procs):
            if stop.requested and not forwarded:
                forwarded = True
                for proc in procs:
                    if proc.is_alive():
                        os.kill(proc.pid, signal.SIGINT if stop.signum == signal.SIGINT else signal.SIGTERM)
            time.sleep(0.2)
    for proc in procs:
        proc.join()
    if stop.requested:
        raise Interrupted(stop.signum or signal.SIGINT, "tune stopped; running trials saved their state. Run the "
                          "same command again to resume them and go on with the study")


class TuneJob:
    """What an array task runs (pickled by submitit): a worker pulling trials until the budget is
    spent. On preemption its trial saves and is queued again, then submitit requeues the task."""

    def __init__(self, payload: dict):
        self.payload = payload

    def __call__(self) -> int:
        import submitit

        stop = StopRequest()
        preempt = submitit.JobEnvironment._usr_sig()  # the signal submitit's scheduler sends ahead of the end
        requeue = signal.getsignal(preempt)  # submitit's: checkpoint() below, then requeue and exit
        signal.signal(preempt, lambda signum, frame: stop.request(signum))
        results = work_here(Payload(**self.payload), stop)
        if stop.signum == preempt and callable(requeue):
            requeue(preempt, None)  # saved already: requeue (exits this process)
        return len(results)

    def checkpoint(self):
        """submitit asks what to run after a requeue: the same worker, which resumes the queued trial."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(TuneJob(self.payload))


def run_cluster(p: Payload, jobs: int, options, name: str) -> None:
    """`--backend submitit`: `jobs` array tasks, waited for; a Ctrl-C stops the waiting, not the jobs."""
    import submitit

    executor = submitit.AutoExecutor(folder=Path(p.tune_dir) / ".submitit", cluster=options.cluster)
    executor.update_parameters(**options.executor_parameters(name))
    payloads = [asdict(Payload(**{**asdict(p), "worker": i})) for i in range(jobs)]
    with executor.batch():
        submitted = [executor.submit(TuneJob(payload)) for payload in payloads]
    if not p.quiet:
        ids = ", ".join(sorted({str(j.job_id).split("_")[0] for j in submitted}))
        print(f"tune {name}: {jobs} workers submitted to {options.cluster} as job {ids}", flush=True)
    stop = StopRequest()
    with stop.catching(second_sigint_stops_now=False):
        while not all(j.done() for j in submitted) and not stop.requested:
            time.sleep(0.5)
    if stop.requested:
        raise Interrupted(stop.signum or signal.SIGINT, "stopped waiting; the workers keep running as jobs; the "
                          "same command with --status shows the study")
    for job in submitted:
        job.result()  # a worker that died outside its trials (killed, out of memory) says so here
