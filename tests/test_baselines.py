"""`report --baseline`: noise against (and on top of) the classical regularizers, not only against
no noise. Hand-made run folders with known numbers; differences, intervals and Holm families
checked against scipy."""

import csv
import io
import json

import pytest
import yaml
from scipy import stats as sps

from noisecli.report import build

# label -> (noise, dropout, per seed: (selected val_acc, test_acc))
STUDY = {
    "none": ({"kind": "none"}, 0.0, [(0.80, 0.80), (0.82, 0.79), (0.81, 0.81)]),
    "dropout 0.2": ({"kind": "none"}, 0.2, [(0.86, 0.84), (0.85, 0.86), (0.87, 0.85)]),
    "input 0.1": ({"kind": "input", "factor": 0.1}, 0.0, [(0.84, 0.83), (0.83, 0.86), (0.85, 0.82)]),
    "input 0.1 + dropout 0.2": ({"kind": "input", "factor": 0.1}, 0.2, [(0.88, 0.88), (0.89, 0.87), (0.87, 0.90)]),
}


def make_study(tmp_path, study=STUDY):
    root = tmp_path / "runs" / "study"
    for label, (noise, dropout, seeds) in study.items():
        for seed, (val_acc, test_acc) in enumerate(seeds):
            d = root / f"{label.replace(' ', '_')}-{seed}"
            d.mkdir(parents=True)
            spec = {"name": d.name, "seed": seed, "device": "auto", "data": {"kind": "digits"},
                    "model": {"kind": "mlp", "dropout": dropout}, "noise": noise}
            (d / "spec.yaml").write_text(yaml.safe_dump(spec))
            rows = [{"epoch": 1, "step": 10, "train_loss": 0.5, "clean_train_loss": 0.3, "val_loss": 1 - val_acc,
                     "val_acc": val_acc}]
            (d / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
            (d / "status.json").write_text(json.dumps({"state": "completed", "step": 10}))
            (d / "final.json").write_text(json.dumps({
                "task": "classification", "selected": {"step": 10, "val_loss": 1 - val_acc, "val_acc": val_acc,
                                                       "test_acc": test_acc, "test_loss": 1 - test_acc},
                "final": {"step": 10}}))
    return root


def accs(label, study=STUDY):
    return [t for _, t in study[label][2]]


def by_label(configs, baseline=None):
    return {c.label: (c.by_baseline[baseline] if baseline else c.stats) for c in configs}


def paired(a, b):
    diffs = [x - y for x, y in zip(a, b)]
    return sum(diffs) / len(diffs), sps.ttest_rel(a, b).pvalue


def holm(ps):
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


def test_labels_name_the_noise_part_and_the_regularizer_part(tmp_path):
    configs, _ = build([make_study(tmp_path)])
    assert [c.label for c in configs] == ["none", "input 0.1", "dropout 0.2", "input 0.1 + dropout 0.2"]
    assert [c.regs for c in configs] == ["", "", "dropout 0.2", "dropout 0.2"]


def test_by_default_noise_on_top_of_dropout_is_compared_with_dropout_alone(tmp_path):
    configs, _ = build([make_study(tmp_path)])
    s = by_label(configs)
    delta, _ = paired(accs("input 0.1 + dropout 0.2"), accs("dropout 0.2"))
    assert s["input 0.1 + dropout 0.2"]["delta_metric"] == pytest.approx(delta)
    assert s["input 0.1 + dropout 0.2"]["vs"] == "dropout 0.2"
    assert s["input 0.1"]["delta_metric"] == pytest.approx(paired(accs("input 0.1"), accs("none"))[0])
    assert s["dropout 0.2"]["baseline"] and s["none"]["baseline"]


def test_a_labelled_baseline_serves_its_whole_study_as_one_holm_family(tmp_path):
    configs, _ = build([make_study(tmp_path)], baselines=["dropout 0.2"])
    s = by_label(configs)
    others = ["none", "input 0.1", "input 0.1 + dropout 0.2"]
    expected = [paired(accs(label), accs("dropout 0.2")) for label in others]
    adjusted = holm([p for _, p in expected])
    for label, (delta, p), adj in zip(others, expected, adjusted):
        assert s[label]["vs"] == "dropout 0.2"
        assert s[label]["delta_metric"] == pytest.approx(delta)
        assert s[label]["metric_p_value"] == pytest.approx(p)
        assert s[label]["metric_p_adjusted"] == pytest.approx(adj)
    assert s["dropout 0.2"]["baseline"] and s["dropout 0.2"]["delta_metric"] is None


def test_best_classical_is_chosen_on_val_and_compared_on_test(tmp_path):
    # dropout 0.2 is best on test, but `none` is best on val: the choice is none
    study = {**STUDY, "none": ({"kind": "none"}, 0.0, [(0.90, 0.80), (0.91, 0.79), (0.92, 0.81)])}
    configs, _ = build([make_study(tmp_path, study)], baselines=["best-classical"])
    s = by_label(configs)
    assert {s[label]["vs"] for label in s} == {"none"}
    assert s["dropout 0.2"]["delta_metric"] == pytest.approx(paired(accs("dropout 0.2", study),
                                                                    accs("none", study))[0])
    configs, _ = build([make_study(tmp_path / "b")], baselines=["best-classical"])
    s = by_label(configs)
    assert {s[label]["vs"] for label in s} == {"dropout 0.2"}  # best on val in STUDY
    assert s["input 0.1"]["delta_metric"] == pytest.approx(paired(accs("input 0.1"), accs("dropout 0.2"))[0])


def test_two_baselines_each_get_columns_rows_and_their_own_families(tmp_path, cli):
    root = make_study(tmp_path)
    code, out, err = cli("report", root, "-f", "md", "--baseline", "none", "--baseline", "best-classical")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.endswith("compared with none and with best-classical (dropout 0.2).")
    header = next(line for line in out.splitlines() if line.startswith("| noise"))
    assert "| regularizer |" in header and "Δ test acc vs none [95% CI]" in header
    assert "Δ test acc vs best-classical [95% CI]" in header
    assert "| noise | factor | regularizer | test\\_acc | test\\_loss |" in out  # every metric, labelled the same
    assert "| input | 0.1 | dropout 0.2 | 0.8833 (+0.0333 [" in out
    code, out, _ = cli("report", root, "-f", "csv", "-b", "none", "-b", "best-classical")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 8 and [r["baseline"] for r in rows] == ["none"] * 4 + ["best-classical"] * 4
    long = {(r["label"], r["baseline"]): r for r in rows}
    assert long[("input 0.1", "none")]["baseline_config"] == "none"
    assert long[("input 0.1", "best-classical")]["baseline_config"] == "dropout 0.2"
    delta = paired(accs("input 0.1"), accs("dropout 0.2"))[0]
    assert float(long[("input 0.1", "best-classical")]["delta_metric"]) == pytest.approx(delta)
    # Holm under best-classical: one family of 3 (none, input 0.1, input 0.1 + dropout 0.2)
    others = ["none", "input 0.1", "input 0.1 + dropout 0.2"]
    adjusted = holm([paired(accs(label), accs("dropout 0.2"))[1] for label in others])
    for label, adj in zip(others, adjusted):
        assert float(long[(label, "best-classical")]["metric_p_adjusted"]) == pytest.approx(adj)
    code, out, _ = cli("report", root, "-f", "json", "-b", "dropout 0.2")
    data = json.loads(out)
    assert data["baselines"] == ["dropout 0.2"] and {c["baseline"] for c in data["configs"]} == {"dropout 0.2"}


def test_a_baseline_no_configuration_has_is_one_line_with_the_labels(tmp_path, cli):
    code, out, err = cli("report", make_study(tmp_path), "--baseline", "dropout 0.3")
    assert (code, out) == (2, "")
    assert err.strip() == ("error: --baseline: no configuration is labelled 'dropout 0.3'; did you mean "
                           "'dropout 0.2'? (labels: none, best-classical, input 0.1, dropout 0.2, "
                           "input 0.1 + dropout 0.2)")


def test_the_metrics_figure_draws_a_reference_per_further_baseline(tmp_path):
    from noisecli.report.figures import draw

    configs, _ = build([make_study(tmp_path)], baselines=["none", "best-classical"])
    (panel, *_) = [ax for ax in draw(configs)["metrics"].axes if ax.get_visible()]
    dotted = {line.get_label(): line.get_xdata()[0] for line in panel.get_lines() if line.get_linestyle() == ":"}
    assert dotted == {"best-classical: dropout 0.2": pytest.approx(sum(accs("dropout 0.2")) / 3)}


def test_a_second_stage_sweep_takes_its_base_from_the_first_stages_winner_chosen_on_val(tmp_path, cli):
    classical = {k: v for k, v in STUDY.items() if k in ("none", "dropout 0.2")}
    # dropout 0.2 is best on val; make none better on test, so a choice on test would differ
    classical["none"] = ({"kind": "none"}, 0.0, [(0.80, 0.95), (0.82, 0.96), (0.81, 0.97)])
    make_study(tmp_path, classical)
    stage2 = tmp_path / "stage2.yaml"
    stage2.write_text(yaml.safe_dump({"name": "stage2", "base": {"from_report": "runs/study",
                                                                 "train": {"epochs": 2}},
                                      "grid": {"noise": [{"kind": "none"}, {"kind": "input", "factor": 0.3}]},
                                      "seeds": 2}))
    code, out, err = cli("sweep", stage2, "--dry-run", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    from noisecli.report import best_base
    from noisecli.validate import checked_plan

    plan = checked_plan(stage2, resolve_base=best_base)
    assert len(plan.points) == 4
    assert {p.spec.model.dropout for p in plan.points} == {0.2} and {p.spec.train.epochs for p in plan.points} == {2}
    code, _, err = cli("validate", stage2)
    assert code == 0, err
    stage2.write_text(yaml.safe_dump({"name": "s", "base": {"from_report": "runs/nothing"},
                                      "grid": {"noise.factor": [0.1]}}))
    code, _, err = cli("sweep", stage2, "--dry-run")
    assert code == 2 and err.startswith(f"error: base.from_report: report: {tmp_path / 'runs' / 'nothing'}: no such")


def test_a_tie_on_val_accuracy_goes_to_the_lower_best_val_loss(tmp_path):
    # dropout 0.2 and none tie on val accuracy; none has the lower val loss: it is best-classical
    tie = {"none": ({"kind": "none"}, 0.0, [(0.86, 0.80), (0.85, 0.79), (0.87, 0.81)]),
           "dropout 0.2": ({"kind": "none"}, 0.2, [(0.86, 0.84), (0.85, 0.86), (0.87, 0.85)])}
    root = make_study(tmp_path, tie)
    for run in root.glob("none-*"):  # the same accuracy, a lower loss
        row = json.loads((run / "metrics.jsonl").read_text())
        row["val_loss"] -= 0.05
        (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    configs, _ = build([root], baselines=["best-classical"])
    assert {c.stats["vs"] for c in configs} == {"none"}
    assert next(c for c in configs if c.label == "none").stats["best_overall"]  # the same rule crowns
