"""The run folder: atomic writes, status, metrics, checkpoints, and the lock.

Every file is written to a temporary file in the same folder, flushed and fsynced, then
renamed over the old one, so a reader (or a rerun after a crash) never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from noisecli.errors import DamagedFile, RunLocked, SpecError
from noisecli.spec import dump_yaml as _dump_yaml, read_saved_spec, spec_diff

STATES = ("running", "completed", "failed", "diverged", "interrupted")
METRIC_COLUMNS = ["epoch", "step", "train_loss", "clean_train_loss", "val_loss", "val_acc", "lr",
                  "noise_factor", "grad_norm", "samples_per_s", "seconds"]


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
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunFolder:
    """runs/<name>/: spec.yaml, metrics.csv, metrics.jsonl, status.json, checkpoints/."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self.lock_path = self.path / ".lock"

    @property
    def name(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return (self.path / "status.json").exists()

    # ---------------------------------------------------------------- status

    def read_status(self) -> dict[str, Any]:
        p = self.path / "status.json"
        try:
            status = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise DamagedFile(f"{p}: unreadable status file ({e}); delete it to let the run resume "
                            "from its checkpoint") from None
        if not isinstance(status, dict) or status.get("state") not in STATES:
            raise DamagedFile(f"{p}: not a noisecli status file; delete it to let the run resume "
                            "from its checkpoint")
        return status

    def write_status(self, **fields: Any) -> dict[str, Any]:
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
        columns = [c for c in METRIC_COLUMNS if any(c in r for r in rows)] or METRIC_COLUMNS
        per_kind = [k for k in (rows[0] if rows else {}) if k.startswith("noise_factor_")]  # a list of kinds
        if per_kind:
            at = columns.index("noise_factor") + 1
            columns = columns[:at] + per_kind + columns[at:]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path / "metrics.csv", buf.getvalue())
        atomic_write(self.path / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def write_error_log(self, text: str) -> None:
        (self.path / "error.log").write_text(text)

    def drop_checkpoints(self) -> None:
        """`output.checkpoint: none`: the checkpoints served resuming only; the finished run keeps none."""
        for p in self.ckpt_dir.glob("*.pt"):
            p.unlink()

    def read_metrics(self) -> list[dict[str, Any]]:
        p = self.path / "metrics.jsonl"
        if not p.exists():
            return []
        rows = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    raise DamagedFile(f"{p}:{i}: corrupt line; rerun `noisecli train` on this run "
                                    "to rewrite it from the checkpoint") from None
        return rows

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
        """The newest loadable checkpoint (last.pt, else prev.pt), or None when there is none.

        weights_only=True: a checkpoint is data, never code. A damaged last.pt is reported
        through `warn` and prev.pt is used; if both are damaged the run cannot resume.
        """
        import torch

        problems = []
        for name in ("last.pt", "prev.pt"):
            p = self.ckpt_dir / name
            if not p.exists():
                continue
            try:
                state = torch.load(p, map_location="cpu", weights_only=True)
                if not isinstance(state, dict) or not {"model", "optimizer", "step", "rng"} <= set(state):
                    raise ValueError("not a noisecli checkpoint")
            except Exception as e:  # noqa: BLE001 - truncated, corrupt or foreign file
                problems.append(f"{p}: cannot load ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
                continue
            if problems and warn is not None:
                warn(f"warning: {problems[0]}; resuming from {p.name} (step {state['step']}) instead")
            return state
        if problems:
            raise DamagedFile(problems + [f"no loadable checkpoint in {self.ckpt_dir}: use --restart to start "
                                        "over (the damaged run is kept under .archive/)"])
        return None

    def clean_temporaries(self) -> None:
        """Remove temporary files a killed process left behind (never a finished file)."""
        for folder in (self.path, self.ckpt_dir):
            if folder.is_dir():
                for p in folder.glob(".*.tmp*"):
                    p.unlink(missing_ok=True)
                for p in folder.glob(".*.new*"):
                    p.unlink(missing_ok=True)

    # ---------------------------------------------------------------- claiming a run

    def claim(self, resolved: dict, restart: bool, display) -> tuple[str, dict, dict | None]:
        """Lock the folder and decide, under the lock: ('fresh' | 'resume' | 'completed', the old
        status, the checkpoint to resume from). Refuses a run trained with a different spec.

        Deciding under the lock means two processes (sweep workers, shards) never train the same
        run, and a run another process just completed is not redone. The caller must `release_lock`.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.acquire_lock()
        except OSError as e:
            raise SpecError(f"--runs-dir: cannot create {self.path}: {e.strerror or e}") from None
        try:
            return self._decide(resolved, restart, display)
        except BaseException:
            self.release_lock()  # a refusal leaves the folder as it was, unlocked
            raise

    def _decide(self, resolved: dict, restart: bool, display) -> tuple[str, dict, dict | None]:
        if restart and (self.exists() or self.ckpt_dir.exists()):
            self.release_lock()
            display.note(f"--restart: previous run moved to {self.archive()}")
            self.path.mkdir(parents=True)
            self.acquire_lock()
        self.clean_temporaries()
        try:
            status = self.read_status()
        except DamagedFile as e:  # the checkpoint, not the status file, is what resuming needs
            display.warn(f"warning: {e.problems[0].split(';')[0]}; rebuilding it from the checkpoint")
            status = {}
        state = self.load_checkpoint(warn=display.warn)
        changed = self.changed_keys(resolved, state)
        if changed:
            code = [k.split(".")[0] for k in changed if k.split(":")[0].endswith(".code_sha256")]
            why = f"; the code {code[0]}.target names has changed since" if code else ""
            raise SpecError(f"run {self.name!r} exists with a different spec ({', '.join(changed)}{why}); "
                            "use --restart to start it over (the old run is kept under "
                            f"{self.path.parent / '.archive'}) or give it another name (name=NEW)")
        if status.get("state") == "completed":
            return "completed", status, state
        if status.get("state") in ("diverged", "failed"):
            display.warn(f"note: this run {status['state']} before ({status.get('error')}); resuming from "
                         "its last good checkpoint repeats that unless the cause is gone")
        self.write_text("spec.yaml", _dump_yaml(resolved))
        return ("fresh" if state is None else "resume"), status, state

    def changed_keys(self, resolved: dict, state: dict | None) -> list[str]:
        """Keys whose value differs from the run's saved spec (name and device aside).

        spec.yaml is the reference; if it is missing or damaged, the copy inside the
        checkpoint is; with neither there is nothing trained to protect.
        """
        old = read_saved_spec(self.path / "spec.yaml")
        if old is None and state:
            old = state.get("spec")
        return spec_diff(old, resolved) if isinstance(old, dict) else []

    # ---------------------------------------------------------------- lock

    def acquire_lock(self) -> None:
        """One trainer per run folder; a lock left by a dead process on this host is taken over."""
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.lock_path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if holder and holder.get("host") == me["host"] and not pid_alive(int(holder.get("pid", 0))):
                    self.lock_path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if not holder:  # being written right now, or garbage: give it a moment
                    time.sleep(0.2)
                    if not self.lock_path.exists():
                        continue
                    try:
                        holder = json.loads(self.lock_path.read_text())
                    except (OSError, ValueError):
                        self.lock_path.unlink(missing_ok=True)
                        continue
                raise RunLocked(f"run {self.name!r} is in use by pid {holder.get('pid')} on "
                                f"{holder.get('host')}; wait for it, or stop it (its state is saved "
                                f"on Ctrl-C). If that process is gone, delete {self.lock_path}")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            return
        raise RunLocked(f"could not take the lock {self.lock_path}: it keeps changing hands")

    def held(self) -> bool:
        """Whether a live process holds the lock (one on another host counts as live)."""
        try:
            holder = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return self.lock_path.exists()
        return holder.get("host") != socket.gethostname() or pid_alive(int(holder.get("pid", 0)))

    def release_lock(self) -> None:
        """Remove the lock if this process holds it (never another process's)."""
        try:
            holder = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.lock_path.unlink(missing_ok=True)

    def archive(self) -> Path:
        """Move this run aside (for --restart): nothing trained is deleted."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        # a dot-folder, so reports over the runs folder do not count old runs twice
        archive = self.path.parent / ".archive"
        archive.mkdir(exist_ok=True)
        dest = archive / f"{self.name}-{stamp}"
        n = 1
        while dest.exists():
            dest = archive / f"{self.name}-{stamp}-{n}"
            n += 1
        shutil.move(str(self.path), str(dest))
        return dest


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
