"""Stopping cleanly: a signal, or the reader of our output going away, asks for a stop; the
loop that owns the work (a trainer, a sweep) finishes its step, saves, and exits 128 + N.

One `StopRequest` is shared by whoever may ask (the signal handler, the display when its
pipe closes) and the loop that checks it once per step, so neither needs to know the other.
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Iterator


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum

    def clear(self) -> None:
        self.signum = None

    @contextmanager
    def catching(self, second_sigint_stops_now: bool = True) -> Iterator["StopRequest"]:
        """While inside: SIGINT and SIGTERM request a stop. A second SIGINT raises
        KeyboardInterrupt (stop now, without saving) where `second_sigint_stops_now`."""

        def handler(signum, frame):
            if second_sigint_stops_now and self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.request(signum)

        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave signals to the caller
                pass
        try:
            yield self
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
