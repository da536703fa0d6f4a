"""`noisecli export`: an hf run as a transformers folder. Registered on the app by noisecli/cli.py;
torch and transformers are imported only when the command runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from noisecli.cli_common import RunsDirOpt, exit_codes


def export(run_dir: Annotated[Path, typer.Argument(help="a run folder (runs/NAME), or a run's name under --runs-dir",
                                                   show_default=False, metavar="RUN")],
           out_dir: Annotated[Path, typer.Argument(help="the folder to write (new, or empty)", show_default=False,
                                                   metavar="OUT_DIR")],
           merge: Annotated[bool, typer.Option("--merge", help="a LoRA run: merge the adapters into the base and "
                                               "write a plain model (default: peft's adapter folder, its base in "
                                               "base/)")] = False,
           checkpoint: Annotated[str, typer.Option("--checkpoint", "-c", help="last | best (or prev, or a .pt file)",
                                                   metavar="CHECKPOINT")] = "last",
           runs_dir: RunsDirOpt = Path("runs")) -> None:
    """Write an hf run's checkpoint as a transformers folder that from_pretrained loads (safetensors, tokenizer)."""
    from noisecli.export import export as write  # lazy: keeps --help fast

    with exit_codes():
        if not run_dir.exists() and (runs_dir / run_dir).is_dir():  # a name: runs/NAME
            run_dir = runs_dir / run_dir
        print(write(run_dir, out_dir, merge, checkpoint))
