"""Cost of each noise kind: time the training step with each kind against `none`, same process.

    python benchmarks/noise_overhead.py                 # GPT on synthetic text, CPU or the GPU if any
    python benchmarks/noise_overhead.py --model mlp     # an MLP on digits (includes `input`)
    python benchmarks/noise_overhead.py --model hf      # the GPT's shape as a transformers GPT-2
    python benchmarks/noise_overhead.py --device cuda --steps 200

Kinds are timed in interleaved rounds (none, token, ..., none, token, ...) so drift in the
machine's speed hits every kind alike; the table gives the median step time and its ratio
to `none`. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from noisecli.catalog import noise_kinds_for
from noisecli.spec import spec_from_dict
from noisecli.trainer import Trainer

# each setup times every noise kind that applies to its data, at the kind's example factor
SETUPS = {
    # nanoGPT's CPU Shakespeare model (4 layers, 4 heads, 128 wide, context 64, batch 12)
    "gpt": ({"data": {"kind": "markov", "vocab_size": 64, "n_tokens": 100_000, "block_size": 64},
             "model": {"kind": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128},
             "train": {"batch_size": 12, "lr": 1e-3}},
            noise_kinds_for("markov")),
    # the same shape as a transformers GPT-2 built from its config (dropout off, as in noise studies)
    "hf": ({"data": {"kind": "markov", "vocab_size": 64, "n_tokens": 100_000, "block_size": 64},
            "model": {"kind": "hf", "config": {"model_type": "gpt2", "n_layer": 4, "n_head": 4, "n_embd": 128,
                                               "resid_pdrop": 0, "embd_pdrop": 0, "attn_pdrop": 0}},
            "train": {"batch_size": 12, "lr": 1e-3}},
           noise_kinds_for("markov")),
    "mlp": ({"data": {"kind": "digits"}, "model": {"kind": "mlp", "hidden": [1024, 1024]},
             "train": {"batch_size": 256, "lr": 1e-3}},
            noise_kinds_for("digits")),
}


def make_trainer(base: dict, kind: str, factor: float, device: str, compile_: bool) -> Trainer:
    raw = {**base, "name": f"bench-{kind}", "device": device,
           "noise": {"kind": kind, "factor": factor},
           "train": {**base["train"], "epochs": 1000, "compile": compile_}}
    trainer = Trainer(spec_from_dict(raw), "/nonexistent-never-written", quiet=True).setup()
    for noise in trainer.noises:
        noise.attach(trainer.raw_model)
    trainer.model.train()
    return trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(trainer: Trainer, steps: int) -> float:
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync(trainer.device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=sorted(SETUPS), default="gpt")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=30, help="steps per timing")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model")
    ap.add_argument("--batch-size", type=int, help="override the setup's batch size")
    args = ap.parse_args()

    base, kinds = SETUPS[args.model]
    if args.batch_size:
        base = {**base, "train": {**base["train"], "batch_size": args.batch_size}}
    kinds = {"none": 0.0, **kinds}
    trainers = {k: make_trainer(base, k, f, args.device, args.compile) for k, f in kinds.items()}
    for trainer in trainers.values():  # warm up: allocations, autotuning, compilation
        time_steps(trainer, max(3, args.steps // 5))
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for k, trainer in trainers.items():
            times[k].append(time_steps(trainer, args.steps))

    first = next(iter(trainers.values()))
    print(f"model {args.model} on {first.device} ({first.precision.name}), "
          f"{sum(p.numel() for p in first.params):,} parameters, "
          f"batch {first.spec.train.batch_size}, {args.rounds} rounds x {args.steps} steps, "
          f"torch {torch.__version__}")
    print("| kind | factor | step (ms) | vs none |")
    print("| --- | --- | --- | --- |")
    base_ms = statistics.median(times["none"]) * 1e3
    for k in kinds:
        ms = statistics.median(times[k]) * 1e3
        print(f"| {k} | {kinds[k]:g} | {ms:.2f} | {ms / base_ms:.3f} |")


if __name__ == "__main__":
    main()
