"""output.tracker: each tracker with its real package, read back from what it wrote."""

import json

import pytest

from tests.conftest import TINY, write_spec

STEPS = 24  # TINY: 3 epochs of ceil(120 / 16) steps


def rows_of(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def spec_with(tmp_path, tracker, name="t"):
    return write_spec(tmp_path, {**TINY, "name": name, "output": {"tracker": tracker}}, f"{name}.yaml")


def test_tensorboard_event_files_hold_the_metrics_and_every_steps_loss(cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = cli("train", spec_with(tmp_path, "tensorboard"), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    run = tmp_path / "runs" / "t"
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    rows = rows_of(run)
    val = events.Scalars("val_loss")
    assert [e.step for e in val] == [r["step"] for r in rows]
    assert [e.value for e in val] == pytest.approx([r["val_loss"] for r in rows], rel=1e-6)
    steps = events.Scalars("train_loss_step")
    assert [e.step for e in steps] == list(range(1, STEPS + 1))
    # the per-step losses average to each evaluation's train_loss
    per_step = [e.value for e in steps]
    assert sum(per_step[:8]) / 8 == pytest.approx(rows[0]["train_loss"], rel=1e-5)
    # final.json's numbers, which no evaluation row holds (the test split's), at the last step
    final = json.loads((run / "final.json").read_text())
    for part in ("selected", "final"):
        (test_acc,) = events.Scalars(f"{part}/test_acc")
        assert (test_acc.step, test_acc.value) == (STEPS, pytest.approx(final[part]["test_acc"], rel=1e-6))


def test_mlflow_local_store_groups_a_sweeps_runs_under_its_name(cli, tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = write_spec(tmp_path, {"name": "grid", "base": {**TINY, "output": {"tracker": "mlflow"}},
                                  "grid": {"noise.factor": [0.1, 0.3]}}, "sweep.yaml")
    code, _, err = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "runs" / "grid" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("grid")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["factor-0.1_seed-0", "factor-0.3_seed-0"]
    for r in runs:
        history = client.get_metric_history(r.info.run_id, "val_loss")
        rows = rows_of(tmp_path / "runs" / "grid" / r.info.run_name)
        assert [m.step for m in history] == [x["step"] for x in rows]
        assert [m.value for m in history] == pytest.approx([x["val_loss"] for x in rows])
        assert len(client.get_metric_history(r.info.run_id, "train_loss_step")) == STEPS
        assert r.data.params["noise.factor"] in ("0.1", "0.3")
        final = json.loads((tmp_path / "runs" / "grid" / r.info.run_name / "final.json").read_text())
        assert r.data.metrics["selected/test_loss"] == pytest.approx(final["selected"]["test_loss"])


def settled(log, needles, timeout=60.0) -> bytes:
    """The .wandb file once it holds every needle, or as it is after `timeout` seconds.

    `run.finish()` returns when wandb's service has processed the run's exit record; the service
    then closes the file on its own, after finish's fire-and-forget "inform finish" message
    reaches it: until then the file may hold only its 7-byte header (the records wait in a 32 KiB
    write buffer). The data is not lost (the service closes the file before it exits, and the
    process waits for the service at exit), but a reader in the same process has to wait for it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        raw = log.read_bytes()
        if all(n in raw for n in needles) or time.monotonic() > deadline:
            return raw
        time.sleep(0.05)


def test_wandb_offline_run_records_the_config_every_evaluation_and_every_steps_loss(cli, tmp_path, monkeypatch):
    """wandb 0.31 keeps an offline run in one protobuf log (.wandb) and no longer ships a
    Python reader for it; its records hold each logged value as JSON text, so the values
    themselves are read back from the raw bytes."""
    from noisecli.trackers import _stable_id

    monkeypatch.setenv("WANDB_MODE", "offline")
    code, out, err = cli("train", spec_with(tmp_path, "wandb"), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    assert out == ""  # --quiet stays quiet: W&B's banner is silenced
    run = tmp_path / "runs" / "t"
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    values = [json.dumps(row[k]).encode() for row in rows_of(run) for k in ("val_loss", "clean_train_loss")]
    # a resumed (or rerun) run continues the same W&B run: the id is stable per run folder
    raw = settled(log, [*values, b"train_loss_step", b"val_acc", b'"kind"', _stable_id(run).encode(),
                        b"selected/test_acc"])
    for value in values:
        assert value in raw
    assert b"train_loss_step" in raw and b"val_acc" in raw
    assert b"selected/test_acc" in raw  # final.json's numbers in the run's summary
    assert b'"kind": "input"' in raw or b'"kind":"input"' in raw  # the resolved spec is the run's config
    assert _stable_id(run).encode() in raw


def test_a_tracker_that_cannot_start_is_one_line_and_leaves_no_run_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    code, _, err = cli("train", spec_with(tmp_path, "mlflow"), "--runs-dir", tmp_path / "runs", "-q")
    assert code == 2 and err.startswith("error: output.tracker: mlflow could not start: ")
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "runs" / "t").exists()


def test_an_interrupted_and_resumed_run_sends_every_step_once(tmp_path):
    """Ctrl-C between two evaluations: the steps since the last one are sent after the resume,
    once each, and the evaluations once each."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from noisecli.errors import Interrupted
    from tests.test_train import train_run

    spec = spec_with(tmp_path, "tensorboard")
    with pytest.raises(Interrupted):
        train_run(spec, tmp_path / "runs", stop_after=12)  # mid-way through the second epoch
    train_run(spec, tmp_path / "runs")
    steps, evals = [], []
    for events_file in sorted((tmp_path / "runs" / "t" / "tensorboard").glob("events.*")):
        events = EventAccumulator(str(events_file))
        events.Reload()
        steps += [e.step for e in events.Scalars("train_loss_step")]
        evals += [e.step for e in events.Scalars("val_loss")] if "val_loss" in events.Tags()["scalars"] else []
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert sorted(evals) == [8, 16, 24]


def test_wandb_writes_nothing_outside_the_run_folder(tmp_path):
    """W&B keeps its caches, staging files and service logs under ~/.cache and ~/.local by
    default; a run's tracker files belong in its run folder. (A real process, so HOME is ours.)"""
    from tests.conftest import run_process

    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "WANDB_MODE": "offline", "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_DATA_HOME": str(home / ".local" / "share"), "XDG_CONFIG_HOME": str(home / ".config")}
    spec = spec_with(tmp_path, "wandb")
    done = run_process("train", spec, "--runs-dir", tmp_path / "runs", "-q", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    written = [str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and ".config" not in p.parts]
    assert not written
    assert list((tmp_path / "runs" / "t" / "wandb").rglob("*.wandb"))


def test_every_tracker_in_the_catalog_has_a_class_an_extra_and_a_spec_choice():
    """A tracker is named in three places (the catalog, trackers.TRACKERS, pyproject's extras);
    the spec's `output.tracker` choices are read from the catalog."""
    import tomllib
    from dataclasses import fields

    from noisecli import catalog
    from noisecli.spec import OutputSpec
    from noisecli.trackers import TRACKERS
    from tests.conftest import ROOT

    assert set(TRACKERS) == set(catalog.TRACKER_PACKAGES)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(catalog.TRACKER_PACKAGES) <= set(extras)
    choices = next(f for f in fields(OutputSpec) if f.name == "tracker").metadata["choices"]
    assert tuple(choices) == ("none", *catalog.TRACKER_PACKAGES)
