"""`noisecli tune` (ASHA) against the digits finding's grid: the optimizer steps each spends, and
whether the tune's confirmed best per kind lands where the grid's best of that kind does.

    python benchmarks/tune_vs_grid.py                  # the finding's setting; about 15 minutes on one core
    python benchmarks/tune_vs_grid.py --epochs 30      # shorter runs, same comparison
    python benchmarks/tune_vs_grid.py --keep DIR       # keep both runs folders

The grid is experiments/findings-digits-mlp.yaml (four kinds at two factors and none, 5 seeds,
every run to its end). The tune searches the same four kinds over ranges around the grid's
factors (log scale, 3x beyond each end) with ASHA pruning at the evaluations, 10 trials per
kind on one seed, then confirms the best of each kind and none on 5 fresh seeds.

"The same answer": for each kind, the grid's best configuration (lowest mean best val loss,
chosen on val as the tune chooses) has a 95 % t-interval of test accuracy at the selected
checkpoint over its 5 seeds; the tune's confirmed best of that kind has a mean over its 5
confirmation seeds. Both are compared with their own `none` too (the verdict's question).
Both commands run as `noisecli` processes (run folders and all); steps are counted from the
run folders (a pruned trial's last evaluation is where it stopped).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RANGES = {"input": (0.1, 0.3), "weight": (0.02, 0.05), "activation": (0.3, 1.0), "gradient": (0.01, 0.1)}


def noisecli(*args, cwd: Path) -> float:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "noisecli", *map(str, args)], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def specs(folder: Path, epochs: int, trials_per_kind: int) -> tuple[Path, Path]:
    grid = yaml.safe_load((ROOT / "experiments" / "findings-digits-mlp.yaml").read_text())
    grid["base"]["train"]["epochs"] = epochs
    grid["base"]["device"] = "cpu"
    tune = {"name": "tune", "base": grid["base"], "objective": "best_val_loss", "seeds": 1,
            "trials": trials_per_kind * len(RANGES), "sampler": "tpe",
            "pruner": {"kind": "asha", "min_resource": grid["base"]["train"]["eval_every"], "reduction_factor": 3},
            "search": {"noise": {k: {"factor": [lo / 3, hi * 3], "log": True} for k, (lo, hi) in RANGES.items()}},
            "confirm": {"seeds": 5}}
    (folder / "grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    (folder / "tune.yaml").write_text(yaml.safe_dump(tune, sort_keys=False))
    return folder / "grid.yaml", folder / "tune.yaml"


def read_run(path: Path) -> dict:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    spec = yaml.safe_load((path / "spec.yaml").read_text())
    noise = spec["noise"][0] if isinstance(spec["noise"], list) else spec["noise"]
    final = json.loads((path / "final.json").read_text()) if (path / "final.json").exists() else {}
    return {"kind": noise["kind"], "factor": noise.get("factor"), "steps": rows[-1]["step"] if rows else 0,
            "best_val": min(r["val_loss"] for r in rows) if rows else math.nan,
            "test_acc": final.get("selected", {}).get("test_acc")}


def runs_under(folder: Path) -> list[dict]:
    return [read_run(p.parent) for p in sorted(folder.rglob("metrics.jsonl")) if ".archive" not in p.parts]


def interval(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) if n > 1 else math.inf
    return mean, mean - half, mean + half


def grid_best(runs: list[dict]) -> dict[str, dict]:
    configs: dict[tuple, list[dict]] = {}
    for r in runs:
        configs.setdefault((r["kind"], r["factor"] if r["kind"] != "none" else None), []).append(r)
    best: dict[str, dict] = {}
    for (kind, factor), members in configs.items():
        score = sum(m["best_val"] for m in members) / len(members)
        if kind not in best or score < best[kind]["score"]:
            best[kind] = {"factor": factor, "score": score, "acc": interval([m["test_acc"] for m in members])}
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--trials-per-kind", type=int, default=10)
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tune-vs-grid-"))
    try:
        grid_spec, tune_spec = specs(folder, args.epochs, args.trials_per_kind)
        grid_s = noisecli("sweep", grid_spec, "--runs-dir", folder / "runs", "-q", cwd=folder)
        tune_s = noisecli("tune", tune_spec, "--runs-dir", folder / "runs", "-q", cwd=folder)
        report(folder / "runs", grid_s, tune_s, args)
        if args.keep:
            shutil.copytree(folder / "runs", args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def report(runs: Path, grid_s: float, tune_s: float, args) -> None:
    grid = runs_under(runs / "findings-digits-mlp")
    trials, confirm = runs_under(runs / "tune" / "trials"), runs_under(runs / "tune" / "confirm")
    g_steps, t_steps, c_steps = (sum(r["steps"] for r in x) for x in (grid, trials, confirm))
    pruned = sum(t["state"] == "pruned" for t in json.loads((runs / "tune" / "trials.json").read_text())["trials"])
    print(f"digits, MLP 256x256, {args.epochs} epochs; torch threads {os.environ.get('OMP_NUM_THREADS', 'all')}")
    print(f"grid   {len(grid)} runs to the end: {g_steps:,} optimizer steps, {grid_s:.0f} s")
    print(f"tune   {len(trials)} trials ({pruned} pruned by ASHA): {t_steps:,} steps; confirmation {len(confirm)} "
          f"runs: {c_steps:,} steps; {tune_s:.0f} s")
    both = (t_steps + c_steps) / g_steps
    print(f"tune / grid steps: search {t_steps / g_steps:.2f}, search + confirmation {both:.2f}")
    best = grid_best(grid)
    conf: dict[str, list[dict]] = {}
    for r in confirm:
        conf.setdefault(r["kind"], []).append(r)
    print(f"{'kind':<11} {'grid best':>9} {'grid test acc [95% CI]':>30} {'tune best':>9} {'tune test acc':>13}  "
          "within")
    for kind, b in best.items():
        c = conf.get(kind, [])
        mean = sum(r["test_acc"] for r in c) / len(c) if c else math.nan
        factor = f"{c[0]['factor']:.3g}" if c and c[0]["factor"] is not None and kind != "none" else "-"
        inside = b["acc"][1] <= mean <= b["acc"][2]
        gf = f"{b['factor']:.3g}" if b["factor"] is not None else "-"
        print(f"{kind:<11} {gf:>9} {b['acc'][0]:>10.4f} [{b['acc'][1]:.4f}, {b['acc'][2]:.4f}] {factor:>9} "
              f"{mean:>13.4f}  {'yes' if inside else 'no'}")


if __name__ == "__main__":
    sys.exit(main())
