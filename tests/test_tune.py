"""`noisecli tune`: the tune spec's validation, the search on Optuna's real storages (SQLite by
default, a journal file shared by two worker processes, PostgreSQL, submitit's local executor),
pruning at evaluations, Ctrl-C and SIGKILL of a worker mid-trial, confirmation on fresh seeds,
and the report of a tune folder."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, metrics_rows, write_spec

import optuna  # the test extra installs it (with psycopg and submitit)

BASE = {"data": {"kind": "digits", "train_size": 120}, "model": {"kind": "mlp", "hidden": [16]},
        "train": {"epochs": 4, "batch_size": 16, "lr": 3e-3}, "device": "cpu"}
POSTGRES_ENV = "NOISECLI_TEST_POSTGRES_URL"


def tune_spec(tmp_path: Path, **keys) -> Path:
    spec = {"name": "tt", "base": BASE, "search": {"noise": {"input": {"factor": [0.01, 1.0], "log": True}}},
            "trials": 3, "confirm": False, **keys}
    return write_spec(tmp_path, spec, "tune.yaml")


def trials_json(tmp_path: Path, name: str = "tt") -> dict:
    return json.loads((tmp_path / "runs" / name / "trials.json").read_text())


def start(*args, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "noisecli", *map(str, args)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rows(folder: Path, n: int, proc: subprocess.Popen, limit: float = 120) -> None:
    end = time.time() + limit
    while time.time() < end and proc.poll() is None:
        if (folder / "metrics.jsonl").exists() and len((folder / "metrics.jsonl").read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {n} rows in {folder} (process {proc.poll()}: {proc.stderr.read() if proc.poll() else ''})")


# ---------------------------------------------------------------- bad input: one line each, exit 2, nothing written


def test_every_mistake_in_a_tune_spec_is_one_line_and_nothing_is_written(tmp_path, cli):
    spec = write_spec(tmp_path, {"name": "bad", "base": BASE, "objective": "val_los", "trails": 3,
                                 "pruner": "ashaa", "confirm": {"seeds": [0]},
                                 "search": {"noise": {"input": {"factor": [0.5, 0.1]},
                                                      "weight": {"low": 0.0, "high": 0.1, "log": True},
                                                      "inptu": {"factor": [0.1, 1.0]}},
                                            "train.lr": {"range": [1e-3, 1e-2], "logg": True}}}, "tune.yaml")
    code, out, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: trails: unknown tune key; did you mean 'trials'? (tune keys: name, base, search, objective, seeds, "
        "trials, pruner, sampler, confirm)",
        "error: search.noise.input.factor: an empty range: low 0.5 must be below high 0.1",
        "error: search.noise.weight.factor: a log range must lie above 0, got low 0 (use log: false, or a low such "
        "as 1e-4)",
        "error: search.noise.inptu: unknown noise kind; did you mean 'input'? (kinds: none, input, token, embedding, "
        "weight, activation, gradient, anticorrelated)",
        "error: search.train.lr.logg: unknown key; did you mean 'log'? (a range has range or low/high, log, step, "
        "points; or choices)",
        "error: objective: 'val_los' is not a val metric; did you mean 'val_loss'? (objectives: " +
        ", ".join(c for c in __import__("noisecli.metrics").metrics.every_column() if c.startswith("val_")) +
        ", best_val_loss)",
        "error: pruner: 'ashaa' is not one of asha, hyperband, median, none; did you mean 'asha'?",
        "error: confirm.seeds: [0] are search seeds too; confirmation needs fresh seeds (the default starts at 1000)",
    ]
    assert not (tmp_path / "runs").exists()


def test_a_range_end_the_spec_refuses_is_named_under_its_search_key(tmp_path, cli):
    spec = write_spec(tmp_path, {"name": "bad", "base": BASE, "search": {"token": {"factor": [0.1, 0.5]},
                                                                          "train.lr": {"range": [-1.0, 1e-2]}}},
                      "tune.yaml")
    code, _, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert "error: search.train.lr at -1.0: train.lr:" in err
    assert "error: search.noise.token.factor at 0.1: " in err  # token noise on digits' vectors
    assert len(err.splitlines()) == len(set(err.splitlines()))
    assert not (tmp_path / "runs").exists()


def test_objective_the_data_does_not_measure_and_optuna_options_are_refused(tmp_path, cli):
    for keys, line in (({"objective": "val_r2"}, "error: objective: val_r2 is not measured on classification data"),
                       ({"pruner": {"kind": "asha", "reduction": 3}},
                        "error: pruner.reduction: not an option of Optuna's SuccessiveHalvingPruner; did you mean "
                        "'reduction_factor'?")):
        code, _, err = cli("tune", tune_spec(tmp_path, **keys), "--runs-dir", tmp_path / "runs")
        assert code == 2 and err.startswith(line) and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_storage_that_cannot_be_opened_and_missing_extras_are_one_line(tmp_path, cli, monkeypatch):
    spec = tune_spec(tmp_path)
    for storage, said in (("postgresql://nobody:secret@127.0.0.1:9/none", "error: --storage postgresql://nobody:***@"
                           "127.0.0.1:9/none: cannot open it: OperationalError"),
                          ("not-a-url", "error: --storage not-a-url: cannot open it: not a database URL")):
        code, _, err = cli("tune", spec, "--storage", storage, "--runs-dir", tmp_path / "runs")
        assert code == 2 and err.startswith(said) and len(err.splitlines()) == 1 and "secret" not in err, err
    monkeypatch.setitem(sys.modules, "psycopg", None)  # the driver missing: as without the tune extra
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    code, _, err = cli("tune", spec, "--storage", "postgresql://u@localhost/db", "--runs-dir", tmp_path / "runs")
    assert code == 2 and "its database driver is not installed" in err and "pip install 'noisecli[tune]'" in err
    monkeypatch.setitem(sys.modules, "optuna", None)
    code, _, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert (code, err) == (2, "error: tune: needs optuna, which is not installed; pip install 'noisecli[tune]'\n")
    assert not (tmp_path / "runs").exists()


def test_status_before_a_run_and_a_timeout_that_starts_no_trial(tmp_path, cli):
    spec = tune_spec(tmp_path, confirm={"seeds": 1})
    code, out, _ = cli("tune", spec, "--status", "--runs-dir", tmp_path / "runs")
    assert (code, out) == (0, f"tune tt: not started ({tmp_path / 'runs' / 'tt'} has no tune.json)\n")
    assert not (tmp_path / "runs").exists()
    code, out, err = cli("tune", spec, "--timeout", "0", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "tune tt: 0 of 3 trials (none yet)" in out and "not confirmed yet" in out
    assert not (tmp_path / "runs" / "tt" / "trials").exists() and not (tmp_path / "runs" / "tt" / "confirm").exists()


def test_help_imports_neither_optuna_nor_torch():
    code = "import sys, noisecli.cli; print('optuna' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert out.split() == ["False", "False"]


def test_spec_forms_budget_split_and_grid_values(tmp_path):
    from noisecli.tune.spec import load_tune

    spec = write_spec(tmp_path, {"name": "forms", "base": BASE, "sampler": "grid",
                                 "search": {"input": {"low": 0.01, "high": 1.0, "log": True, "points": 3},
                                            "noise": {"weight": {"factor": {"choices": [0.01, 0.05]}}},
                                            "train.batch_size": {"range": [8, 32], "step": 8}}}, "tune.yaml")
    tune = load_tune(spec, trials=7)
    assert tune.studies() == ["input", "weight", "none"]  # other keys searched: none is tuned too
    assert tune.budgets() == {"input": 3, "weight": 2, "none": 2}
    assert tune.search.kinds["input"].factor.grid() == [0.01, 0.1, 1.0]
    assert tune.search.keys["train.batch_size"].grid() == [8, 16, 24, 32]
    assert tune.search.keys["train.batch_size"].integer
    assert tune.run_spec("weight", {"factor": 0.05, "train.batch_size": 24}, "x", 3).train.batch_size == 24


# ---------------------------------------------------------------- the search on SQLite, pruning, confirm, report


@pytest.mark.slow
def test_sqlite_search_prunes_confirms_on_fresh_seeds_and_reruns_continue(tmp_path, cli):
    spec = tune_spec(tmp_path, sampler={"kind": "grid", "seed": 3}, trials=3, confirm={"seeds": 2},
                     pruner={"kind": "median", "n_startup_trials": 1},
                     search={"noise": {"input": {"choices": [0.02, 3.0, 8.0]}}})
    code, out, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    tune_dir = tmp_path / "runs" / "tt"
    assert (tune_dir / "study.db").is_file()  # Optuna's RDB storage, a SQLite file in the tune folder
    data = trials_json(tmp_path)
    assert sorted(t["state"] for t in data["trials"]) == ["complete", "complete", "pruned"]
    pruned = next(t for t in data["trials"] if t["state"] == "pruned")
    assert pruned["params"] == {"factor": 8.0}
    status = json.loads((tune_dir / "trials" / pruned["run"] / "status.json").read_text())
    assert status["state"] == "pruned" and status["pruned_step"] == pruned["pruned_at"]["step"] < 32
    assert status["pruned_value"] == pytest.approx(metrics_rows(tune_dir / "trials" / pruned["run"])[-1]["val_loss"])
    assert f"pruned by the median pruner at step {status['pruned_step']}" in out
    # confirm: the best of input and none, each on seeds 1000 and 1001, ordinary run folders
    best = data["studies"]["input"]["best"]
    assert best["params"]["factor"] == 0.02
    confirm = sorted(p.name for p in (tune_dir / "confirm").iterdir() if p.is_dir())
    assert confirm == ["input_seed-1000", "input_seed-1001", "none_seed-1000", "none_seed-1001"]
    for name in confirm:
        saved = yaml.safe_load((tune_dir / "confirm" / name / "spec.yaml").read_text())
        assert saved["seed"] in (1000, 1001) and json.loads((tune_dir / "confirm" / name / "status.json").read_text())[
            "state"] == "completed"
    assert yaml.safe_load((tune_dir / "confirm" / "input_seed-1000" / "spec.yaml").read_text())["noise"][
        "factor"] == best["params"]["factor"]
    assert "confirmed on fresh seeds 1000-1001" in out
    # the report of the tune folder: the verdict from the confirmation runs alone, then the search
    code, md, err = cli("report", tune_dir, "-f", "md")
    assert code == 0, err
    assert md.startswith("The verdict comes from the confirmation runs alone")
    assert "| input | 0.0" in md and "| none | - | 2 |" in md.replace("**", "") and "## The search" in md
    assert "pruned at step" in md
    code, js, _ = cli("report", tune_dir, "-f", "json")
    assert {c["n"] for c in json.loads(js)["confirmed"]["configs"]} == {2}
    code, _, err = cli("report", tune_dir, "-o", tmp_path / "tune.html")  # the page: the search's figure too
    page = (tmp_path / "tune.html").read_text()
    assert code == 0 and "<h2>The search</h2>" in page, err
    figure = page.split('alt="the objective against the factor per kind')[1].split('src="data:image/png;base64,')[1]
    assert len(figure.split('"')[0]) > 1000  # a drawn PNG, not an empty tag
    # a rerun continues the study: nothing is trained again; a bigger budget adds trials
    code, out, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "[" not in out.split("confirm:")[0], out
    code, out, err = cli("tune", spec, "--trials", "4", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert len(trials_json(tmp_path)["trials"]) == 3  # the grid (3 points) caps the budget
    # the trial folders are ordinary runs: eval reads one; train resumes the pruned one to its end
    code, out, err = cli("eval", tune_dir / "trials" / best["run"], "-f", "json")
    assert code == 0 and json.loads(out)["val_loss"] == pytest.approx(best["value"], rel=1e-5)
    code, out, err = cli("train", tune_dir / "trials" / pruned["run"] / "spec.yaml", "--runs-dir",
                         tune_dir / "trials", "-q")
    assert code == 0, err
    assert metrics_rows(tune_dir / "trials" / pruned["run"])[-1]["step"] == 32
    # a changed tune spec is refused, naming what changed
    changed = tune_spec(tmp_path, sampler={"kind": "grid", "seed": 3}, trials=3, confirm={"seeds": 2}, objective="val_acc",
                        pruner={"kind": "median", "n_startup_trials": 1},
                        search={"noise": {"input": {"choices": [0.02, 3.0, 8.0]}}})
    code, _, err = cli("tune", changed, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.startswith("error: tune 'tt' in ") and "objective: 'val_loss' -> 'val_acc'" in err
    assert len(err.splitlines()) == 1


# ---------------------------------------------------------------- faults: Ctrl-C and SIGKILL mid-trial


def long_trials(tmp_path: Path) -> Path:
    return tune_spec(tmp_path, trials=1, sampler="random", pruner="none",
                     base={**BASE, "train": {**BASE["train"], "epochs": 24}})


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_or_killed_trial_resumes_its_run_folder_on_the_rerun(tmp_path, how):
    spec = long_trials(tmp_path)
    proc = start("tune", spec, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    first = tmp_path / "runs" / "tt" / "trials" / "input_trial-0000"
    wait_for_rows(first, 3, proc)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    status = json.loads((first / "status.json").read_text())
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "saved its state" in err
        assert status["state"] == "interrupted"
    else:
        assert proc.returncode == -signal.SIGKILL and status["state"] == "running"
    rows_before = metrics_rows(first)
    proc = start("tune", spec, "--runs-dir", tmp_path / "runs", cwd=tmp_path)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    status = json.loads((first / "status.json").read_text())
    assert status["state"] == "completed" and status["starts"] == 2  # the same folder, resumed
    rows = metrics_rows(first)
    assert rows[:len(rows_before)] == rows_before and rows[-1]["step"] == 192
    data = trials_json(tmp_path)
    runs = [t["run"] for t in data["trials"]]
    assert set(runs) == {"input_trial-0000"}  # the budget (1) counted the retried trial once: no new trial
    retried = [t for t in data["trials"] if t["state"] == "retried"]
    assert len(retried) == 1 and retried[0]["run"] == "input_trial-0000"
    assert ("died" if how == signal.SIGKILL else "interrupted") in retried[0]["outcome"]
    done = next(t for t in data["trials"] if t["run"] == "input_trial-0000" and t["state"] == "complete")
    assert done["retry_of"] == retried[0]["number"]


# ---------------------------------------------------------------- storages shared by several workers


# trials long enough (most of a second) that one worker cannot take all four before the other has started
SHARED = {**BASE, "train": {**BASE["train"], "epochs": 8}}


def worker_pids(storage: str, name: str = "tt") -> set:
    study = optuna.load_study(study_name=f"{name}/input", storage=storage)
    return {t.user_attrs["worker"]["pid"] for t in study.get_trials() if "run" in t.user_attrs}


@pytest.mark.slow
def test_journal_storage_shared_by_two_local_worker_processes(tmp_path, cli):
    spec = tune_spec(tmp_path, trials=4, sampler="random", pruner="none", base=SHARED)
    code, out, err = cli("tune", spec, "--jobs", "2", "--storage", "journal", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    tune_dir = tmp_path / "runs" / "tt"
    assert (tune_dir / "journal.log").is_file() and not (tune_dir / "study.db").exists()
    data = trials_json(tmp_path)
    assert sorted(t["state"] for t in data["trials"]) == ["complete"] * 4
    assert len({t["run"] for t in data["trials"]}) == 4
    assert all((tune_dir / "trials" / t["run"] / "final.json").is_file() for t in data["trials"])
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    assert len(worker_pids(JournalStorage(JournalFileBackend(str(tune_dir / "journal.log"))))) == 2
    code, out, err = cli("tune", spec, "--status", "--runs-dir", tmp_path / "runs")  # the journal is recorded
    assert code == 0 and out.count(" complete ") == 4 and "storage journal" in out
    code, out, err = cli("tune", spec, "--trials", "5", "--runs-dir", tmp_path / "runs")  # a bigger budget: one more
    assert code == 0 and out.count("completed, val_loss") == 1, out
    assert len(trials_json(tmp_path)["trials"]) == 5


@pytest.fixture(scope="module")
def postgres_url():
    """A real PostgreSQL server: the one NOISECLI_TEST_POSTGRES_URL names, else a throwaway
    cluster started here from the system's PostgreSQL binaries (Debian's `postgresql` package,
    which .ci/run installs), on 127.0.0.1 at a free port, stopped when the module is done."""
    url = os.environ.get(POSTGRES_ENV)
    if url:
        yield url
        return
    import glob
    import shutil
    import socket

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
    if not found[-1]:
        pytest.fail("no PostgreSQL server binaries: install them (Debian: apt-get install postgresql) or set "
                    f"{POSTGRES_ENV} to a database URL")
    bin_dir = Path(found[-1]).parent
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="noisecli-pg."))  # under /tmp: pytest's own folders are root's alone
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    as_user = ["su", "postgres", "-c"] if os.geteuid() == 0 else ["sh", "-c"]  # root cannot run postgres
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
    run = lambda cmd: subprocess.run([*as_user, cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(f"{bin_dir}/initdb -D {folder}/data -A trust -U postgres -E UTF8")
    run(f"{bin_dir}/pg_ctl -D {folder}/data -l {folder}/log -w -o '-k {folder} -p {port} "
        "-c listen_addresses=127.0.0.1' start")
    try:
        run(f"{bin_dir}/psql -q -h {folder} -p {port} -c 'CREATE DATABASE noisecli_test'")
        yield f"postgresql://postgres@127.0.0.1:{port}/noisecli_test"
    finally:
        run(f"{bin_dir}/pg_ctl -D {folder}/data -m fast stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_postgresql_storage_shared_by_two_workers(tmp_path, cli, postgres_url):
    url = postgres_url
    name = f"pg-{uuid.uuid4().hex[:8]}"  # a study of its own in a database that outlives the test
    spec = tune_spec(tmp_path, name=name, trials=4, sampler="random", pruner="none", base=SHARED)
    code, out, err = cli("tune", spec, "--jobs", "2", "--storage", url, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert not (tmp_path / "runs" / name / "study.db").exists()
    spent = lambda: [t for t in optuna.load_study(study_name=f"{name}/input", storage=url).get_trials()  # noqa: E731
                     if "run" in t.user_attrs]  # (a trial two workers asked for at once is failed, with no run)
    assert sorted(t.state.name for t in spent()) == ["COMPLETE"] * 4
    assert len(worker_pids(url, name)) == 2
    recorded = json.loads((tmp_path / "runs" / name / "tune.json").read_text())
    assert recorded["storage"].startswith("postgresql") and recorded["storage"].split("@")[0].count(":") <= 2
    code, out, err = cli("tune", spec, "--storage", url, "--runs-dir", tmp_path / "runs")  # continues: nothing new
    assert code == 0 and len(spent()) == 4


@pytest.mark.slow
def test_submitit_local_executor_workers_pull_trials_from_the_journal(tmp_path, cli):
    spec = tune_spec(tmp_path, trials=3, sampler="random", pruner="none")
    code, out, err = cli("tune", spec, "--backend", "submitit", "--cluster", "local", "--jobs", "2",
                         "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    tune_dir = tmp_path / "runs" / "tt"
    assert (tune_dir / "journal.log").is_file() and (tune_dir / ".submitit").is_dir()  # journal: the cluster default
    assert "2 workers submitted to local" in out
    data = trials_json(tmp_path)
    assert sorted(t["state"] for t in data["trials"]) == ["complete"] * 3
    assert json.loads((tune_dir / "tune.json").read_text())["storage"] == "journal"


@pytest.mark.slow
def test_a_preempted_submitit_worker_saves_its_trial_is_requeued_and_resumes_it(tmp_path):
    spec = long_trials(tmp_path)
    proc = start("tune", spec, "--backend", "submitit", "--cluster", "local", "--runs-dir", tmp_path / "runs",
                 cwd=tmp_path)
    first = tmp_path / "runs" / "tt" / "trials" / "input_trial-0000"
    wait_for_rows(first, 3, proc)
    # what Slurm does ahead of a preemption or the time limit: SIGUSR2 to the task (the run lock's holder)
    os.kill(json.loads((first / ".lock").read_text())["pid"], signal.SIGUSR2)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    status = json.loads((first / "status.json").read_text())
    assert status["state"] == "completed" and status["starts"] == 2  # saved, requeued, resumed
    assert "Requeued job" in "".join(p.read_text() for p in (tmp_path / "runs" / "tt" / ".submitit").glob("*_log.out"))
    states = sorted(t["state"] for t in trials_json(tmp_path)["trials"])
    assert states == ["complete", "retried"]


@pytest.mark.slow
def test_batched_trials_train_as_one_stack_pruned_members_leave_it_and_match_alone(tmp_path, cli):
    keys = dict(sampler={"kind": "grid", "seed": 3}, trials=4, pruner={"kind": "median", "n_startup_trials": 1},
                search={"noise": {"input": {"choices": [0.02, 3.0, 8.0, 0.05]}}})
    code, out, err = cli("tune", tune_spec(tmp_path, **keys), "--batched", "--max-batch", "2",
                         "--runs-dir", tmp_path / "stacked")
    assert code == 0, err
    stacked = json.loads((tmp_path / "stacked" / "tt" / "trials.json").read_text())["trials"]
    by_factor = {t["params"]["factor"]: t for t in stacked}
    assert by_factor[8.0]["state"] == "pruned" and by_factor[8.0]["pruned_at"]["step"] == 8
    folder = tmp_path / "stacked" / "tt" / "trials" / by_factor[8.0]["run"]
    status = json.loads((folder / "status.json").read_text())
    assert status["state"] == "pruned" and "stack of 2" in status["batched"]
    partner = json.loads((tmp_path / "stacked" / "tt" / "trials" / by_factor[0.02]["run"] / "status.json").read_text())
    assert partner["state"] == "completed" and partner["step"] == 32  # the stack went on without it
    code, _, err = cli("tune", tune_spec(tmp_path, **keys), "--runs-dir", tmp_path / "alone")
    assert code == 0, err
    alone = {t["params"]["factor"]: t for t in json.loads((tmp_path / "alone" / "tt" / "trials.json").read_text())[
        "trials"]}
    # which trials are pruned depends on which had completed when they were judged (in a stack, its first
    # members are judged against none); those that completed both ways trained alike
    both = [f for f in by_factor if by_factor[f]["state"] == alone[f]["state"] == "complete"]
    assert alone[8.0]["state"] == "pruned" and len(both) >= 1
    for factor in both:  # each member trains as its trial alone
        assert by_factor[factor]["value"] == pytest.approx(alone[factor]["value"], rel=1e-4)
    code, _, err = cli("tune", tune_spec(tmp_path, **keys), "--max-batch", "2", "--runs-dir", tmp_path / "x")
    assert code == 2 and err == "error: --max-batch: only with --batched\n"


@pytest.mark.parametrize("pruner,sampler", [({"kind": "asha", "min_resource": 8, "reduction_factor": 2}, "tpe"),
                                            ({"kind": "hyperband", "min_resource": 8, "reduction_factor": 2}, "random")])
def test_asha_and_hyperband_prune_a_hopeless_trial_under_the_samplers_that_feed_them(tmp_path, cli, pruner, sampler):
    """The default pruner (ASHA) and Hyperband, through Optuna's real classes, with the TPE and
    random samplers: of six trials, the ones at a strength that ruins the model stop early."""
    spec = tune_spec(tmp_path, sampler={"kind": sampler, "seed": 0}, trials=6, pruner=pruner,
                     search={"noise": {"input": {"choices": [0.01, 0.02, 50.0]}}},
                     base={**BASE, "train": {**BASE["train"], "eval_every": 8}})
    code, out, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    trials = trials_json(tmp_path)["trials"]
    assert len(trials) == 6 and {t["state"] for t in trials} <= {"complete", "pruned"}
    pruned = [t for t in trials if t["state"] == "pruned"]
    assert pruned and all(t["pruned_at"]["step"] < 32 for t in pruned)  # stopped before the 4 epochs' end
    assert any(t["params"]["factor"] == 50.0 for t in pruned)  # a hopeless strength stopped early
    assert trials_json(tmp_path)["studies"]["input"]["best"]["params"]["factor"] < 1  # and never won
    assert f"pruned by the {pruner['kind']} pruner" in out


def test_a_search_over_two_parameters_reports_optunas_importances(tmp_path, cli):
    spec = tune_spec(tmp_path, sampler={"kind": "random", "seed": 1}, trials=5, pruner="none",
                     search={"noise": {"input": {"factor": [0.01, 3.0], "log": True}},
                             "train.lr": {"range": [1e-4, 3e-2], "log": True}})
    code, out, err = cli("tune", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    data = trials_json(tmp_path)
    importance = data["studies"]["input"]["importance"]
    assert set(importance) == {"factor", "train.lr"} and sum(importance.values()) == pytest.approx(1, abs=1e-3)
    code, md, err = cli("report", tmp_path / "runs" / "tt", "-f", "md")
    assert code == 0 and "importance (Optuna, fANOVA): " in md, err
