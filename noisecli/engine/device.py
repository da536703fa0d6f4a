"""Which device a run trains on, in what precision (autocast, and the fp16 loss scaler), and
with how many CPU threads."""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from noisecli.errors import SpecError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"device: {name!r} asked for, but this torch sees no CUDA device; use device=cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"device: {name!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError("device: 'mps' asked for, but MPS is not available here; use device=cpu")
    return torch.device(name)


class Precision:
    """`train.precision` on `device`: its name once `auto` is decided, the autocast context the
    forward runs in, and the GradScaler (enabled for fp16 only)."""

    def __init__(self, asked: str, device: torch.device):
        if asked == "fp16" and device.type != "cuda":
            raise SpecError(f"train.precision: fp16 needs a CUDA device (device is {device.type}); "
                            "use fp32 or bf16")
        if asked == "auto":
            asked = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.name = asked
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(asked)
        self.autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=asked == "fp16")


@contextmanager
def run_threads(trainers: list, planned: int | None) -> Iterator[int]:
    """Train with the number of torch threads the runs started with (recorded in their
    status.json as `threads`), else `planned` (`train --threads`, or a sweep worker's share of
    the cores), else this process's; restored after. CPU kernels split their sums by thread, so
    a run resumed with another count would not be bitwise the uninterrupted one."""
    before = torch.get_num_threads()
    recorded = [t.run.read_status_quiet().get("threads") for t in trainers]
    n = next((r for r in recorded if isinstance(r, int) and not isinstance(r, bool) and r > 0), None)
    torch.set_num_threads(n or planned or before)
    n = torch.get_num_threads()
    try:
        for t in trainers:
            t.run.write_status(threads=n)
        yield n
    finally:
        torch.set_num_threads(before)


def available_cores() -> int:
    """The cores this process may run on (its affinity mask: a Slurm allocation, taskset), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


def oversubscribed(threads: int, processes: int = 1) -> str | None:
    """A warning when threads x processes on this machine exceed the cores available: each step
    then waits on the others' threads and runs many times slower (50x measured on 2 loaded cores)."""
    cores = available_cores()
    if threads * processes <= cores:
        return None
    each = max(1, cores // processes)
    return (f"warning: {threads} torch thread{'s' if threads > 1 else ''} x {processes} "
            f"process{'es' if processes > 1 else ''} on {cores} available core{'s' if cores > 1 else ''}: "
            f"oversubscribed threads make every step many times slower; use --threads {each}")
