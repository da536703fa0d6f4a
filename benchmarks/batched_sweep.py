"""`sweep --batched` against the same sweep run point after point, in one process, on one plan.

    python benchmarks/batched_sweep.py                      # 16 points: MLP 256x256 on digits, CPU
    python benchmarks/batched_sweep.py --kind weight --epochs 10
    python benchmarks/batched_sweep.py --device cuda        # where there is a GPU
    python benchmarks/batched_sweep.py --kind weight --float64   # equality alone, in float64
    python benchmarks/batched_sweep.py --kind all --cli     # every kind, as `noisecli sweep` commands

Both runs go through `run_sweep`, the code `noisecli sweep` runs (run folders, checkpoints
and all), into two temporary runs folders; with `--cli` they are the two commands a user
types (`noisecli sweep FILE` and `noisecli sweep FILE --batched`), each in its own process,
start-up included. Several kinds end with one table line per kind. It prints each one's wall-clock, the ratio, and
the relative differences of every point's val loss at every evaluation (fp32). A one-time
warm-up (torch's optimizer import, the first kernel launches) runs before either is timed.

What "equal" can mean in fp32: a batched matmul adds in another order than a plain one, and
a few training trajectories amplify a 1e-7 difference (a ReLU whose input crosses zero). To
say how much of a difference is that alone, the sequential plan is run a second time on one
thread (another summation order, nothing else changed) and compared with the first. It
exits 1 if the batched run differs from the sequential one by more than --tolerance (1e-3)
and by more than the sequential run differs from itself.

`--float64` trains both plans in float64 (the data cast too): a stack that computed something
other than its points would still differ there, while summation order shrinks to float64's
precision. Its timings mean nothing. Measured 2026-12-02 (docs/cost.md), 8 points of weight
noise, 135 steps, one thread: final weights differ by at most 6.1e-5 in fp32 and 9.8e-15 in
float64 (the val losses by 1.2e-7 there: the loss is computed in float32); after one step,
fp32 already differs by 4.5e-5 on one weight, AdamW's first update lr * g / (|g| + eps)
turning a summation-order change of a gradient near eps into a visible step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from noisecli.sweep import load_plan
from noisecli.sweep_run import run_sweep


def sweep_file(folder: Path, args) -> Path:
    factors = [round(0.1 * i * args.scale, 6) for i in range(args.points // args.seeds)]
    spec = {"name": "bench",
            "base": {"device": args.device, "data": {"kind": "digits"},
                     "model": {"kind": "mlp", "hidden": [args.width, args.width]},
                     "noise": {"kind": args.kind, "factor": 0.1},
                     "train": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3,
                               "precision": "fp32"}},
            "grid": {"noise.factor": factors}, "seeds": args.seeds}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "bench.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def timed(plan, runs: Path, max_batch: int | None) -> float:
    start = time.perf_counter()
    outcomes = run_sweep(plan, plan.points, runs / plan.name, jobs=1, devices=[], fail_fast=False, quiet=True,
                         max_batch=max_batch)
    seconds = time.perf_counter() - start
    bad = [o for o in outcomes if o.state != "completed"]
    if bad:
        sys.exit(f"{bad[0].name}: {bad[0].state} {bad[0].message}")
    return seconds


def val_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def val_losses(run_dir: Path) -> list[float]:
    return [row["val_loss"] for row in val_rows(run_dir)]


def differences(plan, a: Path, b: Path) -> tuple[float, float, str]:
    """Median and largest relative difference of val loss over all points and evaluations."""
    diffs = []
    for p in plan.points:
        x, y = val_losses(a / plan.name / p.name), val_losses(b / plan.name / p.name)
        assert len(x) == len(y)
        diffs += [(abs(u - v) / abs(u), f"{p.name}, evaluation {i + 1}") for i, (u, v) in enumerate(zip(x, y))]
    diffs.sort()
    return diffs[len(diffs) // 2][0], diffs[-1][0], diffs[-1][1]


def weight_difference(plan, a: Path, b: Path) -> tuple[float, str]:
    """The largest absolute difference of any final weight between the two plans' points."""
    worst = (0.0, "")
    for p in plan.points:
        x, y = (torch.load(r / plan.name / p.name / "checkpoints" / "last.pt", weights_only=False)["model"]
                for r in (a, b))
        for name, w in x.items():
            worst = max(worst, ((w.double() - y[name].double()).abs().max().item(), f"{p.name} {name}"))
    return worst


def use_float64() -> None:
    """Every tensor the runs make in float64: the default dtype, and the datasets' float features,
    which the loaders build as float32 (a benchmark-only patch; noisecli trains in fp32 or lower)."""
    from noisecli.data import Dataset

    torch.set_default_dtype(torch.float64)
    move = Dataset.to

    def to(self, device):
        move(self, device)
        for name in ("x_train", "x_val", "x_test"):
            t = getattr(self, name)
            if t is not None and t.is_floating_point():
                setattr(self, name, t.double())
        return self

    Dataset.to = to


# each kind's factors are 0, 0.1, 0.2, ... times this (--scale overrides): strengths at which
# every kind trains without diverging on this MLP
SCALES = {"input": 1.0, "weight": 0.1, "anticorrelated": 0.1, "gradient": 0.01, "activation": 1.0}


def timed_cli(spec: Path, runs: Path, max_batch: int | None, threads: int | None = None) -> float:
    """`noisecli sweep` in its own process, as a user runs it (start-up, imports and run folders
    included); `--batched --max-batch M` when max_batch is given."""
    command = [sys.executable, "-m", "noisecli", "sweep", str(spec), "--runs-dir", str(runs), "-q"]
    if max_batch:
        command += ["--batched", "--max-batch", str(max_batch)]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"noisecli sweep failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def measure(kind: str, args, tmp: Path) -> dict:
    """One kind: both plans timed (in this process, or with --cli as two `noisecli sweep`
    commands), their differences, and the sequential plan on one thread against itself."""
    args = argparse.Namespace(**{**vars(args), "kind": kind,
                                 "scale": args.scale if args.scale is not None else SCALES.get(kind, 1.0)})
    folder = tmp / kind
    folder.mkdir()
    path = sweep_file(folder, args)
    plan = load_plan(path)
    threads = torch.get_num_threads()
    if args.cli:
        sequential = timed_cli(path, folder / "sequential", None)
        batched = timed_cli(path, folder / "batched", args.points)
    else:
        warm = load_plan(sweep_file(folder / "warm", argparse.Namespace(**{**vars(args), "epochs": 1, "points": 2,
                                                                            "seeds": 1})))
        timed(warm, folder / "warm-seq", None)
        timed(warm, folder / "warm-bat", 64)
        sequential = timed(plan, folder / "sequential", None)
        batched = timed(plan, folder / "batched", args.points)
    median, worst, where = differences(plan, folder / "sequential", folder / "batched")
    weights, weights_where = weight_difference(plan, folder / "sequential", folder / "batched")
    floor, floor_where = 0.0, ""
    if threads > 1:
        if args.cli:
            timed_cli(path, folder / "one-thread", None, threads=1)
        else:
            torch.set_num_threads(1)
            timed(plan, folder / "one-thread", None)
            torch.set_num_threads(threads)
        _, floor, floor_where = differences(plan, folder / "sequential", folder / "one-thread")
    return {"kind": kind, "scale": args.scale, "points": len(plan.points), "threads": threads,
            "steps": val_rows(folder / "sequential" / plan.name / plan.points[0].name)[-1]["step"],
            "sequential": sequential, "batched": batched, "median": median, "worst": worst, "where": where,
            "weights": weights, "weights_where": weights_where, "floor": floor, "floor_where": floor_where,
            "equal": worst <= max(args.tolerance, floor)}


def show(r: dict, args) -> None:
    print(f"{r['points']} points ({r['kind']} noise, factors 0-{0.1 * (r['points'] // args.seeds - 1) * r['scale']:g}, "
          f"MLP {args.width}x{args.width} on digits, {r['steps']} steps each), {args.device}, {r['threads']} threads, "
          f"torch {torch.__version__}" + (", through `noisecli sweep`" if args.cli else ", in one process")
          + (", float64 (timings not comparable)" if args.float64 else ""))
    print(f"sequential  {r['sequential']:7.2f} s")
    print(f"batched     {r['batched']:7.2f} s")
    print(f"speed-up    {r['sequential'] / r['batched']:7.2f}x")
    print(f"val loss, batched vs sequential, relative, over {r['points']} points x every evaluation: "
          f"median {r['median']:.1e}, largest {r['worst']:.1e} ({r['where']})")
    print(f"final weights, batched vs sequential: largest absolute difference {r['weights']:.1e} "
          f"({r['weights_where']})")
    if r["threads"] > 1:
        print(f"the sequential plan on 1 thread vs on {r['threads']} (summation order alone): largest "
              f"{r['floor']:.1e} ({r['floor_where']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--kind", default="input", help=f"a kind, several (input,weight), or all ({', '.join(SCALES)})")
    ap.add_argument("--scale", type=float, default=None,
                    help="factors are 0, 0.1, 0.2, ... times this (default: per kind, " +
                         ", ".join(f"{k} {v:g}" for k, v in SCALES.items()) + ")")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--cli", action="store_true",
                    help="time `noisecli sweep` and `noisecli sweep --batched` as commands (start-up included)")
    ap.add_argument("--float64", action="store_true", help="train in float64: the equality check alone")
    args = ap.parse_args()
    if args.float64 and args.cli:
        sys.exit("--float64 patches this process; it cannot reach `noisecli sweep` commands (leave out --cli)")
    if args.float64:
        use_float64()
    kinds = list(SCALES) if args.kind == "all" else args.kind.split(",")

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            results.append(measure(kind, args, Path(tmp)))
            show(results[-1], args)
            print()
    if len(results) > 1:
        print("| kind | sequential (s) | batched (s) | speed-up | largest val-loss difference | summation order alone "
              "| equal |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(f"| {r['kind']} | {r['sequential']:.2f} | {r['batched']:.2f} | {r['sequential'] / r['batched']:.2f}x "
                  f"| {r['worst']:.1e} | {r['floor']:.1e} | {'yes' if r['equal'] else 'NO'} |")
    unequal = [r["kind"] for r in results if not r["equal"]]
    if unequal:
        sys.exit(f"batched and sequential differ by more than {args.tolerance} and more than summation order "
                 f"explains: {', '.join(unequal)}")


if __name__ == "__main__":
    main()
