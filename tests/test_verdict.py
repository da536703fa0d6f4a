"""The verdict: three splits, selection on val, the verdict on test, early stopping, and a report
that decides by the chosen metric in its direction and never crowns a configuration that is
significantly worse than its baseline."""

import json

import pytest
import torch
import yaml

from noisecli.report import build, render
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import metrics_rows, write_spec

TABLE = {"data": {"kind": "digits", "train_size": 200}, "model": {"kind": "mlp", "hidden": [32]},
         "train": {"epochs": 8, "batch_size": 32, "lr": 3e-3, "eval_every": 7}, "device": "cpu"}


# ---------------------------------------------------------------- a report over hand-made runs

def make_run(root, name, seed, noise, val_losses, selected):
    """A completed run folder as noisecli writes it, with final.json's selected checkpoint."""
    d = root / name
    d.mkdir(parents=True)
    spec = {"name": name, "seed": seed, "device": "auto", "data": {"kind": "digits"}, "model": {"kind": "mlp"},
            "noise": noise}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    rows = [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": v, "clean_train_loss": v - 0.2, "val_loss": v,
             "val_acc": selected.get("val_acc", 0.5)} for i, v in enumerate(val_losses)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "status.json").write_text(json.dumps({"state": "completed", "step": rows[-1]["step"]}))
    (d / "final.json").write_text(json.dumps({"task": "classification", "selection": "val_loss",
                                              "selected": {"step": 10, **selected},
                                              "final": {"step": rows[-1]["step"]}}))


def study(tmp_path, configs):
    """configs: label -> (noise, [(best val loss, selected val_acc, test_acc, test_loss) per seed])."""
    root = tmp_path / "runs" / "s"
    for label, (noise, seeds) in configs.items():
        for seed, (best, val_acc, test_acc, test_loss) in enumerate(seeds):
            make_run(root, f"{label}-{seed}", seed, noise, [best, best + 0.05],
                     {"val_loss": best, "val_acc": val_acc, "test_acc": test_acc, "test_loss": test_loss})
    return root


NONE = ({"kind": "none"}, [(1.00, 0.80, 0.80, 0.60), (1.01, 0.81, 0.79, 0.61), (0.99, 0.79, 0.81, 0.59)])
# chosen on val (val_acc 0.90), better on test by +0.05
ON_VAL = ({"kind": "input", "factor": 0.1}, [(0.98, 0.90, 0.85, 0.50), (0.99, 0.91, 0.84, 0.52),
                                            (0.97, 0.89, 0.86, 0.51)])
# best on test (0.95) but second on val: picking it would be selecting on test
ON_TEST = ({"kind": "input", "factor": 0.5}, [(0.99, 0.85, 0.95, 0.55), (1.00, 0.86, 0.94, 0.56),
                                             (0.98, 0.84, 0.96, 0.54)])
# leads on val accuracy but its best val loss is far worse than none's, consistently
WORSE = ({"kind": "weight", "factor": 0.1}, [(1.50, 0.95, 0.83, 0.70), (1.52, 0.96, 0.82, 0.71),
                                            (1.49, 0.94, 0.84, 0.69)])


def stats(configs):
    return {c.label: c.stats for c in configs}


def test_decided_by_test_accuracy_chosen_on_val_compared_on_test(tmp_path):
    configs, _ = build([study(tmp_path, {"none": NONE, "a": ON_VAL, "b": ON_TEST})])
    s = stats(configs)
    assert s["input 0.1"]["metric"] == "test_acc"
    assert s["input 0.1"]["best_overall"] and not s["input 0.5"]["best_overall"]  # chosen on val, not test
    assert s["input 0.1"]["delta_metric"] == pytest.approx(0.05)  # the test difference, not val's +0.10
    assert s["input 0.5"]["delta_metric"] == pytest.approx(0.15)
    assert s["input 0.1"]["metric_mean"] == pytest.approx(0.85)


def test_the_direction_follows_the_metric(tmp_path):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL, "b": ON_TEST})
    loss, _ = build([root], metric="test_loss")  # lower is better: chosen on the selected val loss
    assert stats(loss)["input 0.1"]["best_overall"]  # lowest best val loss (0.98 mean)
    assert stats(loss)["input 0.1"]["delta_metric"] == pytest.approx(-0.09)
    best_val, _ = build([root], metric="best_val_loss")
    assert stats(best_val)["input 0.1"]["best_overall"] and not stats(best_val)["none"]["best_overall"]
    acc, _ = build([root], metric="val_acc")  # higher is better, the final row's
    assert stats(acc)["input 0.1"]["best_overall"]


def test_a_configuration_significantly_worse_than_its_baseline_is_never_crowned(tmp_path, cli):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL, "w": WORSE})
    configs, _ = build([root])
    s = stats(configs)
    assert s["weight 0.1"]["best_significant"] and not s["weight 0.1"]["best_overall"]
    assert s["input 0.1"]["best_overall"]
    code, out, err = cli("report", root, "-f", "md")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("Verdict: decided by test\\_acc on test at each run's selected checkpoint")
    assert "weight 0.1 leads on val\\_acc but is significantly worse than its baseline on best val loss" in out


def test_every_other_metric_has_its_own_difference_in_md_csv_and_json(tmp_path, cli):
    import csv
    import io

    root = study(tmp_path, {"none": NONE, "a": ON_VAL, "b": ON_TEST})
    configs, _ = build([root])
    loss = stats(configs)["input 0.1"]["metrics"]["test_loss"]
    assert loss["delta"] == pytest.approx(-0.09) and loss["mean"] == pytest.approx(0.51)
    assert loss["p_adjusted"] is not None and loss["significant"] is True  # -0.09 in all three seeds
    code, out, _ = cli("report", root, "-f", "csv")
    rows = {(r["noise"], r["factor"]): r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows[("input", "0.5")]["test_loss_delta"]) == pytest.approx(-0.05)
    assert float(rows[("input", "0.1")]["test_acc_delta"]) == pytest.approx(0.05)
    code, out, _ = cli("report", root, "-f", "json")
    by = {(c["noise"], c["factor"]): c for c in json.loads(out)["configs"]}
    assert by[("input", 0.5)]["metrics"]["test_acc"]["delta"] == pytest.approx(0.15)
    code, out, _ = cli("report", root, "-f", "md")
    assert "Every metric at the selected checkpoint" in out and "test\\_loss" in out


def test_runs_without_a_test_split_fall_back_to_val_loss_and_say_so(tmp_path, cli):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL})
    for final in root.glob("*/final.json"):
        final.unlink()
    text = render([root], "md", "t")
    assert text.startswith("Verdict: decided by val\\_loss at each run's last evaluation; lower is better. no test")
    code, _, err = cli("report", root, "--metric", "test_acc")
    assert code == 2 and err.startswith("error: --metric: test_acc is not recorded for 6 of 6 runs")
    code, _, err = cli("report", root, "--metric", "tst_acc")
    assert code == 2 and "did you mean 'test_acc'" in err


def test_a_report_warns_when_most_runs_were_still_improving(tmp_path):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL})
    assert "still improving" not in render([root], "md", "t")  # every run's best was before its last
    for metrics_file in root.glob("*/metrics.jsonl"):
        rows = [json.loads(x) for x in metrics_file.read_text().splitlines()]
        rows[-1]["val_loss"] = rows[0]["val_loss"] - 0.1
        metrics_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "Note: still improving: the best evaluation of 6 of 6 runs is their last" in render([root], "md", "t")


def test_a_half_finished_sweep_says_which_planned_points_have_not_run(tmp_path, cli):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL})
    names = sorted(p.name for p in root.iterdir())
    plan = {"name": "s", "grid": {}, "seeds": [0, 1, 2], "points": [{"name": n, "settings": {}} for n in
                                                                      names + ["b-0", "b-1"]]}
    (root / "sweep.json").write_text(json.dumps(plan))
    code, out, err = cli("report", root, "-f", "md")
    assert code == 0, err
    assert f"Note: 2 of the 8 planned points of {root} have not finished (e.g. b-0)" in out.replace("\\", "")


def test_the_sweep_screen_counts_interrupted_points_apart_from_done_ones():
    from noisecli.display import SweepDisplay
    from noisecli.points import Outcome

    screen = SweepDisplay("s", 8, quiet=True)
    for name, state in (("a", "completed"), ("b", "skipped"), ("c", "interrupted"), ("d", "interrupted")):
        screen.finished(Outcome(name, state))
    assert screen._describe() == "[bold]s[/]: 2 done, 0 running, 0 failed, 2 interrupted, 4 left"


# ---------------------------------------------------------------- the test split in a real run

def test_the_selected_checkpoints_test_metrics_are_best_pt_evaluated_on_test(tmp_path, cli):
    spec = write_spec(tmp_path, {**TABLE, "name": "r", "output": {"checkpoint": "best"},
                                 "noise": {"kind": "input", "factor": 0.3}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "test at the selected checkpoint (best val loss, step" in out + err
    run = tmp_path / "runs" / "r"
    final = json.loads((run / "final.json").read_text())
    rows = metrics_rows(run)
    best = min(rows, key=lambda r: r["val_loss"])
    assert final["selected"]["step"] == best["step"] and final["selected"]["val_loss"] == best["val_loss"]
    code, out, err = cli("eval", run, "--checkpoint", "best", "--split", "test")
    assert code == 0, err
    ours = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[1:]}
    assert ours["test_loss"] == pytest.approx(final["selected"]["test_loss"], abs=1e-6)
    assert ours["test_acc"] == pytest.approx(final["selected"]["test_acc"], abs=1e-6)  # eval prints 6 places
    code, out, _ = cli("eval", run, "--checkpoint", "last", "--split", "test")
    last = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[1:]}
    assert last["test_loss"] == pytest.approx(final["final"]["test_loss"], abs=1e-6)
    assert not any(k.startswith("test_") for r in rows for k in r)  # never a row: no selection on test


def test_the_run_header_names_every_split_size(tmp_path, cli):
    spec = write_spec(tmp_path, {**TABLE, "name": "h", "train": {**TABLE["train"], "max_steps": 7}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "h: digits (200 train / 360 val / 359 test examples, classification)" in out + err


# ---------------------------------------------------------------- early stopping

def early(tmp_path, name="e", **rule):
    return write_spec(tmp_path, {**TABLE, "name": name, "train": {**TABLE["train"], "epochs": 40, "lr": 1e-2,
                                                                  "early_stopping": {"patience": 2, **rule}}},
                      f"{name}.yaml")


def test_early_stopping_stops_after_patience_evaluations_without_improvement(tmp_path, cli):
    code, out, err = cli("train", early(tmp_path), "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    rows = metrics_rows(tmp_path / "runs" / "e")
    status = json.loads((tmp_path / "runs" / "e" / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] < 40 * 7
    assert status["stopped_early"].startswith("early stopping: val_loss did not improve by more than 0 for 2")
    losses = [r["val_loss"] for r in rows]
    best = losses.index(min(losses))
    assert len(losses) == best + 3  # the best, then exactly `patience` evaluations without improvement
    assert json.loads((tmp_path / "runs" / "e" / "final.json").read_text())["stopped_early"] == status["stopped_early"]


def test_early_stopping_on_accuracy_follows_its_direction_and_resume_keeps_the_count(tmp_path):
    spec = load_spec(early(tmp_path, "acc", metric="val_acc", min_delta=0.001))
    whole = Trainer(spec, tmp_path / "whole", quiet=True).setup()
    whole.open_run()
    whole.train()
    whole.close()
    accs = [r["val_acc"] for r in whole.state.rows]
    assert whole.state.stopped_early and "val_acc" in whole.state.stopped_early
    top = max(range(len(accs)), key=lambda i: (accs[i], -i))  # the first evaluation at the best accuracy
    assert len(accs) == top + 3
    # interrupted between evaluations after the best, then resumed: the same evaluations, the same stop
    part = Trainer(spec, tmp_path / "split", quiet=True).setup()
    part.open_run()
    real = part.train_step
    stop_at = whole.state.rows[top + 1]["step"] - 2

    def step():
        out = real()
        if part.state.step == stop_at:
            part.stop.request(2)
        return out

    part.train_step = step
    with pytest.raises(Exception):
        part.train()
    part.close()
    resumed = Trainer(spec, tmp_path / "split", quiet=True).setup()
    assert resumed.open_run() == "resume"
    resumed.train()
    resumed.close()
    untimed = lambda rows: [{k: v for k, v in r.items() if k not in ("samples_per_s", "seconds")} for r in rows]  # noqa: E731
    assert untimed(resumed.state.rows) == untimed(whole.state.rows)
    assert resumed.state.stopped_early == whole.state.stopped_early


@pytest.mark.parametrize("rule,message", [
    ({"patience": 0}, "train.early_stopping.patience: must be a whole number of evaluations >= 1, got 0"),
    ({"patience": 2, "metric": "val_r2"}, "train.early_stopping.metric: val_r2 is not measured on classification"),
    ({"patience": 2, "metric": "test_acc"}, "train.early_stopping.metric: must be a validation metric"),
    ({"patience": 2, "min_delta": -1}, "train.early_stopping.min_delta: must be a number >= 0, got -1"),
    ({"patience": 2, "patiense": 3}, "train.early_stopping.patiense: unknown key; did you mean 'patience'?"),
])
def test_early_stopping_mistakes_are_one_line(tmp_path, cli, rule, message):
    spec = write_spec(tmp_path, {**TABLE, "train": {**TABLE["train"], "early_stopping": rule}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "spec").exists()


def test_a_stacked_member_that_stops_early_leaves_and_the_others_go_on(tmp_path):
    from noisecli.batched import train_group
    from noisecli.points import train_point
    from noisecli.spec import spec_from_dict

    specs = [spec_from_dict({**TABLE, "name": f"m{i}", "seed": i, "noise": {"kind": "input", "factor": f},
                             "train": {**TABLE["train"], "epochs": 20, "lr": 1e-2,
                                       "early_stopping": {"patience": 2}}})
             for i, f in enumerate([0.0, 0.3, 1.0])]
    outcomes = train_group(specs, tmp_path / "stacked", lambda *a: None)
    assert {o.state for o in outcomes} == {"completed"}
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        a, b = metrics_rows(tmp_path / "stacked" / spec.name), metrics_rows(tmp_path / "alone" / spec.name)
        assert [r["step"] for r in a] == [r["step"] for r in b]
        for ra, rb in zip(a, b):
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-3)
        final = json.loads((tmp_path / "stacked" / spec.name / "final.json").read_text())
        assert final["selected"]["test_acc"] == pytest.approx(
            json.loads((tmp_path / "alone" / spec.name / "final.json").read_text())["selected"]["test_acc"], abs=0.02)


# ---------------------------------------------------------------- robustness and sharpness

def probe_run(tmp_path, **eval_section):
    spec = load_spec(write_spec(tmp_path, {**TABLE, "name": "p", "eval": eval_section}))
    trainer = Trainer(spec, tmp_path / "runs", quiet=True).setup()
    trainer.open_run()
    trainer.train()
    trainer.close()
    return trainer, json.loads((tmp_path / "runs" / "p" / "final.json").read_text())


def test_robustness_at_level_0_is_the_test_split_and_grows_worse_with_the_level(tmp_path):
    trainer, final = probe_run(tmp_path, robustness={"levels": [0, 0.5, 2.0]})
    curve = final["final"]["robustness"]
    assert curve["levels"] == [0, 0.5, 2.0]
    assert curve["test_loss"][0] == pytest.approx(final["final"]["test_loss"], abs=1e-7)
    assert curve["test_acc"][0] == final["final"]["test_acc"]
    assert curve["test_acc"][2] < curve["test_acc"][0] and curve["test_loss"][2] > curve["test_loss"][0]
    assert final["final"]["robust_test_acc"] == pytest.approx(sum(curve["test_acc"]) / 3)
    assert final["selected"]["robust_test_acc"] is not None  # measured at the selected checkpoint too


def test_perturbations_are_the_same_for_every_run_and_never_touch_or_write_padding(tmp_path):
    from noisecli.engine.probes import _perturbed

    class Run:  # what _perturbed reads of a run
        def __init__(self, data):
            self.data = data

    class Data:
        is_tokens, pad_id, n_outputs = True, 0, 50

    x = torch.randint(1, 50, (64, 32))
    x[:, 20:] = 0  # padding
    a = _perturbed(Run(Data()), x, 0.3, torch.Generator().manual_seed(7), None)
    b = _perturbed(Run(Data()), x, 0.3, torch.Generator().manual_seed(7), None)
    assert torch.equal(a, b) and torch.equal(a[:, 20:], x[:, 20:])
    assert (a[:, :20] != 0).all()  # a replacement draws from the other tokens: never the pad id
    changed = (a[:, :20] != x[:, :20]).float().mean().item()
    assert 0.2 < changed < 0.35  # p = 0.3, less the draws that hit the same token


def test_sharpness_restores_the_weights_bitwise_and_grows_with_rho(tmp_path):
    from noisecli.engine.probes import sharpness

    trainer, final = probe_run(tmp_path, sharpness={"rho": 0.05, "draws": 4})
    assert final["final"]["sharpness"] > 0
    before = [p.detach().clone() for p in trainer.raw_model.parameters()]
    trainer.model.eval()
    small, large = sharpness(trainer, 0.01, 4), sharpness(trainer, 0.2, 4)
    assert all(torch.equal(a, p) for a, p in zip(before, trainer.raw_model.parameters()))
    assert 0 <= small < large
    assert sharpness(trainer, 0.05, 4) == pytest.approx(final["final"]["sharpness"], rel=1e-5)


def test_the_report_decides_by_robustness_or_sharpness_in_their_directions(tmp_path):
    root = study(tmp_path, {"none": NONE, "a": ON_VAL})
    for final_file in root.glob("*/final.json"):
        final = json.loads(final_file.read_text())
        better = final_file.parent.name.startswith("a-")
        final["selected"].update(robust_test_acc=0.7 if better else 0.6, sharpness=0.01 if better else 0.05)
        final_file.write_text(json.dumps(final))
    robust, _ = build([root], metric="robust_test_acc")
    assert stats(robust)["input 0.1"]["delta_metric"] == pytest.approx(0.1)
    assert stats(robust)["input 0.1"]["best_overall"]
    sharp, _ = build([root], metric="sharpness")
    assert stats(sharp)["input 0.1"]["delta_metric"] == pytest.approx(-0.04)
    assert "lower is better" in render([root], "md", "t", metric="sharpness").splitlines()[0]


@pytest.mark.parametrize("section,message", [
    ({"robustness": {"levels": []}}, "eval.robustness.levels: must be a non-empty list of numbers >= 0"),
    ({"robustness": {"level": [0.1]}}, "eval.robustness.level: unknown key; did you mean 'levels'?"),
    ({"sharpness": {"rho": -1}}, "eval.sharpness.rho: must be a number > 0, got -1"),
    ({"sharpness": {"draws": 0}}, "eval.sharpness.draws: must be a whole number from 1 to 1000, got 0"),
])
def test_probe_mistakes_are_one_line(tmp_path, cli, section, message):
    code, _, err = cli("validate", write_spec(tmp_path, {**TABLE, "eval": section}))
    assert code == 2 and message in err and "Traceback" not in err


# ---------------------------------------------------------------- the review's cases

def test_the_crowning_rule_reads_validation_only(tmp_path):
    """Best on val, significantly worse than none on test: still crowned (the guard may not look at
    test, or crowning would be a selection on test); its test difference is reported as it is."""
    worse_on_test = ({"kind": "input", "factor": 0.2}, [(0.98, 0.95, 0.70, 0.9), (0.99, 0.96, 0.71, 0.9),
                                                        (0.97, 0.94, 0.69, 0.9)])
    configs, _ = build([study(tmp_path, {"none": NONE, "t": worse_on_test})])
    s = stats(configs)["input 0.2"]
    assert s["metric_significant"] and s["delta_metric"] < 0  # worse on test, and said so
    assert s["best_overall"]


def test_a_spec_saved_before_the_test_split_reads_as_trained_without_one(tmp_path, cli):
    from noisecli.spec import read_saved_spec

    spec = write_spec(tmp_path, {**TABLE, "name": "old", "data": {**TABLE["data"], "test_fraction": 0},
                                 "train": {**TABLE["train"], "max_steps": 7}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    saved = tmp_path / "runs" / "old" / "spec.yaml"
    saved.write_text(saved.read_text().replace("  test_fraction: 0.0\n", ""))  # as an older noisecli wrote it
    assert read_saved_spec(saved)["data"]["test_fraction"] == 0.0
    code, out, err = cli("eval", tmp_path / "runs" / "old")
    assert code == 0 and "val_loss" in out, err
    code, _, err = cli("eval", tmp_path / "runs" / "old", "--split", "test")
    assert code == 2 and "has no test split" in err


def test_patience_spent_at_the_last_step_is_not_an_early_stop(tmp_path):
    spec = load_spec(write_spec(tmp_path, {**TABLE, "name": "end", "train": {
        **TABLE["train"], "max_steps": 21, "eval_every": 7, "early_stopping": {"patience": 1, "min_delta": 100}}}))
    trainer = Trainer(spec, tmp_path / "runs", quiet=True).setup()
    trainer.open_run()
    trainer.train()
    trainer.close()
    assert trainer.state.step == 14 and trainer.state.stopped_early  # no gain of 100 after the first: stops
    spec.train.early_stopping["patience"] = 2
    spec.name = "end2"
    again = Trainer(spec, tmp_path / "runs", quiet=True).setup()
    again.open_run()
    again.train()
    again.close()
    assert again.state.step == 21 and again.state.stopped_early is None  # its patience ran out at the last step


def test_robustness_without_a_test_split_and_an_empty_own_test_split_are_one_line(tmp_path, cli):
    import numpy as np

    spec = write_spec(tmp_path, {**TABLE, "data": {**TABLE["data"], "test_fraction": 0},
                                 "eval": {"robustness": {"levels": [0.1]}}})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "eval.robustness: measured on the test split, and this data has none" in err
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.savez(tmp_path / "e.npz", x=x, y=(x[:, 0] > 0).astype(np.int64), x_test=x[:0], y_test=np.zeros(0, np.int64))
    npz = write_spec(tmp_path, {**TABLE, "data": {"kind": "npz", "path": "e.npz"}}, "npz.yaml")
    code, _, err = cli("train", npz, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "x_test has no rows" in err and "Traceback" not in err


def test_regression_metrics_of_a_rank_with_no_rows_are_zero_sums():
    from noisecli import metrics

    sums = metrics.metric_sums(torch.zeros(0, 2), torch.zeros(0, 2), "regression",
                               lambda o, y: torch.nn.functional.mse_loss(o, y, reduction="sum"))
    assert all(float(torch.as_tensor(v).sum()) == 0 for v in sums.values())


# ---------------------------------------------------------------- figures per metric family

def curve_study(tmp_path):
    """The study of ON_VAL against NONE, with a robustness curve and sharpness in every final.json."""
    root = study(tmp_path, {"none": NONE, "a": ON_VAL})
    for path in sorted(root.glob("*/final.json")):
        final = json.loads(path.read_text())
        better = path.parent.name.startswith("a")
        acc = final["selected"]["test_acc"]
        final["selected"].update(sharpness=0.01 if better else 0.05, test_ece=0.03,
                                 robustness={"levels": [0, 0.5], "test_acc": [acc, acc - (0.1 if better else 0.3)],
                                             "test_loss": [0.5, 0.9]})
        path.write_text(json.dumps(final))
    return root


def test_the_figures_show_each_metric_family_and_a_robustness_curve_per_configuration(tmp_path):
    from noisecli.report.figures import draw

    configs, _ = build([curve_study(tmp_path)])
    figs = draw(configs)
    assert list(figs) == ["factor", "curves", "metrics", "robustness"]
    titles = [ax.get_title() for ax in figs["metrics"].axes if ax.get_visible()]
    assert titles == ["accuracy:\ntest_acc (↑ better)", "calibration:\ntest_ece (↓ better)",
                      "flatness:\nsharpness (↓ better)"]
    (robust,) = [ax for ax in figs["robustness"].axes if ax.get_visible()]
    lines = {bars.get_label(): list(bars.lines[0].get_ydata()) for bars in robust.containers}
    none_acc = [r[2] for r in NONE[1]]
    assert lines["none"] == pytest.approx([sum(none_acc) / 3, sum(none_acc) / 3 - 0.3])
    assert lines["0.1"][1] - lines["0.1"][0] == pytest.approx(-0.1)
    # the final marker (filled) and the best one (hollow) never sit on each other
    (factor,) = [ax for ax in figs["factor"].axes if ax.get_visible()]
    marks = [(line.get_xdata()[0], line.get_markerfacecolor()) for line in factor.get_lines() if line.get_marker() == "o"]
    assert len(marks) == 2 and marks[0][0] != marks[1][0] and marks[0][1] != marks[1][1]
    page = render([tmp_path / "runs" / "s"], "html", "t")
    assert page.count("<figcaption>") == 4 and "alt='metrics'" in page and "alt='robustness'" in page


def test_report_figures_writes_each_figure_as_its_own_file_and_refuses_a_bad_folder(tmp_path, cli):
    root = curve_study(tmp_path)
    out = tmp_path / "figs"
    code, stdout, err = cli("report", root, "-f", "md", "--figures", out)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["curves.svg", "factor.svg", "metrics.svg", "robustness.svg"]
    assert stdout.startswith("Verdict:") and "wrote" not in stdout  # the report on stdout stays clean
    assert err.count("wrote ") == 4
    first = (out / "metrics.svg").read_bytes()
    assert first.startswith(b"<?xml") and b"<svg" in first
    cli("report", root, "--figures", out)
    assert (out / "metrics.svg").read_bytes() == first  # no date inside: the same runs give the same bytes
    for fmt, magic in (("pdf", b"%PDF"), ("png", b"\x89PNG")):
        code, _, err = cli("report", root, "--figures", out, "--figure-format", fmt)
        assert code == 0 and (out / f"robustness.{fmt}").read_bytes().startswith(magic), err
    report_file = tmp_path / "r.md"
    code, _, err = cli("report", root, "-o", report_file, "--figures", report_file.parent / "r.md" / "x")
    assert (code, err.strip()) == (2, f"error: --figures: folder {report_file} does not exist")
    (tmp_path / "afile").write_text("")
    code, _, err = cli("report", root, "-o", report_file, "--figures", tmp_path / "afile")
    assert (code, err.strip()) == (2, f"error: --figures: {tmp_path / 'afile'} is a file; name a folder for the "
                                      "figures")
    assert not report_file.exists()  # refused before the report was written
