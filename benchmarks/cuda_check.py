"""What only a GPU can show, in one short run: bf16 autocast under `precision: auto`, fused
AdamW, torch.compile, and no host sync inside the training step for any noise kind
(torch.cuda.set_sync_debug_mode("error") turns any sync into an exception), plus
tokens/s eager against compiled.

    python benchmarks/cuda_check.py            # exits 2 at once where there is no CUDA device
    python benchmarks/cuda_check.py --model hf # the same shape as a transformers GPT-2

For `hf`, transformers' own mask code syncs once per eager forward; the check then names
the line that synced instead of failing, and the compiled step is checked too.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import torch

from noisecli.catalog import noise_kinds_for
from noisecli.spec import spec_from_dict
from noisecli.trainer import Trainer

FACTORS = {"none": 0.0, **noise_kinds_for("markov")}  # every kind that acts on text, at its example factor


MODELS = {
    "gpt": {"kind": "gpt", "n_layer": 6, "n_head": 6, "n_embd": 384},
    "hf": {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 6, "n_head": 6, "n_embd": 384,
                                    "resid_pdrop": 0, "embd_pdrop": 0, "attn_pdrop": 0}},
}


def trainer_for(kind: str, model: str, compile_: bool = False) -> Trainer:
    raw = {"name": f"cuda-{kind}", "device": "cuda",
           "data": {"kind": "markov", "vocab_size": 64, "n_tokens": 400_000, "block_size": 256},
           "model": MODELS[model],
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


def sync_in_step(trainer: Trainer) -> str | None:
    """None when three steps run without a host sync; else where the first one happened."""
    trainer.train_step()  # allocations and lazy initialization outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            trainer.train_step()
    except RuntimeError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if "/torch/" not in f.filename]
        return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else str(e).splitlines()[0]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(MODELS), default="gpt")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("cuda_check: no CUDA device here", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}, model {args.model}")
    base = trainer_for("none", args.model)
    assert base.precision.name == "bf16", base.precision.name
    assert base.optimizer.defaults.get("fused") is True
    print("precision auto -> bf16: ok; AdamW fused: ok")
    rates = {}
    failed = False
    for kind in FACTORS:
        trainer = base if kind == "none" else trainer_for(kind, args.model)
        where = sync_in_step(trainer)
        noisecli_sync = where is not None and "/noisecli/" in where
        failed |= noisecli_sync or (where is not None and args.model == "gpt")
        rates[kind] = tokens_per_s(trainer)
        print(f"{kind:15s} host sync in the step: {'none' if where is None else where}"
              f"{' <- FAIL' if noisecli_sync else ''}; {rates[kind]:,.0f} tokens/s "
              f"({rates['none'] / rates[kind]:.3f}x the step time of none)")
    compiled_trainer = trainer_for("none", args.model, compile_=True)
    compiled = tokens_per_s(compiled_trainer)
    where = sync_in_step(compiled_trainer)
    failed |= where is not None
    print(f"torch.compile: {compiled:,.0f} tokens/s ({compiled / rates['none']:.2f}x eager); "
          f"host sync in the compiled step: {'none' if where is None else where}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
