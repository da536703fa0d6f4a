"""Datasets: shapes, splits, tasks, file formats, and the known entropy of `markov`."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

from noisecli.data import carve_test, load_dataset
from noisecli.data.synthetic import entropy_rate, markov_chain
from noisecli.errors import SpecError
from noisecli.spec import spec_from_dict


def data(**kw):
    model = "gpt" if kw.get("kind") in ("pydoc", "markov", "text") else "mlp"
    return load_dataset(spec_from_dict({"data": kw, "model": {"kind": model}}).data)


def test_digits_split_is_seeded_and_standardized_on_train_statistics():
    ds = data(kind="digits")
    assert ds.task == "classification" and ds.n_outputs == 10 and ds.image_shape == (1, 8, 8)
    assert (ds.x_train.shape, ds.x_val.shape, ds.x_test.shape) == ((1078, 64), (360, 64), (359, 64))
    varying = ds.x_train.std(0) > 0
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(64), atol=1e-5)
    assert torch.allclose(ds.x_train.std(0, unbiased=False)[varying], torch.ones(int(varying.sum())), atol=1e-4)
    assert torch.equal(data(kind="digits").x_val, ds.x_val)
    assert not torch.equal(data(kind="digits", seed=1).x_val, ds.x_val)


def test_the_test_split_is_carved_first_seeded_disjoint_and_kept_out_of_the_statistics():
    """Test examples are chosen before validation, so changing val_fraction moves examples between
    train and val only; a seed of their own; never seen by standardisation; 0 turns them off."""
    raw = data(kind="digits", standardize=False)
    a, b = data(kind="digits", standardize=False, val_fraction=0.1), data(kind="digits", standardize=False)
    assert torch.equal(a.x_test, b.x_test) and a.x_val.shape[0] < b.x_val.shape[0]
    rest, test = carve_test(1797, 0.2, 0)
    assert not set(rest.tolist()) & set(test.tolist()) and len(rest) + len(test) == 1797 and len(test) == 359
    assert not torch.equal(data(kind="digits", seed=1, standardize=False).x_test, raw.x_test)
    std = data(kind="digits")
    mean, sd = raw.x_train.mean(0), raw.x_train.std(0, unbiased=False)
    sd[sd < 1e-8] = 1
    torch.testing.assert_close(std.x_test, (raw.x_test - mean) / sd, atol=1e-4, rtol=1e-4)
    off = data(kind="digits", test_fraction=0)
    assert off.x_test is None and off.x_train.shape[0] + off.x_val.shape[0] == 1797
    text = data(kind="markov", n_tokens=5000)
    assert (text.x_train.numel(), text.x_val.numel(), text.x_test.numel()) == (3000, 1000, 1000)


@pytest.mark.parametrize("kind,n,d,k", [("breast_cancer", 569, 30, 2), ("wine", 178, 13, 3)])
def test_bundled_tables(kind, n, d, k):
    ds = data(kind=kind)
    assert ds.x_train.shape[0] + ds.x_val.shape[0] + ds.x_test.shape[0] == n
    assert ds.n_features == d and ds.n_outputs == k


def test_train_size_subsamples_and_too_large_is_an_error():
    assert data(kind="wine", train_size=50).n_train == 50
    with pytest.raises(SpecError, match=r"data.train_size: 500 is more than the 106 training examples"):
        data(kind="wine", train_size=500)


def test_teacher_regression_and_classification():
    reg = data(kind="teacher", n_samples=100, n_features=5)
    assert reg.task == "regression" and reg.y_train.shape == (60, 1) and reg.y_train.dtype == torch.float32
    cls = data(kind="teacher", n_samples=300, n_classes=4, label_noise=0)
    assert cls.task == "classification" and cls.n_outputs == 4 and len(set(cls.y_train.tolist())) > 1


def test_npz_float_y_is_regression_int_y_is_classification(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.savez(tmp_path / "r.npz", x=x, y=x.sum(1))
    np.savez(tmp_path / "c.npz", x=x, y=(x[:, 0] > 0).astype(np.int64), x_val=x[:10], y_val=np.ones(10, np.int64))
    assert data(kind="npz", path=str(tmp_path / "r.npz")).task == "regression"
    ds = data(kind="npz", path=str(tmp_path / "c.npz"))
    # its own validation split is kept; the test split is carved from x (test_fraction of it)
    assert ds.task == "classification" and ds.n_train == 40 and ds.x_val.shape == (10, 3) and ds.x_test.shape == (10, 3)
    np.savez(tmp_path / "t.npz", x=x, y=(x[:, 0] > 0).astype(np.int64), x_test=x[:7], y_test=np.ones(7, np.int64))
    own = data(kind="npz", path=str(tmp_path / "t.npz"))
    assert own.x_test.shape == (7, 3) and own.n_train + own.x_val.shape[0] == 50


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((4, 2))}, "lacks array(s) y"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "x has 4 rows but y has 3"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(4), "x_val": np.zeros((2, 2))}, "only one of x_val, y_val"),
    ({"x": np.zeros((4, 2)), "y": np.array(["a"] * 4)}, "labels must be integers or floats"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "class labels must be >= 0"),
])
def test_npz_mistakes_name_the_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SpecError) as e:
        data(kind="npz", path=str(tmp_path / "d.npz"))
    assert message in e.value.problems[0] and e.value.problems[0].startswith("data.path:")


def test_npz_never_unpickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "obj.npz").write_bytes((tmp_path / "obj.npy").read_bytes())
    with pytest.raises(SpecError, match="cannot read"):
        data(kind="npz", path=str(tmp_path / "obj.npz"))


def test_csv_labels_and_target_column(tmp_path):
    rows = ["a,b,label,score"] + [f"{i},{i % 3},{'yes' if i % 2 else 'no'},{i * 0.5}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(SpecError, match="feature columns must be numbers"):  # 'label' is not a feature
        data(kind="csv", path=str(tmp_path / "t.csv"))
    cls = data(kind="csv", path=str(tmp_path / "t.csv"), target="label")
    assert cls.task == "classification" and cls.n_outputs == 2 and cls.n_features == 3
    (tmp_path / "r.csv").write_text("\n".join(r.rsplit(",", 2)[0] + "," + r.rsplit(",", 1)[1] for r in rows))
    reg = data(kind="csv", path=str(tmp_path / "r.csv"))
    assert reg.task == "regression" and reg.n_features == 2
    with pytest.raises(SpecError, match="data.target: no column 'lable'.*did you mean 'label'"):
        data(kind="csv", path=str(tmp_path / "t.csv"), target="lable")


def test_text_is_character_level_with_a_tail_validation_split(tmp_path):
    (tmp_path / "t.txt").write_text("abcd" * 100)
    ds = data(kind="text", path=str(tmp_path / "t.txt"), block_size=8, val_fraction=0.25, test_fraction=0.2)
    # [train | val | test]: the last fifth is test, the quarter before it validation
    assert ds.task == "lm" and ds.n_outputs == 4 and ds.x_train.numel() == 220 and ds.x_val.numel() == 100
    assert ds.x_test.numel() == 80 and ds.n_train == 212  # distinct windows
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00abc")
    with pytest.raises(SpecError, match="is not UTF-8"):
        data(kind="text", path=str(tmp_path / "bin.txt"))
    with pytest.raises(SpecError, match="data.block_size: 200 is too long"):
        data(kind="text", path=str(tmp_path / "t.txt"), block_size=200)


def test_pydoc_ships_with_python():
    ds = data(kind="pydoc", block_size=32)
    assert ds.task == "lm" and ds.n_outputs > 60 and ds.x_train.numel() > 250_000 and ds.x_test.numel() > 90_000


def test_markov_entropy_rate_matches_the_empirical_conditional_entropy():
    ds = data(kind="markov", vocab_size=6, n_tokens=200_000, concentration=0.5)
    seq = torch.cat([ds.x_train, ds.x_val]).tolist()
    pairs, firsts = Counter(zip(seq, seq[1:])), Counter(seq[:-1])
    empirical = -sum(c / (len(seq) - 1) * math.log(c / firsts[a]) for (a, _), c in pairs.items())
    assert ds.info["entropy_rate"] == pytest.approx(empirical, abs=0.01)
    assert ds.info["entropy_rate"] < ds.info["best_possible_loss"] < math.log(6)


def test_entropy_rate_of_a_deterministic_cycle_is_zero():
    p = np.roll(np.eye(4), 1, axis=1)  # a -> b -> c -> d -> a
    assert entropy_rate(np.clip(p, 1e-300, None), np.full(4, 0.25)) == pytest.approx(0, abs=1e-9)
    p, pi = markov_chain(5, 1.0, 0)
    assert np.allclose(pi @ p, pi) and pi.sum() == pytest.approx(1)


@pytest.mark.parametrize("kind", ["digits", "breast_cancer", "wine"])
def test_reading_sklearns_bundled_files_directly_gives_sklearns_arrays(kind):
    from sklearn import datasets as skd

    from noisecli.data.tabular import read_sklearn_file

    bunch = {"digits": skd.load_digits, "breast_cancer": skd.load_breast_cancer, "wine": skd.load_wine}[kind]()
    x, y = read_sklearn_file(kind)
    assert np.array_equal(x, bunch.data) and np.array_equal(y, bunch.target)
