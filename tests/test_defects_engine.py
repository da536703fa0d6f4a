"""Issue 19, the engine's share: tests for bugs the other tests let through (the rows a rank keeps,
batched stacks at different steps, the last evaluation off the grid), and for the defects fixed
with them (a kill between a stack's saves, a resumed point's thread count, a runs folder that
cannot be written, a failed cluster job's log)."""

import errno
import json
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
import torch

from noisecli.batched import train_group
from noisecli.distributed import World
from noisecli.signals import StopRequest
from noisecli.spec import spec_from_dict, spec_to_dict
from noisecli.sweep import load_plan
from noisecli.points import train_point
from noisecli.trainer import Trainer
from tests.conftest import metrics_rows, write_spec
from tests.test_batched import MODELS, TABLE, assert_close_rows, specs_for

QUIET = lambda *a: None  # noqa: E731 - a sweep's progress report, unheard


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def last(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = last(a)["model"], last(b)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), (a.name, k, (wa[k] - wb[k]).abs().max().item())


def with_train(spec, **train):
    d = spec_to_dict(spec)
    return spec_from_dict({**d, "train": {**d["train"], **train}})


# ---------------------------------------------------------------- 1. the rows a rank keeps


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_a_ranks_rows_are_the_rows_share_gives_it(size):
    """World.rows says which rows of a global batch World.share keeps (embedding noise drawn for
    the global batch keeps those rows); a batch that does not split evenly included."""
    for n in range(0, 14):
        batch = torch.arange(n)
        for rank in range(size):
            world = World(rank=rank, size=size)
            kept = batch.tensor_split(size)[rank] if size > 1 else batch
            assert torch.equal(world.share(batch), kept)
            start, stop = world.rows(n)
            assert torch.equal(batch[start:stop], kept), (n, size, rank)


# ---------------------------------------------------------------- 3. stacks at different steps


def test_members_resumed_at_different_steps_train_in_separate_stacks(tmp_path):
    """A point trained alone to step 9 (saves at 6 and 9) and three fresh points of its group: two
    stacks, and every member is its point alone. Stacked together, the one at step 9 would be
    stepped by the others' count (and its lr by the lead's step)."""
    specs = specs_for("mlp", "input", seeds=(0, 1))
    ahead = specs[1]
    stop = StopRequest()
    real = Trainer.train_step

    def step(self):
        if self.step == 8:  # a SIGINT during step 9
            stop.request(signal.SIGINT)
        return real(self)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(Trainer, "train_step", step)
        assert train_point(ahead, tmp_path / "batched", QUIET, stop).state == "interrupted"
    assert status(tmp_path / "batched" / ahead.name)["step"] == 9

    outcomes = train_group(specs, tmp_path / "batched", QUIET)
    assert [o.state for o in outcomes] == ["completed"] * 4
    for spec in specs:
        said = status(tmp_path / "batched" / spec.name)["batched"]
        assert said == f"trained in a stack of {1 if spec is ahead else 3} points (sweep --batched)", spec.name
        train_point(spec, tmp_path / "alone", QUIET)
        assert_close_rows(metrics_rows(tmp_path / "batched" / spec.name), metrics_rows(tmp_path / "alone" / spec.name))
        assert last(tmp_path / "batched" / spec.name)["step"] == 12


# ---------------------------------------------------------------- 4. the last step off the grid


def test_a_stack_evaluates_at_the_last_step_when_it_is_off_the_evaluation_grid(tmp_path):
    """12 steps, an evaluation every 5: rows at 5, 10 and 12, and the last checkpoint at 12, as alone."""
    specs = [with_train(s, eval_every=5) for s in specs_for("mlp", "weight", seeds=(0,))]
    assert [o.state for o in train_group(specs, tmp_path / "batched", QUIET)] == ["completed"] * 2
    for spec in specs:
        run = tmp_path / "batched" / spec.name
        assert [r["step"] for r in metrics_rows(run)] == [5, 10, 12]
        assert last(run)["step"] == 12 and status(run)["step"] == 12
        train_point(spec, tmp_path / "alone", QUIET)
        assert_close_rows(metrics_rows(run), metrics_rows(tmp_path / "alone" / spec.name))
        b = last(tmp_path / "alone" / spec.name)["model"]
        for key, value in last(run)["model"].items():
            torch.testing.assert_close(value, b[key], rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- 5. a kill between the members' saves


class Killed(BaseException):
    """A SIGKILL, as far as this process can have one: nothing after it runs (no handler catches it)."""


@pytest.mark.parametrize("evaluation", [1, 2])
def test_a_kill_between_the_members_saves_resumes_bitwise_as_the_whole_stack(tmp_path, monkeypatch, evaluation):
    """The stack saves its members one after another; killed after the first member's save of an
    evaluation, that member is one save ahead of the others. The rerun brings it back to the
    others' step and trains the stack whole: every member's final weights and rows are bitwise
    those of the uninterrupted stack (as two stacks of 1 and 3 they are not: a member's
    arithmetic depends on the stack's size)."""
    specs = [with_train(s, epochs=4) for s in specs_for("mlp", "weight", seeds=(0, 1))]
    assert {o.state for o in train_group(specs, tmp_path / "whole", QUIET)} == {"completed"}

    real, saved = Trainer.record, [0]

    def record(self, *args, **kwargs):
        row = real(self, *args, **kwargs)
        saved[0] += 1
        if saved[0] == (evaluation - 1) * len(specs) + 1:
            raise Killed
        return row

    with monkeypatch.context() as m:
        m.setattr(Trainer, "record", record)
        with pytest.raises(Killed):
            train_group(specs, tmp_path / "split", QUIET)
    steps = [status(tmp_path / "split" / s.name)["step"] for s in specs]
    assert steps == [6 * evaluation] + [6 * (evaluation - 1)] * 3  # one member a save ahead

    assert [o.state for o in train_group(specs, tmp_path / "split", QUIET)] == ["completed"] * 4
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in rows]  # noqa
    for spec in specs:
        assert status(tmp_path / "split" / spec.name)["batched"] == "trained in a stack of 4 points (sweep --batched)"
        assert_same_weights(tmp_path / "whole" / spec.name, tmp_path / "split" / spec.name)
        assert untimed(metrics_rows(tmp_path / "split" / spec.name)) == untimed(metrics_rows(tmp_path / "whole" / spec.name))


# ---------------------------------------------------------------- 6. a resumed point's thread count


def test_a_resumed_point_trains_with_the_thread_count_it_started_with(tmp_path, monkeypatch, three_threads):
    """Started with 1 thread (a worker's share), stopped, resumed where 2 are offered: it goes on
    with 1, recorded in its status, and ends bitwise as a run with 1 thread throughout."""
    spec = specs_for("mlp", "input", seeds=(0,))[1]
    before = torch.get_num_threads()
    seen: list[int] = []
    real = Trainer.train_step

    def step(self):
        seen.append(torch.get_num_threads())
        return real(self)

    monkeypatch.setattr(Trainer, "train_step", step)
    assert train_point(spec, tmp_path / "whole", QUIET, threads=1).state == "completed"
    stop = StopRequest()

    def stopping(self):
        if self.step == 4:
            stop.request(signal.SIGINT)
        return step(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", stopping)
        assert train_point(spec, tmp_path / "split", QUIET, stop, threads=1).state == "interrupted"
    assert status(tmp_path / "split" / spec.name)["threads"] == 1
    seen.clear()
    assert train_point(spec, tmp_path / "split", QUIET, threads=2).state == "completed"
    assert seen and set(seen) == {1}
    assert status(tmp_path / "split" / spec.name)["threads"] == 1
    assert torch.get_num_threads() == before  # given back after the point
    assert_same_weights(tmp_path / "whole" / spec.name, tmp_path / "split" / spec.name)


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every worker gets one thread anyway")
def test_a_point_left_alone_by_a_rerun_trains_with_the_threads_of_the_whole_sweep(tmp_path, cli):
    """`sweep --jobs 2` on 3 points gives each worker half the cores. Rerun with one point left,
    that point still gets half (a function of the plan, not of what remains) and its result is
    bitwise that of the uninterrupted sweep."""
    spec = write_spec(tmp_path, {"name": "sw", "base": {**TABLE, "model": MODELS["mlp"],
                                                        "noise": {"kind": "input", "factor": 0.1}},
                                 "grid": {"noise.factor": [0.1, 0.2, 0.3]}, "seeds": 1})
    names = [p.name for p in load_plan(spec).points]
    code, _, err = cli("sweep", spec, "--runs-dir", tmp_path / "whole", "--jobs", "2", "--quiet")
    assert code == 0, err
    share = (os.cpu_count() or 1) // 2
    assert [status(tmp_path / "whole" / "sw" / n)["threads"] for n in names] == [share] * 3
    shutil.copytree(tmp_path / "whole", tmp_path / "split")
    shutil.rmtree(tmp_path / "split" / "sw" / names[-1])  # the sweep stopped before the last point began
    code, out, err = cli("sweep", spec, "--runs-dir", tmp_path / "split", "--jobs", "2")
    assert code == 0 and "2 skipped" in out, err
    assert status(tmp_path / "split" / "sw" / names[-1])["threads"] == share
    assert_same_weights(tmp_path / "whole" / "sw" / names[-1], tmp_path / "split" / "sw" / names[-1])


# ---------------------------------------------------------------- 7. a runs folder that cannot be written


SWEEP = {"name": "sw", "base": {**TABLE, "model": {"kind": "mlp", "hidden": [8]}, "noise": {"kind": "input"},
                                "train": {**TABLE["train"], "epochs": 1}},
         "grid": {"noise.factor": [0.1, 0.2]}, "seeds": 1}


def full_disk(path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


@pytest.mark.parametrize("how", ["a file", "read-only", "full"])
def test_a_runs_folder_that_cannot_be_written_is_one_line_exit_2_and_leaves_nothing(tmp_path, cli, monkeypatch, how):
    spec = write_spec(tmp_path, SWEEP)
    runs = tmp_path / "runs"
    if how == "a file":
        runs.write_text("")
        expected = f"error: --runs-dir: cannot create {runs / 'sw'}: Not a directory"
    elif how == "read-only":  # what mkdir says in a read-only folder (tests may run as root, which chmod cannot stop)
        real = Path.mkdir

        def mkdir(self, *args, **kwargs):
            if self == runs / "sw":
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self, *args, **kwargs)

        runs.mkdir()
        monkeypatch.setattr(Path, "mkdir", mkdir)
        expected = f"error: --runs-dir: cannot create {runs / 'sw'}: Permission denied"
    else:
        monkeypatch.setattr("noisecli.runs.atomic_write", lambda path, data: full_disk(path))
        expected = f"error: --runs-dir: cannot write {runs / 'sw' / 'sweep.json'}: No space left on device"
    code, out, err = cli("sweep", spec, "--runs-dir", runs)
    assert (code, err.splitlines()) == (2, [expected])
    if how == "a file":
        assert runs.is_file()
    else:
        assert not runs.exists() or list(runs.iterdir()) == []


@pytest.mark.parametrize("fails", ["every file", "metrics"])
def test_a_disk_full_after_the_sweep_began_fails_its_points_in_one_line_each_and_leaves_no_lock(tmp_path, cli,
                                                                                                 monkeypatch, fails):
    """The disk fills up once sweep.json is written: every file of a point, the lock's own note
    included, fails to write (or, the point claimed, its metrics do). Each point fails with one
    line that says so, the sweep goes on to the next, no traceback, and no point folder keeps a
    .lock (an empty one left behind would read as a run in use)."""
    import noisecli.runs as runs_module

    spec = write_spec(tmp_path, SWEEP)
    real = runs_module.atomic_write
    full = (lambda p: p.name != "sweep.json") if fails == "every file" else (lambda p: p.name.startswith("metrics."))
    monkeypatch.setattr(runs_module, "atomic_write",
                        lambda path, data: full_disk(path) if full(Path(path)) else real(path, data))
    if fails == "every file":
        monkeypatch.setattr(json, "dump", lambda *a, **k: full_disk(None))  # the lock's note (older lock code)
        monkeypatch.setattr(os, "pwrite", lambda *a, **k: full_disk(None), raising=False)  # the lock's note
    code, out, err = cli("sweep", spec, "--runs-dir", tmp_path / "runs")
    assert code in (1, 2) and "Traceback" not in err and err, (code, err)
    assert all(line.startswith("error: ") for line in err.splitlines())
    said = " ".join(out.split())  # a long line may be wrapped on the screen
    assert len(re.findall(r"\[\d/2\] \S+: failed: [^\[]*No space left on device", said)) == 2, out
    assert list((tmp_path / "runs").rglob(".lock")) == []


# ---------------------------------------------------------------- 8. a failed cluster job names its log


@pytest.mark.slow
def test_a_failed_cluster_job_names_its_submitit_log(tmp_path):
    """A point whose process dies inside its job (the model's code exits, as a kill or an
    out-of-memory would): its outcome names the job's submitit log, which holds what it said."""
    pytest.importorskip("submitit")
    from noisecli.cluster import ClusterOptions, ClusterRunner

    (tmp_path / "dies.py").write_text(
        "import os, sys\nimport torch\n\n"
        "def build(n_inputs, n_outputs):\n"
        "    if 'SUBMITIT_LOCAL_JOB_ID' in os.environ:  # in the job only\n"
        "        print('the model gave up', file=sys.stderr, flush=True)\n"
        "        os._exit(3)\n"
        "    return torch.nn.Linear(n_inputs, n_outputs)\n")
    spec = write_spec(tmp_path, {**SWEEP, "base": {**SWEEP["base"], "model": {"kind": "python", "target": "dies.py:build"}},
                                 "grid": {"noise.factor": [0.1]}})
    plan = load_plan(spec)
    sweep_dir = tmp_path / "runs" / plan.name
    sweep_dir.mkdir(parents=True)

    class Screen:
        def started(self, name): ...
        def progress(self, name, done, total): ...
        def finished(self, outcome): ...

    [outcome] = ClusterRunner(plan.points, sweep_dir, Screen(), ClusterOptions(cluster="local"), plan.name,
                              StopRequest()).run()
    assert outcome.state == "failed"
    assert "(log: " in outcome.message, outcome.message
    log = Path(outcome.message.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file() and log.parent == sweep_dir / ".submitit"
    assert "the model gave up" in log.read_text()
