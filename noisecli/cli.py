"""The command line. Thin: each command parses its options and calls one module.

torch is imported only inside the commands that train, so `noisecli --help`, `validate`
and `list` answer at once.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli.errors import Interrupted, NoisecliError, SpecError

app = typer.Typer(
    help="Does noise injection help my model, which kind, and how much? Train, sweep and compare.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SpecArg = Annotated[Path, typer.Argument(help="the YAML spec file", show_default=False, metavar="SPEC")]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="KEY=VALUE overrides by dotted path, e.g. noise.factor=0.05 train.epochs=5", show_default=False,
    metavar="KEY=VALUE")]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="where run folders go", metavar="DIR")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps "
                                                  "(overrides the spec's device)", show_default=False,
                                                  metavar="DEVICE")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")]


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"noisecli {version('noisecli')}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Does noise injection help my model, which kind, and how much? Train, sweep and compare."""


def say_once(text: str) -> None:
    """One stderr line; under torchrun only rank 0 says it (every rank meets the same problem)."""
    if os.environ.get("RANK", "0") not in ("", "0"):
        return
    from noisecli.display import say  # rich is imported there; error lines are rare

    say(text)


def error(text: str) -> None:
    say_once(f"error: {text}")


@contextmanager
def exit_codes():
    """Map noisecli's exceptions to the contract's exit codes, one stderr line per problem."""
    try:
        yield
    except Interrupted as e:
        say_once(f"interrupted: {e}")
        raise typer.Exit(e.exit_code) from None
    except NoisecliError as e:
        if os.environ.get("NOISECLI_DEBUG", "") not in ("", "0"):  # the user's code's tracebacks (code.py keeps them)
            for text in getattr(e, "tracebacks", []):
                sys.stderr.write(text)
        for line in getattr(e, "problems", [str(e)]):
            error(line)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C before the loop took over signals (setup, imports)
        from noisecli.display import say  # lazy: keeps --help fast

        say("interrupted: stopped before training began; nothing of a run was lost. Run the same command again")
        raise typer.Exit(130) from None
    except BrokenPipeError:  # `noisecli report | head`: click exits quietly, as for `list | head`
        raise
    except OSError as e:  # a full disk, a read-only runs folder: say which file and why
        error(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        raise typer.Exit(1) from None


@app.command()
def train(spec: SpecArg, overrides: OverridesArg = None, runs_dir: RunsDirOpt = Path("runs"),
          device: DeviceOpt = None, quiet: QuietOpt = False,
          restart: Annotated[bool, typer.Option("--restart", help="start over; the old run folder is moved "
                                                "to <runs-dir>/.archive/")] = False) -> None:
    """Train one run; rerunning resumes it where it stopped."""
    from noisecli.spec import load_spec  # lazy: keeps --help fast

    with exit_codes():
        resolved = load_spec(spec, list(overrides or []) + ([f"device={device}"] if device else []))
        from noisecli.trainer import train_run  # torch from here on

        train_run(resolved, runs_dir, quiet=quiet, restart=restart)


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
        plan = checked_plan(spec, grid, seeds, list(overrides or []) + ([f"device={device}"] if device else []), name)
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


class Format(str, Enum):
    table = "table"
    md = "md"
    csv = "csv"
    json = "json"
    html = "html"


class FigureFormat(str, Enum):
    svg = "svg"
    pdf = "pdf"
    png = "png"


OUTPUT_FORMATS = {".md": Format.md, ".markdown": Format.md, ".csv": Format.csv, ".json": Format.json,
                  ".html": Format.html, ".htm": Format.html, ".txt": Format.table}


@app.command()
def report(dirs: Annotated[Optional[list[Path]], typer.Argument(help="run folders, sweep folders or runs "
                                                                "folders (default: the --runs-dir folder)",
                                                                show_default=False, metavar="DIR")] = None,
           fmt: Annotated[Optional[Format], typer.Option("--format", "-f", show_default=False,
                                                         help="table | md | csv | json | html (default: from "
                                                         "--output's extension, else table)")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write to this file",
                                                          show_default=False, metavar="FILE")] = None,
           metric: Annotated[Optional[str], typer.Option("--metric", "-m", show_default=False, metavar="NAME",
                                                         help="what decides: test_acc, test_loss, val_loss, "
                                                         "best_val_loss, ... (default: test accuracy for "
                                                         "classification, else test loss, at the selected "
                                                         "checkpoint)")] = None,
           figures_dir: Annotated[Optional[Path], typer.Option("--figures", metavar="DIR", show_default=False,
                                                               help="also write each figure as its own file in "
                                                               "this folder (made if missing)")] = None,
           figure_format: Annotated[FigureFormat, typer.Option("--figure-format",
                                                               help="svg | pdf | png (300 dpi)")] = FigureFormat.svg,
           runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Compare runs: configurations over seeds, delta against no noise with a 95 % interval."""
    from noisecli import report as rep  # lazy: keeps --help fast

    with exit_codes():
        dirs = list(dirs or [runs_dir])
        if figures_dir is not None:
            rep.check_figures_folder(figures_dir)
        if output is not None and output.is_dir():
            raise SpecError(f"--output: {output} is a folder; name a file in it, e.g. {output / 'report.md'}")
        if output is not None and output.parent.is_file():
            raise SpecError(f"--output: {output.parent} is a file, not a folder")
        if output is not None and not output.parent.is_dir():
            raise SpecError(f"--output: folder {output.parent} does not exist")
        if fmt is None:  # -o report.md writes Markdown (not the table under a .md name); unknown: the table
            fmt = OUTPUT_FORMATS.get(output.suffix.lower(), Format.table) if output is not None else Format.table
        if fmt == Format.html and output is None and stdout_is_terminal():
            raise SpecError("--format html: the page embeds its plots; write it to a file with "
                            "--output report.html (or redirect: > report.html)")
        text = rep.render(dirs, fmt.value, f"noisecli report: {', '.join(map(str, dirs))}",
                          warn=lambda line: say_once(f"warning: {line}"), metric=metric)
        _emit(text, output, rep.plain_text)
        if figures_dir is not None:  # after the report, whose bad input is refused first
            written = rep.write_figures(dirs, figures_dir, figure_format.value, metric)
            for path in written:  # to stderr when the report itself went to stdout (a pipe stays clean)
                print(f"wrote {path}", file=sys.stderr if output is None else sys.stdout)
            if not written:
                say_once("warning: --figures: no figures: no run with noise completed")


def _emit(text, output: Path | None, plain_text) -> None:
    """The report to the terminal or stdout, or written whole to `output`."""
    if not isinstance(text, str):  # a rich renderable
        from rich.console import Console

        if output is None:
            (Console() if Console().is_terminal else Console(width=160)).print(text)
            return
        text = plain_text(text)
    if output is None:
        print(text, end="")
        return
    from noisecli.runs import atomic_write  # lazy: keeps --help fast

    try:
        atomic_write(output, text)
    except OSError as e:  # read-only folder, no space: one line naming the file, as for any unusable path
        raise SpecError(f"--output: cannot write {output} ({e.strerror or e})") from None
    print(f"wrote {output}")


class EvalFormat(str, Enum):
    table = "table"
    json = "json"


class Split(str, Enum):
    val = "val"
    test = "test"
    train = "train"


@app.command("eval")
def eval_(run_dir: Annotated[Path, typer.Argument(help="a run folder (runs/NAME), or a run's name under --runs-dir",
                                                  show_default=False, metavar="RUN_DIR")],
          checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="last | best | prev | a .pt file",
                                                  metavar="CHECKPOINT")] = "last",
          split: Annotated[Split, typer.Option("--split", help="val | test | train (the clean train "
                                               "loss)")] = Split.val,
          fmt: Annotated[EvalFormat, typer.Option("--format", "-f", help="table | json")] = EvalFormat.table,
          metric_names: Annotated[Optional[str], typer.Option("--metrics", help="only these metrics, e.g. acc,ece "
                                                               "(default: every metric of the task)",
                                                               metavar="M1,M2")] = None,
          robustness: Annotated[Optional[str], typer.Option("--robustness", help="also under input perturbation "
                                                             "at these levels, e.g. 0.1,0.3 (as eval.robustness)",
                                                             metavar="L1,L2")] = None,
          sharpness: Annotated[Optional[float], typer.Option("--sharpness", help="also the sharpness at this rho "
                                                              "(as eval.sharpness)", metavar="RHO", min=0)] = None,
          draws: Annotated[int, typer.Option("--draws", help="weight perturbations for --sharpness",
                                             min=1)] = 8,
          device: DeviceOpt = None, runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Evaluate a saved checkpoint with every noise off, exactly as training evaluated it."""
    from noisecli.evaluate import evaluate, levels_option, render  # lazy: keeps --help fast

    with exit_codes():
        if not run_dir.exists() and (runs_dir / run_dir).is_dir():  # a name: runs/NAME
            run_dir = runs_dir / run_dir
        names = [m.strip() for m in metric_names.split(",") if m.strip()] if metric_names else None
        result = evaluate(run_dir, checkpoint, split.value, device, names, levels_option(robustness),
                          sharpness, draws)
        if fmt == EvalFormat.json:
            import json

            print(json.dumps(result, indent=2))
        else:
            print(render(result), end="")


@app.command()
def validate(spec: SpecArg, overrides: OverridesArg = None,
             show: Annotated[bool, typer.Option("--show", help="print the resolved spec")] = False,
             quiet: QuietOpt = False) -> None:
    """Check a spec without training: exit 0 if valid, 2 with one line per problem if not."""
    from noisecli.validate import validate_file  # lazy: keeps --help fast

    with exit_codes():
        text = validate_file(spec, list(overrides or []), show)
        if not quiet:
            print(text, end="")


@app.command("list")
def list_(what: Annotated[Optional[str], typer.Argument(help="models | datasets | noise (default: all)",
                                                         show_default=False,
                                                         metavar="[models|datasets|noise]")] = None) -> None:
    """What can be named in a spec, one line each."""
    from noisecli.catalog import DATASETS, MODELS, NOISE  # lazy: keeps --help fast

    tables = {"datasets": DATASETS, "models": MODELS, "noise": NOISE}
    if what is not None and what not in tables:
        from noisecli.spec import suggest  # lazy: keeps --help fast

        error(f"list: unknown {what!r}{suggest(what, tables)}; choose models, datasets or noise")
        raise typer.Exit(2)
    for name, table in tables.items():
        if what not in (None, name):
            continue
        print(f"{name}:")
        width = max(len(e.name) for e in table.values())
        for e in table.values():
            extra = f"  [{e.formula}; factor = {e.factor}]" if name == "noise" else ""
            options = f"  (options: {', '.join(e.options)})" if e.options else ""
            note = f"  Note: {e.note}." if e.note else ""
            print(f"  {e.name:<{width}}  {e.summary}{extra}{options}{note}")


# the command list in `noisecli --help` shows each docstring's first line whole (click would cut it at 45)
for _command in app.registered_commands:
    _command.short_help = (_command.callback.__doc__ or "").strip().splitlines()[0]


def main() -> None:
    app(prog_name="noisecli")


if __name__ == "__main__":
    main()
