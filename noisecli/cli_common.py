"""What every command shares: one `error: ...` line for every mistake (click's included), the
contract's exit codes, and the options several commands take.

Nothing here imports torch or rich at import time, so `noisecli --help` stays instant.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli.errors import Interrupted, NoisecliError
from noisecli.examples import usage_line


class _Command(typer.core.TyperCommand):
    def collect_usage_pieces(self, ctx):  # typer writes a required argument as {SPEC}; click and man pages, SPEC
        return [re.sub(r"^\{(.+)\}", r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class _Group(typer.core.TyperGroup):
    """A mistake click finds (an unknown option, a bad value) is one `error: ...` line and exit 2, as are ours."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        click = sys.modules[typer.BadParameter.__module__]  # its exceptions, wherever this typer keeps click
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:  # not standalone: click raises its usage errors instead of printing a usage block
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as e:
            e.show() if type(e).__name__ == "NoArgsIsHelpError" else error(usage_line(e))  # bare noisecli: help
            sys.exit(e.exit_code)
        sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(n) comes back as n


SpecArg = Annotated[Path, typer.Argument(help="the YAML spec file", show_default=False, metavar="SPEC")]
def complete_override(incomplete: str) -> list[str]:
    """Shell completion of a KEY=VALUE override: the spec's dotted keys (values are not guessed)."""
    if "=" in incomplete:
        return []
    from noisecli.reference import spec_keys  # the catalog and spec classes: only when completing

    return [f"{key}=" for key in spec_keys() if key.startswith(incomplete)]


OverridesArg = Annotated[Optional[list[str]], typer.Argument(
    help="KEY=VALUE overrides by dotted path, e.g. noise.factor=0.05 train.epochs=5", show_default=False,
    metavar="KEY=VALUE", autocompletion=complete_override)]
RunsDirOpt = Annotated[Path, typer.Option("--runs-dir", help="where run folders go", metavar="DIR")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto | cpu | cuda | cuda:N | mps "
                                                  "(overrides the spec's device)", show_default=False,
                                                  metavar="DEVICE")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="print nothing but errors")]


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


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


def tune_spec(path: Path) -> bool:
    """Whether `path` is a tune spec (a `search:` beside its base), so that `train` and `sweep`
    say which command runs it and `validate` checks it as `tune` would."""
    from noisecli.spec import read_yaml  # lazy: keeps --help fast

    return path.is_file() and "search" in read_yaml(path)


def refuse_tune_spec(path: Path) -> None:
    if tune_spec(path):
        from noisecli.errors import SpecError  # the one error type the exit codes know

        raise SpecError(f"{path}: a tune spec (it has `search:`); run it with: noisecli tune {path}")
