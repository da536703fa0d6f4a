"""The metrics beyond loss: each one from sums added over several batches equals its
reference (scikit-learn, torchmetrics) on the same predictions, through a real run (rows
and the saved model agree), and under `--batched` (each member's as its point's alone)."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import (accuracy_score, brier_score_loss, f1_score, mean_absolute_error, mean_squared_error,
                             r2_score)
from torchmetrics.classification import MulticlassCalibrationError

from noisecli import metrics
from noisecli.batched import train_group
from noisecli.distributed import World
from noisecli.engine.evaluation import add_sums, summed_loss, to_host
from noisecli.points import train_point
from noisecli.spec import load_spec, spec_from_dict
from noisecli.trainer import Trainer
from tests.conftest import TINY, metrics_rows, write_spec

SIZES = (64, 37, 100, 99)  # uneven batches: the sums are added across them


def values(task: str, batches) -> dict[str, float]:
    """noisecli's metrics of `task` from the batches' sums (added as an evaluation adds them,
    read to the host as a row reads them): every metric the task measures, val columns."""
    sums: dict = {}
    for out, y in batches:
        add_sums(sums, metrics.metric_sums(out, y, task, summed_loss(task)), out.device)
        add_sums(sums, {"count": metrics.count(y, task)}, out.device)
    return metrics.split_values(task, "val", to_host(World(), sums), every_metric=True)


def split(*tensors):
    at = np.cumsum((0, *SIZES))
    return [tuple(t[a:b] for t in tensors) for a, b in zip(at[:-1], at[1:])]


def classification_data(C: int = 6, seed: int = 0):
    """Logits and targets over C classes: class 3 is never predicted, class 4 never a target,
    class 5 neither (so macro F1's choice of classes matters); some rows are certain (confidence
    exactly 1.0, torchmetrics' bin of its own)."""
    g = torch.Generator().manual_seed(seed)
    n = sum(SIZES)
    logits = torch.randn(n, C, generator=g)  # confidences mostly below the last bins
    y = torch.randint(0, 4, (n,), generator=g)
    y[y == 3] = torch.where(torch.rand(int((y == 3).sum()), generator=g) < 0.5, 3, 0)
    logits[:10, 4] = 60.0  # predicted (class 4, never a target) with confidence 1.0, wrongly
    logits[10:20], y[10:20] = 0.0, 2
    logits[10:20, 1] = 80.0  # as certain, as wrong
    logits[20:60], y[20:60] = 0.0, 1
    logits[20:60, 1] = math.log(95)  # right at confidence 0.97: the last bin of width 1/15, below 1.0's
    logits[:, 3] = logits[:, 5] = -20.0
    assert (logits.argmax(1) != 3).all() and (y != 4).all() and (y == 3).any()
    assert (logits.softmax(1).max(1).values == 1.0).sum() >= 10
    return logits, y


def reference_brier(y: np.ndarray, p: np.ndarray) -> float:
    p = p / p.sum(1, keepdims=True)  # float32's softmax, summing to 1 in float64 too
    try:  # scikit-learn >= 1.7 scores several classes
        return brier_score_loss(y, p, labels=list(range(p.shape[1])), scale_by_half=False)
    except TypeError:
        return float(np.mean(np.sum((np.eye(p.shape[1])[y] - p) ** 2, axis=1)))


def test_classification_metrics_equal_sklearn_and_torchmetrics():
    logits, y = classification_data()
    got = values("classification", split(logits, y))
    p = logits.softmax(1)
    pred = logits.argmax(1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the class never predicted: precision 0/0, counted 0
        f1 = f1_score(y.numpy(), pred, average="macro")
        f1_all = f1_score(y.numpy(), pred, average="macro", labels=list(range(6)))
    assert got["val_f1"] == pytest.approx(f1, abs=1e-6)
    assert f1_all != pytest.approx(f1, abs=1e-3)  # the present-classes semantics is the one tested
    ece = MulticlassCalibrationError(num_classes=6, n_bins=15, norm="l1")(p, y).item()
    assert got["val_ece"] == pytest.approx(ece, abs=1e-6)
    assert got["val_brier"] == pytest.approx(reference_brier(y.numpy(), p.double().numpy()), abs=1e-6)
    assert got["val_acc"] == pytest.approx(accuracy_score(y.numpy(), pred), abs=1e-6)
    assert got["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)


def test_f1_and_ece_edge_cases():
    y = torch.tensor([0, 1, 1, 2])
    perfect = F.one_hot(y, 4).float() * 50  # class 3: neither a target nor predicted
    got = values("classification", [(perfect[:2], y[:2]), (perfect[2:], y[2:])])
    assert got["val_f1"] == 1.0 == f1_score(y.numpy(), y.numpy(), average="macro")
    assert got["val_ece"] == pytest.approx(0.0, abs=1e-6) and got["val_brier"] == pytest.approx(0.0, abs=1e-6)
    wrong = values("classification", [(torch.roll(perfect, 1, dims=1), y)])
    assert wrong["val_f1"] == 0.0 and wrong["val_acc"] == 0.0 and wrong["val_ece"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(3,), (1,), ()])
def test_regression_metrics_equal_sklearn(shape):
    g = torch.Generator().manual_seed(1)
    n = sum(SIZES)
    y = torch.randn(n, *shape, generator=g) * torch.tensor([1.0, 3.0, 0.5][:shape[0] if shape else 1]) + 2.0
    out = y + 0.6 * torch.randn(n, *shape, generator=g) - 0.1
    got = values("regression", split(out, y))
    yn, on = y.double().numpy(), out.double().numpy()
    assert got["val_r2"] == pytest.approx(r2_score(yn, on), abs=1e-6)
    assert got["val_mae"] == pytest.approx(mean_absolute_error(yn, on), abs=1e-6)
    assert got["val_loss"] == pytest.approx(mean_squared_error(yn, on), abs=1e-6)


def test_r2_of_a_constant_target_is_sklearns():
    y = torch.ones(8, 2)
    out = torch.stack([torch.ones(8), torch.linspace(0, 2, 8)], dim=1)
    got = values("regression", [(out[:3], y[:3]), (out[3:], y[3:])])
    assert got["val_r2"] == r2_score(y.numpy(), out.numpy()) == 0.5  # 1 where exact, 0 where not


@pytest.mark.parametrize("task", ["lm", "sft"])
def test_token_metrics_equal_the_reference(task):
    g = torch.Generator().manual_seed(2)
    n, T, V = sum(SIZES) // 10, 12, 9
    logits = torch.randn(n, T, V, generator=g) * 2
    y = torch.randint(0, V, (n, T), generator=g)
    if task == "sft":  # prompt and padding: scored by nothing
        y[:, :4] = metrics.IGNORE
        y[::3, -3:] = metrics.IGNORE
    batches = [(logits[a:a + 7], y[a:a + 7]) for a in range(0, n, 7)]
    got = values(task, batches)
    assert "val_f1" not in got and "val_r2" not in got
    flat, target = logits.reshape(-1, V), y.reshape(-1)
    loss = F.cross_entropy(flat, target, ignore_index=metrics.IGNORE).item()
    assert got["val_loss"] == pytest.approx(loss, abs=1e-6)
    assert got["val_ppl"] == pytest.approx(math.exp(loss), rel=1e-6)
    scored = target != metrics.IGNORE
    acc = accuracy_score(target[scored].numpy(), flat.argmax(1)[scored].numpy())
    assert got["val_acc"] == pytest.approx(acc, abs=1e-6)


def test_columns_directions_and_headers():
    assert metrics.columns("classification") == ["clean_train_loss", "val_loss", "val_acc", "val_f1", "val_ece",
                                                 "val_brier"]
    assert metrics.columns("lm") == metrics.columns("sft") == ["clean_train_loss", "val_loss", "val_acc", "val_ppl"]
    assert metrics.columns("regression") == ["clean_train_loss", "val_loss", "val_mae", "val_r2"]
    higher = {c: metrics.higher_is_better(c) for c in metrics.columns()}
    assert [c for c, h in higher.items() if h] == ["val_acc", "val_f1", "val_r2"]
    assert metrics.higher_is_better("test_f1") and not metrics.higher_is_better("clean_train_loss")
    assert not metrics.higher_is_better("test_ppl")
    with pytest.raises(KeyError):
        metrics.higher_is_better("val_nonsense")
    headers = {c: h for c, h, _ in metrics.display_columns()}
    assert headers["val_f1"] == "val f1" and headers["val_ece"] == "val ece" and headers["val_ppl"] == "val ppl"


# ---------------------------------------------------------------- through real runs

def trained(tmp_path, spec_dict: dict, cli):
    """A run's rows and a fresh trainer holding the run's last.pt (model in eval mode)."""
    spec = write_spec(tmp_path, {**spec_dict, "device": "cpu"})
    code, _, err = cli("train", spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    run = tmp_path / "runs" / spec_dict["name"]
    trainer = Trainer(load_spec(spec), tmp_path / "other", quiet=True).setup()
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    trainer.raw_model.load_state_dict(state["model"])
    trainer.raw_model.eval()
    return metrics_rows(run), trainer


def test_a_classification_runs_f1_ece_brier_are_its_saved_models(tmp_path, cli):
    rows, trainer = trained(tmp_path, {**TINY, "name": "cls", "train": {**TINY["train"], "epochs": 2}}, cli)
    with torch.no_grad():
        logits = trainer.raw_model(trainer.data.x_val)
    y, p = trainer.data.y_val, logits.softmax(1)
    last = rows[-1]
    assert last["val_f1"] == pytest.approx(f1_score(y.numpy(), logits.argmax(1).numpy(), average="macro"), abs=1e-6)
    assert last["val_ece"] == pytest.approx(
        MulticlassCalibrationError(num_classes=p.shape[1], n_bins=15, norm="l1")(p, y).item(), abs=1e-5)
    assert last["val_brier"] == pytest.approx(reference_brier(y.numpy(), p.double().numpy()), abs=1e-5)
    assert all(0 <= r["val_f1"] <= 1 and 0 <= r["val_ece"] <= 1 for r in rows)


def test_a_regression_runs_r2_and_mae_are_its_saved_models(tmp_path, cli):
    rows, trainer = trained(tmp_path, {
        "name": "reg", "data": {"kind": "teacher", "n_samples": 300, "n_features": 8, "label_noise": 0.3},
        "model": {"kind": "mlp", "hidden": [32]}, "train": {"epochs": 3, "batch_size": 32, "lr": 3e-3}}, cli)
    assert trainer.data.task == "regression"
    with torch.no_grad():
        pred = trainer.raw_model(trainer.data.x_val).double().numpy()
    y = trainer.data.y_val.double().numpy()
    assert rows[-1]["val_r2"] == pytest.approx(r2_score(y, pred), abs=1e-5)
    assert rows[-1]["val_mae"] == pytest.approx(mean_absolute_error(y, pred), abs=1e-5)
    assert rows[-1]["val_loss"] == pytest.approx(mean_squared_error(y, pred), abs=1e-5)
    assert "val_acc" not in rows[-1] and "val_f1" not in rows[-1]


def test_a_language_models_perplexity_is_exp_of_its_loss(tmp_path, cli):
    rows, _ = trained(tmp_path, {
        "name": "lm", "data": {"kind": "markov", "block_size": 16, "n_tokens": 3000},
        "model": {"kind": "gpt", "n_layer": 1, "n_embd": 32, "n_head": 2},
        "train": {"max_steps": 16, "eval_every": 8, "batch_size": 8, "lr": 3e-3, "eval_batches": 2}}, cli)
    assert [r["step"] for r in rows] == [8, 16]
    for r in rows:
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-6)
        assert 0 <= r["val_acc"] <= 1
    assert "val_f1" not in rows[-1]


# ---------------------------------------------------------------- --batched

NEW = ("val_acc", "val_f1", "val_ece", "val_brier")


def test_each_stacked_members_metrics_are_its_points_alone(tmp_path):
    base = {"data": {"kind": "digits", "train_size": 96}, "model": {"kind": "mlp", "hidden": [32]},
            "train": {"epochs": 2, "batch_size": 16, "lr": 3e-3}, "device": "cpu"}
    specs = [spec_from_dict({**base, "name": f"m-f{i}-s{s}", "seed": s, "noise": {"kind": "input", "factor": f}})
             for i, f in enumerate((0.0, 0.3)) for s in (0, 1)]
    outcomes = train_group(specs, tmp_path / "batched", lambda *a: None)
    assert [o.state for o in outcomes] == ["completed"] * 4
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        stacked, alone = metrics_rows(tmp_path / "batched" / spec.name), metrics_rows(tmp_path / "alone" / spec.name)
        assert [r["step"] for r in stacked] == [r["step"] for r in alone]
        for a, b in zip(stacked, alone):
            for key in NEW:
                assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7), (spec.name, a["step"], key)
