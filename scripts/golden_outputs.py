"""Outputs that a refactoring must leave byte for byte: run this before and after, then diff.

    python scripts/golden_outputs.py OUT       # OUT/digest/ holds what is compared
    diff -r BEFORE/digest AFTER/digest

What it writes: the resolved spec.yaml of every experiment (each sweep point's too); the
metrics (timing columns removed: samples_per_s, seconds) of the quick start and of one small
run per noise kind, trained in one process, under torchrun with 2 gloo processes and as a
`sweep --batched` stack; and `report` md/csv/json of the teacher sweep. Everything runs
through the CLI, as a user runs it, with one torch thread per process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"samples_per_s", "seconds"}
TABLE = {"data": {"kind": "digits", "train_size": 96}, "model": {"kind": "mlp", "hidden": [32, 32]},
         "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "eval_every": 4}, "device": "cpu"}
TEXT = {"data": {"kind": "markov", "block_size": 16, "n_tokens": 3000},
        "model": {"kind": "gpt", "n_layer": 1, "n_embd": 32, "n_head": 2},
        "train": {"max_steps": 16, "eval_every": 8, "batch_size": 8, "lr": 3e-3, "eval_batches": 2}, "device": "cpu"}
KINDS = {"none": (TABLE, 0.0), "input": (TABLE, 0.3), "weight": (TABLE, 0.05), "anticorrelated": (TABLE, 0.05),
         "gradient": (TABLE, 0.01), "activation": (TABLE, 0.3), "token": (TEXT, 0.2), "embedding": (TEXT, 5.0)}


def cli(*args: str, cwd: Path, torchrun: bool = False) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    head = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "noisecli"]
            if torchrun else [sys.executable, "-m", "noisecli"])
    r = subprocess.run([*head, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def metrics(run: Path) -> str:
    rows = list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))
    out = io.StringIO()
    cols = [c for c in rows[0] if c not in TIMING]
    w = csv.DictWriter(out, cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


def main(out: Path) -> None:
    out = out.resolve()
    digest, work = out / "digest", out / "work"
    digest.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from noisecli.errors import SpecError
    from noisecli.spec import dump_yaml, is_sweep_file, load_spec, read_yaml, spec_to_dict
    from noisecli.sweep import load_plan

    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        try:
            if is_sweep_file(read_yaml(path)):
                text = "".join(f"# {p.name}\n{dump_yaml(spec_to_dict(p.spec))}" for p in load_plan(path).points)
            else:
                text = dump_yaml(spec_to_dict(load_spec(path)))
        except SpecError as e:  # a spec that needs a file this checkout lacks (shakespeare-char)
            text = f"refused: {e}\n"
        (digest / f"spec-{path.stem}.yaml").write_text(text.replace(str(ROOT), "ROOT"))

    cli("train", str(ROOT / "experiments/quickstart.yaml"), "--runs-dir", str(work / "runs"), "--quiet", cwd=work)
    (digest / "metrics-quickstart.csv").write_text(metrics(work / "runs/quickstart"))

    for kind, (base, factor) in KINDS.items():
        spec = {**base, "name": f"one-{kind}", "noise": {"kind": kind, "factor": factor}}
        (work / f"{kind}.yaml").write_text(yaml.safe_dump(spec))
        cli("train", f"{kind}.yaml", "--runs-dir", "one", "--quiet", cwd=work)
        (digest / f"metrics-one-{kind}.csv").write_text(metrics(work / "one" / f"one-{kind}"))
        if kind != "activation":  # draws per rank: not one process's stream, by design
            cli("train", f"{kind}.yaml", "--runs-dir", "two", "--quiet", cwd=work, torchrun=True)
            (digest / f"metrics-torchrun-{kind}.csv").write_text(metrics(work / "two" / f"one-{kind}"))
        sweep = {"name": f"stack-{kind}", "base": {k: v for k, v in base.items()},
                 "grid": {"noise.kind": [kind], "noise.factor": [0.0, factor]}, "seeds": 2}
        (work / f"stack-{kind}.yaml").write_text(yaml.safe_dump(sweep))
        cli("sweep", f"stack-{kind}.yaml", "--batched", "--runs-dir", "stacked", "--quiet", cwd=work)
        for run in sorted((work / "stacked" / f"stack-{kind}").iterdir()):
            if (run / "metrics.csv").is_file():
                (digest / f"metrics-stacked-{kind}-{run.name}.csv").write_text(metrics(run))

    cli("sweep", str(ROOT / "experiments/teacher-sweep.yaml"), "--runs-dir", "teacher", "--quiet", cwd=work)
    for fmt in ("md", "csv", "json"):
        cli("report", "teacher/teacher-sweep", "-f", fmt, "-o", str(digest / f"report-teacher.{fmt}"), cwd=work)
    print(json.dumps({"digest": str(digest), "files": len(list(digest.iterdir()))}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
