"""The run folder's lock: one trainer per run, held as an OS lock (`flock`) on `.lock`.

`RunLock` holds the lock's methods for its subclass `runs.RunFolder`, which sets `lock_path`
and `_lock_fd`: a lock that the kernel drops when its process dies, and that nobody deletes
for another process, is a concern of its own, apart from the files a run folder writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from noisecli.errors import RunLocked


class RunLock:
    """`acquire_lock`, `held` and `release_lock` of a run folder's `.lock` (see `acquire_lock`)."""

    lock_path: Path  # RunFolder's: its .lock, the descriptor of the lock held (or None), its name
    _lock_fd: int | None
    name: str

    def acquire_lock(self) -> None:
        """One trainer per run folder, held as an OS lock (`flock`) on `.lock` for as long as the
        run is claimed. The kernel drops the lock when its process dies, so a lock left by a dead
        process is simply free: nobody ever deletes another process's lock, and two processes that
        find the same stale file cannot both win. The pid and host written into it serve messages."""
        for _ in range(5):
            fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                holder = self._holder()
                raise RunLocked(f"run {self.name!r} is in use by pid {holder.get('pid', '?')} on "
                                f"{holder.get('host', '?')}; wait for it, or stop it (its state is saved "
                                "on Ctrl-C)") from None
            if not self._same_file(fd):  # the owner released (and removed) it between our open and lock
                os.close(fd)
                continue
            try:
                me = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
                os.ftruncate(fd, 0)
                os.pwrite(fd, me.encode(), 0)
            except OSError:  # a full disk: the lock holds without its note; messages say "?"
                pass
            self._lock_fd = fd
            return
        raise RunLocked(f"could not take the lock {self.lock_path}: it keeps changing hands")

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.lock_path)
        except FileNotFoundError:
            return False
        return os.fstat(fd).st_ino == st.st_ino and os.fstat(fd).st_dev == st.st_dev

    def _holder(self) -> dict[str, Any]:
        """What the lock's owner wrote about itself (for messages only; never trusted for a decision)."""
        try:
            holder = json.loads(self.lock_path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def held(self) -> bool:
        """Whether a live process holds the lock (tried without taking it for more than an instant)."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock just taken
        return False

    def release_lock(self) -> None:
        """Remove the lock if this object holds it (never another process's). The file is removed
        while still locked, so a process waiting on it finds it gone and starts over (`_same_file`)."""
        fd = getattr(self, "_lock_fd", None)
        if fd is None:
            return
        self._lock_fd = None
        try:
            if self._same_file(fd):
                self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)
