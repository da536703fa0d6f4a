"""One run on several processes: torchrun's environment, the process group, and the few
collectives the trainer needs.

`torchrun --nproc-per-node N -m noisecli train SPEC` starts N copies of `noisecli train`
with RANK, WORLD_SIZE and LOCAL_RANK set. Every rank draws the *global* batch (the same
data order and the same input-level noise on every rank, from the same seeded
generators) and keeps its share of the rows; DistributedDataParallel averages the
gradients; everything after the all-reduce (clipping, gradient noise, the optimizer,
weight noise) then happens identically on every rank. So a spec means the same
experiment on 1 or N processes, and the state in a checkpoint does not depend on N.

Streams that are deliberately per rank (dropout masks, activation noise) are reseeded
from (seed, rank, step) with `rank_seed`; rank 0 keeps the stream a single process has.
Rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from noisecli.errors import SpecError


def env_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def rank_seed(seed: int, rank: int, step: int, stream: int = 0) -> int:
    """A seed for a per-rank stream; rank 0 is never reseeded, so one process is unchanged."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729 + stream * 15_485_863) % (2 ** 63)


@dataclass
class World:
    """This process's place among the run's processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    _control: Any = field(default=None, repr=False)  # a gloo group for host-side agreement

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls) -> "World":
        size = env_world_size()
        if size <= 1:
            return cls()
        return cls(rank=env_rank(), size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))

    def device_for(self, device: torch.device) -> torch.device:
        """cuda means this rank's own GPU (LOCAL_RANK) when there are several processes."""
        if self.distributed and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise SpecError(f"device: LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} "
                                "CUDA devices here; start no more processes per node than GPUs")
            return torch.device("cuda", self.local_rank)
        return device

    def start(self, device: torch.device) -> None:
        """Join the process group (nccl on CUDA, gloo otherwise) and make the control group."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
        # stop agreement is a host question: asked over gloo, it never waits on the GPU
        self._control = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD

    def stop(self, together: bool = False) -> None:
        """Leave the process group. When every rank ends at the same point (the run finished, or
        they agreed on the step to stop after and saved), the ranks first wait for each other (a
        bounded barrier over the gloo control group): a rank that tore its group down while another
        still used it aborted at exit ("terminate called without an active exception", 2 of 6
        torchrun runs here; 0 of 8 with the barrier; the same abort once in CI after an agreed
        SIGTERM stop). After a failure nobody waits."""
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                control = getattr(self, "_control", None)
                if together and control is not None:
                    try:
                        dist.monitored_barrier(control, timeout=timedelta(seconds=60), wait_all_ranks=True)
                    except RuntimeError:  # a rank that did not come: tear down all the same
                        pass
                dist.destroy_process_group()

    # ---------------------------------------------------------------- the global batch

    def share(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch (as even as the rows allow; torch.tensor_split)."""
        if not self.distributed:
            return t
        return t.tensor_split(self.size)[self.rank]

    def rows(self, n: int) -> tuple[int, int]:
        """The [start, stop) rows `share` gives this rank out of n."""
        q, r = divmod(n, self.size)
        start = self.rank * q + min(self.rank, r)
        return start, start + q + (1 if self.rank < r else 0)

    # ---------------------------------------------------------------- collectives

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place, and returned); the identity on one process."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank if it is True on any: how the ranks agree to stop at the same step."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._control)
        return bool(t.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]
