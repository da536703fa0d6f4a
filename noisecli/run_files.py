"""Reading a run folder's files, and what each must hold to be read.

status.json, metrics.jsonl and the checkpoints are read and checked here: a file that is
damaged, foreign or written by a newer noisecli is a `DamagedFile` naming it in one line.
Writing them is `runs.RunFolder`'s, through its atomic writes; nothing here writes a file.
Nothing here imports torch until a checkpoint is read.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

from noisecli import metrics
from noisecli.errors import DamagedFile

STATES = ("running", "completed", "failed", "diverged", "interrupted", "pruned")  # pruned: by a tune's pruner
CHECKPOINT_FORMAT = 2  # 2: the model is the evaluated (clean) one for every kind
CHECKPOINT_KEYS = {"model", "optimizer", "step", "rng"}


def metric_columns() -> list[str]:
    """metrics.csv's columns, in order (those no row has are left out); the evaluation's come
    from the metric schema."""
    return ["epoch", "step", "train_loss", *metrics.columns(), "lr", "noise_factor", "grad_norm", "skipped_steps",
            "samples_per_s", "seconds"]


def first_line(e: BaseException, limit: int = 160) -> str:
    """`Type: the first line of its message`; a long one is cut to its first sentence where that fits
    (torch's "... failed finding central directory", not the advice after it), else at a word,
    never mid-word."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    if len(text) > limit:
        sentence = text.find(". ")
        if 0 < sentence <= limit:
            text = text[:sentence]
        elif " " in text[:limit]:  # (one long word, a path, stays whole)
            text = text[:limit].rsplit(" ", 1)[0] + " ..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def read_checkpoint(path: Path, keys: set[str] = frozenset({"model"})) -> dict:
    """A checkpoint file as a dict, loaded as data only (`weights_only=True`: never code).
    Any file that is not one (empty, cut short, corrupt, foreign, a pickle that would run code)
    is a DamagedFile naming the file in one line; one written by a newer noisecli says both formats."""
    import warnings

    import torch

    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty (a crash before its data reached the disk)")
        with warnings.catch_warnings():  # torch adds a multi-line warning to what it raises
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not keys <= set(state):
            raise ValueError("not a noisecli checkpoint")
    except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign file
        # torch.save writes a zip whose index is at its end: a copy cut short, or a foreign file, has
        # none, and torch's own words for that (`OSError: [Errno 22]`, `KeyError: 101`) say nothing
        unzipped = not isinstance(e, ValueError) and path.is_file() and not zipfile.is_zipfile(path)
        objects = "objects other than tensors and plain data, which are never loaded"
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            why = f"not a torch checkpoint: cut short, corrupt, or a pickle of {objects}" if unzipped \
                else f"it holds {objects}"
        elif unzipped:
            why = f"cut short or not a checkpoint: {first_line(e)}"
        else:
            why = first_line(e)
        raise DamagedFile(f"{path}: cannot load ({why})") from None
    fmt = state.get("format", 1)
    if not isinstance(fmt, int) or fmt > CHECKPOINT_FORMAT:
        raise DamagedFile(f"{path}: written in checkpoint format {fmt!r} by a newer noisecli; this one reads "
                          f"formats up to {CHECKPOINT_FORMAT}: upgrade noisecli to use it")
    return state


def read_status_file(p: Path) -> dict[str, Any]:
    """status.json as a mapping ({} when there is none); a damaged one is a DamagedFile."""
    try:
        status = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise DamagedFile(f"{p}: unreadable status file ({e}); delete it to let the run resume "
                        "from its checkpoint") from None
    bad = _status_problem(status)
    if bad:
        raise DamagedFile(f"{p}: not a noisecli status file ({bad}); delete it to let the run resume "
                          "from its checkpoint")
    return status


def read_metrics_file(p: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's rows ([] when there is none); a damaged one is a DamagedFile."""
    if not p.exists():
        return []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DamagedFile(f"{p}: unreadable ({first_line(e)}); rerun `noisecli train` on this run "
                          "to rewrite it from the checkpoint") from None
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict) or not _is_int(row.get("step")):
                raise DamagedFile(f"{p}:{i}: corrupt line (not a row with a step); rerun `noisecli train` "
                                  "on this run to rewrite it from the checkpoint")
            rows.append(row)
    return rows


def newest_checkpoint(ckpt_dir: Path, warn=None) -> dict | None:
    """The newest loadable checkpoint (last.pt, else prev.pt), or None when there is none.

    A damaged last.pt (empty after a crash, cut short, foreign) is reported through `warn`
    and prev.pt is used; if both are damaged the run cannot resume. A checkpoint written by
    a newer noisecli is refused outright: prev.pt would be just as new.
    """
    problems = []
    for name in ("last.pt", "prev.pt"):
        p = ckpt_dir / name
        if not p.exists():
            continue
        try:
            state = read_checkpoint(p, CHECKPOINT_KEYS)
        except DamagedFile as e:
            problems.append(e.problems[0])
            continue
        if problems and warn is not None:
            warn(f"warning: {problems[0]}; resuming from {p.name} (step {state['step']}) instead")
        return state
    if problems:
        raise DamagedFile(problems + [f"no loadable checkpoint in {ckpt_dir}: use --restart to start "
                                    "over (the damaged run is kept under .archive/)"])
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _status_problem(status: Any) -> str:
    """What makes `status` not a status file (valid JSON of the wrong shape included), or ''."""
    if not isinstance(status, dict):
        return f"a {type(status).__name__}, not a mapping"
    if status.get("state") not in STATES:
        return f"state {status.get('state')!r}"
    for key in ("step", "epoch", "starts", "total_steps", "steps_per_epoch"):
        if status.get(key) is not None and not _is_int(status[key]):
            return f"{key} {status[key]!r}"
    for key in ("best_val_loss", "val_loss"):
        if status.get(key) is not None and not isinstance(status[key], (int, float)):
            return f"{key} {status[key]!r}"
    return ""
