"""`noisecli tune`: how much noise, searched with Optuna instead of a grid. Registered on the app
by noisecli/cli.py; optuna and torch are imported only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli.cli_common import DeviceOpt, QuietOpt, RunsDirOpt, exit_codes
from noisecli.errors import SpecError

TrialsOpt = Annotated[Optional[int], typer.Option("--trials", min=1, show_default=False, metavar="N",
                                                  help="the trials' budget, all kinds together (default: the spec's "
                                                  "`trials`); trials already done count")]
TimeoutOpt = Annotated[Optional[float], typer.Option("--timeout", min=0, show_default=False, metavar="MIN",
                                                     help="start no trial after this many minutes")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", min=1, metavar="N", help="worker processes sharing the "
                                      "study (with --backend submitit: array tasks)")]
StorageOpt = Annotated[Optional[str], typer.Option("--storage", show_default=False, metavar="URL|journal",
                                                   help="Optuna's storage: a database URL (postgresql://...), or "
                                                   "journal (a file in the tune folder); default: study.db "
                                                   "(SQLite) in the tune folder, journal with submitit")]
StatusOpt = Annotated[bool, typer.Option("--status", help="show every trial's state and value; run nothing")]
BatchedOpt = Annotated[bool, typer.Option("--batched", help="ask a study for several trials at once and train them "
                                          "as one stacked model (torch.func.vmap)")]
MaxBatchOpt = Annotated[Optional[int], typer.Option("--max-batch", min=1, show_default=False, metavar="M",
                                                    help="with --batched: at most M trials per stack (default 8)")]
BackendOpt = Annotated[str, typer.Option("--backend", metavar="local|submitit",
                                         help="local (processes here) | submitit (array tasks on a cluster)")]
ClusterOpt = Annotated[Optional[str], typer.Option("--cluster", show_default=False, metavar="slurm|local|debug",
                                                   help="with submitit: slurm (default) | local | debug")]
PartitionOpt = Annotated[Optional[str], typer.Option("--partition", show_default=False, metavar="NAME",
                                                     help="Slurm partition")]
GpusOpt = Annotated[Optional[int], typer.Option("--gpus-per-job", min=0, show_default=False, metavar="N",
                                                help="GPUs per worker (default 0)")]
CpusOpt = Annotated[Optional[int], typer.Option("--cpus-per-job", min=1, show_default=False, metavar="N",
                                                help="CPU cores per worker")]
TimeLimitOpt = Annotated[Optional[int], typer.Option("--time-limit", min=1, show_default=False, metavar="MIN",
                                                     help="minutes per job (default 60); a worker that runs out "
                                                     "saves its trial and is requeued")]
SlurmOpt = Annotated[Optional[list[str]], typer.Option("--slurm", show_default=False, metavar="KEY=VALUE",
                                                       help="an extra Slurm parameter (repeatable)")]


def tune(spec: Annotated[Path, typer.Argument(help="a tune spec (base, search, objective, ...)", show_default=False,
                                              metavar="TUNE_SPEC")],
         trials: TrialsOpt = None, timeout: TimeoutOpt = None, jobs: JobsOpt = 1, storage: StorageOpt = None,
         status: StatusOpt = False, runs_dir: RunsDirOpt = Path("runs"), device: DeviceOpt = None,
         quiet: QuietOpt = False, batched: BatchedOpt = False, max_batch: MaxBatchOpt = None,
         backend: BackendOpt = "local",
         cluster: ClusterOpt = None, partition: PartitionOpt = None, gpus_per_job: GpusOpt = None,
         cpus_per_job: CpusOpt = None, time_limit: TimeLimitOpt = None, slurm: SlurmOpt = None) -> None:
    """Search each noise kind's factor with Optuna (pruning at evaluations), then confirm the best on fresh seeds."""
    from noisecli.cluster import cluster_options  # lazy: keeps --help fast
    from noisecli.tune.run import TuneOptions, run_tune, status as status_of  # lazy: keeps --help fast

    with exit_codes():
        if max_batch is not None and not batched:
            raise SpecError("--max-batch: only with --batched")
        on_cluster = cluster_options(backend, cluster, partition, gpus_per_job, cpus_per_job, time_limit, None,
                                     slurm, False, 1, None)
        options = TuneOptions(spec, runs_dir, trials, timeout, jobs, storage, device, quiet, on_cluster,
                              (max_batch or 8) if batched else None)
        if status:
            print(status_of(options), end="")
            return
        run_tune(options)
