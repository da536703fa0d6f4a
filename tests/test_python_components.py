"""`kind: python`: the user's own model and data, from real files, through the real CLI."""

import json
import sys

import pytest
import yaml

from tests.conftest import write_spec

USER_CODE = '''
import torch
from torch import nn

def mlp(n_inputs, n_outputs, width=16):
    return nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, n_outputs))

class TinyLM(nn.Module):
    def __init__(self, vocab_size, block_size, width=16):
        super().__init__()
        self.emb, self.pos = nn.Embedding(vocab_size, width), nn.Embedding(block_size, width)
        self.mix, self.head = nn.Linear(width, width), nn.Linear(width, vocab_size)

    def forward(self, idx):  # (B, T) -> (B, T, vocab)
        h = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(torch.relu(self.mix(h)))

class TinyLMWithEmbeddings(TinyLM):
    def get_input_embeddings(self):
        return self.emb

def lm(vocab_size, block_size, embeddings=True):
    return (TinyLMWithEmbeddings if embeddings else TinyLM)(vocab_size, block_size)

def blobs(n=240, numpy=False, split=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    out = {"x": x, "y": y}
    if split:
        out = {"x": x[:200], "y": y[:200], "x_val": x[200:], "y_val": y[200:]}
    return {k: v.numpy() for k, v in out.items()} if numpy else out

def regression():
    x = torch.linspace(-1, 1, 100)[:, None]
    return {"x": x, "y": 3 * x}

def not_a_module(n_inputs):
    return "a model"

def raises(n_inputs):
    raise ValueError("width must be even")

def wrong_width(n_inputs, n_outputs):
    return nn.Linear(n_inputs, n_outputs + 1)

def no_y():
    return {"x": torch.zeros(10, 2)}

def typo():
    return {"x": torch.zeros(10, 2), "y": torch.zeros(10).long(), "x_valid": torch.zeros(3, 2)}

def ragged():
    return {"x": torch.zeros(10, 2), "y": torch.zeros(9).long()}

def a_list():
    return [1, 2, 3]
'''

TABLE_TRAIN = {"epochs": 2, "batch_size": 32, "lr": 3e-3}


@pytest.fixture
def code(tmp_path):
    (tmp_path / "usercode.py").write_text(USER_CODE)
    return tmp_path


def spec_with(folder, **sections):
    raw = {"name": "mine", "data": {"kind": "digits", "train_size": 200},
           "model": {"kind": "python", "target": "usercode.py:mlp", "args": {"width": 8}},
           "train": TABLE_TRAIN, **sections}
    return write_spec(folder, raw)


@pytest.mark.parametrize("noise", [{"kind": "none"}, {"kind": "input", "factor": 0.3},
                                   {"kind": "weight", "factor": 0.05, "targets": ["0.weight"]},
                                   {"kind": "activation", "factor": 0.3},
                                   {"kind": "gradient", "factor": 0.01},
                                   {"kind": "anticorrelated", "factor": 0.05}])
def test_a_python_model_trains_with_each_kind(cli, code, noise):
    spec = spec_with(code, noise=noise)
    out_code, out, err = cli("train", spec, "--runs-dir", code / "runs", "-q")
    assert out_code == 0, err
    saved = yaml.safe_load((code / "runs" / "mine" / "spec.yaml").read_text())
    assert saved["model"]["target"] == f"{code / 'usercode.py'}:mlp" and len(saved["model"]["code_sha256"]) == 16
    rows = [json.loads(x) for x in (code / "runs" / "mine" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[-1]["val_loss"] < rows[0]["val_loss"] + 0.5


def test_a_python_language_model_takes_token_and_embedding_noise(cli, code):
    for noise in ({"kind": "token", "factor": 0.1}, {"kind": "embedding", "factor": 5.0}):
        spec = write_spec(code, {"name": f"lm-{noise['kind']}", "data": {"kind": "markov", "n_tokens": 3000,
                                                                         "block_size": 16},
                                 "model": {"kind": "python", "target": "usercode.py:lm"}, "noise": noise,
                                 "train": {"max_steps": 6, "batch_size": 8, "eval_batches": 2}})
        out_code, _, err = cli("train", spec, "--runs-dir", code / "runs", "-q")
        assert out_code == 0, err
    spec = write_spec(code, {"data": {"kind": "markov", "n_tokens": 3000, "block_size": 16},
                             "model": {"kind": "python", "target": "usercode.py:lm", "args": {"embeddings": False}},
                             "noise": {"kind": "embedding", "factor": 5.0}}, "noemb.yaml")
    out_code, out, err = cli("validate", spec)
    assert (out_code, out, err.strip()) == (2, "", "error: noise.kind: 'embedding' needs a model with input "
                                                   "embeddings: TinyLM has no get_input_embeddings()")


@pytest.mark.parametrize("args,task", [({}, "classification"), ({"numpy": True, "split": True}, "classification")])
def test_python_data_trains_like_npz(cli, code, args, task):
    spec = write_spec(code, {"name": "d", "data": {"kind": "python", "target": "usercode.py:blobs", "args": args},
                             "model": {"kind": "mlp", "hidden": [8]}, "train": TABLE_TRAIN})
    out_code, _, err = cli("train", spec, "--runs-dir", code / "runs", "-q")
    assert out_code == 0, err
    status = json.loads((code / "runs" / "d" / "status.json").read_text())
    assert status["state"] == "completed"
    rows = [json.loads(x) for x in (code / "runs" / "d" / "metrics.jsonl").read_text().splitlines()]
    assert "val_acc" in rows[-1]  # integer y: classification
    # with x_val given, the validation split is exactly those 40 examples
    if args.get("split"):
        from noisecli.data import load_dataset
        from noisecli.spec import load_spec

        assert load_dataset(load_spec(spec).data).x_val.shape[0] == 40


def test_python_float_targets_are_regression(cli, code):
    spec = write_spec(code, {"name": "r", "data": {"kind": "python", "target": "usercode.py:regression"},
                             "model": {"kind": "linear"}, "train": TABLE_TRAIN})
    out_code, _, err = cli("train", spec, "--runs-dir", code / "runs", "-q")
    assert out_code == 0, err
    rows = [json.loads(x) for x in (code / "runs" / "r" / "metrics.jsonl").read_text().splitlines()]
    assert "val_acc" not in rows[-1]


BAD = [
    ({"model": {"kind": "python", "target": "missing.py:mlp"}}, "error: model.target: file not found: {dir}/missing.py"),
    ({"model": {"kind": "python", "target": "usercode.py:mpl"}},
     "error: model.target: {dir}/usercode.py has no function 'mpl'; did you mean 'mlp'?"),
    ({"model": {"kind": "python", "target": "usercode.py"}},
     "error: model.target: 'usercode.py' must be FILE.py:FUNCTION or package.module:FUNCTION"),
    ({"model": {"kind": "python"}}, "error: model.target: required for model kind 'python' (FILE.py:FUNCTION or "
                                    "package.module:FUNCTION)"),
    ({"model": {"kind": "python", "target": "usercode.py:raises"}},
     "error: model.target: {dir}/usercode.py:raises raised ValueError: width must be even "
     "(set NOISECLI_DEBUG=1 for the traceback)"),
    ({"model": {"kind": "python", "target": "usercode.py:not_a_module"}},
     "error: model.target: {dir}/usercode.py:not_a_module returned str, not a torch.nn.Module"),
    ({"model": {"kind": "python", "target": "usercode.py:wrong_width"}},
     "error: model.target: {dir}/usercode.py:wrong_width: forward on 2 training examples returned (2, 11); "
     "expected a tensor of shape (2, 10) (classification)"),
    ({"model": {"kind": "python", "target": "usercode.py:mlp", "args": {"depth": 3}}},
     "error: model.target: {dir}/usercode.py:mlp raised TypeError: mlp() got an unexpected keyword argument 'depth' "
     "(set NOISECLI_DEBUG=1 for the traceback)"),
    ({"data": {"kind": "python", "target": "usercode.py:no_y"}},
     "error: data.target: {dir}/usercode.py:no_y: lacks array(s) y (found: x)"),
    ({"data": {"kind": "python", "target": "usercode.py:typo"}},
     "error: data.target: {dir}/usercode.py:typo returned unknown key 'x_valid'; did you mean 'x_val'? "
     "(expected x, y, x_val, y_val, x_test, y_test)"),
    ({"data": {"kind": "python", "target": "usercode.py:ragged"}},
     "error: data.target: {dir}/usercode.py:ragged: x has 10 rows but y has 9"),
    ({"data": {"kind": "python", "target": "usercode.py:a_list"}},
     "error: data.target: {dir}/usercode.py:a_list returned list; expected a mapping with x, y (and optionally "
     "x_val, y_val, x_test, y_test)"),
    ({"model": {"kind": "mlp", "target": "usercode.py:mlp"}},
     "error: model.target: does not apply to model kind 'mlp' (used by python)"),
]


@pytest.mark.parametrize("sections,message", BAD, ids=[m.split(": ", 2)[-1][:40] for _, m in BAD])
def test_user_code_failing_is_one_line_exit_2_and_nothing_written(cli, code, sections, message):
    spec = write_spec(code, {"name": "bad", "data": {"kind": "digits", "train_size": 100},
                             "model": {"kind": "python", "target": "usercode.py:mlp"}, **sections})
    for command in ("validate", "train"):
        args = [command, spec] + (["--runs-dir", code / "runs"] if command == "train" else [])
        out_code, out, err = cli(*args)
        assert (out_code, err.strip()) == (2, message.format(dir=code)), command
        assert "Traceback" not in out + err
    assert not (code / "runs").exists()


def test_a_module_target_and_its_sweep_are_checked_before_any_point_runs(cli, code, monkeypatch):
    pkg = code / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(USER_CODE)
    monkeypatch.syspath_prepend(str(code))
    spec = spec_with(code, model={"kind": "python", "target": "mypkg.models:mlp"})
    out_code, out, err = cli("validate", spec)
    assert out_code == 0, err
    sweep = write_spec(code, {"name": "s", "base": yaml.safe_load(spec.read_text()),
                              "grid": {"model.args.width": [4, 0.5]}}, "sweep.yaml")
    out_code, out, err = cli("sweep", sweep, "--runs-dir", code / "runs")
    assert out_code == 2 and "mypkg.models:mlp raised TypeError" in err and not (code / "runs").exists()
    sys.modules.pop("mypkg.models", None)
    sys.modules.pop("mypkg", None)


def test_a_changed_code_file_is_refused_on_resume(cli, code):
    spec = spec_with(code)
    assert cli("train", spec, "--runs-dir", code / "runs", "-q")[0] == 0
    (code / "usercode.py").write_text(USER_CODE + "\n# tuned\n")
    out_code, _, err = cli("train", spec, "--runs-dir", code / "runs")
    assert out_code == 2 and "model.code_sha256:" in err
    assert "the code model.target names has changed since" in err


def test_only_kind_python_runs_code_named_in_a_spec(cli, code):
    """A file that would leave a mark when imported: named under any other kind it is refused
    and never imported."""
    (code / "marker.py").write_text(f"open({str(code / 'IMPORTED')!r}, 'w').close()\ndef f(): pass\n")
    for section in ({"data": {"kind": "digits", "target": "marker.py:f"}},
                    {"model": {"kind": "mlp", "target": "marker.py:f"}}):
        spec = write_spec(code, {**section}, "s.yaml")
        out_code, _, _ = cli("validate", spec)
        assert out_code == 2
    assert not (code / "IMPORTED").exists()


def test_an_interrupted_python_model_run_resumes_exactly(code):
    from tests.test_train import assert_resume_is_exact

    spec = spec_with(code, noise={"kind": "anticorrelated", "factor": 0.05},
                     data={"kind": "python", "target": "usercode.py:blobs"})
    assert_resume_is_exact(spec, code, stop_after=5)
