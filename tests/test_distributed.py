"""One run on several processes: real `torchrun` with 2 gloo processes on this CPU against the
same spec in one process; Ctrl-C, a killed rank, and resuming on another number of processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from noisecli.distributed import World
from noisecli.errors import Interrupted
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import ROOT, TINY, assert_same_curves, metrics_rows, write_spec
from tests.test_train import train_run

pytestmark = pytest.mark.slow

TABLE = {**TINY, "device": "cpu"}
TEXT = {"data": {"kind": "markov", "block_size": 16, "n_tokens": 4000},
        "model": {"kind": "gpt", "n_layer": 1, "n_embd": 32, "n_head": 2},
        "train": {"max_steps": 24, "eval_every": 8, "batch_size": 8, "lr": 3e-3, "eval_batches": 4},
        "device": "cpu"}

# every kind that promises to follow one process on N (activation draws per rank: see the test below)
INVARIANT = [("none", TABLE, 0.0), ("input", TABLE, 0.3), ("weight", TABLE, 0.05), ("anticorrelated", TABLE, 0.05),
             ("gradient", TABLE, 0.05), ("token", TEXT, 0.1), ("embedding", TEXT, 5.0)]


def torchrun(*args, cwd, nproc=2, wait=True):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "noisecli", "train", *map(str, args)]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


metrics = metrics_rows


def weights(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def assert_two_processes_follow_one(spec, tmp_path):
    """The spec under torchrun with 2 processes (runs in two/) against 1 process (one/): the same
    rows at every evaluation and the same final weights, within float summation order."""
    two = torchrun(spec, "--runs-dir", "two", "--quiet", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    train_run(spec, tmp_path / "one")
    assert_same_curves(metrics(tmp_path / "one" / "r"), metrics(tmp_path / "two" / "r"), rel=1e-4)
    w1, w2 = weights(tmp_path / "one" / "r"), weights(tmp_path / "two" / "r")
    for k in w1:
        # atol: far under one AdamW step (lr 3e-3); a weight whose gradient sits near zero moves by
        # a summation-order-sized amount that AdamW's normalisation magnifies (seen here: 1.1e-5 on
        # 1 of 2048 weights, input noise, on this machine's CPU kernels; 0 elsewhere)
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("kind,base,factor", INVARIANT, ids=[k for k, _, _ in INVARIANT])
def test_two_processes_follow_the_trajectory_of_one(tmp_path, kind, base, factor):
    spec = write_spec(tmp_path, {"name": "r", **base, "noise": {"kind": kind, "factor": factor}})
    assert_two_processes_follow_one(spec, tmp_path)
    status = json.loads((tmp_path / "two" / "r" / "status.json").read_text())
    assert status["state"] == "completed"
    assert not (tmp_path / "two" / "r" / ".lock").exists()


def test_accumulating_micro_batches_on_two_processes_follow_one(tmp_path):
    """train.grad_accum 2 on 2 ranks: each rank's 4 rows in 2 micro-batches, gradients all-reduced
    once a step (no_sync before the last), NEFTune's draw the global batch's rows each micro-batch
    holds; the same run as one process accumulating (itself the same as no accumulation:
    tests/test_grad_accum.py)."""
    spec = write_spec(tmp_path, {"name": "r", **TEXT, "train": {**TEXT["train"], "grad_accum": 2},
                                 "noise": {"kind": "embedding", "factor": 5.0}})
    assert_two_processes_follow_one(spec, tmp_path)


def test_instruction_data_with_an_uneven_last_batch_follows_one_process(tmp_path):
    """Padded instruction data whose last batch of an epoch has an odd number of rows (split 3 + 2
    by the ranks), under NEFTune: each rank's noise is the rows of the global draw that rank holds
    (World.rows, remainder included), and the loss is normalised by the global batch's response
    tokens, not its padded positions; so 2 processes follow 1, evaluation by evaluation."""
    from tests.test_sft import EXAMPLES, GPT

    spec_dict = {"name": "r", "device": "cpu", "data": {"kind": "sft", "path": "instructions.jsonl"}, "model": GPT,
                 "noise": {"kind": "embedding", "factor": 5.0}, "train": {"epochs": 2, "batch_size": 8, "lr": 3e-3}}
    spec = write_spec(tmp_path, spec_dict)
    for n in range(len(EXAMPLES), 40, -1):  # as many examples as leave an odd last batch
        (tmp_path / "instructions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES[:n]))
        n_train = Trainer(load_spec(spec, []), tmp_path / "unused", quiet=True).setup().data.n_train
        if n_train % 8 % 2:
            break
    assert n_train % 8 % 2 == 1 and n_train // 8 >= 2, n_train
    assert_two_processes_follow_one(spec, tmp_path)


def test_per_rank_streams_are_reseeded_off_rank_zero_only(tmp_path):
    """Dropout and activation noise differ between ranks; the globally drawn kinds do not."""
    spec = load_spec(write_spec(tmp_path, {"name": "r", **TABLE, "model": {"kind": "mlp", "hidden": [32],
                                                                            "dropout": 0.1},
                                           "noise": [{"kind": "activation", "factor": 0.1},
                                                     {"kind": "input", "factor": 0.1}]}), [])
    states = []
    for rank in (0, 1):
        trainer = Trainer(spec, tmp_path / "runs", quiet=True, world=World(rank=rank, size=1)).setup()
        trainer.strategy.reseed()
        states.append((torch.get_rng_state(), [n.generator.get_state() for n in trainer.noises]))
    (rng0, (act0, in0)), (rng1, (act1, in1)) = states
    assert not torch.equal(rng0, rng1) and not torch.equal(act0, act1)
    assert torch.equal(in0, in1)


def test_a_batch_that_does_not_split_is_one_line_from_rank_zero(tmp_path):
    spec = write_spec(tmp_path, {"name": "r", **TABLE, "train": {**TABLE["train"], "batch_size": 15}})
    result = torchrun(spec, cwd=tmp_path)
    ours = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert ours == ["error: train.batch_size: 15 does not split among 2 processes; use a multiple of 2 "
                    "(it is the global batch, shared by the ranks)"]
    assert "exitcode  : 2" in result.stderr and not (tmp_path / "runs").exists()


LONG = {**TABLE, "train": {"epochs": 2000, "batch_size": 16, "lr": 1e-3, "eval_every": 20}}


def wait_for_step(run_dir, proc, at_least=1, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads((run_dir / "status.json").read_text()).get("step", 0) >= at_least:
                return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the run did not start")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_once_and_the_run_resumes_on_one_process(tmp_path, signum):
    spec = write_spec(tmp_path, {"name": "r", **LONG})
    proc = torchrun(spec, "--quiet", cwd=tmp_path, wait=False)
    wait_for_step(tmp_path / "runs" / "r", proc, at_least=40)
    # SIGINT to the group is a terminal's Ctrl-C; SIGTERM to torchrun is a scheduler's stop.
    # torchrun passes either on to the ranks, which agree on a step and save once
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert err.count("interrupted: state saved at step") == 1, err[-3000:]
    assert f"closing signal {signal.Signals(signum).name}" in err  # torchrun passed it on to both ranks
    status = json.loads((tmp_path / "runs" / "r" / "status.json").read_text())
    assert status["state"] == "interrupted"
    stopped = status["step"]
    rows = metrics(tmp_path / "runs" / "r")

    # the same spec, one process: it takes over the checkpoint 2 processes wrote
    trainer = Trainer(load_spec(spec, []), tmp_path / "runs", quiet=True).setup()
    assert trainer.open_run() == "resume" and trainer.step == stopped
    assert trainer.state.rows == rows
    trainer.close()


def test_a_killed_rank_stops_the_others_and_a_rerun_resumes(tmp_path):
    spec = write_spec(tmp_path, {"name": "r", **LONG})
    proc = torchrun(spec, "--quiet", cwd=tmp_path, wait=False)
    run_dir = tmp_path / "runs" / "r"
    wait_for_step(run_dir, proc, at_least=40)
    ranks = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(ranks) == 2
    os.kill(int(ranks[-1]), signal.SIGKILL)  # one rank gone without a word
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] in ("failed", "running")
    if status["state"] == "failed":
        assert "another process of this run stopped" in status["error"]
    saved = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert saved["rows"] == metrics(run_dir)  # metrics and checkpoint agree: nothing half-written

    trainer = Trainer(load_spec(spec, []), tmp_path / "runs", quiet=True).setup()
    assert trainer.open_run() == "resume" and trainer.step == saved["step"] > 0
    trainer.close()


def test_a_run_started_on_one_process_finishes_on_two(tmp_path):
    """Checkpoints hold no trace of the number of processes: half on one, the rest on two,
    equals the whole on one."""
    spec = write_spec(tmp_path, {"name": "r", **TABLE})
    whole = train_run(spec, tmp_path / "whole")
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "split", stop_after=13)
    two = torchrun(spec, "--runs-dir", "split", "--quiet", cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-2000:]
    assert_same_curves(whole.state.rows, metrics(tmp_path / "split" / "r"), rel=1e-4)
    status = json.loads((tmp_path / "split" / "r" / "status.json").read_text())
    assert status["state"] == "completed" and status["starts"] == 2


def test_a_sweep_under_torchrun_is_refused_in_one_line(tmp_path, cli, monkeypatch):
    spec = write_spec(tmp_path, {"name": "s", "base": TABLE, "grid": {"noise.factor": [0.1, 0.2]}})
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code, _, err = cli("sweep", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.startswith("error: sweep under torchrun: each point is its own job")
    assert len(err.splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """The ranks agree on the step to stop after: SIGTERM to rank 1 alone, and both save-and-exit 143
    (two processes started as torchrun starts them, so each one's exit code can be read)."""
    import socket

    spec = write_spec(tmp_path, {"name": "r", **LONG})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank)}
        procs.append(subprocess.Popen([sys.executable, "-m", "noisecli", "train", str(spec), "--quiet"], cwd=tmp_path,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    wait_for_step(tmp_path / "runs" / "r", procs[0], at_least=40)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], errs
    assert errs[0].startswith("interrupted: state saved at step") and errs[1] == ""  # rank 0 speaks
    status = json.loads((tmp_path / "runs" / "r" / "status.json").read_text())
    assert status["state"] == "interrupted"
    assert torch.load(tmp_path / "runs" / "r" / "checkpoints" / "last.pt", weights_only=True)["step"] == status["step"]
