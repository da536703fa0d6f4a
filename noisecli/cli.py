"""The command line. Thin: each command parses its options and calls one module.

torch is imported only inside the commands that train, so `noisecli --help`, `validate`
and `list` answer at once. What the commands share (one error line per mistake, exit codes,
common options) is in cli_common.py; `report` and `eval` are in cli_analysis.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli import cli_analysis
from noisecli import cli_export
from noisecli import cli_tune
from noisecli.cli_common import (DeviceOpt, OverridesArg, QuietOpt, RunsDirOpt, SpecArg, _Command, _Group,
                                 exit_codes, refuse_tune_spec, tune_spec)
from noisecli.errors import SpecError
from noisecli.examples import LIST_CHOICES, complete_examples, complete_list, init_example, listing

app = typer.Typer(
    help="Does noise injection help my model, which kind, and how much? Train, sweep and compare.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]}, cls=_Group,
)

def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"noisecli {version('noisecli')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Does noise injection help my model, which kind, and how much? Train, sweep and compare."""


@app.command()
def init(example: Annotated[Optional[str], typer.Argument(help="its name (noisecli list examples)", metavar="EXAMPLE",
                                                          show_default=False, autocompletion=complete_examples)] = None,
         folder: Annotated[Path, typer.Argument(help="a folder (made if missing)", metavar="DIR")] = Path(".")) -> None:
    """Copy an example, its spec and the files the spec names, into a folder (default: here)."""
    with exit_codes():
        print(init_example(example, folder), end="")


@app.command()
def train(spec: SpecArg, overrides: OverridesArg = None, runs_dir: RunsDirOpt = Path("runs"),
          device: DeviceOpt = None, quiet: QuietOpt = False,
          restart: Annotated[bool, typer.Option("--restart", help="start over; the old run folder is moved "
                                                "to <runs-dir>/.archive/")] = False,
          threads: Annotated[Optional[int], typer.Option("--threads", min=1, show_default=False, metavar="N",
                                                         help="torch CPU threads (default: torch's; a resumed "
                                                         "run keeps the count it started with)")] = None) -> None:
    """Train one run; rerunning resumes it where it stopped."""
    from noisecli.spec import load_spec  # lazy: keeps --help fast

    with exit_codes():
        refuse_tune_spec(spec)
        resolved = load_spec(spec, list(overrides or []) + ([f"device={device}"] if device else []))
        from noisecli.trainer import train_run  # torch from here on

        train_run(resolved, runs_dir, quiet=quiet, restart=restart, threads=threads)


# sweep's options, one alias each so that the command reads as its list of options
GridOpt = Annotated[Optional[list[str]], typer.Option("--grid", help="KEY=V1,V2,... (repeatable); adds to or "
                                                      "replaces the file's grid", metavar="KEY=V1,V2")]
SeedsOpt = Annotated[Optional[str], typer.Option("--seeds", help="a count (3) or a list (0,1,2)", show_default=False,
                                                 metavar="N|S1,S2")]
NameOpt = Annotated[Optional[str], typer.Option("--name", help="the sweep's folder under the runs folder",
                                                show_default=False, metavar="NAME")]
JobsOpt = Annotated[int, typer.Option("--jobs", "-j", help="worker processes", min=1, metavar="N")]
DevicesOpt = Annotated[Optional[str], typer.Option("--devices", help="spread points over devices, e.g. "
                                                   "cuda:0,cuda:1", show_default=False, metavar="D1,D2")]
ShardOpt = Annotated[Optional[str], typer.Option("--shard", help="K/N: run only the K-th of N shares (for cluster "
                                                 "job arrays)", show_default=False, metavar="K/N")]
FailFastOpt = Annotated[bool, typer.Option("--fail-fast", help="stop at the first failed point")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="print the expanded plan; run nothing")]
StatusOpt = Annotated[bool, typer.Option("--status", help="show each point's state (pending, running, completed, "
                                         "failed...) and job; run nothing")]
BatchedOpt = Annotated[bool, typer.Option("--batched", help="train the points that differ only in noise factor and "
                                          "seed as one stacked model (torch.func.vmap)")]
MaxBatchOpt = Annotated[Optional[int], typer.Option("--max-batch", min=1, show_default=False, metavar="M",
                                                    help="with --batched: at most M points per stack (default 64); "
                                                    "bounds memory")]
BackendOpt = Annotated[str, typer.Option("--backend", help="local (processes here) | submitit (a job array on a "
                                         "cluster)", metavar="local|submitit")]
ClusterOpt = Annotated[Optional[str], typer.Option("--cluster", help="slurm (default) | local | debug",
                                                   show_default=False, metavar="slurm|local|debug")]
PartitionOpt = Annotated[Optional[str], typer.Option("--partition", help="Slurm partition", metavar="NAME",
                                                     show_default=False)]
GpusOpt = Annotated[Optional[int], typer.Option("--gpus-per-job", min=0, show_default=False, metavar="N",
                                                help="GPUs per point (default 0)")]
CpusOpt = Annotated[Optional[int], typer.Option("--cpus-per-job", min=1, show_default=False, metavar="N",
                                                help="CPU cores per point")]
TimeLimitOpt = Annotated[Optional[int], typer.Option("--time-limit", min=1, show_default=False, metavar="MIN",
                                                     help="minutes per job (default 60); a point that runs out "
                                                     "saves and is requeued")]
ArrayOpt = Annotated[Optional[int], typer.Option("--array-parallelism", min=1, metavar="N", show_default=False,
                                                 help="at most this many points at once")]
SlurmOpt = Annotated[Optional[list[str]], typer.Option("--slurm", help="an extra Slurm parameter (repeatable), e.g. "
                                                       "qos=high", show_default=False, metavar="KEY=VALUE")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="submit, print the job ids and return")]


@app.command()
def sweep(spec: Annotated[Path, typer.Argument(help="a sweep spec, or a plain spec swept with --grid",
                                               show_default=False, metavar="SWEEP_SPEC")],
          overrides: OverridesArg = None, grid: GridOpt = None, seeds: SeedsOpt = None, name: NameOpt = None,
          runs_dir: RunsDirOpt = Path("runs"), jobs: JobsOpt = 1, devices: DevicesOpt = None, shard: ShardOpt = None,
          fail_fast: FailFastOpt = False, dry_run: DryRunOpt = False, status: StatusOpt = False,
          device: DeviceOpt = None, quiet: QuietOpt = False, batched: BatchedOpt = False,
          max_batch: MaxBatchOpt = None, backend: BackendOpt = "local", cluster: ClusterOpt = None,
          partition: PartitionOpt = None, gpus_per_job: GpusOpt = None, cpus_per_job: CpusOpt = None,
          time_limit: TimeLimitOpt = None, array_parallelism: ArrayOpt = None, slurm: SlurmOpt = None,
          no_wait: NoWaitOpt = False) -> None:
    """Run every point of a grid of spec keys x seeds; rerunning skips finished points."""
    from noisecli.cluster import cluster_options  # lazy: keeps --help fast
    from noisecli.sweep import parse_devices, plan_text, shard_points, status_text  # lazy: keeps --help fast
    from noisecli.validate import checked_plan, stack_refusal  # lazy: keeps --help fast

    with exit_codes():
        if os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
            raise SpecError("sweep under torchrun: each point is its own job; run `torchrun ... -m noisecli "
                            "train SPEC` for one run on several processes, or --jobs/--devices for a sweep")
        refuse_tune_spec(spec)
        from noisecli.report import best_base  # a stage-2 sweep's base: the winner of a report

        plan = checked_plan(spec, grid, seeds, list(overrides or []) + ([f"device={device}"] if device else []), name,
                            best_base)
        points = shard_points(plan.points, shard)
        device_list = parse_devices(devices)
        on_cluster = cluster_options(backend, cluster, partition, gpus_per_job, cpus_per_job, time_limit,
                                     array_parallelism, slurm, no_wait, jobs, devices)
        if batched and on_cluster is not None:
            raise SpecError("--batched: with the local backend only (each cluster job trains one point)")
        if max_batch is not None and not batched:
            raise SpecError("--max-batch: only with --batched")
        batch = (max_batch or 64) if batched else None
        if dry_run:
            print(plan_text(plan, points, shard, runs_dir / plan.name, batch, stack_refusal if batch else None), end="")
            return
        if status:
            print(status_text(plan, points, runs_dir / plan.name), end="")
            return
        from noisecli.sweep_run import run_sweep  # lazy: keeps --help fast

        run_sweep(plan, points, runs_dir / plan.name, jobs, device_list, fail_fast, quiet, on_cluster, batch)


app.command()(cli_tune.tune)
# reading what runs wrote: cli_analysis.py
app.command()(cli_analysis.report)
app.command("eval")(cli_analysis.eval_)
app.command()(cli_export.export)  # an hf run as a transformers folder: cli_export.py


@app.command()
def validate(spec: SpecArg, overrides: OverridesArg = None,
             show: Annotated[bool, typer.Option("--show", help="print the resolved spec")] = False,
             quiet: QuietOpt = False) -> None:
    """Check a spec without training: exit 0 if valid, 2 with one line per problem if not."""
    from noisecli.report import best_base  # lazy, as the others: a stage-2 sweep's base
    from noisecli.validate import validate_file  # lazy: keeps --help fast

    with exit_codes():
        if tune_spec(spec):  # checked as `noisecli tune` checks it, nothing run
            from noisecli.tune.run import checked  # optuna's side of the checks, only for a tune spec
            from noisecli.tune.spec import load_tune  # as above

            tune = load_tune(spec)
            checked(tune)
            text = f"ok: {spec} (tune {tune.name!r})\n"
        else:
            text = validate_file(spec, list(overrides or []), show, best_base)
        if not quiet:
            print(text, end="")


@app.command("list")
def list_(what: Annotated[Optional[str], typer.Argument(help="what to list (default: all)", show_default=False,
                                                         metavar="|".join(LIST_CHOICES),
                                                         autocompletion=complete_list)] = None) -> None:
    """What a spec can name (models, datasets, noise kinds, regularizers) and the examples init copies."""
    with exit_codes():
        print(listing(what), end="")


# the command list in `noisecli --help` shows each docstring's first line whole (click would cut it at 45)
for _command in app.registered_commands:
    _command.short_help = (_command.callback.__doc__ or "").strip().splitlines()[0]
    _command.cls = _Command if _command.cls in (None, typer.core.TyperCommand) else _command.cls


def main() -> None:
    app(prog_name="noisecli")


if __name__ == "__main__":
    main()
