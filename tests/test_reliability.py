"""Faults: kills at any moment, damaged files, full disks, unwritable folders."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import noisecli.runs
from noisecli.errors import Interrupted, RunError
from tests.conftest import ROOT, TINY, run_process, write_spec
from tests.test_train import assert_same_weights, train_run, untimed


def ckpt(folder, name="last.pt"):
    return torch.load(folder / "checkpoints" / name, weights_only=True)


def same_result(a_folder, b_folder):
    a, b = ckpt(a_folder), ckpt(b_folder)
    assert a["step"] == b["step"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert untimed(a["rows"]) == untimed(b["rows"])
    rows = [json.loads(line) for line in (a_folder / "metrics.jsonl").read_text().splitlines()]
    assert untimed(rows) == untimed(b["rows"])


def _step(folder) -> int:
    try:
        return json.loads((folder / "status.json").read_text()).get("step", 0)
    except (OSError, ValueError):
        return -1


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_ends_bitwise_equal(tmp_path):
    """A real `noisecli train` killed with SIGKILL at random steps, plus a random delay of up
    to 50 ms (so kills land inside steps, evaluations and checkpoint writes, one every 3
    steps), always resumes to exactly the uninterrupted result, and last.pt is always whole."""
    spec = write_spec(tmp_path, {**TINY, "name": "k", "train": {**TINY["train"], "epochs": 50, "eval_every": 3}})
    ref = run_process("train", spec, "--runs-dir", "ref", "-q", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rng = random.Random(1234)
    folder = tmp_path / "runs" / "k"
    targets = sorted(rng.sample(range(5, 400), 6))  # of 400 steps
    killed_at = []
    for target in targets + [None]:
        before = _step(folder)
        proc = subprocess.Popen([sys.executable, "-m", "noisecli", "train", str(spec), "--runs-dir", "runs", "-q"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if target is not None:
            # past the target and past where the last kill left it: a kill that overshot the next
            # target must not make this process die while it is still starting up
            while proc.poll() is None and _step(folder) < max(target, before + 1):
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_at.append(_step(folder))
            ckpt(folder)  # whatever the moment, last.pt loads
            continue
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert json.loads((folder / "status.json").read_text())["state"] == "completed"
    assert killed_at == sorted(set(killed_at)), killed_at  # six distinct moments, each after progress
    same_result(folder, tmp_path / "ref" / "k")
    assert not list(folder.rglob(".*tmp*")) and not list(folder.rglob(".*.new*"))


def test_train_piped_into_head_saves_and_stops_like_sigpipe(tmp_path):
    """`noisecli train spec | head -2`: once the reader is gone, the run is saved and marked
    interrupted (exit 128 + SIGPIPE), not left `running` with its last steps lost."""
    spec = write_spec(tmp_path, {**TINY, "name": "p", "train": {**TINY["train"], "epochs": 300, "eval_every": 3}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "noisecli", "train", str(spec), "--runs-dir", "runs"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("p: digits") and proc.stdout.readline().startswith("epoch ")
    proc.stdout.close()  # what `head -2` does after its second line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err
    status = json.loads((tmp_path / "runs" / "p" / "status.json").read_text())
    assert status["state"] == "interrupted" and 0 < status["step"] < 2400
    assert f"interrupted: state saved at step {status['step']} of 2400" in err and "Traceback" not in err
    assert ckpt(tmp_path / "runs" / "p")["step"] == status["step"]


def test_train_with_stderr_in_the_same_closed_pipe_still_exits_141(tmp_path):
    """`noisecli train spec 2>&1 | head -3`: the closing message has nowhere to go either; it is
    dropped, and the exit code still says the run was saved and stopped (it used to be 1)."""
    spec = write_spec(tmp_path, {**TINY, "name": "p", "train": {**TINY["train"], "epochs": 300, "eval_every": 3}})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "noisecli", "train", str(spec), "--runs-dir", "runs"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE
    status = json.loads((tmp_path / "runs" / "p" / "status.json").read_text())
    assert status["state"] == "interrupted" and ckpt(tmp_path / "runs" / "p")["step"] == status["step"]


def test_sweep_piped_into_head_stops_like_sigpipe_and_resumes(tmp_path):
    spec = write_spec(tmp_path, {**TINY, "name": "base"})
    args = [sys.executable, "-m", "noisecli", "sweep", str(spec), "--grid", "noise.factor=0,0.3", "--seeds", "3",
            "--name", "s", "--runs-dir", "runs"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("[1/6] ")
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE and "interrupted: sweep stopped" in err, err
    done = run_process(*args[3:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    states = [json.loads(f.read_text())["state"] for f in (tmp_path / "runs" / "s").glob("*/status.json")]
    assert states == ["completed"] * 6


def test_a_crash_inside_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    spec = write_spec(tmp_path, {**TINY, "name": "c"})
    ref = train_run(spec, tmp_path / "ref")
    real, calls = noisecli.runs.atomic_write, [0]

    def dies_on_the_second_checkpoint(path, data):
        if path.name.startswith(".last.pt.new"):
            calls[0] += 1
            if calls[0] == 2:
                with open(path.with_name(path.name + ".tmp0"), "wb") as f:
                    f.write(data[: len(data) // 2])  # half a file on disk, then the "crash"
                raise OSError(errno.EIO, "Input/output error", str(path))
        return real(path, data)

    monkeypatch.setattr(noisecli.runs, "atomic_write", dies_on_the_second_checkpoint)
    with pytest.raises((RunError, OSError)):
        train_run(spec, tmp_path / "runs")
    folder = tmp_path / "runs" / "c"
    assert ckpt(folder)["step"] == 16  # the checkpoint before the failed write, whole
    monkeypatch.setattr(noisecli.runs, "atomic_write", real)
    resumed = train_run(spec, tmp_path / "runs")
    assert_same_weights(ref, resumed)
    assert not list(folder.rglob(".*tmp*")) and not list(folder.rglob(".*.new*"))


def test_last_checkpoint_exists_at_every_instant_of_a_checkpoint_write(tmp_path, monkeypatch):
    """A kill between updating prev.pt and installing the new last.pt (the window the random
    kill test once hit in CI) must leave the old last.pt in place, whole."""
    run = noisecli.runs.RunFolder(tmp_path / "r")
    run.save_checkpoint({"step": 1})
    run.save_checkpoint({"step": 2})
    real_replace = os.replace

    def killed_before_last_is_installed(src, dst):
        if Path(dst).name == "last.pt":
            raise KeyboardInterrupt  # stands in for the process dying at this instant
        return real_replace(src, dst)

    monkeypatch.setattr(noisecli.runs.os, "replace", killed_before_last_is_installed)
    with pytest.raises(KeyboardInterrupt):
        run.save_checkpoint({"step": 3})
    monkeypatch.setattr(noisecli.runs.os, "replace", real_replace)
    assert ckpt(run.path)["step"] == 2 and ckpt(run.path, "prev.pt")["step"] == 2
    run.save_checkpoint({"step": 4})
    assert ckpt(run.path)["step"] == 4 and ckpt(run.path, "prev.pt")["step"] == 2
    assert not list(run.path.rglob(".*.new*"))


def test_where_hard_links_are_refused_prev_pt_is_a_copy(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")  # some network and FAT filesystems

    monkeypatch.setattr(noisecli.runs.os, "link", no_links)
    run = noisecli.runs.RunFolder(tmp_path / "r")
    for step in (1, 2, 3):
        run.save_checkpoint({"step": step})
    assert ckpt(run.path)["step"] == 3 and ckpt(run.path, "prev.pt")["step"] == 2
    assert not list(run.path.rglob(".*.new*"))


def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    spec = write_spec(tmp_path, {**TINY, "name": "d"})
    ref = train_run(spec, tmp_path / "ref")
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=20)
    folder = tmp_path / "runs" / "d"
    last = folder / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    resumed = train_run(spec, tmp_path / "runs")
    err = capsys.readouterr().err
    assert f"warning: {last}: cannot load" in err and "resuming from prev.pt (step 16)" in err
    assert_same_weights(ref, resumed)


def test_both_checkpoints_damaged_is_one_clear_error(cli, tmp_path):
    spec = write_spec(tmp_path, {**TINY, "name": "d"})
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=20)
    for name in ("last.pt", "prev.pt"):
        (tmp_path / "runs" / "d" / "checkpoints" / name).write_bytes(b"not a checkpoint")
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "Traceback" not in err
    assert "last.pt: cannot load" in err and "use --restart to start over" in err


def test_damaged_status_metrics_and_spec_files_are_rebuilt_from_the_checkpoint(cli, tmp_path):
    spec = write_spec(tmp_path, {**TINY, "name": "s"})
    train_run(spec, tmp_path / "ref")  # the reference folder
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=13)
    folder = tmp_path / "runs" / "s"
    (folder / "status.json").write_text('{"state": "runn')
    (folder / "metrics.jsonl").write_text("garbage\n")
    (folder / "spec.yaml").write_text("data: [unclosed\n")
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    assert "status.json: unreadable status file" in err and "rebuilding it from the checkpoint" in err
    same_result(folder, tmp_path / "ref" / "s")
    assert json.loads((folder / "status.json").read_text())["state"] == "completed"


def test_a_full_disk_fails_clearly_and_keeps_the_last_good_state(cli, tmp_path, monkeypatch):
    spec = write_spec(tmp_path, {**TINY, "name": "f"})
    real, calls = noisecli.runs.atomic_write, [0]

    def disk_fills(path, data):
        if path.name.startswith(".last.pt.new"):
            calls[0] += 1
            if calls[0] >= 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(noisecli.runs, "atomic_write", disk_fills)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 1 and "No space left on device" in err and "Traceback" not in err
    folder = tmp_path / "runs" / "f"
    assert json.loads((folder / "status.json").read_text())["state"] == "failed"
    assert ckpt(folder)["step"] == 16 and not list(folder.rglob(".*tmp*"))


def test_an_unwritable_runs_folder_is_bad_input(cli, tmp_path, tiny_spec):
    (tmp_path / "afile").write_text("")
    code, _, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "afile" / "runs")
    assert code == 2 and err.startswith("error: --runs-dir: cannot create") and "Traceback" not in err
