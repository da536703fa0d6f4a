"""Every model builds on the data it reads and trains end to end through the CLI."""

import pytest
import torch

from noisecli.data import load_dataset
from noisecli.models import build_model
from noisecli.spec import spec_from_dict
from tests.conftest import write_spec


def built(data: dict, model: dict):
    spec = spec_from_dict({"data": data, "model": model})
    ds = load_dataset(spec.data)
    return build_model(spec.model, ds), ds


@pytest.mark.parametrize("model", [{"kind": "linear"}, {"kind": "mlp", "hidden": [16, 8], "activation": "tanh"},
                                   {"kind": "cnn", "channels": [4, 8]}])
def test_digit_models_give_one_logit_per_class(model):
    net, ds = built({"kind": "digits"}, model)
    assert net(ds.x_val[:5]).shape == (5, 10)


def test_gpt_is_causal_and_ties_embeddings():
    net, ds = built({"kind": "markov", "block_size": 16, "n_tokens": 2000},
                    {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 16})
    net.eval()
    x = ds.x_train[:16].unsqueeze(0)
    y = x.clone()
    y[0, 10] = (y[0, 10] + 1) % ds.n_outputs
    a, b = net(x), net(y)
    assert a.shape == (1, 16, ds.n_outputs)
    assert torch.equal(a[0, :10], b[0, :10]) and not torch.equal(a[0, 10:], b[0, 10:])
    assert net.lm_head.weight is net.get_input_embeddings().weight


@pytest.mark.parametrize("data,model", [
    ({"kind": "digits", "train_size": 64}, {"kind": "cnn", "channels": [4]}),
    ({"kind": "breast_cancer"}, {"kind": "linear"}),
    ({"kind": "wine"}, {"kind": "mlp", "hidden": [8]}),
    ({"kind": "teacher", "n_samples": 64}, {"kind": "mlp", "hidden": [8]}),
    ({"kind": "pydoc", "block_size": 16, "train_size": 500}, {"kind": "gpt", "n_layer": 1, "n_embd": 16}),
    ({"kind": "markov", "block_size": 16, "n_tokens": 3000}, {"kind": "gpt", "n_layer": 1, "n_embd": 16}),
])
def test_each_dataset_and_model_trains_through_the_cli(cli, tmp_path, data, model):
    spec = write_spec(tmp_path, {"name": "e2e", "data": data, "model": model,
                                 "train": {"max_steps": 3, "batch_size": 8, "eval_batches": 2}})
    code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    assert "val loss" in out and (tmp_path / "runs" / "e2e" / "checkpoints" / "last.pt").exists()


def test_file_backed_datasets_train_through_the_cli(cli, tmp_path):
    import numpy as np

    (tmp_path / "t.txt").write_text("to be or not to be, that is the question. " * 40)
    rows = ["f1,f2,label"] + [f"{i % 7},{(i * 3) % 5},{'a' if i % 2 else 'b'}" for i in range(60)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    x = np.random.default_rng(0).normal(size=(60, 3))
    np.savez(tmp_path / "t.npz", x=x, y=x.sum(1))
    for name, data, model in [("text", {"kind": "text", "path": "t.txt", "block_size": 16},
                               {"kind": "gpt", "n_layer": 1, "n_embd": 16}),
                              ("csv", {"kind": "csv", "path": "t.csv"}, {"kind": "mlp", "hidden": [8]}),
                              ("npz", {"kind": "npz", "path": "t.npz"}, {"kind": "linear"})]:
        spec = write_spec(tmp_path, {"name": name, "data": data, "model": model,
                                     "train": {"max_steps": 3, "batch_size": 8, "eval_batches": 2}}, f"{name}.yaml")
        code, out, err = cli("train", spec, "--runs-dir", tmp_path / "runs")
        assert code == 0, err
        assert (tmp_path / "runs" / name / "checkpoints" / "last.pt").exists()
    assert "val_acc" in (tmp_path / "runs" / "csv" / "metrics.csv").read_text()  # string labels: classification
    assert "val_acc" not in (tmp_path / "runs" / "npz" / "metrics.csv").read_text()  # float y: regression
