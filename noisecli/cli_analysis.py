"""`noisecli report` and `noisecli eval`: reading what runs wrote, never training.

Registered on the app by noisecli/cli.py.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from noisecli import cli_common
from noisecli.cli_common import DeviceOpt, RunsDirOpt, exit_codes, say_once
from noisecli.errors import SpecError


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


def report(dirs: Annotated[Optional[list[Path]], typer.Argument(help="run folders, sweep folders or runs "
                                                                "folders (default: the --runs-dir folder)",
                                                                show_default=False, metavar="DIR")] = None,
           fmt: Annotated[Optional[Format], typer.Option("--format", "-f", show_default=False,
                                                         help="the report's format (default: from --output's "
                                                         "extension, else table)")] = None,
           output: Annotated[Optional[Path], typer.Option("--output", "-o", help="write to this file",
                                                          show_default=False, metavar="FILE")] = None,
           metric: Annotated[Optional[str], typer.Option("--metric", "-m", show_default=False, metavar="NAME",
                                                         help="what decides: test_acc, test_loss, val_loss, "
                                                         "best_val_loss, ... (default: test accuracy for "
                                                         "classification, else test loss, at the selected "
                                                         "checkpoint)")] = None,
           baseline: Annotated[Optional[list[str]], typer.Option("--baseline", "-b", show_default=False,
                                                                 metavar="LABEL",
                                                                 help="compare with: none (default), "
                                                                 "best-classical, or a configuration's label as "
                                                                 "the report prints it ('dropout 0.2'); "
                                                                 "repeatable, the first decides")] = None,
           figures_dir: Annotated[Optional[Path], typer.Option("--figures", metavar="DIR", show_default=False,
                                                               help="also write each figure as its own file in "
                                                               "this folder (made if missing)")] = None,
           figure_format: Annotated[FigureFormat, typer.Option("--figure-format",
                                                               help="png at 300 dpi")] = FigureFormat.svg,
           runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Compare runs: configurations over seeds, delta against no noise with a 95 % interval."""
    from noisecli import report as rep  # lazy: keeps --help fast

    with exit_codes():
        dirs = list(dirs or [runs_dir])
        if figures_dir is not None:
            rep.check_figures_folder(figures_dir)
        fmt = _checked_output(output, fmt)
        text = rep.render(dirs, fmt.value, f"noisecli report: {', '.join(map(str, dirs))}",
                          warn=lambda line: say_once(f"warning: {line}"), metric=metric, baselines=baseline)
        _emit(text, output, rep.plain_text)
        if figures_dir is not None:  # after the report, whose bad input is refused first
            written = rep.write_figures(dirs, figures_dir, figure_format.value, metric, baseline)
            for path in written:  # to stderr when the report itself went to stdout (a pipe stays clean)
                print(f"wrote {path}", file=sys.stderr if output is None else sys.stdout)
            if not written:
                say_once("warning: --figures: no figures: no run with noise completed")


def _checked_output(output: Path | None, fmt: Format | None) -> Format:
    """The report's format (from -f, else from --output's extension, else the table), once
    --output names a file that can be written and html is not bound for a terminal."""
    if output is not None and output.is_dir():
        raise SpecError(f"--output: {output} is a folder; name a file in it, e.g. {output / 'report.md'}")
    if output is not None and output.parent.is_file():
        raise SpecError(f"--output: {output.parent} is a file, not a folder")
    if output is not None and not output.parent.is_dir():
        raise SpecError(f"--output: folder {output.parent} does not exist")
    if fmt is None:  # -o report.md writes Markdown (not the table under a .md name); unknown: the table
        fmt = OUTPUT_FORMATS.get(output.suffix.lower(), Format.table) if output is not None else Format.table
    if fmt == Format.html and output is None and cli_common.stdout_is_terminal():
        raise SpecError("--format html: the page embeds its plots; write it to a file with "
                        "--output report.html (or redirect: > report.html)")
    return fmt


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


# eval --generate: none has a typer default of its own, so one given without --generate is refused
GenerateOpt = Annotated[Optional[int], typer.Option("--generate", metavar="N", show_default=False,
                                                    help="also answer the first N held-out prompts (test split, "
                                                    "else val; instruction data) and write them to "
                                                    "generations-CHECKPOINT.jsonl in the run folder")]
MaxNewTokensOpt = Annotated[Optional[int], typer.Option("--max-new-tokens", metavar="M", show_default=False,
                                                        help="--generate: at most M new tokens per prompt "
                                                        "(default: data.max_length minus the prompt)")]
TemperatureOpt = Annotated[Optional[float], typer.Option("--temperature", metavar="T", show_default=False,
                                                         help="--generate: sample at T > 0 (default: 0, greedy)")]
TopPOpt = Annotated[Optional[float], typer.Option("--top-p", metavar="P", show_default=False,
                                                  help="--generate: sample from the most likely tokens that "
                                                  "together hold P (default: 1)")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", metavar="S", show_default=False,
                                                help="--generate: the seed of sampling (default: 0)")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", metavar="FILE", show_default=False,
                                                help="--generate: write the responses to FILE instead")]


def eval_(run_dir: Annotated[Path, typer.Argument(help="a run folder (runs/NAME), or a run's name under --runs-dir",
                                                  show_default=False, metavar="RUN_DIR")],
          checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="last | best | prev | a .pt file",
                                                  metavar="CHECKPOINT")] = "last",
          split: Annotated[Split, typer.Option("--split", help="val | test | train (the clean train "
                                               "loss)")] = Split.val,
          fmt: Annotated[EvalFormat, typer.Option("--format", "-f", help="the result's format")] = EvalFormat.table,
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
          generate: GenerateOpt = None, max_new_tokens: MaxNewTokensOpt = None, temperature: TemperatureOpt = None,
          top_p: TopPOpt = None, seed: SeedOpt = None, out: OutOpt = None,
          device: DeviceOpt = None, runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Evaluate a saved checkpoint with every noise off, exactly as training evaluated it."""
    from noisecli.evaluate import evaluate, levels_option, render  # lazy: keeps --help fast

    with exit_codes():
        from noisecli import generate as gen  # lazy (torch); its options are refused before anything loads

        generation = gen.options(generate, max_new_tokens, temperature, top_p, seed, out)
        if not run_dir.exists() and (runs_dir / run_dir).is_dir():  # a name: runs/NAME
            run_dir = runs_dir / run_dir
        names = [m.strip() for m in metric_names.split(",") if m.strip()] if metric_names else None
        result = evaluate(run_dir, checkpoint, split.value, device, names, levels_option(robustness),
                          sharpness, draws, generation)
        if fmt == EvalFormat.json:
            import json

            print(json.dumps(result, indent=2))
        else:
            summary = result.pop("generation", None)  # its own lines, under the metrics
            print(render(result) + (gen.render(summary) if summary is not None else ""), end="")
