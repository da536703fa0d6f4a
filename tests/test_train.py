"""The training loop and the run folder: files, determinism, resume, exit codes."""

import csv
import math
import json
import signal
import time

import pytest
import torch
import yaml

from noisecli.engine.evaluation import measure
from noisecli.errors import Interrupted, RunError
from noisecli.spec import load_spec, spec_from_dict
from noisecli.engine.optim import lr_at
from noisecli.trainer import Trainer
from tests.conftest import TINY, run_process, write_spec

TIMING = {"seconds", "samples_per_s"}


def train_run(spec_path, runs, overrides=(), stop_after=None):
    """Train in-process; with `stop_after=k` a SIGINT arrives during step k."""
    trainer = Trainer(load_spec(spec_path, list(overrides)), runs, quiet=True).setup()
    trainer.open_run()
    if stop_after is not None:
        calls, real_next = [0], trainer.batches.next

        def next_batch():
            calls[0] += 1
            if calls[0] == stop_after:
                trainer.stop.request(signal.SIGINT)
            return real_next()

        trainer.batches.next = next_batch
    try:
        trainer.train()
    finally:
        trainer.close()
    return trainer


def assert_resume_is_exact(spec_path, tmp_path, stop_after: int, overrides=()):
    """Interrupt at `stop_after`, resume, and compare with an uninterrupted run, bitwise."""
    whole = train_run(spec_path, tmp_path / "whole", overrides)
    with pytest.raises(Interrupted) as e:
        train_run(spec_path, tmp_path / "split", overrides, stop_after=stop_after)
    resumed = train_run(spec_path, tmp_path / "split", overrides)
    assert_same_weights(whole, resumed)
    assert untimed(resumed.state.rows) == untimed(whole.state.rows)
    return e.value, whole


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def assert_same_weights(a: Trainer, b: Trainer):
    sa, sb = a.raw_model.state_dict(), b.raw_model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_run_folder_holds_the_contract_files(tiny_spec, tmp_path):
    trainer = train_run(tiny_spec, tmp_path / "runs")
    folder = tmp_path / "runs" / "tiny"
    resolved = yaml.safe_load((folder / "spec.yaml").read_text())
    assert spec_from_dict(resolved) == trainer.spec and resolved["train"]["epochs"] == 3

    with open(folder / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for col in ["epoch", "step", "train_loss", "clean_train_loss", "val_loss", "val_acc", "lr",
                "noise_factor", "seconds"]:
        assert col in rows[0]
    jsonl = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_loss"] for r in jsonl] == [float(r["val_loss"]) for r in rows]
    assert jsonl[-1]["step"] == trainer.total_steps == 3 * 8  # ceil(120 / 16) steps an epoch

    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 24 and status["epoch"] == 3
    assert status["best_val_loss"] == min(r["val_loss"] for r in jsonl)

    ckpt = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "step", "epoch", "rng"} <= set(ckpt)
    assert ckpt["step"] == 24 and ckpt["epoch"] == 3
    assert not list(folder.glob(".*tmp*")) and not (folder / ".lock").exists()


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(tiny_spec, tmp_path):
    a = train_run(tiny_spec, tmp_path / "a")
    b = train_run(tiny_spec, tmp_path / "b")
    c = train_run(tiny_spec, tmp_path / "c", ["seed=1"])
    assert untimed(a.state.rows) == untimed(b.state.rows)
    assert_same_weights(a, b)
    assert untimed(a.state.rows) != untimed(c.state.rows)


def test_train_loss_is_noisy_and_evaluation_is_clean(tmp_path):
    spec = write_spec(tmp_path, {**TINY, "name": "loud", "noise": {"kind": "input", "factor": 3.0}})
    noisy = train_run(spec, tmp_path / "runs")
    last = noisy.state.rows[-1]
    assert last["train_loss"] > last["clean_train_loss"]  # optimized loss saw the noise
    # The same weights evaluated by a trainer with no noise at all give the same val loss.
    clean = Trainer(load_spec(spec, ["noise.kind=none"]), tmp_path / "other", quiet=True).setup()
    clean.raw_model.load_state_dict(noisy.raw_model.state_dict())
    total, count = (lambda s: (s["loss"], s["count"]))(measure(clean, "val"))
    assert total.item() / count.item() == pytest.approx(last["val_loss"], rel=1e-6)


@pytest.mark.parametrize("stop_after", [1, 5, 8, 13, 24])
def test_resume_after_interruption_equals_an_uninterrupted_run(tiny_spec, tmp_path, stop_after):
    interrupted, whole = assert_resume_is_exact(tiny_spec, tmp_path, stop_after)
    assert interrupted.exit_code == 130 and f"state saved at step {stop_after} of 24" in str(interrupted)
    lines = (tmp_path / "split" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert untimed([json.loads(x) for x in lines]) == untimed(whole.state.rows)
    status = json.loads((tmp_path / "split" / "tiny" / "status.json").read_text())
    assert status["state"] == "completed" and status["starts"] == 2


def test_resume_is_exact_for_text_and_dropout(tmp_path):
    spec = write_spec(tmp_path, {"name": "lm", "data": {"kind": "markov", "n_tokens": 4000, "block_size": 16},
                                 "model": {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.2},
                                 "train": {"max_steps": 12, "eval_every": 5, "batch_size": 8, "lr": 1e-3,
                                           "eval_batches": 2}})
    assert_resume_is_exact(spec, tmp_path, stop_after=7)


def test_lr_schedule_warmup_cosine_and_linear():
    t = spec_from_dict({"train": {"lr": 1.0, "min_lr": 0.1, "warmup_steps": 4, "lr_schedule": "cosine"}}).train
    assert [round(lr_at(t, s, 104), 6) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert lr_at(t, 4, 104) == pytest.approx(1.0)
    assert lr_at(t, 54, 104) == pytest.approx(0.55)
    assert lr_at(t, 104, 104) == pytest.approx(0.1)
    t.lr_schedule = "linear"
    assert lr_at(t, 54, 104) == pytest.approx(0.55) and lr_at(t, 29, 104) == pytest.approx(0.775)


def test_max_steps_and_eval_every(tiny_spec, tmp_path):
    trainer = train_run(tiny_spec, tmp_path, ["train.max_steps=10", "train.eval_every=4"])
    assert [r["step"] for r in trainer.state.rows] == [4, 8, 10]
    assert [r["epoch"] for r in trainer.state.rows] == [1, 1, 2]


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_spec, tmp_path):
    trainer = Trainer(load_spec(tiny_spec, ["train.eval_every=2"]), tmp_path / "runs", quiet=True).setup()
    trainer.open_run()
    calls, real_next = [0], trainer.batches.next

    def poisoned():  # from step 5 on, a non-finite input: the loss turns NaN
        calls[0] += 1
        x, y = real_next()
        return (x * float("nan"), y) if calls[0] >= 5 else (x, y)

    trainer.batches.next = poisoned
    with pytest.raises(RunError) as e:
        trainer.train()
    trainer.close()
    assert "diverged" in str(e.value) and "by step 6" in str(e.value) and "lower train.lr" in str(e.value)
    folder = tmp_path / "runs" / "tiny"
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "diverged" and status["step"] == 6
    ckpt = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


# ---------------------------------------------------------------- the CLI, exit codes


def test_cli_train_then_completed_run_is_not_retrained(cli, tiny_spec, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = cli("train", tiny_spec, "--runs-dir", runs)
    assert code == 0, err
    assert "val loss" in out and "run folder:" in out
    # the first line says what is trained: TINY is 120 digits, an MLP 64-32-10, input noise 0.3
    first = out.splitlines()[0]
    assert first.startswith("tiny: digits (120 train / 360 val / 359 test examples, classification); mlp "
                            f"({64 * 32 + 32 + 32 * 10 + 10:,} parameters); noise input 0.3; ")
    assert first.endswith("; 24 steps (3 epochs of 8 steps)")  # between: the device and precision that auto picked
    before = (runs / "tiny" / "metrics.csv").stat().st_mtime_ns
    code, out, _ = cli("train", tiny_spec, "--runs-dir", runs)
    assert code == 0 and "already completed" in out
    assert (runs / "tiny" / "metrics.csv").stat().st_mtime_ns == before


def test_cli_changed_spec_is_refused_and_restart_keeps_the_old_run(cli, tiny_spec, tmp_path):
    runs = tmp_path / "runs"
    assert cli("train", tiny_spec, "--runs-dir", runs, "-q")[0] == 0
    code, _, err = cli("train", tiny_spec, "noise.factor=0.5", "--runs-dir", runs)
    assert code == 2
    assert err.startswith("error: run 'tiny' exists with a different spec (noise.factor: 0.3 -> 0.5)")
    code, out, err = cli("train", tiny_spec, "noise.factor=0.5", "--runs-dir", runs, "--restart")
    assert code == 0, err
    (archived,) = (runs / ".archive").iterdir()
    assert yaml.safe_load((archived / "spec.yaml").read_text())["noise"]["factor"] == 0.3
    assert yaml.safe_load((runs / "tiny" / "spec.yaml").read_text())["noise"]["factor"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["train.lrr=1"], "error: train.lrr: unknown key; did you mean 'lr'?"),
    (["noise.factor=-1"], "error: noise.factor: must be >= 0, got -1.0"),
    (["name=../../etc"], "error: name: '../../etc' must be 1-100 letters"),
    (["oops"], "error: override 'oops': must be in the form key=value"),
    (["--device", "cuda:7"], "error: device: 'cuda:7' asked for, but"),
])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(cli, tiny_spec, tmp_path, args, message):
    runs = tmp_path / "runs"
    code, out, err = cli("train", tiny_spec, *args, "--runs-dir", runs)
    assert code == 2
    assert err.startswith(message) and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert not runs.exists()


def test_cli_missing_spec_file(cli, tmp_path):
    code, _, err = cli("train", tmp_path / "nope.yaml", "--runs-dir", tmp_path / "runs")
    assert code == 2 and err == f"error: {tmp_path / 'nope.yaml'}: file not found\n"


def test_cli_diverged_run_exits_1(cli, tmp_path):
    spec = write_spec(tmp_path, {"name": "boom", "data": {"kind": "teacher", "n_samples": 200},
                                 "model": {"kind": "linear"}, "train": {"lr": 1e30, "grad_clip": 0}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 1 and "diverged" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_real_signal_saves_and_a_rerun_finishes_exactly(tmp_path, sig, code):
    spec = write_spec(tmp_path, {**TINY, "name": "long", "train": {**TINY["train"], "epochs": 100}})
    import subprocess
    import sys
    import os

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "noisecli", "train", str(spec), "--runs-dir", "runs", "-q"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "runs" / "long" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "state saved at step" in err and "Traceback" not in err
    status = json.loads((tmp_path / "runs" / "long" / "status.json").read_text())
    assert status["state"] == "interrupted" and 0 < status["step"] < 800

    done = run_process("train", spec, "--runs-dir", "runs", "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    whole = run_process("train", spec, "--runs-dir", "whole", "-q", cwd=tmp_path)
    assert whole.returncode == 0
    a = torch.load(tmp_path / "runs" / "long" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "long" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_an_infinite_gradient_behind_a_finite_loss_is_divergence(tiny_spec, tmp_path):
    """A real infinite gradient, made in backward (the last step of an interval, so the loss it
    came from was finite): the next evaluation names it and last.pt stays the last good state."""
    trainer = Trainer(load_spec(tiny_spec, ["train.eval_every=2"]), tmp_path / "runs", quiet=True).setup()
    trainer.open_run()
    trainer.params[0].register_hook(lambda g: torch.full_like(g, float("inf")) if trainer.step == 3 else g)
    with pytest.raises(RunError, match="non-finite loss or gradient by step 4") as e:
        trainer.train()
    trainer.close()
    assert "grad_norm=inf" in str(e.value)
    row = trainer.state.rows[-1]
    assert row["step"] == 4 and math.isfinite(row["train_loss"])  # the losses of steps 3-4 were finite
    folder = tmp_path / "runs" / "tiny"
    assert json.loads((folder / "status.json").read_text())["state"] == "diverged"
    ckpt = torch.load(folder / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_ctrl_c_before_training_begins_says_so_and_exits_130(cli, tiny_spec, tmp_path, monkeypatch):
    """A Ctrl-C in the first seconds (imports, building the data) used to exit 130 silently."""
    import noisecli.trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(noisecli.trainer.Trainer, "setup", interrupted)
    code, _, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "runs")
    assert code == 130 and err.startswith("interrupted: stopped before training began")


def test_narrow_output_keeps_every_number_whole_and_honours_columns(cli, tiny_spec, tmp_path, monkeypatch):
    """At 60 columns rich used to squeeze every number to `0.…`; columns that matter least go
    instead. COLUMNS is honoured when the output is piped."""
    monkeypatch.setenv("COLUMNS", "60")
    code, out, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    table = [line for line in out.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 60 for line in table)
    assert "…" not in out and "val loss" in table[1] and "clean train" in table[1]
    last = json.loads((tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()[-1])
    assert f"{last['val_loss']:.4f}" in table[-2]
