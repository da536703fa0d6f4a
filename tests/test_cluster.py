"""`sweep --backend submitit`: submitit's real `debug` and `local` executors run a sweep end to
end with the run folders and results of the local backend; a preempted point saves, is
requeued and resumes; a Slurm submission reaches sbatch with every option (a stand-in sbatch
records the script, since there is no Slurm here); `--status` and `--no-wait`."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from noisecli.cluster import ClusterOptions, submit
from noisecli.sweep import load_plan
from tests.conftest import TINY, write_spec

pytestmark = pytest.mark.slow

SWEEP = {"name": "sw", "base": {**TINY, "device": "cpu"}, "grid": {"noise.factor": [0.1, 0.3]}, "seeds": 1}
POINTS = ["factor-0.1_seed-0", "factor-0.3_seed-0"]


def rows(run_dir: Path) -> list[dict]:
    untimed = ("seconds", "samples_per_s")
    return [{k: v for k, v in json.loads(line).items() if k not in untimed}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_as_local_backend(local: Path, other: Path) -> None:
    assert sorted(p.name for p in other.iterdir() if not p.name.startswith(".") and p.is_dir()) == POINTS
    for name in POINTS:
        assert rows(other / name) == rows(local / name)
        assert (other / name / "spec.yaml").read_text() == (local / name / "spec.yaml").read_text()
        assert json.loads((other / name / "status.json").read_text())["state"] == "completed"


@pytest.fixture
def sweep_spec(tmp_path):
    return write_spec(tmp_path, SWEEP)


@pytest.mark.parametrize("cluster", ["debug", "local"])
def test_submitit_executors_give_the_run_folders_of_the_local_backend(sweep_spec, tmp_path, cli, cluster):
    code, _, err = cli("sweep", sweep_spec, "--runs-dir", tmp_path / "here", "--quiet")
    assert code == 0, err
    code, out, err = cli("sweep", sweep_spec, "--runs-dir", tmp_path / "there", "--backend", "submitit",
                         "--cluster", cluster)
    assert code == 0, err
    assert "sweep sw: 2 completed" in out
    same_as_local_backend(tmp_path / "here" / "sw", tmp_path / "there" / "sw")
    jobs = json.loads((tmp_path / "there" / "sw" / "jobs.json").read_text())
    assert sorted(jobs) == POINTS and all(j["cluster"] == cluster for j in jobs.values())
    # run again: everything is skipped before anything is submitted
    code, out, _ = cli("sweep", sweep_spec, "--runs-dir", tmp_path / "there", "--backend", "submitit",
                       "--cluster", cluster)
    assert code == 0 and "2 skipped" in out
    assert json.loads((tmp_path / "there" / "sw" / "jobs.json").read_text()) == jobs


def test_a_preempted_point_saves_is_requeued_and_resumes_to_the_same_result(tmp_path, cli):
    long = {**SWEEP, "base": {**SWEEP["base"], "train": {**TINY["train"], "epochs": 150, "eval_every": 10}},
            "grid": {"noise.factor": [0.1]}}
    spec = write_spec(tmp_path, long)
    code, _, err = cli("sweep", spec, "--runs-dir", tmp_path / "here", "--quiet")
    assert code == 0, err

    plan = load_plan(spec)
    sweep_dir = tmp_path / "there" / plan.name
    sweep_dir.mkdir(parents=True)
    [job] = submit(plan.points, sweep_dir, plan.name, ClusterOptions(cluster="local"))
    run_dir = sweep_dir / POINTS[0]
    deadline = time.time() + 60
    while time.time() < deadline:  # wait until it has trained a while
        try:
            if json.loads((run_dir / "status.json").read_text()).get("step", 0) >= 300:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    # what Slurm does ahead of a preemption or the time limit: SIGUSR2 to the task (the lock's holder)
    os.kill(json.loads((run_dir / ".lock").read_text())["pid"], signal.SIGUSR2)
    result = job.result()
    assert result["state"] == "completed"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["starts"] == 2  # it stopped and was started again by the requeue
    log = next((sweep_dir / ".submitit").glob("*_0_log.out")).read_text()
    assert "Requeued job" in log
    assert rows(run_dir) == rows(tmp_path / "here" / "sw" / POINTS[0])  # resumed exactly


def test_no_wait_returns_with_job_ids_and_status_follows_the_points(sweep_spec, tmp_path, cli):
    runs = tmp_path / "runs"
    code, out, err = cli("sweep", sweep_spec, "--runs-dir", runs, "--backend", "submitit", "--cluster", "local",
                         "--no-wait")
    assert code == 0, err
    jobs = json.loads((runs / "sw" / "jobs.json").read_text())
    assert "2 points submitted to local as job" in out
    assert all(j["job_id"] in out for j in jobs.values())
    deadline = time.time() + 90
    while time.time() < deadline:
        code, out, _ = cli("sweep", sweep_spec, "--runs-dir", runs, "--status")
        assert code == 0
        if out.startswith("sweep sw: 2 completed"):
            break
        time.sleep(0.3)
    lines = out.splitlines()
    assert lines[1].split() == ["point", "state", "step", "best", "val", "job"]
    for name, line in zip(POINTS, lines[2:]):
        assert line.split()[:3] == [name, "completed", "24/24"] and line.split()[-1] == jobs[name]["job_id"]


def test_status_of_a_half_finished_sweep_says_what_each_point_is_doing(sweep_spec, tmp_path, cli):
    runs = tmp_path / "runs"
    code, _, _ = cli("sweep", sweep_spec, "--runs-dir", runs, "--quiet", "--shard", "1/2")
    assert code == 0
    code, out, _ = cli("sweep", sweep_spec, "--runs-dir", runs, "--status")
    assert out.splitlines()[0] == f"sweep sw: 1 completed, 1 pending ({runs / 'sw'})"
    # a point whose process died without a word: status.json says running, nobody holds the lock
    status_file = runs / "sw" / POINTS[0] / "status.json"
    status_file.write_text(json.dumps({**json.loads(status_file.read_text()), "state": "running"}))
    (runs / "sw" / POINTS[0] / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345, "host": os.uname().nodename}))
    code, out, _ = cli("sweep", sweep_spec, "--runs-dir", runs, "--status")
    assert out.splitlines()[0].startswith("sweep sw: 1 pending, 1 stopped")
    assert (runs / "sw" / POINTS[0] / ".lock").exists()  # --status only reads


def test_a_slurm_submission_reaches_sbatch_with_every_option(sweep_spec, tmp_path, cli, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    # sbatch keeps the script it was given and answers as Slurm does
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\nfor a in \"$@\"; do last=$a; done\ncp \"$last\" {tmp_path}/sbatch.sh\n"
                                    "echo 'Submitted batch job 4242'\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    code, out, err = cli("sweep", sweep_spec, "--runs-dir", tmp_path / "runs", "--backend", "submitit",
                         "--partition", "gpu", "--gpus-per-job", "1", "--cpus-per-job", "8", "--time-limit", "90",
                         "--array-parallelism", "1", "--slurm", "qos=high", "--no-wait")
    assert code == 0, err
    script = (tmp_path / "sbatch.sh").read_text()
    for line in ["#SBATCH --array=0-1%1", "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --qos=high",
                 "#SBATCH --signal=USR2@90", "#SBATCH --job-name=noisecli-sw"]:
        assert line in script.splitlines(), line
    jobs = json.loads((tmp_path / "runs" / "sw" / "jobs.json").read_text())
    assert {j["job_id"] for j in jobs.values()} == {"4242_0", "4242_1"}
    assert "submitted to slurm as job 4242" in out


@pytest.mark.parametrize("args,message", [
    (["--cluster", "local"], "--cluster: only with --backend submitit"),
    (["--backend", "nope"], "--backend: 'nope' is not one of local, submitit"),
    (["--backend", "submitit", "--cluster", "pbs"], "--cluster: 'pbs' is not one of slurm, local, debug"),
    (["--backend", "submitit", "--cluster", "local", "--jobs", "2"], "--jobs/--devices: the cluster places"),
    (["--backend", "submitit", "--cluster", "local", "--slurm", "qos"], "--slurm: 'qos' is not KEY=VALUE"),
    (["--backend", "submitit"], "--cluster slurm: no Slurm on this machine (srun is not on PATH)"),
])
def test_cluster_options_that_do_not_fit_are_one_line(sweep_spec, tmp_path, cli, monkeypatch, args, message):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no srun here
    code, out, err = cli("sweep", sweep_spec, "--runs-dir", tmp_path / "runs", *args)
    assert code == 2
    assert err.splitlines() == [line for line in err.splitlines() if line.startswith("error: ")] and \
        len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists()
