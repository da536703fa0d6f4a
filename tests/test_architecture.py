"""The architecture's promises, each with the test that fails when one is broken: a noise kind
that acts inside the forward is never silently off under `--batched`; a metric is one
definition that reaches every output; the package keeps its size limits."""

import ast

import pytest
import torch
from torch import nn

from noisecli import catalog, metrics
from noisecli.batched import train_group
from noisecli.noise import why_not_stacked
from noisecli.noise.base import ForwardNoise, Noise, unstackable
from noisecli.points import train_point
from noisecli.spec import NoiseSpec, spec_from_dict
from tests.conftest import ROOT, metrics_rows, write_spec

TABLE = {"data": {"kind": "digits", "train_size": 96}, "model": {"kind": "mlp", "hidden": [32, 32]},
         "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3, "eval_every": 6}, "device": "cpu"}


def first_linear(model: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if isinstance(m, nn.Linear))


class ToyForward(ForwardNoise):
    """A new kind acting inside the forward, written as the docs say: names, draw, added."""

    def __init__(self, spec, ctx, index=0):
        super().__init__(spec, ctx, index)
        self.names = [first_linear(ctx.model)]

    def draw(self, shape, device, dtype):
        return torch.rand(shape, generator=self.generator, device=device, dtype=dtype) - 0.5

    def added(self, inputs, h, draw, factor):
        return factor * draw * h.abs()


class ToyOwnHooks(Noise):
    """A kind that registers its own forward hook: a stack cannot run it."""

    def attach(self, model):
        module = dict(model.named_modules())[first_linear(model)]
        self.handle = module.register_forward_hook(self._hook)
        self.current = 0.0

    def detach(self):
        self.handle.remove()

    def before_forward(self, factor):
        self.current = factor

    def _hook(self, module, inputs, output):
        if module.training and self.current:
            return output + self.current * torch.randn(output.shape, generator=self.generator)
        return None


@pytest.fixture
def toy_kinds(monkeypatch):
    for name, cls in (("toyforward", "ToyForward"), ("toyhooks", "ToyOwnHooks")):
        monkeypatch.setitem(catalog.NOISE, name, catalog.Entry(name, "a test's kind", f"tests.test_architecture:{cls}",
                                                                modalities=frozenset({catalog.VECTOR})))


def specs(kind: str, factors=(0.0, 2.0), seeds=(0, 1)):
    return [spec_from_dict({**TABLE, "name": f"{kind}-f{i}-s{s}", "seed": s, "noise": {"kind": kind, "factor": f}})
            for i, f in enumerate(factors) for s in seeds]


def test_a_new_forward_acting_kind_stacks_with_no_code_of_its_own(tmp_path, toy_kinds):
    group = specs("toyforward")
    outcomes = train_group(group, tmp_path / "stacked", lambda *a: None)
    assert [o.state for o in outcomes] == ["completed"] * 4
    for spec in group:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        stacked, alone = metrics_rows(tmp_path / "stacked" / spec.name), metrics_rows(tmp_path / "alone" / spec.name)
        for a, b in zip(stacked, alone):
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
            assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    # on, not silently off: the noised member's training loss is not the clean twin's
    noised, clean = metrics_rows(tmp_path / "stacked" / "toyforward-f1-s0"), metrics_rows(
        tmp_path / "stacked" / "toyforward-f0-s0")
    assert all(a["train_loss"] != pytest.approx(b["train_loss"], rel=1e-3) for a, b in zip(noised, clean))


def test_a_kind_with_its_own_hooks_is_trained_alone_and_said_so(tmp_path, cli, toy_kinds):
    assert unstackable(ToyOwnHooks) and "registers its own hooks" in unstackable(ToyOwnHooks)
    sweep = write_spec(tmp_path, {"name": "own", "base": TABLE, "grid": {"noise.kind": ["toyhooks"],
                                                                           "noise.factor": [1.0, 2.0]}, "seeds": 2})
    code, out, err = cli("sweep", sweep, "--batched", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "--batched: 0 stacks (- points), 4 points alone" in out
    assert "noise.kind toyhooks: trained one after another (noise kind ToyOwnHooks registers its own hooks" in out
    code, out, err = cli("sweep", sweep, "--batched", "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "trained one after another" in err + out
    code, _, err = cli("sweep", sweep, "--runs-dir", tmp_path / "plain")  # the sequential sweep
    assert code == 0, err
    runs = sorted(p.name for p in (tmp_path / "runs" / "own").iterdir() if (p / "metrics.jsonl").is_file())
    assert len(runs) == 4
    for name in runs:  # what a stack would have silently changed is each point's own training
        assert untimed(metrics_rows(tmp_path / "runs" / "own" / name)) == untimed(
            metrics_rows(tmp_path / "plain" / "own" / name))
    noised = [n for n in runs if "factor-2.0" in n]
    assert len(noised) == 2 and all(
        metrics_rows(tmp_path / "runs" / "own" / n)[-1]["train_loss"]
        != metrics_rows(tmp_path / "runs" / "own" / n.replace("factor-2.0", "factor-1.0"))[-1]["train_loss"]
        for n in noised)


def untimed(rows):
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "seconds")} for r in rows]


def test_every_built_in_kind_stacks():
    assert why_not_stacked([NoiseSpec(kind=k) for k in catalog.NOISE]) is None


# ---------------------------------------------------------------- a metric is one definition

ERROR = metrics.Metric("err", ("classification",), {"val": "val err"},
                       lambda out, y, loss_sum: {"wrong": (out.argmax(-1) != y).sum()},
                       lambda s: s["wrong"] / s["count"], "{:.3f}")


def test_a_new_metric_reaches_rows_csv_table_eval_and_stacks(tmp_path, cli, monkeypatch):
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, ERROR))
    spec = write_spec(tmp_path, {**TABLE, "name": "err", "noise": {"kind": "input", "factor": 0.3}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    run = tmp_path / "runs" / "err"
    rows = metrics_rows(run)
    assert all(r["val_err"] == pytest.approx(1 - r["val_acc"], abs=1e-9) for r in rows)
    assert list(rows[0])[:10] == ["epoch", "step", "train_loss", "clean_train_loss", "val_loss", "val_acc", "val_f1",
                                  "val_ece", "val_brier", "val_err"]
    assert (run / "metrics.csv").read_text().splitlines()[0].split(",")[3:10] == [
        "clean_train_loss", "val_loss", "val_acc", "val_f1", "val_ece", "val_brier", "val_err"]
    assert "val err" in out  # the terminal's table
    code, out, err = cli("eval", run)
    assert code == 0 and "val_err" in out, err
    outcomes = train_group(specs("input"), tmp_path / "stacked", lambda *a: None)
    assert {o.state for o in outcomes} == {"completed"}
    stacked = metrics_rows(tmp_path / "stacked" / "input-f1-s0")
    assert all(r["val_err"] == pytest.approx(1 - r["val_acc"], abs=1e-9) for r in stacked)


def test_metric_columns_follow_the_schema_and_no_metric_is_dropped_silently(tmp_path):
    assert metrics.columns("classification") == ["clean_train_loss", "val_loss", "val_acc", "val_f1", "val_ece",
                                                 "val_brier"]
    assert metrics.columns("lm") == ["clean_train_loss", "val_loss", "val_acc", "val_ppl"]
    from noisecli.runs import RunFolder

    folder = RunFolder(tmp_path / "r")
    folder.path.mkdir()
    with pytest.raises(ValueError):  # a row key no column names is a bug to see, not a column to lose
        folder.write_metrics([{"epoch": 1, "step": 1, "val_loss": 1.0, "val_new_metric": 2.0}])


# ---------------------------------------------------------------- the house keeps its limits

def _sources():
    return sorted((ROOT / "noisecli").rglob("*.py"))


def test_no_module_over_400_lines_no_function_over_50_and_a_short_trainer():
    long_modules = [f"{p.relative_to(ROOT)}: {n}" for p in _sources()
                    if (n := len(p.read_text().splitlines())) > 400]
    long_functions = []
    for p in _sources():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 50:
                long_functions.append(f"{p.relative_to(ROOT)}:{node.lineno} {node.name}")
    trainer = ast.parse((ROOT / "noisecli" / "trainer.py").read_text())
    cls = next(n for n in trainer.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    assert not long_modules and not long_functions
    assert cls.end_lineno - cls.lineno < 250


def test_imports_of_noisecli_inside_functions_say_why():
    """Function-level imports of noisecli modules exist only to keep start-up fast (or to break
    nothing else); each one carries its reason on the line."""
    bare = []
    for p in _sources():
        lines = p.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("noisecli") \
                            and "#" not in lines[inner.lineno - 1]:
                        bare.append(f"{p.relative_to(ROOT)}:{inner.lineno}")
    assert not bare


def test_every_dataset_and_model_in_the_catalog_is_exercised_by_a_test():
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    unnamed = [f"{table} {name}" for table, entries in (("dataset", catalog.DATASETS), ("model", catalog.MODELS))
               for name in entries if f'"kind": "{name}"' not in tests and f"kind: {name}" not in tests]
    assert not unnamed


def test_development_docs_name_every_module():
    text = (ROOT / "docs" / "development.md").read_text()
    missing = [str(p.relative_to(ROOT / "noisecli")) for p in _sources()
               if p.name != "__init__.py" and p.parent.name not in ("data", "models", "noise", "report")
               and f"`{p.relative_to(ROOT / 'noisecli')}`" not in text]
    assert not missing, f"docs/development.md's module table lacks {missing}"


def test_a_forward_kind_without_draw_or_added_is_refused_when_defined():
    with pytest.raises(TypeError, match="HalfKind acts inside the forward .* defines no added"):
        class HalfKind(ForwardNoise):
            def draw(self, shape, device, dtype):
                return torch.zeros(shape)
