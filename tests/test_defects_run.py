"""Defects of the run folder and the loop found by review and fault injection (issue 19): each
test failed before its fix."""

import ast
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch
import yaml

from noisecli.errors import Interrupted, RunLocked
from noisecli.runs import CHECKPOINT_FORMAT, RunFolder
from noisecli.spec import load_spec
from noisecli.engine.optim import lr_at
from noisecli.trainer import Trainer
from tests.conftest import ROOT, TINY, metrics_rows, write_spec
from tests.test_train import assert_same_weights, train_run, untimed

PY = [sys.executable, "-c"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _spec(tmp_path, name="r", **train):
    return write_spec(tmp_path, {**TINY, "name": name, "train": {**TINY["train"], **train}})


# ---------------------------------------------------------------- 1. a GradScaler's skipped step


def test_a_step_the_grad_scaler_skips_is_not_divergence(tiny_spec, tmp_path):
    """One overflowed step under a GradScaler (the CPU scaler here, as fp16 on CUDA uses): the
    scaler skips it by design, every weight and loss stays finite, and the run completes; the
    interval's grad norm is the mean over the steps taken, and the skip is counted."""
    trainer = Trainer(load_spec(tiny_spec, ["train.eval_every=4"]), tmp_path / "runs", quiet=True).setup()
    trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    trainer.open_run()
    norms = []
    trainer.params[0].register_hook(lambda g: torch.full_like(g, float("inf")) if trainer.step == 5 else g)
    trainer.params[1].register_hook(lambda g: norms.append(trainer.step) or g)
    trainer.train()
    trainer.close()
    rows = trainer.state.rows
    assert json.loads((tmp_path / "runs" / "tiny" / "status.json").read_text())["state"] == "completed"
    assert [r["skipped_steps"] for r in rows[:3]] == [0, 1, 0]
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)
    assert all(torch.isfinite(p).all() for p in trainer.params)


# ---------------------------------------------------------------- 3. never delete another attempt's files


def test_a_tracker_that_cannot_start_keeps_an_earlier_attempts_files(cli, tmp_path, monkeypatch):
    """A folder that looks fresh (no checkpoint) but holds status, metrics and error.log from an
    attempt that crashed before its first checkpoint: a tracker failure removes only what this
    call wrote."""
    spec = _spec(tmp_path, "t")
    folder = tmp_path / "runs" / "t"
    folder.mkdir(parents=True)
    earlier = {"status.json": json.dumps({"state": "failed", "step": 0, "error": "boom"}),
               "error.log": "Traceback: boom\n", "notes.txt": "the user's own notes\n", "metrics.jsonl": ""}
    for name, text in earlier.items():
        (folder / name).write_text(text)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q", "output.tracker=mlflow")
    assert code == 2 and "output.tracker: mlflow could not start" in err
    assert {p.name: p.read_text() for p in folder.iterdir()} == earlier  # nothing added, nothing lost


def test_a_run_named_like_a_finished_sweep_is_refused_and_the_sweep_survives(cli, tmp_path, monkeypatch):
    """The fault-injection trial's critical case: `train spec name=exp output.tracker=mlflow` over
    a finished sweep runs/exp, with an unusable tracking store, deleted the whole sweep."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "exp", "base": {**TINY, "train": {**TINY["train"], "epochs": 1}},
                                     "grid": {"noise.factor": [0.1, 0.2]}}))
    code, _, err = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs").rglob("*"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    code, _, err = cli("train", _spec(tmp_path), "--runs-dir", tmp_path / "runs", "name=exp", "output.tracker=mlflow")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "name: 'exp' is the folder of a sweep" in err
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs").rglob("*")) == before


# ---------------------------------------------------------------- 4. one owner per lock

_RACER = r"""
import os, sys, time
from pathlib import Path
from noisecli.errors import RunLocked
from noisecli.runs import RunFolder
folder, go = RunFolder(Path(sys.argv[1])), float(sys.argv[2])
real_read = Path.read_text
def slow_read(self, *a, **k):  # a slow shared filesystem: reading a small file takes 50 ms
    time.sleep(0.05)
    return real_read(self, *a, **k)
Path.read_text = slow_read
while time.time() < go:
    pass
try:
    folder.acquire_lock()
except RunLocked:
    print("refused", flush=True)
    sys.exit(0)
start = time.time()
(folder.path / f"owner-{os.getpid()}").touch()
time.sleep(0.3)  # hold it while the other one tries
end = time.time()
folder.release_lock()
print("owner", start, end, flush=True)
"""


def test_two_processes_racing_for_one_stale_lock_never_both_own_it(tmp_path):
    """Before: unlink-and-retry takeover let both processes own the run in 27 of 100 rounds."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    results = []
    for round_ in range(30):
        run = tmp_path / f"r{round_}"
        run.mkdir()
        # a stale lock: its process is gone
        (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": 0}))
        go = time.time() + 0.4
        procs = [subprocess.Popen([*PY, _RACER, str(run), str(go)], env=ENV, stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=60)[0].split() for p in procs]
        held = sorted((float(o[1]), float(o[2])) for o in outs if o[0] == "owner")
        # both may own the run one after the other (the second started after the first
        # released), never at once
        assert held and all(a[1] <= b[0] for a, b in zip(held, held[1:])), (round_, held)
        results.append(len(held))
    assert 1 in results  # the race was real: at least once they met


def test_a_lock_held_by_a_live_process_refuses_and_is_never_removed(tmp_path):
    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    holder = subprocess.Popen([*PY, _RACER, str(run.path), "0"], env=ENV, stdout=subprocess.PIPE, text=True)
    while not list(run.path.glob("owner-*")):
        time.sleep(0.01)
    with pytest.raises(RunLocked, match=rf"in use by pid {holder.pid} on"):
        run.acquire_lock()
    assert run.held() and (run.path / ".lock").exists()
    assert holder.communicate(timeout=30)[0].split()[0] == "owner"
    assert not run.held()
    run.acquire_lock()  # free again
    run.release_lock()


def test_an_empty_lock_file_is_not_deleted_while_its_owner_writes_it(tmp_path):
    """Before: a lock unreadable after 0.2 s was deleted (slow shared filesystems). Now the
    kernel's lock decides: a file without its note but held is still held."""
    a, b = RunFolder(tmp_path), RunFolder(tmp_path)
    a.acquire_lock()
    (tmp_path / ".lock").write_text("")  # its note not written yet
    with pytest.raises(RunLocked):
        b.acquire_lock()
    assert (tmp_path / ".lock").exists()
    a.release_lock()
    b.acquire_lock()
    b.release_lock()


# ---------------------------------------------------------------- 5. every file written atomically


def test_no_module_writes_a_file_other_than_through_atomic_write():
    """docs/runs.md: every file is written atomically. Plain write_text/open(..., 'w') calls
    (error.log and .mlflow_run_id were) may appear only in runs.py's atomic helpers."""
    offenders = []
    for path in (ROOT / "noisecli").rglob("*.py"):
        if path.name == "runs.py" or "example_files" in path.parts:  # examples: the user's scripts, copied out
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("write_bytes",) or name == "write_text" and not _is_run_folder(f):
                offenders.append(f"{path.name}:{node.lineno}")
            if name == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax")
                                      for a in node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]):
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders


def _is_run_folder(f: ast.Attribute) -> bool:
    """`self.run.write_text(...)`, `run.write_text(...)`: RunFolder's own, which is atomic."""
    v = f.value
    return isinstance(v, ast.Attribute) and v.attr == "run" or isinstance(v, ast.Name) and v.id in ("run", "folder")


_FULL_DISK = r"""
import resource, signal, sys
from pathlib import Path
from noisecli.runs import RunFolder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as on a full disk
run = RunFolder(Path(sys.argv[1]))
resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))
try:
    run.write_error_log("x" * 5000)
except OSError as e:
    print("failed", e.filename)
"""


def test_error_log_is_whole_or_as_it_was_when_the_disk_fills(tmp_path):
    (tmp_path / "error.log").write_text("the earlier traceback\n")
    out = subprocess.run([*PY, _FULL_DISK, str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("failed") and "error.log" in out.stdout, out.stderr
    assert (tmp_path / "error.log").read_text() == "the earlier traceback\n"
    assert [p.name for p in tmp_path.iterdir()] == ["error.log"]  # no temporary left


# ---------------------------------------------------------------- 6. the checkpoint format is read


def test_a_checkpoint_from_a_newer_format_is_refused_naming_both(cli, tmp_path):
    spec = _spec(tmp_path)
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=10)
    ckpt = tmp_path / "runs" / "r" / "checkpoints"
    for name in ("last.pt", "prev.pt"):
        state = torch.load(ckpt / name, weights_only=True)
        torch.save({**state, "format": CHECKPOINT_FORMAT + 1}, ckpt / name)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "Traceback" not in err
    assert f"checkpoint format {CHECKPOINT_FORMAT + 1} by a newer noisecli" in err
    assert f"formats up to {CHECKPOINT_FORMAT}" in err
    code, _, err = cli("eval", tmp_path / "runs" / "r")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"format {CHECKPOINT_FORMAT + 1}" in err


# ---------------------------------------------------------------- 7. the schedules, against transformers'


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_schedule_equals_transformers_schedulers(schedule, warmup):
    """The help says what the code does: the decay is transformers' (get_cosine/linear_schedule_
    with_warmup, stepped after each optimizer step as its Trainer does), so min_lr would be reached
    one step after the last; nanoGPT's warmup (lr x (s+1)/(w+1)) differs from theirs, so the
    comparison starts after warmup."""
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    from noisecli.spec import TrainSpec

    total, peak = 10, 1e-3
    t = TrainSpec(lr=peak, lr_schedule=schedule, warmup_steps=warmup, min_lr=0.0)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    make = get_cosine_schedule_with_warmup if schedule == "cosine" else get_linear_schedule_with_warmup
    sched = make(opt, warmup, total)
    for step in range(total):
        if step >= warmup:
            assert lr_at(t, step, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        opt.step()
        sched.step()
    assert lr_at(t, total - 1, total) > 0  # the last trained step is not at min_lr
    assert lr_at(t, total, total) == pytest.approx(0.0, abs=1e-15)


def test_schedule_help_says_where_the_decay_ends():
    from noisecli.spec import NoiseSpec, TrainSpec

    texts = [TrainSpec.__dataclass_fields__[k].metadata.get("help", "") for k in ("lr_schedule", "min_lr")]
    texts.append(NoiseSpec.__dataclass_fields__["schedule"].metadata.get("help", ""))
    assert texts[0] and all("at the last step" not in t for t in texts), texts
    for doc in ("reference.md", "commands.md"):
        assert "at the last step" not in (ROOT / "docs" / doc).read_text()


# ---------------------------------------------------------------- a completed run's metrics are kept


def test_a_completed_run_without_checkpoints_and_a_damaged_status_is_not_retrained(cli, tmp_path):
    """Before: a completed `output.checkpoint: none` run whose status.json was damaged was
    retrained from step 0 and its 76 rows replaced."""
    spec = _spec(tmp_path, eval_every=2)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q", "output.checkpoint=none")
    assert code == 0, err
    folder = tmp_path / "runs" / "r"
    rows = metrics_rows(folder)
    assert len(rows) > 10 and not list((folder / "checkpoints").glob("*.pt"))
    for damage in ('{"state": "compl', "[1, 2]", '{"step": 1}'):
        (folder / "status.json").write_text(damage)
        code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "output.checkpoint=none")
        assert code == 0 and "already completed" in out + err and "rebuilding it from the metrics" in err, err
        assert metrics_rows(folder) == rows
        status = json.loads((folder / "status.json").read_text())
        assert status["state"] == "completed" and status["step"] == rows[-1]["step"]


def test_metrics_cut_at_a_line_boundary_are_rebuilt_or_refused_never_taken_as_whole(cli, tmp_path):
    """Before: metrics.jsonl cut at a line boundary gave report a wrong final val loss and train
    called the run completed."""
    spec = _spec(tmp_path)
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    folder = tmp_path / "runs" / "r"
    rows = metrics_rows(folder)
    cut = "".join(json.dumps(r) + "\n" for r in rows[:-1])
    (folder / "metrics.jsonl").write_text(cut)
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "metrics.jsonl was cut short; rebuilt from the checkpoint" in err
    assert untimed(metrics_rows(folder)) == untimed(rows)
    # with no checkpoint to rebuild from, the damage is said, and nothing is retrained
    (folder / "checkpoints" / "last.pt").unlink()
    (folder / "checkpoints" / "prev.pt").unlink()
    (folder / "metrics.jsonl").write_text(cut)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "metrics.jsonl: ends at step" in err and "cut short" in err
    assert (folder / "metrics.jsonl").read_text() == cut


def test_spec_yaml_cut_at_a_line_boundary_is_damage_not_a_different_spec(cli, tmp_path):
    spec = _spec(tmp_path)
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=10)
    saved = tmp_path / "runs" / "r" / "spec.yaml"
    whole = saved.read_text()
    lines = whole.splitlines(keepends=True)
    for keep in (len(lines) - 1, len(lines) // 2):
        saved.write_text("".join(lines[:keep]))
        with pytest.raises(Interrupted):
            train_run(spec, tmp_path / "runs", stop_after=3)
        assert saved.read_text() == whole
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err


def test_a_completed_run_whose_spec_yaml_was_deleted_gets_it_back(cli, tmp_path):
    spec = _spec(tmp_path)
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    saved = tmp_path / "runs" / "r" / "spec.yaml"
    whole = saved.read_text()
    saved.unlink()
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "already completed" in out + err
    assert saved.read_text() == whole


# ---------------------------------------------------------------- checkpoints that are empty


def test_an_empty_last_checkpoint_falls_back_to_prev(cli, tmp_path, capsys):
    """A crash on a filesystem that loses unsynced data leaves a 0-byte last.pt: before, train
    and eval --checkpoint died with IndexError."""
    spec = _spec(tmp_path)
    ref = train_run(spec, tmp_path / "ref")
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=20)
    last = tmp_path / "runs" / "r" / "checkpoints" / "last.pt"
    last.write_bytes(b"")
    code, _, err = cli("eval", tmp_path / "runs" / "r", "--checkpoint", last)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "the file is empty" in err
    resumed = train_run(spec, tmp_path / "runs")
    err = capsys.readouterr().err
    assert "last.pt: cannot load (ValueError: the file is empty" in err and "resuming from prev.pt" in err
    assert_same_weights(ref, resumed)


def test_a_pickle_that_would_run_code_is_refused_in_one_line(cli, tmp_path):
    import pickle

    spec = _spec(tmp_path)
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil.write_bytes(pickle.dumps({"model": Payload()}))
    code, out, err = cli("eval", tmp_path / "runs" / "r", "--checkpoint", evil)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "objects other than tensors" in err and not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- files of the wrong shape


@pytest.mark.parametrize("name, text", [
    ("status.json", '{"step": 1}'), ("status.json", "[1, 2]"), ("status.json", "null"),
    ("status.json", '{"state": "interrupted", "step": "x", "starts": "y"}'),
    ("metrics.jsonl", "[1, 2]\n"), ("metrics.jsonl", "null\n"), ("metrics.jsonl", '{"step": "1"}\n'),
    (".lock", '{"pid": "not a number", "host": "h"}'), (".lock", "null"), (".lock", "[]"),
])
def test_valid_json_of_the_wrong_shape_is_damage_not_a_traceback(cli, tmp_path, name, text):
    spec = _spec(tmp_path)
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=10)
    (tmp_path / "runs" / "r" / name).write_text(text)
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0 and "Traceback" not in err, err
    assert json.loads((tmp_path / "runs" / "r" / "status.json").read_text())["state"] == "completed"


# ---------------------------------------------------------------- mid-run and at start


def test_spec_yaml_deleted_mid_run_is_written_again(tiny_spec, tmp_path, capsys):
    trainer = Trainer(load_spec(tiny_spec), tmp_path / "runs", quiet=True).setup()
    trainer.open_run()
    folder = trainer.run.path
    real = trainer.batches.next

    def next_batch():
        if trainer.step == 10:
            for name in ("status.json", "metrics.jsonl", "metrics.csv", "spec.yaml"):
                (folder / name).unlink(missing_ok=True)
        return real()

    trainer.batches.next = next_batch
    trainer.train()
    trainer.close()
    assert "spec.yaml was deleted while the run trained; written again" in capsys.readouterr().err
    assert {"spec.yaml", "status.json", "metrics.jsonl", "metrics.csv"} <= {p.name for p in folder.iterdir()}
    assert len(metrics_rows(folder)) == len(trainer.state.rows)


def test_bad_input_found_inside_the_loop_ends_failed_with_its_log(tiny_spec, tmp_path):
    from noisecli.errors import SpecError

    trainer = Trainer(load_spec(tiny_spec), tmp_path / "runs", quiet=True).setup()
    trainer.open_run()

    def bad_batch():
        raise SpecError("data.max_length: 9 is too long for the model's context")

    trainer.batches.next = bad_batch
    with pytest.raises(SpecError, match="stopped at step 0; traceback in"):
        trainer.train()
    trainer.close()
    folder = tmp_path / "runs" / "tiny"
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "failed" and "data.max_length" in status["error"]
    assert "bad_batch" in (folder / "error.log").read_text()


_START_ON_FULL_DISK = r"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
import noisecli.trainer  # what imports write (compiled caches, temporary files) is not the point
from noisecli.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # no file may grow: a full disk
sys.argv = ["noisecli", "train", sys.argv[1], "--runs-dir", sys.argv[2], "-q"]
main()
"""


def test_a_full_disk_at_start_is_one_line_and_leaves_no_lock_or_folder(tmp_path):
    spec = _spec(tmp_path)
    out = subprocess.run([*PY, _START_ON_FULL_DISK, str(spec), str(tmp_path / "runs")], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot write" in out.stderr and "spec.yaml" in out.stderr
    assert not (tmp_path / "runs").exists()


_FILL_MID_RUN = r"""
import resource, signal, sys
from pathlib import Path
from noisecli.errors import RunError
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
trainer = Trainer(load_spec(Path(sys.argv[1])), sys.argv[2], quiet=True).setup()
trainer.open_run()
resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))  # the disk fills before the first checkpoint
try:
    trainer.train()
except RunError as e:
    print(e)
"""


def test_a_disk_that_fills_mid_run_names_the_file_and_leaves_no_empty_error_log(tmp_path):
    spec = _spec(tmp_path)
    out = subprocess.run([*PY, _FILL_MID_RUN, str(spec), str(tmp_path / "runs")], env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert "failed at step" in out.stdout, out.stderr
    assert "checkpoints" in out.stdout and "File too large" in out.stdout  # the file it could not write
    log = tmp_path / "runs" / "r" / "error.log"
    assert not log.exists() or log.stat().st_size > 0


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_noise_schedule_decays_as_the_lr_schedule_does(schedule):
    """The noise factor follows the same convention as the learning rate: 0 is reached one
    step after the last trained step, so the last step still trains with a little noise."""
    from noisecli.noise.base import schedule_factor
    from noisecli.spec import NoiseSpec, TrainSpec

    total = 10
    noise = NoiseSpec(kind="input", factor=1.0, schedule=schedule)
    t = TrainSpec(lr=1.0, lr_schedule=schedule, min_lr=0.0)
    assert [schedule_factor(noise, s, total) for s in range(total + 1)] == pytest.approx(
        [lr_at(t, s, total) for s in range(total + 1)])
    assert schedule_factor(noise, total - 1, total) > 0 and schedule_factor(noise, total, total) == 0
