"""What only a GPU can show, in one short run: bf16 autocast under `precision: auto`, fused
AdamW, torch.compile, and no host sync inside the training step for any noise kind
(torch.cuda.set_sync_debug_mode("error") turns any sync into an exception), plus
tokens/s eager against compiled.

    python benchmarks/cuda_check.py            # exits 2 at once where there is no CUDA device
"""

from __future__ import annotations

import sys
import time

import torch

from noisecli.spec import spec_from_dict
from noisecli.trainer import Trainer

FACTORS = {"none": 0.0, "token": 0.1, "embedding": 5.0, "weight": 0.01, "activation": 0.1, "gradient": 0.01,
           "anticorrelated": 0.01}


def trainer_for(kind: str, compile_: bool = False, width: int = 384) -> Trainer:
    raw = {"name": f"cuda-{kind}", "device": "cuda",
           "data": {"kind": "markov", "vocab_size": 64, "n_tokens": 400_000, "block_size": 256},
           "model": {"kind": "gpt", "n_layer": 6, "n_head": 6, "n_embd": width},
           "noise": {"kind": kind, "factor": FACTORS[kind]},
           "train": {"batch_size": 64, "lr": 1e-3, "epochs": 100, "compile": compile_}}
    trainer = Trainer(spec_from_dict(raw), "/nonexistent-never-written", quiet=True).setup()
    for noise in trainer.noises:
        noise.attach(trainer.raw_model)
    trainer.model.train()
    return trainer


def tokens_per_s(trainer: Trainer, steps: int = 30) -> float:
    for _ in range(5):
        trainer.train_step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    torch.cuda.synchronize()
    return steps * trainer.spec.train.batch_size * trainer.data.block_size / (time.perf_counter() - start)


def main() -> int:
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device here", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    base = trainer_for("none")
    assert base.precision == "bf16", base.precision
    assert base.optimizer.defaults.get("fused") is True
    print("precision auto -> bf16: ok; AdamW fused: ok")
    rates = {}
    for kind in FACTORS:
        trainer = base if kind == "none" else trainer_for(kind)
        trainer.train_step()  # allocations and lazy initialization outside the check
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        rates[kind] = tokens_per_s(trainer)
        print(f"{kind:15s} no host sync in the step: ok; {rates[kind]:,.0f} tokens/s "
              f"({rates['none'] / rates[kind]:.3f}x the step time of none)")
    compiled = tokens_per_s(trainer_for("none", compile_=True))
    print(f"torch.compile: {compiled:,.0f} tokens/s ({compiled / rates['none']:.2f}x eager)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
