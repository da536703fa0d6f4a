"""Which device a run trains on and in what precision (autocast, and the fp16 loss scaler)."""

from __future__ import annotations

from contextlib import nullcontext

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
