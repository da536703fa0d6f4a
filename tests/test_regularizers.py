"""The classical regularizers a study weighs noise against: label smoothing and mixup inside the
step (training loss only), dropout on a transformers model, `noisecli list regularizers`."""

import random

import pytest
import torch
from torch.nn import functional as F

from noisecli.data import IGNORE
from noisecli.engine.evaluation import measure
from noisecli.engine.regularize import MIXUP_STREAM, Mixed
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import TINY, write_spec
from tests.test_sft import EXAMPLES, sft_spec
from tests.test_train import assert_resume_is_exact


def setup(tmp_path, **train):
    spec = write_spec(tmp_path, {**TINY, "name": "r", "noise": {"kind": "none"},
                                 "train": {**TINY["train"], **train}})
    return Trainer(load_spec(spec), tmp_path / "runs", quiet=True).setup()


def test_label_smoothing_is_torchs_in_training_and_evaluation_stays_plain(tmp_path):
    trainer = setup(tmp_path, label_smoothing=0.2)
    x, y = trainer.data.x_train[:16], trainer.data.y_train[:16]
    out = trainer.raw_model(x)
    loss = trainer.strategy.loss(x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(out, y, label_smoothing=0.2).item(), rel=1e-6)
    assert abs(loss.item() - F.cross_entropy(out, y).item()) > 1e-3  # smoothing is on: not the plain loss
    trainer.model.eval()
    sums = measure(trainer, "val")  # evaluation: plain cross-entropy
    with torch.no_grad():
        plain = F.cross_entropy(trainer.raw_model(trainer.data.x_val), trainer.data.y_val, reduction="sum")
    assert sums["loss"].item() == pytest.approx(plain.item(), rel=1e-5)


def test_label_smoothing_on_instruction_data_smooths_response_tokens_only(tmp_path):
    path = tmp_path / "instructions.jsonl"
    path.write_text("".join(__import__("json").dumps(e) + "\n" for e in EXAMPLES))
    trainer = Trainer(load_spec(sft_spec(tmp_path, label_smoothing=0.1)), tmp_path / "runs", quiet=True).setup()
    x, y = trainer.data.x_train[:8], trainer.data.y_train[:8]
    out = trainer.raw_model(x)
    mask = y != IGNORE
    by_hand = F.cross_entropy(out[mask], y[mask], label_smoothing=0.1)
    assert trainer.strategy.loss(x, y).item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_mixup_mixes_a_batch_with_its_shuffle_and_scores_both_targets(tmp_path):
    trainer = setup(tmp_path, mixup={"alpha": 0.4})
    x, y = trainer.data.x_train[:16], trainer.data.y_train[:16]
    rng = random.Random(trainer.spec.seed + MIXUP_STREAM)  # the streams the run draws from
    lam = rng.betavariate(0.4, 0.4)
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(trainer.spec.seed + MIXUP_STREAM))
    mixed_x, mixed_y = trainer.mixup(x, y)
    assert isinstance(mixed_y, Mixed) and mixed_y.lam == lam and 0 < lam < 1
    assert torch.allclose(mixed_x, lam * x + (1 - lam) * x[perm])
    assert torch.equal(mixed_y.y, y) and torch.equal(mixed_y.y_b, y[perm])
    out = trainer.raw_model(mixed_x)
    expected = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
    assert trainer.strategy.loss(mixed_x, mixed_y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_run_with_mixup_and_label_smoothing_resumes_bitwise(tmp_path):
    spec = write_spec(tmp_path, {**TINY, "name": "tiny", "train": {**TINY["train"], "label_smoothing": 0.1,
                                                                    "mixup": {"alpha": 0.2}}})
    assert_resume_is_exact(spec, tmp_path, stop_after=9)


@pytest.mark.parametrize("train, data, message", [
    ({"mixup": {"alpha": 0.2}}, {"kind": "markov", "n_tokens": 2000, "block_size": 16},
     "train.mixup: mixes continuous inputs of classification data; markov data is language modelling"),
    ({"mixup": {"alpha": 0}}, None, "train.mixup.alpha: must be a number > 0, got 0"),
    ({"mixup": {"alfa": 0.2}}, None, "train.mixup.alfa: unknown key; did you mean 'alpha'? (keys: alpha)"),
    ({"label_smoothing": 1.0}, None, "train.label_smoothing: must be < 1, got 1.0"),
    ({"label_smoothing": 0.1}, {"kind": "teacher", "n_samples": 200},
     "train.label_smoothing: smooths class labels; teacher data is regression"),
])
def test_regularizer_mistakes_are_one_line(tmp_path, cli, train, data, message):
    spec = {**TINY, "name": "bad", "train": {**TINY["train"], **train}}
    if data is not None:
        spec["data"] = data
        spec["model"] = {"kind": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16} if data["kind"] == "markov" \
            else TINY["model"]
        spec["noise"] = {"kind": "none"}
    code, out, err = cli("train", write_spec(tmp_path, spec), "--runs-dir", tmp_path / "runs")
    assert (code, err.strip()) == (2, f"error: {message}")
    assert not (tmp_path / "runs" / "bad").exists()


def test_list_regularizers_names_each_with_its_key(cli):
    code, out, _ = cli("list", "regularizers")
    assert code == 0 and out.splitlines()[0].startswith("regularizers:")
    for key in ("model.dropout", "train.weight_decay", "train.label_smoothing", "train.mixup",
                "train.early_stopping"):
        assert key in out


def test_label_smoothing_stacks_as_its_points_train_alone_and_mixup_trains_alone(tmp_path, cli):
    from noisecli.batched import train_group
    from noisecli.points import train_point
    from noisecli.spec import spec_from_dict
    from tests.test_batched import TABLE, assert_close_rows, rows

    specs = [spec_from_dict({**TABLE, "name": f"ls-{f}", "model": {"kind": "mlp", "hidden": [16]},
                             "train": {**TABLE["train"], "label_smoothing": 0.2},
                             "noise": {"kind": "input", "factor": f}}) for f in (0.0, 0.3)]
    assert [o.state for o in train_group(specs, tmp_path / "batched", lambda *a: None)] == ["completed"] * 2
    for spec in specs:
        train_point(spec, tmp_path / "alone", lambda *a: None)
        assert_close_rows(rows(tmp_path / "batched" / spec.name), rows(tmp_path / "alone" / spec.name))
    sweep = write_spec(tmp_path, {"name": "mix", "base": {**TINY, "train": {**TINY["train"], "mixup": {"alpha": 0.2}}},
                                  "grid": {"noise.factor": [0.1, 0.3]}})
    code, out, err = cli("sweep", sweep, "--batched", "--dry-run", "--runs-dir", tmp_path / "runs")
    assert code == 0 and "train.mixup: trained one after another (a stack mixes no batches yet)" in out + err


def test_validate_and_a_sweep_refuse_task_dependent_keys_before_anything_runs(tmp_path, cli):
    bad = write_spec(tmp_path, {**TINY, "name": "v", "train": {**TINY["train"], "early_stopping": {
        "patience": 2, "metric": "val_r2"}}})
    code, out, err = cli("validate", bad)
    assert (code, out) == (2, "")
    assert err.strip() == ("error: train.early_stopping.metric: val_r2 is not measured on classification data (its "
                           "val metrics: val_loss, val_acc, val_f1, val_ece, val_brier)")
    sweep = write_spec(tmp_path, {"name": "ls", "base": {"data": {"kind": "teacher", "n_samples": 200},
                                                         "model": {"kind": "mlp", "hidden": [8]}},
                                  "grid": {"train.label_smoothing": [0.0, 0.1]}})
    code, out, err = cli("sweep", sweep, "--runs-dir", tmp_path / "runs")
    assert code == 2 and err.strip() == "error: train.label_smoothing: smooths class labels; teacher data is regression"
    assert not (tmp_path / "runs").exists()


def test_a_run_saved_before_the_regularizer_keys_existed_is_the_same_run(tiny_spec, tmp_path, cli):
    import yaml

    code, _, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "runs", "-q")
    assert code == 0, err
    saved = tmp_path / "runs" / "tiny" / "spec.yaml"
    old = yaml.safe_load(saved.read_text())
    del old["train"]["label_smoothing"], old["train"]["mixup"]  # as an older noisecli wrote it
    saved.write_text(yaml.safe_dump(old, sort_keys=False))
    code, out, err = cli("train", tiny_spec, "--runs-dir", tmp_path / "runs")
    assert code == 0 and "already completed" in out + err  # not refused as a changed spec


def test_mixup_and_label_smoothing_add_no_host_sync_to_the_step(tmp_path, monkeypatch):
    from tests.test_noise import assert_steps_never_read_back

    assert_steps_never_read_back(setup(tmp_path, label_smoothing=0.1, mixup={"alpha": 0.2}), monkeypatch)
