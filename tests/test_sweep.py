"""Sweeps: expansion, names, skip and resume, failure policy, shards, concurrent workers."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from noisecli.errors import Interrupted, SpecError
from noisecli.sweep import load_plan, shard_points
from tests.conftest import ROOT, TINY, write_spec
from tests.test_train import train_run

BASE = {"data": {"kind": "digits", "train_size": 64}, "model": {"kind": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3}}


def sweep_file(tmp_path, grid, seeds=2, name="grid", **extra):
    return write_spec(tmp_path, {"name": name, "base": BASE, "grid": grid, "seeds": seeds, **extra}, "sweep.yaml")


def states(sweep_dir):
    return {p.name: json.loads((p / "status.json").read_text()) for p in sorted(sweep_dir.iterdir())
            if (p / "status.json").exists()}


def test_grid_expands_merges_none_and_names_points_by_settings(tmp_path):
    plan = load_plan(sweep_file(tmp_path, {"noise.kind": ["none", "input"], "noise.factor": [0.1, 0.2]}))
    assert [p.name for p in plan.points] == [
        "kind-none_seed-0", "kind-none_seed-1",
        "kind-input_factor-0.1_seed-0", "kind-input_factor-0.1_seed-1",
        "kind-input_factor-0.2_seed-0", "kind-input_factor-0.2_seed-1"]
    assert plan.merged == 2  # none at 0.2 is none at 0.1
    assert plan.points[2].spec.noise[0].factor == 0.1 and plan.points[2].spec.seed == 0
    again = load_plan(sweep_file(tmp_path, {"noise.kind": ["none", "input"], "noise.factor": [0.1, 0.2]}))
    assert [p.name for p in again.points] == [p.name for p in plan.points]  # stable, not counters


def test_whole_noise_entries_as_grid_values(tmp_path):
    plan = load_plan(sweep_file(tmp_path, {"noise": [{"kind": "none"}, {"kind": "weight", "factor": 0.02}]}, 1))
    assert [p.name for p in plan.points] == ["noise-none_seed-0", "noise-weight-0.02_seed-0"]


def test_a_plain_spec_swept_from_the_command_line(tmp_path):
    spec = write_spec(tmp_path, {"name": "base", **TINY})
    plan = load_plan(spec, ["noise.factor=0,0.5", "noise.kind=input,weight"], "3")
    assert plan.name == "base-sweep" and plan.seeds == [0, 1, 2]
    # input 0 and weight 0 are both no noise: one baseline, trained once per seed, never compared with itself
    assert len(plan.points) == 9 and plan.merged == 3
    assert [p.name for p in plan.points[:3]] == ["kind-none_seed-0", "kind-none_seed-1", "kind-none_seed-2"]
    assert all(p.spec.noise[0].kind == "none" for p in plan.points[:3])
    assert plan.points[3].name == "factor-0.5_kind-input_seed-0"


@pytest.mark.parametrize("raw,message", [
    ({"base": BASE, "grid": {"noise.factor": 0.1}}, "grid.noise.factor: must be a non-empty list of values"),
    ({"base": BASE, "grdi": {}}, "grdi: unknown sweep key; did you mean 'grid'?"),
    ({"base": BASE, "grid": {"train.lrr": [1]}}, "grid point train.lrr=1: train.lrr: unknown key; did you mean 'lr'?"),
    ({"base": BASE, "seeds": 0}, "seeds: a count of seeds must be >= 1, got 0"),
    ({"base": BASE, "seeds": [1, 1]}, "seeds: seeds are listed twice"),
    ({"base": "missing.yaml"}, "base: file not found"),
    ({"base": BASE, "name": "../x"}, "name: '../x' must be 1-100 letters"),
    ({"base": BASE, "grid": {"seed": [1, 2]}}, "grid.seed: list seeds under `seeds:`"),
])
def test_bad_sweep_specs_exit_2_and_create_nothing(cli, tmp_path, raw, message):
    path = write_spec(tmp_path, raw, "bad.yaml")
    code, _, err = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_every_problem_of_a_sweep_spec_at_once_once_and_where_it_is(cli, tmp_path):
    """Not in stages (seeds first, then the grid), not once per grid point, a base typo blamed
    on the base, and misspelled top-level keys with a suggestion."""
    path = write_spec(tmp_path, {"base": {**BASE, "train": {"lrr": 1}},
                                 "grid": {"noise.factr": [0.1, 0.2], "noise.kind": ["input", "weight"]},
                                 "seeds": "three"}, "bad.yaml")
    code, _, err = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.splitlines() == [
        "error: seeds: must be a count or a list of integers, got 'three'",
        "error: base.train.lrr: unknown key; did you mean 'lr'?",
        "error: grid.noise.factr: unknown key; did you mean 'factor'?"]
    path = write_spec(tmp_path, {"bsae": BASE, "grids": {"noise.factor": [0.1]}}, "typos.yaml")
    code, _, err = cli("sweep", path, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.splitlines()[:2] == ["error: bsae: unknown sweep key; did you mean 'base'?",
                                                  "error: grids: unknown sweep key; did you mean 'grid'?"]
    assert not (tmp_path / "runs").exists()


def test_specs_given_to_the_wrong_command_say_which_one(cli, tmp_path):
    sweep = sweep_file(tmp_path, {"noise.kind": ["none", "input"]})
    code, _, err = cli("train", sweep, "--runs-dir", tmp_path / "runs")
    assert (code, err.strip()) == (2, f"error: {sweep}: this is a sweep spec (base, grid, seeds); run it with: "
                                      f"noisecli sweep {sweep}")
    plain = write_spec(tmp_path, {"name": "one", **TINY}, "one.yaml")
    code, _, err = cli("sweep", plain, "--runs-dir", tmp_path / "runs")
    assert (code, err.strip()) == (2, f"error: {plain}: a plain spec with nothing to sweep; give --grid "
                                      f"KEY=V1,V2,... and/or --seeds N, or train it with: noisecli train {plain}")
    code, out, _ = cli("sweep", plain, "--seeds", "1", "--dry-run")
    assert code == 0 and out.startswith("sweep one-sweep: 1 point (0 grid keys x 1 seed) -> runs/one-sweep")
    assert not (tmp_path / "runs").exists()


def test_shards_cover_the_grid_exactly_once(tmp_path):
    plan = load_plan(sweep_file(tmp_path, {"noise.kind": ["input", "weight"], "noise.factor": [0.1, 0.2, 0.3]}, 3))
    everything = [p.name for p in plan.points]
    for n in range(1, 6):
        shards = [[p.name for p in shard_points(plan.points, f"{k}/{n}")] for k in range(1, n + 1)]
        assert sorted(sum(shards, [])) == sorted(everything)
    for bad in ("0/3", "4/3", "x", "1-3"):
        with pytest.raises(SpecError, match="--shard: must be K/N"):
            shard_points(plan.points, bad)


def test_sweep_runs_skips_completed_and_refuses_changed_settings(cli, tmp_path):
    path = sweep_file(tmp_path, {"noise.kind": ["none", "input"]})
    runs = tmp_path / "runs"
    code, out, err = cli("sweep", path, "--runs-dir", runs)
    assert code == 0, err
    assert "sweep grid: 4 completed" in out
    assert out.rstrip().endswith(f"compare them: noisecli report {runs / 'grid'}")  # the next step, named
    first = states(runs / "grid")
    assert len(first) == 4 and all(s["state"] == "completed" and s["starts"] == 1 for s in first.values())
    assert json.loads((runs / "grid" / "sweep.json").read_text())["points"][0]["name"] == "kind-none_seed-0"
    status = first["kind-input_seed-1"]
    # one meaning per label: the final val loss and the best, on the first pass and on the next
    said = f"(final val loss {status['val_loss']:.4f}, best {status['best_val_loss']:.4f})"
    assert f"kind-input_seed-1: completed {said}" in out
    code, out, _ = cli("sweep", path, "--runs-dir", runs)
    assert code == 0 and "4 skipped" in out and f"kind-input_seed-1: skipped {said}" in out
    assert states(runs / "grid") == first  # nothing retrained, nothing rewritten
    changed = sweep_file(tmp_path, {"noise.kind": ["none", "input"]}, base={**BASE, "train": {**BASE["train"], "lr": 1e-2}})
    refusal = (f"4 of 4 points in {runs / 'grid'} were trained with other settings: train.lr: 0.003 -> 0.01. "
               "The sweep spec changed since it was run; give the sweep another name (name=... or --name) to "
               "keep both results apart")
    code, out, _ = cli("sweep", changed, "--runs-dir", runs, "--dry-run")  # the plan says what the run would do
    assert code == 0 and out.splitlines()[-1] == f"the run would refuse: {refusal}"
    code, _, err = cli("sweep", changed, "--runs-dir", runs)
    assert code == 2 and err.splitlines() == [f"error: {refusal}"]  # one line, the keys once


def test_devices_that_are_not_here_are_refused_up_front_and_done_points_need_none(cli, tmp_path):
    """--devices cuda:0,cuda:1 on a machine without them: exit 2 before anything runs (it used
    to mark every point failed and exit 1); completed points are skipped without a worker."""
    path = sweep_file(tmp_path, {"noise.kind": ["none", "input"]}, seeds=1)
    runs = tmp_path / "runs"
    assert cli("sweep", path, "--runs-dir", runs)[0] == 0
    before = states(runs / "grid")
    if not torch.cuda.is_available():
        code, out, err = cli("sweep", path, "--runs-dir", runs, "--devices", "cuda:0,cuda:1")
        assert code == 2 and err.startswith("error: --devices: 'cuda:0' asked for, but this torch sees no CUDA")
    code, out, err = cli("sweep", path, "--runs-dir", runs, "--devices", "cpu,cpu", "--jobs", "2")
    assert code == 0 and "2 skipped" in out and states(runs / "grid") == before


def test_an_interrupted_point_resumes_exactly_within_the_sweep(cli, tmp_path):
    path = sweep_file(tmp_path, {"noise.kind": ["input"]}, seeds=1)
    runs = tmp_path / "runs"
    plan = load_plan(path)
    point_spec = write_spec(tmp_path, {**yaml.safe_load(yaml.safe_dump(
        __import__("noisecli.spec", fromlist=["spec_to_dict"]).spec_to_dict(plan.points[0].spec)))}, "point.yaml")
    with pytest.raises(Interrupted):
        train_run(point_spec, runs / "grid", stop_after=3)
    code, out, err = cli("sweep", path, "--runs-dir", runs)
    assert code == 0, err
    status = states(runs / "grid")["kind-input_seed-0"]
    assert status["state"] == "completed" and status["starts"] == 2  # resumed, not restarted
    whole = train_run(point_spec, tmp_path / "whole")
    ckpt = torch.load(runs / "grid" / "kind-input_seed-0" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], v) for k, v in whole.raw_model.state_dict().items())


def test_failed_points_are_recorded_the_sweep_goes_on_and_exits_1(cli, tmp_path):
    # lr 1e30 diverges at the first evaluation; the other points are unaffected
    path = sweep_file(tmp_path, {"train.lr": [1e-3, 1e30], "train.grad_clip": [0.0]}, seeds=2)
    runs = tmp_path / "runs"
    code, out, err = cli("sweep", path, "--runs-dir", runs)
    assert code == 1
    assert "2 completed, 2 diverged" in out and "2 of 4 points failed" in err
    got = {k: v["state"] for k, v in states(runs / "grid").items()}
    assert got == {"lr-0.001_grad_clip-0.0_seed-0": "completed", "lr-0.001_grad_clip-0.0_seed-1": "completed",
                   "lr-1e30_grad_clip-0.0_seed-0": "diverged", "lr-1e30_grad_clip-0.0_seed-1": "diverged"}
    # --fail-fast: the first failure stops the sweep
    code, out, err = cli("sweep", path, "--runs-dir", tmp_path / "ff", "--fail-fast", "--grid", "train.lr=1e30,1e-3")
    assert code == 1
    assert [p.name for p in (tmp_path / "ff" / "grid").iterdir() if p.is_dir()] == ["lr-1e30_grad_clip-0.0_seed-0"]


def test_stale_lock_of_a_dead_process_is_recovered(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    (folder / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    spec = write_spec(tmp_path, {"name": "tiny", **TINY})
    trainer = train_run(spec, tmp_path / "runs")
    assert trainer.state.rows and not (folder / ".lock").exists()


def test_a_live_lock_refuses_with_the_holders_pid(cli, tmp_path):
    import socket

    from noisecli.runs import RunFolder

    folder = tmp_path / "runs" / "tiny"
    folder.mkdir(parents=True)
    holder = RunFolder(folder)  # another claim of the run, live in this process
    holder.acquire_lock()
    spec = write_spec(tmp_path, {"name": "tiny", **TINY})
    try:
        code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    finally:
        holder.release_lock()
    assert code == 2 and f"run 'tiny' is in use by pid {os.getpid()} on {socket.gethostname()}" in err


@pytest.mark.slow
def test_concurrent_sweeps_and_workers_never_train_a_point_twice(tmp_path):
    """Three sweeps on one folder at once (worker processes, one worker per device, and a
    plain one): every point is trained exactly once."""
    path = sweep_file(tmp_path, {"noise.kind": ["none", "input", "weight"]}, seeds=2)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "noisecli", "sweep", str(path), "--runs-dir", "runs", "-q"]
    procs = [subprocess.Popen(cmd + ["--jobs", "2"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True),
             subprocess.Popen(cmd + ["--devices", "cpu,cpu"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True),
             subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    got = states(tmp_path / "runs" / "grid")
    assert len(got) == 6
    assert all(s["state"] == "completed" and s["starts"] == 1 for s in got.values()), got
