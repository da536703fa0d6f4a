"""Issue 19, report and eval: tests that would have let real bugs through, and the report's
defects fixed at their root (non-finite values, damaged and foreign run folders, raw text from
folders in Markdown, --output). Each test says which item it guards."""

import csv
import io
import json
import math

import pytest
import yaml
from scipy import stats

from noisecli.report import build, holm
from tests.conftest import TINY, write_spec
from tests.test_report import make_run


def by_label(configs):
    return {(c.noise, c.factor): c.stats for c in configs}


def strict_json(text: str):
    """JSON as a strict parser reads it: NaN and Infinity are not JSON."""
    def refuse(token):
        raise AssertionError(f"{token} in JSON output")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------- A1: seeds that only partly overlap

def test_partly_overlapping_seeds_compare_every_run_not_only_the_shared_seeds(tmp_path, cli):
    """none has seeds 0-2, input 0.1 has seeds 0-4: the comparison is Welch's over all eight runs.
    Pairing on the three shared seeds would silently drop seeds 3 and 4 (which pull input's mean
    down by 0.3), so the delta, the test and its p all depend on them."""
    root = tmp_path / "runs"
    nones, inputs = [1.0, 1.2, 1.1], [0.95, 1.15, 1.05, 0.5, 0.6]
    for seed, v in enumerate(nones):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [v])
    for seed, v in enumerate(inputs):
        make_run(root, f"in-{seed}", seed, {"kind": "input", "factor": 0.1}, [v])
    s = by_label(build([root])[0])[("input", "0.1")]
    welch = stats.ttest_ind(inputs, nones, equal_var=False)
    assert s["n"] == 5 and s["paired"] is False
    assert s["delta_vs_none"] == pytest.approx(sum(inputs) / 5 - sum(nones) / 3)  # -0.25, not -0.05
    assert s["p_value"] == pytest.approx(welch.pvalue, rel=1e-9)
    code, out, _ = cli("report", root, "-f", "csv")
    row = next(r for r in csv.DictReader(io.StringIO(out)) if r["noise"] == "input")
    assert code == 0 and row["n"] == "5" and float(row["delta_vs_none"]) == pytest.approx(-0.25)
    assert row["paired"] == "False"


# ---------------------------------------------------------------- A2: a list of kinds with one zero factor

def test_a_list_of_kinds_with_one_zero_factor_is_noise_not_the_baseline(tmp_path):
    """`input+weight 0/0.1` still trains with weight noise: it is not `none`. Only a list whose
    factors are all 0 is the baseline."""
    root = tmp_path / "runs"
    for seed in range(3):  # written first, so that "the first with any zero factor" would pick it
        make_run(root, f"half-{seed}", seed, [{"kind": "input", "factor": 0.0}, {"kind": "weight", "factor": 0.1}],
                 [1.0 + 0.1 * seed])
        make_run(root, f"both-{seed}", seed, [{"kind": "input", "factor": 0.1}, {"kind": "weight", "factor": 0.1}],
                 [0.9 + 0.1 * seed])
    s = by_label(build([root])[0])
    assert set(s) == {("input+weight", "0/0.1"), ("input+weight", "0.1/0.1")}
    assert not any(v["baseline"] for v in s.values())  # no baseline in this folder at all
    assert s[("input+weight", "0.1/0.1")]["delta_vs_none"] is None
    for seed in range(3):
        make_run(root, f"zero-{seed}", seed, [{"kind": "input", "factor": 0.0}, {"kind": "weight", "factor": 0.0}],
                 [1.2 + 0.1 * seed])
    s = by_label(build([root])[0])
    assert s[("input+weight", "0/0")]["baseline"] and not s[("input+weight", "0/0.1")]["baseline"]
    assert s[("input+weight", "0/0.1")]["delta_vs_none"] == pytest.approx(-0.2)


# ---------------------------------------------------------------- A3: Holm within one base's family

def test_holm_adjusts_within_each_baselines_family_not_over_all_of_them(tmp_path):
    """Two bases (lr 1e-3 and 1e-2), each a none and two noisy configurations: each p is adjusted
    over its own base's two comparisons (x2, x1), not over all four (x4, x3, ...)."""
    root = tmp_path / "runs"
    nones = [1.0, 1.1, 1.2]
    families = {1e-3: {0.1: [-0.1, -0.12, -0.11], 0.2: [-0.1, -0.2, -0.15]},
                1e-2: {0.1: [-0.3, -0.31, -0.32], 0.2: [-0.05, -0.1, -0.2]}}
    expected = {}
    for lr, fam in families.items():
        for seed, v in enumerate(nones):
            make_run(root, f"none-{lr}-{seed}", seed, {"kind": "none"}, [v], lr=lr)
        ps = {}
        for f, diffs in fam.items():
            for seed, d in enumerate(diffs):
                make_run(root, f"w{f}-{lr}-{seed}", seed, {"kind": "weight", "factor": f}, [nones[seed] + d], lr=lr)
            ps[f] = stats.ttest_rel([n + d for n, d in zip(nones, diffs)], nones).pvalue
        (lo, p_lo), (hi, p_hi) = sorted(ps.items(), key=lambda kv: kv[1])
        expected[(lr, lo)], expected[(lr, hi)] = min(1, 2 * p_lo), max(min(1, 2 * p_lo), p_hi)  # Holm by hand, m = 2
    configs, _ = build([root])
    got = {(c.runs[0].spec["train"]["lr"], float(c.factor)): c.stats["p_adjusted"] for c in configs
           if c.noise == "weight"}
    assert got == pytest.approx(expected, rel=1e-9)
    pooled = holm([c.stats["p_value"] for c in configs if c.noise == "weight"])
    assert pooled != pytest.approx(list(got.values()), rel=1e-3)  # the test can tell the two apart


# ---------------------------------------------------------------- A4: eval in eval mode

def test_eval_with_dropout_is_deterministic_and_equals_the_logged_val_loss(tmp_path, cli):
    """Without dropout a model left in training mode evaluates the same; with dropout 0.5 it gives a
    different loss on every call, and not the one training logged at that checkpoint."""
    from tests.test_train import train_run

    spec = write_spec(tmp_path, {"name": "drop", **TINY, "noise": {"kind": "none"},
                                 "model": {"kind": "mlp", "hidden": [32], "dropout": 0.5}})
    trainer = train_run(spec, tmp_path / "runs", ["train.epochs=2"])
    run, last = tmp_path / "runs" / "drop", trainer.state.rows[-1]

    def eval_json(*args):
        code, out, err = cli("eval", run, *args, "--format", "json")
        assert code == 0, err
        return json.loads(out)

    first, second = eval_json(), eval_json()
    assert first["val_loss"] == second["val_loss"]
    assert first["val_loss"] == pytest.approx(last["val_loss"], abs=1e-6)
    assert first["val_acc"] == pytest.approx(last["val_acc"], abs=1e-9)
    assert eval_json("--split", "train")["clean_train_loss"] == pytest.approx(last["clean_train_loss"], abs=1e-6)


# ---------------------------------------------------------------- B5: non-finite values

FORMATS = ["table", "md", "csv", "json", "html"]


def _report_all_formats(cli, root, tmp_path):
    """Every format of the report on `root`: {format: (exit code, output, stderr)}."""
    out = {}
    for fmt in FORMATS:
        path = tmp_path / f"report.{fmt}.out"
        code, _, err = cli("report", root, "-f", fmt, "-o", path)
        out[fmt] = (code, path.read_text() if path.exists() else "", err)
    return out


@pytest.fixture
def non_finite(tmp_path):
    """none (3 seeds), input 0.1 with seed 1 ending in NaN, weight 0.1 with one run at inf and one
    diverged, and input 0.5 whose every run ended in NaN."""
    root = tmp_path / "runs"
    nan, inf = float("nan"), float("inf")
    for seed, v in enumerate([1.0, 1.2, 1.1]):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [1.5, v])
    for seed, v in enumerate([0.9, nan, 1.05]):
        make_run(root, f"in1-{seed}", seed, {"kind": "input", "factor": 0.1}, [1.4, v])
    for seed, v in enumerate([0.8, inf, 1.0]):
        make_run(root, f"w-{seed}", seed, {"kind": "weight", "factor": 0.1}, [v, 0.9])  # inf at the first evaluation
    make_run(root, "w-3", 3, {"kind": "weight", "factor": 0.1}, [2.0, nan], state="diverged")
    for seed in range(2):
        make_run(root, f"in5-{seed}", seed, {"kind": "input", "factor": 0.5}, [1.4, nan])
    return root


def test_non_finite_losses_are_set_aside_counted_and_named(non_finite):
    """A run whose val loss is NaN or inf (at any evaluation: best val and the curves read them all)
    is not averaged; its configuration says how many such runs it lost, with the diverged ones, so
    that a noise that blows up two seeds out of three does not look good on the one that survived."""
    configs, runs = build([non_finite])
    s = by_label(configs)
    small, weight, big = s[("input", "0.1")], s[("weight", "0.1")], s[("input", "0.5")]
    assert (small["n"], small["n_diverged"]) == (2, 1)
    assert small["val_loss_mean"] == pytest.approx((0.9 + 1.05) / 2) and not small["paired"]
    assert small["delta_vs_none"] == pytest.approx(0.975 - 1.1)
    assert (weight["n"], weight["n_diverged"]) == (2, 2)  # the inf run and the diverged one
    assert (big["n"], big["n_diverged"], big["delta_vs_none"], big["best_in_kind"]) == (0, 2, None, False)
    assert math.isnan(big["val_loss_mean"]) and s[("none", "")]["n_diverged"] == 0
    assert not big["best_overall"] and s[("input", "0.1")]["best_in_kind"]
    reasons = {r.path.name: r.error for r in runs if r.state == "not finite"}
    assert set(reasons) == {"in1-1", "w-1", "in5-0", "in5-1"}
    assert reasons["in1-1"] == "val_loss is nan at step 20; not averaged"
    assert reasons["w-1"] == "val_loss is inf at step 10; not averaged"


def test_non_finite_values_render_in_every_format(cli, non_finite, tmp_path):
    out = _report_all_formats(cli, non_finite, tmp_path)
    for fmt, (code, text, err) in out.items():
        assert code == 0 and err == "" and text, fmt
        assert "in1-1" in text or fmt == "csv", fmt  # the run set aside is named where runs are listed
    data = strict_json(out["json"][1])
    big = next(c for c in data["configs"] if c["factor"] == 0.5)
    assert big["n"] == 0 and big["n_diverged"] == 2 and big["val_loss_mean"] is None
    assert {e["path"].rsplit("/", 1)[1]: e["state"] for e in data["excluded"]}["in1-1"] == "not finite"
    rows = {(r["noise"], r["factor"]): r for r in csv.DictReader(io.StringIO(out["csv"][1]))}
    assert rows[("input", "0.1")]["n"] == "2" and rows[("input", "0.1")]["n_diverged"] == "1"
    assert rows[("input", "0.5")]["val_loss_mean"] == ""
    md_row = next(line for line in out["md"][1].splitlines() if line.startswith("| input | 0.5 "))
    assert "| 0 (+2 diverged) |" in md_row
    assert "in1-1: not finite: val\\_loss is nan at step 20; not averaged" in out["md"][1]  # `_` escaped


def test_one_run_with_non_finite_rows_renders_in_every_format(cli, non_finite):
    run = non_finite / "in1-1"
    for fmt in FORMATS[:4]:
        code, out, err = cli("report", run, "-f", fmt)
        assert code == 0 and err == "", fmt
    code, out, _ = cli("report", run, "-f", "json")
    assert [r["val_loss"] for r in strict_json(out)["rows"]] == [1.4, None]  # JSON has no NaN


# ---------------------------------------------------------------- B6: damaged and foreign run folders

def _mixed(root):
    """Reportable runs beside every kind of folder a report meets: {folder name: the file the
    warning must name} for the ones it has to skip."""
    for seed, v in enumerate([1.0, 1.2, 1.1]):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [1.5, v])
        make_run(root, f"in-{seed}", seed, {"kind": "input", "factor": 0.1}, [1.5, v - 0.1])
    # half-written: readable, listed with its state, not warned about
    half = root / "half"
    half.mkdir()
    (half / "spec.yaml").write_text(yaml.safe_dump({"seed": 9, "noise": {"kind": "none"}}))
    (half / "status.json").write_text('{"state": "running", "step": 0}')
    locked = make_run(root, "locked", 8, {"kind": "none"}, [1.0], state="running")
    (locked / ".lock").write_text("pid=not-a-number\n")
    (root / "notes").mkdir()  # a folder with unrelated files and no status.json is not a run
    (root / "notes" / "README.txt").write_text("hello")
    skipped = {}

    def bad(name, file, content, state="completed"):
        d = make_run(root, name, 5, {"kind": "input", "factor": 0.1}, [1.0], state=state)
        (d / file).write_bytes(content if isinstance(content, bytes) else content.encode())
        skipped[name] = file

    bad("status-garbage", "status.json", '{"state": "comp')
    bad("status-step-only", "status.json", '{"step": 1}')
    bad("status-list", "status.json", "[1, 2]")
    bad("status-null", "status.json", "null")
    bad("status-binary", "status.json", b"\xff\xfe\x00garbage")
    bad("metrics-garbage", "metrics.jsonl", "garbage\n")
    bad("metrics-binary", "metrics.jsonl", b"\xff\xfe\x00garbage")
    bad("metrics-list", "metrics.jsonl", "[1, 2]\n")
    bad("metrics-no-val-loss", "metrics.jsonl", '{"step": 1}\n')
    bad("metrics-text-loss", "metrics.jsonl", '{"step": 1, "val_loss": "low", "clean_train_loss": 0.5}\n')
    bad("metrics-null-loss", "metrics.jsonl", '{"step": 1, "val_loss": null, "clean_train_loss": 0.5}\n')
    bad("metrics-missing", "metrics.jsonl", "")
    bad("spec-list", "spec.yaml", "[1, 2]\n")
    bad("spec-noise-number", "spec.yaml", "seed: 5\nnoise: 5\n")
    bad("spec-noise-list", "spec.yaml", "seed: 5\nnoise: [1, 2]\n")
    bad("spec-factor-text", "spec.yaml", "seed: 5\nnoise: {kind: input, factor: abc}\n")
    bad("spec-seed-list", "spec.yaml", "seed: [1]\nnoise: {kind: input, factor: 0.1}\n")
    bad("spec-seed-text", "spec.yaml", "seed: one\nnoise: {kind: input, factor: 0.1}\n")
    (root / "metrics-missing" / "metrics.jsonl").unlink()
    skipped["metrics-missing"] = "metrics.jsonl"
    return skipped


def test_a_mixed_folder_reports_what_it_can_and_warns_once_per_skipped_folder(cli, tmp_path):
    root = tmp_path / "runs"
    skipped = _mixed(root)
    for fmt, (code, text, err) in _report_all_formats(cli, root, tmp_path).items():
        assert code == 0 and text, (fmt, err)
        lines = err.splitlines()
        assert len(lines) == len(skipped) and all(line.startswith("warning: report: skipped ") for line in lines), fmt
        for name, file in skipped.items():
            (line,) = [line for line in lines if f"/{name}/" in line or line.endswith(f"/{name}")]
            assert str(root / name / file) in line, (fmt, line)
    configs, runs = build([root])
    assert {(c.noise, c.stats["n"]) for c in configs} == {("none", 3), ("input", 3)}
    states = {r.path.name: r.state for r in runs}
    assert states["half"] == states["locked"] == "running" and "notes" not in states


def test_a_folder_of_nothing_but_damaged_runs_is_exit_2(cli, tmp_path):
    root = tmp_path / "runs"
    for name, content in (("a", "garbage"), ("b", '{"step": 1}')):
        d = make_run(root, name, 0, {"kind": "none"}, [1.0])
        (d / "status.json").write_text(content)
    code, out, err = cli("report", root, "-f", "md")
    lines = err.splitlines()
    assert code == 2 and out == "" and len(lines) == 3
    assert lines[-1] == f"error: report: nothing to report: the 2 run folders under {root} are all unreadable"


# ---------------------------------------------------------------- B7: text from folders is escaped

def test_markdown_and_html_escape_what_folders_and_errors_say(cli, tmp_path):
    """Folder names, spec values and error texts are not ours: raw HTML from them must not reach a
    page that renders the Markdown, and a `|` must not split a table cell."""
    root = tmp_path / "runs"
    for seed, v in enumerate([1.0, 1.2, 1.1]):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [v])
    for path, value in (("<img src=x onerror=alert(1)>|b.csv", 0.9), ("plain.csv", 0.8)):
        d = make_run(root, f"csv-{value}", 0, {"kind": "none"}, [value])
        spec = yaml.safe_load((d / "spec.yaml").read_text())
        (d / "spec.yaml").write_text(yaml.safe_dump({**spec, "data": {"kind": "csv", "path": path}}))
    failed = make_run(root, "<script>alert(1)", 4, {"kind": "none"}, [1.0], state="failed")
    (failed / "status.json").write_text(json.dumps({"state": "failed", "error": "<b>boom</b> [x](javascript:y)"}))
    out = _report_all_formats(cli, root, tmp_path)
    for fmt in ("md", "html"):
        code, text, _ = out[fmt]
        assert code == 0 and "<script>" not in text and "<b>" not in text and "<img" not in text.replace(
            "<img alt=", ""), fmt
        assert "&lt;script&gt;" in text and "&lt;b&gt;boom&lt;/b&gt;" in text, fmt
    md = out["md"][1]
    table = [line for line in md.splitlines() if line.startswith("|")]
    cells = [len(line.replace("\\|", "").split("|")) for line in table]
    assert len(set(cells)) == 1 and "\\|b.csv" in md  # every row has the header's columns
    assert "\\[x\\](javascript:y)" in md  # not a link
    code, text, _ = cli("report", root / "<script>alert(1)", "-f", "md")
    assert code == 0 and "<script>" not in text and "&lt;script&gt;" in text


def test_rich_markup_in_folder_text_is_printed_as_written(cli, tmp_path):
    """The terminal table parses rich markup in plain strings: `[/x]` in a value would raise."""
    root = tmp_path / "runs"
    for seed, path in enumerate(["[/x]a.csv", "[bold]b.csv"]):
        d = make_run(root, f"r{seed}", 0, {"kind": "none"}, [1.0 - seed / 10])
        spec = yaml.safe_load((d / "spec.yaml").read_text())
        (d / "spec.yaml").write_text(yaml.safe_dump({**spec, "data": {"kind": "csv", "path": path}}))
    code, out, err = cli("report", root)
    assert code == 0 and "[/x]a.csv" in out and "[bold]b.csv" in out, err


# ---------------------------------------------------------------- B8: --output

@pytest.fixture
def small(tmp_path):
    root = tmp_path / "runs"
    for seed, v in enumerate([1.0, 1.2, 1.1]):
        make_run(root, f"none-{seed}", seed, {"kind": "none"}, [v])
        make_run(root, f"in-{seed}", seed, {"kind": "input", "factor": 0.1}, [v - 0.1])
    return root


def test_output_that_cannot_be_written_is_one_line_and_exit_2(cli, small, tmp_path, monkeypatch):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, out, err = cli("report", small, "-o", folder)
    assert (code, out, err) == (2, "", f"error: --output: {folder} is a folder; name a file in it, e.g. "
                                       f"{folder / 'report.md'}\n")
    code, out, err = cli("report", small, "-o", tmp_path / "nowhere" / "r.md")
    assert (code, out, err) == (2, "", f"error: --output: folder {tmp_path / 'nowhere'} does not exist\n")

    import noisecli.runs

    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(noisecli.runs, "atomic_write", refuse)  # a read-only folder, even for root
    code, out, err = cli("report", small, "-o", tmp_path / "r.md")
    assert (code, out, err) == (2, "", f"error: --output: cannot write {tmp_path / 'r.md'} (Permission denied)\n")


def test_output_into_a_read_only_folder_is_exit_2(small, tmp_path):
    """A real process; as root, without the capability that lets root write anywhere
    (CAP_DAC_OVERRIDE), so the folder is read-only to it as to any user."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    drop = (["setpriv", "--bounding-set=-dac_override", "--inh-caps=-dac_override"] if os.geteuid() == 0 else [])
    try:
        done = subprocess.run([*drop, sys.executable, "-m", "noisecli", "report", str(small), "-o", str(folder / "r.md")],
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    finally:
        folder.chmod(0o700)
    code, out, err = done.returncode, done.stdout, done.stderr
    assert code == 2 and out == "" and err.startswith(f"error: --output: cannot write {folder / 'r.md'}"), err
    assert len(err.splitlines()) == 1 and list(folder.iterdir()) == []


def test_output_format_follows_the_extension_and_the_table_is_never_empty(cli, small, tmp_path):
    written = {}
    for ext in ("txt", "md", "csv", "json", "html", "log"):
        path = tmp_path / f"report.{ext}"
        code, out, err = cli("report", small, "-o", path)
        assert (code, out) == (0, f"wrote {path}\n"), err
        written[ext] = path.read_text()
    for ext in ("txt", "log"):  # the terminal table, as plain text
        assert "noise comparison" in written[ext] and "input" in written[ext] and "\x1b[" not in written[ext]
    assert written["md"].startswith("Verdict: decided by ") and "\n| noise | factor |" in written["md"]
    assert {r["noise"] for r in csv.DictReader(io.StringIO(written["csv"]))} == {"none", "input"}
    assert len(strict_json(written["json"])["configs"]) == 2
    assert written["html"].startswith("<!doctype html>")
    path = tmp_path / "explicit.md"  # an explicit --format wins over the extension
    code, _, _ = cli("report", small, "-f", "csv", "-o", path)
    assert code == 0 and path.read_text().startswith("noise,factor,")


def test_a_completed_runs_metrics_cut_at_a_line_boundary_are_named_not_reported(cli, tmp_path):
    """Before: metrics.jsonl cut at a line boundary made `report` print the final val loss of
    an earlier evaluation as the run's, with no warning."""
    import json

    from tests.conftest import TINY, write_spec

    spec = write_spec(tmp_path, {**TINY, "name": "cut"})
    assert cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")[0] == 0
    metrics = tmp_path / "runs" / "cut" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:-1]))
    code, out, err = cli("report", tmp_path / "runs", "-f", "csv")
    assert code == 2 and "metrics.jsonl: ends at step" in err and "cut short" in err, (out, err)
    assert str(json.loads(lines[-2])["val_loss"])[:6] not in out
