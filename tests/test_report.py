"""Reports: grouping, statistics against hand-computed values, every format parsed back."""

import csv
import io
import json
import math

import pytest
import yaml
from scipy import stats

from noisecli.report import build, delta_ci, holm, t975


def make_run(root, name, seed, noise, vals, state="completed", acc=True, lr=1e-3):
    d = root / name
    d.mkdir(parents=True)
    spec = {"name": name, "seed": seed, "device": "auto", "data": {"kind": "digits"}, "model": {"kind": "mlp"},
            "noise": noise, "train": {"lr": lr}}
    (d / "spec.yaml").write_text(yaml.safe_dump(spec))
    rows = [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": v + 0.1, "clean_train_loss": v - 0.5,
             "val_loss": v, **({"val_acc": 0.9} if acc else {})} for i, v in enumerate(vals)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "status.json").write_text(json.dumps({"state": state, "error": "boom" if state == "failed" else None}))
    return d


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "runs" / "s"
    for seed, v in enumerate([1.0, 1.2, 1.1]):
        make_run(root, f"none-{seed}", seed, {"kind": "none", "factor": 0.01}, [1.5, v])
    for seed, v in enumerate([0.9, 1.0, 1.05]):
        make_run(root, f"in1-{seed}", seed, {"kind": "input", "factor": 0.1}, [1.4, v])
    for seed, v in enumerate([0.5, 0.7, 0.6]):
        make_run(root, f"in5-{seed}", seed, {"kind": "input", "factor": 0.5}, [0.4, v])
    make_run(root, "in5-3", 3, {"kind": "input", "factor": 0.5}, [0.3], state="running")
    make_run(root, "w-0", 0, {"kind": "weight", "factor": 0.1}, [2.0], state="failed")
    (root / ".archive" / "old").mkdir(parents=True)
    make_run(root / ".archive", "old-run", 0, {"kind": "none"}, [9.0])
    return tmp_path / "runs"


def by_label(configs):
    return {(c.noise, c.factor): c.stats for c in configs}


def test_statistics_match_hand_computed_values(sweep):
    configs, runs = build([sweep])
    s = by_label(configs)
    assert set(s) == {("none", ""), ("input", "0.1"), ("input", "0.5")}  # the archive is not read
    none, small, big = s[("none", "")], s[("input", "0.1")], s[("input", "0.5")]
    assert none["n"] == 3 and none["val_loss_mean"] == pytest.approx(1.1) and none["val_loss_std"] == pytest.approx(0.1)
    assert none["best_val_loss_mean"] == pytest.approx(1.1)  # min(1.5, v) = v
    assert big["best_val_loss_mean"] == pytest.approx(0.4)  # the first evaluation was the best
    assert none["gap_mean"] == pytest.approx(0.5) and none["clean_train_loss_mean"] == pytest.approx(0.6)
    # paired by seed: diffs -0.1, -0.2, -0.05; mean -0.11667, sd 0.076376, t(0.975, 2) = 4.302653
    assert small["delta_vs_none"] == pytest.approx(-0.116667, abs=1e-6) and small["paired"]
    half = 4.302653 * 0.0763763 / math.sqrt(3)
    assert small["delta_ci_low"] == pytest.approx(-0.116667 - half, abs=1e-5)
    assert small["delta_ci_high"] == pytest.approx(-0.116667 + half, abs=1e-5)
    assert small["significant"] is False
    assert big["delta_vs_none"] == pytest.approx(-0.5) and big["significant"] is True  # diffs all -0.5
    # best val: none's bests 1.0, 1.2, 1.1 (its last evaluations); input 0.5's are all 0.4 (its first)
    assert big["delta_best_vs_none"] == pytest.approx(-0.7)
    assert big["delta_best_ci_high"] == pytest.approx(-0.7 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert big["best_significant"] is True
    # input 0.1's bests equal its finals (the last evaluation was its best): the same delta as final
    assert small["delta_best_vs_none"] == pytest.approx(small["delta_vs_none"])
    assert big["best_overall"] and big["best_in_kind"] and none["best_in_kind"] and not small["best_in_kind"]
    assert {r.state for r in runs} == {"completed", "running", "failed"}


def test_without_a_none_run_a_factor_of_zero_is_the_baseline(tmp_path):
    """A grid of factors 0, 0.1 and no `none` point: factor 0 trains bitwise like none, so it is
    the baseline; an explicit `none` still wins where there is one."""
    root = tmp_path / "runs"
    for seed, (z, w) in enumerate([(1.0, 0.8), (1.2, 1.1), (1.1, 0.95)]):
        make_run(root, f"w0-{seed}", seed, {"kind": "weight", "factor": 0.0}, [z])
        make_run(root, f"w1-{seed}", seed, {"kind": "weight", "factor": 0.1}, [w])
    s = by_label(build([root])[0])
    assert s[("weight", "0")]["baseline"] and s[("weight", "0")]["delta_vs_none"] is None
    assert s[("weight", "0.1")]["delta_vs_none"] == pytest.approx(-0.15) and s[("weight", "0.1")]["paired"]
    for seed, v in enumerate([2.0, 2.0, 2.0]):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [v])
    s = by_label(build([root])[0])
    assert s[("none", "")]["baseline"] and not s[("weight", "0")]["baseline"]
    assert s[("weight", "0")]["delta_vs_none"] == pytest.approx(-0.9)


def test_unpaired_seeds_use_welch():
    # var 0.005/2 and 0.01/3; Welch df = 2.88235; t(0.975, 2.88235) = 3.257208
    c = delta_ci({3: 0.8, 4: 0.9}, {0: 1.0, 1: 1.2, 2: 1.1})
    assert not c.paired and c.delta == pytest.approx(-0.25)
    assert c.high - c.delta == pytest.approx(3.257208 * math.sqrt(0.0025 + 0.01 / 3), rel=1e-6)
    assert c.p == pytest.approx(stats.ttest_ind([0.8, 0.9], [1.0, 1.2, 1.1], equal_var=False).pvalue, rel=1e-9)


def test_paired_p_is_the_paired_t_test_and_agrees_with_the_interval():
    cfg, none = {0: 0.9, 1: 1.0, 2: 1.05}, {0: 1.0, 1: 1.2, 2: 1.1}
    c = delta_ci(cfg, none)
    assert c.paired and c.p == pytest.approx(stats.ttest_rel([0.9, 1.0, 1.05], [1.0, 1.2, 1.1]).pvalue, rel=1e-9)
    assert (c.p < 0.05) == (c.high < 0 or c.low > 0)  # the interval and the test are the same test


def _t_cdf(x: float, df: float) -> float:
    """Student's t CDF from its density written out by hand, integrated numerically."""
    from scipy.integrate import quad

    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    return 0.5 + quad(lambda u: c * (1 + u * u / df) ** (-(df + 1) / 2), 0, x, limit=200)[0]


def test_t_quantiles_are_exact_also_below_two_degrees_of_freedom():
    """The hand-rolled quantile this replaced was up to 18 % too wide near df = 1 and jumped at 1."""
    assert t975(1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-9)  # df 1 is Cauchy
    assert t975(2) == pytest.approx(0.95 / math.sqrt(2 * 0.975 * 0.025), rel=1e-9)  # df 2 in closed form
    for df in (1.05, 1.3, 1.7, 2.5, 7.2, 45):
        assert _t_cdf(t975(df), df) == pytest.approx(0.975, abs=1e-7), df
    assert t975(1.0001) == pytest.approx(t975(1), rel=1e-3)  # continuous at df = 1
    assert math.isnan(t975(0))


def test_holm_adjustment_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1 = 0.04, 0.09, 0.08, 0.2; running max 0.04, 0.09, 0.09, 0.2
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([]) == []
    nan_in = holm([0.01, math.nan])
    assert nan_in[0] == pytest.approx(0.01) and math.isnan(nan_in[1])


def test_the_star_follows_the_holm_adjusted_p_not_the_interval(tmp_path, cli):
    """Three configurations each with p = 0.035 against none: each interval excludes 0, but after
    Holm over the three comparisons (p_adjusted = 0.105) none of them is significant."""
    root = tmp_path / "runs"
    nones = [1.0, 1.1, 1.2]
    for seed, v in enumerate(nones):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [v])
    for f in (0.1, 0.2, 0.3):
        for seed, d in enumerate([-0.1, -0.2, -0.15]):
            make_run(root, f"w{f}-{seed}", seed, {"kind": "weight", "factor": f}, [nones[seed] + d])
    configs, _ = build([root])
    noisy = [c.stats for c in configs if c.noise == "weight"]
    assert len(noisy) == 3
    for s in noisy:
        assert s["delta_ci_high"] < 0  # the plain interval excludes 0 ...
        assert s["p_value"] == pytest.approx(0.0351, abs=2e-4)
        assert s["p_adjusted"] == pytest.approx(3 * s["p_value"])
        assert s["significant"] is False  # ... but 3 comparisons were made
        assert s["best_p_adjusted"] == pytest.approx(s["p_adjusted"]) and s["best_significant"] is False
    code, out, _ = cli("report", root, "-f", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {"p_value", "p_adjusted", "best_p_value", "best_p_adjusted"} <= set(rows[0])
    assert [r["significant"] for r in rows if r["noise"] == "weight"] == ["False"] * 3
    code, out, _ = cli("report", root, "-f", "md")
    assert code == 0 and "] *" not in out and "Holm-adjusted" in out


def test_a_seed_counts_once_per_configuration(tmp_path, cli, sweep):
    """`report runs/s runs/s-copy` (or a copied run folder) must not report n = 6 for 3 seeds."""
    import shutil

    shutil.copytree(sweep / "s", sweep / "s-copy")
    alone = by_label(build([sweep / "s"])[0])
    configs, runs = build([sweep / "s", sweep / "s-copy"])
    both = by_label(configs)
    assert {k: (v["n"], v["val_loss_std"]) for k, v in both.items()} == \
        {k: (v["n"], v["val_loss_std"]) for k, v in alone.items()}
    assert sum(r.state == "duplicate" for r in runs) == 9
    code, out, _ = cli("report", sweep / "s", sweep / "s-copy", "-f", "json")
    assert code == 0 and json.loads(out)["duplicates"] == 9
    code, out, _ = cli("report", sweep / "s", sweep / "s-copy", "-f", "md")
    assert code == 0 and "9 duplicate runs set aside (each seed counts once per configuration)" in out
    # the same folder named twice is one run, not a duplicate
    code, out, _ = cli("report", sweep / "s", sweep / "s", "-f", "json")
    assert code == 0 and json.loads(out)["duplicates"] == 0
    assert {c["n"] for c in json.loads(out)["configs"]} == {3}


def test_of_two_runs_of_one_seed_the_newer_is_counted(tmp_path):
    root = tmp_path / "runs"
    old = make_run(root, "old", 0, {"kind": "none"}, [1.0])
    new = make_run(root, "new", 0, {"kind": "none"}, [2.0])
    for d, stamp in ((old, "2026-01-01T00:00:00"), (new, "2026-02-01T00:00:00")):
        status = json.loads((d / "status.json").read_text())
        (d / "status.json").write_text(json.dumps({**status, "updated": stamp}))
    configs, runs = build([root])
    assert configs[0].stats["val_loss_mean"] == 2.0
    assert [r.path.name for r in runs if r.state == "duplicate"] == ["old"]


def test_csv_has_the_contract_columns(cli, sweep):
    code, out, _ = cli("report", sweep / "s", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    for col in ["noise", "factor", "n", "val_loss_mean", "val_loss_std", "best_val_loss_mean", "delta_vs_none"]:
        assert col in rows[0]
    by = {(r["noise"], r["factor"]): r for r in rows}
    assert by[("none", "")]["delta_vs_none"] == "" and float(by[("input", "0.5")]["delta_vs_none"]) == pytest.approx(-0.5)
    assert by[("input", "0.5")]["n"] == "3"


def test_json_md_table_and_html_parse_back(cli, sweep, tmp_path):
    code, out, _ = cli("report", sweep, "-f", "json")
    assert code == 0
    data = json.loads(out)
    assert len(data["configs"]) == 3 and {e["state"] for e in data["excluded"]} == {"running", "failed"}
    assert [r["seed"] for r in data["configs"][0]["runs"]] == [0, 1, 2]
    code, out, _ = cli("report", sweep, "-f", "md")
    assert code == 0
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3 and "Δ vs none [95% CI]" in table[0]
    # the star escaped and outside the bold, so CommonMark renders it (a trailing `***` it would not)
    assert "| **-0.5000 [-0.5000, -0.5000]** \\* |" in out and "***" not in out and "Not in the statistics:" in out and "failed: boom" in out
    code, out, _ = cli("report", sweep)
    assert code == 0 and "noise comparison" in out and "+0.5000" in out  # the gap column
    html = tmp_path / "r.html"
    code, out, _ = cli("report", sweep, "-f", "html", "-o", html)
    assert code == 0 and out == f"wrote {html}\n"
    page = html.read_text()
    assert page.count("<img") == 2 and "data:image/png;base64," in page and page.count("<tr") == 4


def test_report_on_one_run_prints_its_evaluations(cli, sweep):
    code, out, _ = cli("report", sweep / "s" / "none-0")
    assert code == 0 and "completed" in out and "1.5000" in out and "1.0000" in out
    code, out, _ = cli("report", sweep / "s" / "none-0", "-f", "csv")
    assert code == 0
    assert [r["val_loss"] for r in csv.DictReader(io.StringIO(out))] == ["1.5", "1.0"]


def test_configs_that_differ_beyond_noise_are_named(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "a", 0, {"kind": "none"}, [1.0], lr=1e-3)
    make_run(root, "b", 0, {"kind": "none"}, [0.8], lr=1e-2)
    make_run(root, "c", 0, {"kind": "input", "factor": 0.1}, [0.7], lr=1e-2)
    configs, _ = build([root])
    assert {c.extra for c in configs} == {"train.lr=0.001", "train.lr=0.01"}
    c = next(c for c in configs if c.noise == "input")
    assert c.stats["delta_vs_none"] == pytest.approx(-0.1)  # against the none of its own base (lr 1e-2)


@pytest.mark.parametrize("args,message", [
    (["missing-dir"], "report: missing-dir: no such folder"),
    (["empty"], "report: empty: no run folders"),
    (["runs", "-o", "nowhere/out.html"], "--output: folder nowhere does not exist"),
])
def test_report_bad_input(cli, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    make_run(tmp_path / "runs", "a", 0, {"kind": "none"}, [1.0])
    code, _, err = cli("report", *args)
    assert code == 2 and message in err


def test_a_corrupt_run_is_listed_not_fatal(cli, tmp_path):
    root = tmp_path / "runs"
    make_run(root, "good", 0, {"kind": "none"}, [1.0])
    bad = make_run(root, "bad", 1, {"kind": "none"}, [1.0])
    (bad / "metrics.jsonl").write_text('{"val_loss": 1.0\n')
    code, out, _ = cli("report", root, "-f", "md")
    assert code == 0 and "bad: unreadable" in out


def test_noise_options_that_vary_within_a_kind_name_the_configuration(tmp_path):
    """NEFTune's own length against transformers' padded length: same kind, same factor, two
    configurations, told apart by the option; the `none` row gets no such label."""
    root = tmp_path / "runs"
    make_run(root, "none", 0, {"kind": "none"}, [1.0])
    make_run(root, "ex", 0, {"kind": "embedding", "factor": 5, "length": "example"}, [0.9])
    make_run(root, "pad", 0, {"kind": "embedding", "factor": 5, "length": "padded"}, [0.8])
    configs, _ = build([root])
    assert sorted((c.noise, c.factor, c.extra) for c in configs) == [
        ("embedding", "5", "noise.length=example"), ("embedding", "5", "noise.length=padded"), ("none", "", "")]


def test_json_factor_is_a_number_and_null_for_none(cli, sweep):
    code, out, _ = cli("report", sweep, "-f", "json")
    assert code == 0
    assert {c["noise"]: c["factor"] for c in json.loads(out)["configs"] if c["noise"] == "none"} == {"none": None}
    assert sorted(c["factor"] for c in json.loads(out)["configs"] if c["noise"] == "input") == [0.1, 0.5]


def test_report_on_a_file_says_what_report_reads(cli, tmp_path):
    (tmp_path / "spec.yaml").write_text("data: {kind: digits}\n")
    code, _, err = cli("report", tmp_path / "spec.yaml")
    assert (code, err.strip()) == (2, f"error: report: {tmp_path / 'spec.yaml'} is a file; report reads run "
                                      "folders (runs/NAME), sweep folders or a runs folder")


def test_the_html_page_gives_each_configuration_one_colour_and_renders_its_legend(cli, sweep, tmp_path):
    from noisecli.report import build
    from noisecli.report.figures import NONE_COLOUR, colours

    configs, _ = build([sweep])
    colour = colours(configs)
    assert colour[next(c.key for c in configs if c.noise == "none")] == NONE_COLOUR
    noisy = [colour[c.key] for c in configs if c.noise != "none"]
    assert len(set(noisy)) == len(noisy) and NONE_COLOUR not in noisy
    html = tmp_path / "r.html"
    code, _, _ = cli("report", sweep, "-f", "html", "-o", html)
    page = html.read_text()
    assert code == 0 and "`" not in page  # the legend is prose, not Markdown
    for c in configs:  # the table's swatch is the colour the figures use
        assert f"background:{colour[c.key]}" in page
    assert page.count("<figcaption>") == 2 and page.count("class='best'") == 1  # bold means one thing


def test_html_to_a_terminal_is_refused_with_the_way_to_write_it(cli, sweep, monkeypatch):
    import noisecli.cli_common

    monkeypatch.setattr(noisecli.cli_common, "stdout_is_terminal", lambda: True)
    code, out, err = cli("report", sweep, "-f", "html")
    assert code == 2 and "--output report.html" in err and "base64" not in out
