"""The run folder: atomic writes, status, metrics, checkpoints, and claiming a run.

Every file is written to a temporary file in the same folder, flushed and fsynced, then
renamed over the old one, so a reader (or a rerun after a crash) never sees half a file.
Reading the files back (and what each must hold) is `run_files`'s; the lock is `run_lock`'s.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from noisecli.errors import DamagedFile, SpecError
from noisecli.run_files import metric_columns, newest_checkpoint, read_metrics_file, read_status_file
from noisecli.run_lock import RunLock
from noisecli.spec import (dump_yaml as _dump_yaml, flatten, read_saved_spec, spec_diff, upgrade_saved,
                           without_none_factor)

# moved to run_files; imported here too, so that `from noisecli.runs import X` keeps working for them
from noisecli.run_files import CHECKPOINT_FORMAT, CHECKPOINT_KEYS, STATES, first_line, read_checkpoint  # noqa: F401


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` so that `path` holds either the old or the whole new content."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # a full disk says nothing of which file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _second_name(src: Path, dst: Path) -> None:
    """Give `src`'s content a second name `dst`: a hard link where the filesystem has them
    (free for any checkpoint size), else a synced copy."""
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        with open(src, "rb") as f_in, open(dst, "wb") as f_out:
            shutil.copyfileobj(f_in, f_out)
            f_out.flush()
            os.fsync(f_out.fileno())


class RunFolder(RunLock):
    """runs/<name>/: spec.yaml, metrics.csv, metrics.jsonl, status.json, checkpoints/."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.lock_path = self.path / ".lock"
        self._lock_fd: int | None = None  # the open, flock-ed .lock while this object holds the run
        self._spec_text: str | None = None  # the resolved spec.yaml of the claimed run
        self._before: set[str] = set()  # the folder's entries when it was claimed (undo_claim keeps them)
        self._created: list[Path] = []  # folders the claim made
        self.warn = lambda text: print(text, file=sys.stderr)  # claim() sets the display's

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "status.json").exists()

    # ---------------------------------------------------------------- status

    def read_status(self) -> dict[str, Any]:
        """status.json as a mapping, {} when there is none (`run_files.read_status_file`)."""
        return read_status_file(self.path / "status.json")

    def write_status(self, **fields: Any) -> dict[str, Any]:
        if self._spec_text is not None and not (self.path / "spec.yaml").exists():
            self.warn(f"warning: {self.path / 'spec.yaml'} was deleted while the run trained; written again")
            self.write_text("spec.yaml", self._spec_text)
        status = {**self.read_status_quiet(), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write(self.path / "status.json", json.dumps(status, indent=2) + "\n")
        return status

    def read_status_quiet(self) -> dict[str, Any]:
        try:
            return self.read_status()
        except DamagedFile:
            return {}

    # ---------------------------------------------------------------- files

    def write_text(self, name: str, text: str) -> None:
        atomic_write(self.path / name, text)

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite both metrics files from all rows (they are small; a rewrite stays atomic)."""
        columns = [c for c in metric_columns() if any(c in r for r in rows)] or metric_columns()
        per_kind = [k for k in (rows[0] if rows else {}) if k.startswith("noise_factor_")]  # a list of kinds
        if per_kind:
            at = columns.index("noise_factor") + 1
            columns = columns[:at] + per_kind + columns[at:]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")  # a key no column names: an error
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / "metrics.csv", buf.getvalue())
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def write_error_log(self, text: str) -> None:
        atomic_write(self.path / "error.log", text)

    def drop_checkpoints(self) -> None:
        """`output.checkpoint: none`: the checkpoints served resuming only; the finished run keeps none."""
        for p in self.ckpt_dir.glob("*.pt"):
            p.unlink()

    def read_metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl's rows, [] when there is none (`run_files.read_metrics_file`)."""
        return read_metrics_file(self.path / "metrics.jsonl")

    # ---------------------------------------------------------------- checkpoints

    def save_checkpoint(self, state: dict, name: str = "last.pt") -> None:
        """Write atomically; for last.pt the previous one is kept as prev.pt, a fallback if
        last.pt is ever found damaged (a disk error, a copy cut short)."""
        import torch

        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        torch.save(state, buf)
        path = self.ckpt_dir / name
        if name != "last.pt" or not path.exists():
            atomic_write(path, buf.getvalue())
            return
        tmp = self.ckpt_dir / f".{name}.new{os.getpid()}"
        prev_tmp = self.ckpt_dir / f".prev.pt.new{os.getpid()}"
        try:
            atomic_write(tmp, buf.getvalue())  # complete and on disk before anything is renamed
            # last.pt must exist at every instant (a kill between two renames would leave only
            # prev.pt), so prev.pt is made from a second name for the old file, not a rename.
            _second_name(path, prev_tmp)
            os.replace(prev_tmp, self.ckpt_dir / "prev.pt")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            prev_tmp.unlink(missing_ok=True)
        _fsync_dir(self.ckpt_dir)

    def load_checkpoint(self, warn=None) -> dict | None:
        """The newest loadable checkpoint, or None (`run_files.newest_checkpoint`)."""
        return newest_checkpoint(self.ckpt_dir, warn)

    def clean_temporaries(self) -> None:
        """Remove temporary files a killed process left behind (never a finished file)."""
        for folder in (self.path, self.ckpt_dir):
            if folder.is_dir():
                for p in folder.glob(".*.tmp*"):
                    p.unlink(missing_ok=True)
                for p in folder.glob(".*.new*"):
                    p.unlink(missing_ok=True)

    # ---------------------------------------------------------------- claiming a run

    def claim(self, resolved: dict, restart: bool, display,
              total_steps: int | None = None) -> tuple[str, dict, dict | None]:
        """Lock the folder and decide, under the lock: ('fresh' | 'resume' | 'completed', the old
        status, the checkpoint to resume from). Refuses a run trained with a different spec.

        Deciding under the lock means two processes (sweep workers, shards) never train the same
        run, and a run another process just completed is not redone. A completed run is known by
        its status, or, when status.json is lost, by metrics that reach `total_steps`. The caller
        must `release_lock`.
        """
        if (self.path / "sweep.json").exists():
            raise SpecError(f"name: {self.name!r} is the folder of a sweep ({self.path / 'sweep.json'}); "
                            "give the run another name (name=NEW)")
        created = [p for p in (self.path.parent, self.path) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.acquire_lock()
        except OSError as e:
            self.release_lock()
            for folder in reversed(created):  # what this call made, and only that
                _rmdir_quiet(folder)
            raise SpecError(f"--runs-dir: cannot create {e.filename or self.path}: {e.strerror or e}") from None
        self._before = {p.name for p in self.path.iterdir()} - {".lock"}
        self._created = created
        try:
            return self._decide(resolved, restart, display, total_steps)
        except BaseException as e:
            self.release_lock()  # a refusal leaves the folder as it was, unlocked
            for folder in reversed(created):
                _rmdir_quiet(folder)
            if isinstance(e, OSError):  # a full or read-only disk: one line naming the file
                raise SpecError(f"--runs-dir: cannot write {e.filename or self.path}: {e.strerror or e}") from None
            raise

    def undo_claim(self) -> None:
        """Release the run and remove what this claim (and what it started, a tracker's files)
        added to the folder, and nothing else: files of an earlier attempt or of the user stay."""
        self.release_lock()
        for p in self.path.iterdir():
            if p.name not in self._before:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        for folder in reversed(self._created):
            _rmdir_quiet(folder)

    def _decide(self, resolved: dict, restart: bool, display,
                total_steps: int | None) -> tuple[str, dict, dict | None]:
        if restart and (self.exists() or self.ckpt_dir.exists() or (self.path / "metrics.jsonl").exists()):
            self.release_lock()
            display.note(f"--restart: previous run moved to {self.archive()}")
            self.path.mkdir(parents=True)
            self.acquire_lock()
            self._before = set()
        self.clean_temporaries()
        self.warn = display.warn
        try:
            status, status_problem = self.read_status(), None
        except DamagedFile as e:  # the checkpoint or the metrics, not the status file, hold the run
            status, status_problem = {}, e.problems[0].split(";")[0]
        state = self.load_checkpoint(warn=display.warn)
        if status_problem:
            display.warn(f"warning: {status_problem}; rebuilding it from the "
                         f"{'checkpoint' if state else 'metrics'}")
        spec_ok = self._check_spec(resolved, state, display)
        rows = self._rows_on_disk(state, display)
        done = status.get("state") == "completed" or (
            not status and rows and total_steps is not None and rows[-1]["step"] >= total_steps)
        if done:
            self._repair_completed(status, rows, state, resolved, spec_ok, display)
            return "completed", self.read_status(), state
        if status.get("state") in ("diverged", "failed"):
            display.warn(f"note: this run {status['state']} before ({status.get('error')}); resuming from "
                         "its last good checkpoint repeats that unless the cause is gone")
        if state is None and rows:  # rows that no checkpoint holds would be rewritten from nothing
            display.warn(f"note: {self.name!r} has {len(rows)} metric rows but no checkpoint to resume from; "
                         f"they are kept in {self.keep_files()}, and the run starts over")
        self._spec_text = _dump_yaml(resolved)
        self.write_text("spec.yaml", self._spec_text)
        return ("fresh" if state is None else "resume"), status, state

    def _check_spec(self, resolved: dict, state: dict | None, display) -> bool:
        """Refuse a run trained with another spec; False when spec.yaml is missing or cut short
        (then the checkpoint's copy, if any, is the reference, and the file is rewritten)."""
        path = self.path / "spec.yaml"
        old = read_saved_spec(path, upgrade=False)  # as written: keys filled in would break the cut's order
        if old is not None and _cut_short(old, resolved):
            display.warn(f"warning: {path} is cut short (a copy or a disk that lost its end); "
                         "it is rewritten from the spec" + (" checked against the checkpoint's copy" if state else ""))
            old = None
        elif old is None and path.exists():
            display.warn(f"warning: {path} is unreadable; it is rewritten from the spec")
        old = upgrade_saved(old) if old is not None else None  # read as what it trained
        intact = old is not None
        if old is None and state and isinstance(state.get("spec"), dict):
            old = upgrade_saved(state["spec"])
        changed = spec_diff(old, resolved) if isinstance(old, dict) else []
        if changed:
            code = [k.split(".")[0] for k in changed if k.split(":")[0].endswith(".code_sha256")]
            why = f"; the code {code[0]}.target names has changed since" if code else ""
            if any(k.startswith("model.init_sha256:") for k in changed):  # the same source, retrained or replaced
                why += "; the checkpoint model.init names has changed since"
            raise SpecError(f"run {self.name!r} exists with a different spec ({', '.join(changed)}{why}); "
                            "use --restart to start it over (the old run is kept under "
                            f"{self.path.parent / '.archive'}) or give it another name (name=NEW)")
        return intact

    def _rows_on_disk(self, state: dict | None, display) -> list[dict[str, Any]]:
        """metrics.jsonl's rows; where it is damaged and the checkpoint holds the rows, those."""
        try:
            return self.read_metrics()
        except DamagedFile as e:
            if state is None:
                raise
            display.warn(f"warning: {e.problems[0].split(';')[0]}; rebuilt from the checkpoint")
            self.write_metrics(state["rows"])
            return list(state["rows"])

    def _repair_completed(self, status: dict, rows: list[dict], state: dict | None, resolved: dict,
                          spec_ok: bool, display) -> None:
        """A completed run is left as it is, except that a lost or damaged file is rebuilt from
        what survives (the checkpoint's rows, the spec), and metrics cut short are never taken
        for the whole run."""
        last = status.get("step", rows[-1]["step"] if rows else None)
        if not rows or rows[-1]["step"] != last:
            saved = state["rows"] if state else []
            if not saved or saved[-1]["step"] != last:
                raise DamagedFile(f"{self.path / 'metrics.jsonl'}: ends at step "
                                  f"{rows[-1]['step'] if rows else 0} but the run completed at step {last}: the "
                                  "file was cut short and no checkpoint holds the rest; restore it from a copy, "
                                  "or use --restart to train the run again (the old run is kept under .archive/)")
            display.warn(f"warning: {self.path / 'metrics.jsonl'} was cut short; rebuilt from the checkpoint")
            rows = list(saved)
            self.write_metrics(rows)
        if not spec_ok:
            self.write_text("spec.yaml", _dump_yaml(resolved))
        if not status:  # lost or damaged (said above): the metrics say the run completed
            best = min((r["val_loss"] for r in rows if isinstance(r.get("val_loss"), (int, float))), default=None)
            self.write_status(state="completed", step=last, epoch=rows[-1].get("epoch"), error=None,
                              best_val_loss=best, val_loss=rows[-1].get("val_loss"))

    def keep_files(self) -> Path:
        """Copy the folder's top-level files aside (under .archive/, as --restart does) before they are
        rewritten; returns where."""
        dest = self._archive_dest()
        dest.mkdir(parents=True)
        for p in self.path.iterdir():
            if p.is_file() and p.name != ".lock":
                shutil.copy2(p, dest / p.name)
        return dest

    def archive(self) -> Path:
        """Move this run aside (for --restart): nothing trained is deleted."""
        dest = self._archive_dest()
        shutil.move(str(self.path), str(dest))
        return dest

    def _archive_dest(self) -> Path:
        # a dot-folder, so reports over the runs folder do not count old runs twice
        archive = self.path.parent / ".archive"
        archive.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = archive / f"{self.name}-{stamp}"
        n = 1
        while dest.exists():
            dest = archive / f"{self.name}-{stamp}-{n}"
            n += 1
        return dest


def _rmdir_quiet(folder: Path) -> None:
    """Remove `folder` if it is empty (never anything in it)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _cut_short(old: dict, new: dict) -> bool:
    """Whether `old` reads like `new`'s YAML cut at a line boundary: its settings are the first
    of new's, in order and equal (name and device aside), the last perhaps a section left empty."""
    a, b = list(flatten(without_none_factor(old)).items()), list(flatten(without_none_factor(new)).items())
    if len(a) >= len(b):
        return False
    for i, (key, value) in enumerate(a):
        bkey, bvalue = b[i]
        if key == bkey and (value == bvalue or key in ("name", "device")):
            continue
        return i == len(a) - 1 and value is None and bkey.startswith(key + ".")
    return True


class FollowerRunFolder(RunFolder):
    """The run folder as the ranks other than 0 of a multi-process run see it: they read the
    checkpoint rank 0 chose to resume from and never write, so every file has one writer."""

    def write_status(self, **fields: Any) -> dict[str, Any]:
        return {**self.read_status_quiet(), **fields}

    def write_text(self, name: str, text: str) -> None: ...
    def write_metrics(self, rows: list[dict[str, Any]]) -> None: ...
    def write_error_log(self, text: str) -> None: ...
    def drop_checkpoints(self) -> None: ...
    def save_checkpoint(self, state: dict, name: str = "last.pt") -> None: ...
    def release_lock(self) -> None: ...
