"""The command line. Thin: each command parses its options and calls one module.

torch is imported only inside the commands that train, so `noisecli --help`, `validate`
and `list` answer at once.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli.errors import Interrupted, NoisecliError

app = typer.Typer(
    help="Does noise injection help my model, which kind, and how much? Train, sweep and compare.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SpecArg = Annotated[Path, typer.Argument(help="the YAML spec file", show_default=False)]
OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="KEY=VALUE overrides by dotted path, e.g. noise.factor=0.05 train.epochs=5", show_default=False)]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="where run folders go")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps "
                                                  "(overrides the spec's device)", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")]


def error(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)


@contextmanager
def exit_codes():
    """Map noisecli's exceptions to the contract's exit codes, one stderr line per problem."""
    try:
        yield
    except Interrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
    except NoisecliError as e:
        for line in getattr(e, "problems", [str(e)]):
            error(line)
        raise typer.Exit(e.exit_code) from None
    except OSError as e:  # a full disk, a read-only runs folder: say which file and why
        error(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
        raise typer.Exit(1) from None


@app.command()
def train(spec: SpecArg, overrides: OverridesArg = None, runs_dir: RunsDirOpt = Path("runs"),
          device: DeviceOpt = None, quiet: QuietOpt = False,
          restart: Annotated[bool, typer.Option("--restart", help="start over; the old run folder is moved "
                                                "to <runs-dir>/.archive/")] = False) -> None:
    """Train one run; rerunning resumes it where it stopped."""
    from noisecli.spec import load_spec

    with exit_codes():
        resolved = load_spec(spec, list(overrides or []) + ([f"device={device}"] if device else []))
        from noisecli.trainer import Trainer  # torch from here on

        trainer = Trainer(resolved, runs_dir, quiet=quiet).setup()
        try:
            outcome = trainer.open_run(restart=restart)
            if outcome == "completed":
                trainer.display.note(f"run {resolved.name!r} is already completed ({trainer.run.path}); "
                                     "nothing to do. Use --restart to train it again.")
                return
            if outcome == "resume":
                trainer.display.note(f"resuming {resolved.name!r} from step {trainer.step} of "
                                     f"{trainer.total_steps}")
            trainer.train()
        finally:
            trainer.close()


@app.command()
def validate(spec: SpecArg, overrides: OverridesArg = None,
             show: Annotated[bool, typer.Option("--show", help="print the resolved spec")] = False) -> None:
    """Check a spec without training: exit 0 if valid, 2 with one line per problem if not."""
    from noisecli.spec import dump_yaml, load_spec, spec_to_dict

    with exit_codes():
        resolved = load_spec(spec, list(overrides or []))
        if show:
            print(dump_yaml(spec_to_dict(resolved)), end="")
        print(f"ok: {spec} (run {resolved.name!r}: data {resolved.data.kind}, model {resolved.model.kind}, "
              f"noise {resolved.noise_label})")


@app.command("list")
def list_(what: Annotated[Optional[str], typer.Argument(help="models | datasets | noise (default: all)",
                                                         show_default=False)] = None) -> None:
    """What can be named in a spec, one line each."""
    from noisecli.catalog import DATASETS, MODELS, NOISE

    tables = {"datasets": DATASETS, "models": MODELS, "noise": NOISE}
    if what is not None and what not in tables:
        from noisecli.spec import suggest

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
            print(f"  {e.name:<{width}}  {e.summary}{extra}{options}")


def main() -> None:
    app(prog_name="noisecli")


if __name__ == "__main__":
    main()
