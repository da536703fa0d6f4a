"""`model.init: RUN_DIR[:best|last]`: a run that starts from another run's trained weights (a fresh
optimizer), the source recorded by its checkpoint's hash, and every way to name a source that
cannot be used refused in one line before anything is written."""

import hashlib
import shutil

import pytest
import torch
import yaml

from noisecli import metrics
from noisecli.engine import evaluation
from noisecli.errors import SpecError
from noisecli.runs import read_checkpoint
from noisecli.spec import load_spec, upgrade_saved
from noisecli.trainer import Trainer
from tests.conftest import metrics_rows, write_spec
from tests.test_train import train_run

DATA = {"kind": "markov", "block_size": 16, "n_tokens": 4000}
GPT = {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32}
TRAIN = {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "eval_every": 3, "eval_batches": 2}


def spec(name: str, **model) -> dict:
    return {"name": name, "data": DATA, "model": {**GPT, **model}, "train": TRAIN}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A folder with runs/src (trained with output.checkpoint best: last.pt and best.pt) and
    runs/nockpt (output.checkpoint none: no checkpoint left)."""
    folder = tmp_path_factory.mktemp("init")
    train_run(write_spec(folder, {**spec("src"), "output": {"checkpoint": "best"}}, "src.yaml"), folder / "runs")
    train_run(write_spec(folder, {**spec("nockpt"), "output": {"checkpoint": "none"}}, "nockpt.yaml"),
              folder / "runs")
    return folder


def sha16(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def val_loss_now(trainer: Trainer) -> float:
    """The val loss of the trainer's model as it is (before any step), measured as training measures it."""
    trainer.model.eval()
    values = evaluation.to_host(trainer.world, evaluation.measure(trainer, "val"))
    return metrics.split_values(trainer.data.task, "val", values)["val_loss"]


@pytest.mark.parametrize("which", ["", ":last", ":best"])
def test_a_run_starts_with_the_source_runs_weights(source, which):
    ckpt = source / "runs" / "src" / "checkpoints" / f"{which[1:] or 'last'}.pt"
    s = load_spec(write_spec(source, spec("ft", init=f"runs/src{which}"), "ft.yaml"))
    assert s.model.init == f"{source / 'runs' / 'src'}:{which[1:] or 'last'}"  # relative to the spec file
    assert s.model.init_sha256 == sha16(ckpt)
    trainer = Trainer(s, source / "unused", quiet=True).setup()
    saved = read_checkpoint(ckpt)["model"]
    own = trainer.raw_model.state_dict()
    assert own.keys() == saved.keys() and all(torch.equal(own[k], saved[k]) for k in own)
    rows = metrics_rows(source / "runs" / "src")
    at = rows[-1] if which != ":best" else min(rows, key=lambda r: r["val_loss"])
    assert val_loss_now(trainer) == pytest.approx(at["val_loss"], rel=1e-6)  # step 0 is where the source ended


def test_the_trained_run_records_its_source_and_a_changed_source_is_refused_on_resume(source, tmp_path, cli):
    shutil.copytree(source / "runs" / "src", tmp_path / "src")
    path = write_spec(tmp_path, spec("ft", init="src"))
    code, _, err = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "runs" / "ft" / "spec.yaml").read_text())
    assert saved["model"]["init"] == f"{tmp_path / 'src'}:last"
    assert saved["model"]["init_sha256"] == sha16(tmp_path / "src" / "checkpoints" / "last.pt")
    rows = metrics_rows(tmp_path / "runs" / "ft")
    assert [r["step"] for r in rows] == [3, 6]  # its own steps, from 0: a fresh optimizer and schedule
    assert cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")[0] == 0  # the same source: done already
    state = read_checkpoint(tmp_path / "src" / "checkpoints" / "last.pt", keys={"model"})
    state["model"] = {k: v + 0.01 for k, v in state["model"].items()}  # the source retrained
    torch.save(state, tmp_path / "src" / "checkpoints" / "last.pt")
    code, _, err = cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.init_sha256:" in err and "the checkpoint model.init names has changed since" in err


def test_a_run_is_evaluated_after_its_source_has_gone(source, tmp_path, cli):
    """Its checkpoint holds every weight: eval rebuilds the model without reading the source."""
    import json

    shutil.copytree(source / "runs" / "src", tmp_path / "src")
    path = write_spec(tmp_path, spec("ft", init="src"))
    assert cli("train", path, "--runs-dir", tmp_path / "runs", "--quiet")[0] == 0
    shutil.rmtree(tmp_path / "src")
    code, out, err = cli("eval", tmp_path / "runs" / "ft", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["val_loss"] == pytest.approx(metrics_rows(tmp_path / "runs" / "ft")[-1]["val_loss"],
                                                        rel=1e-5)


def test_an_override_names_the_source_relative_to_the_current_folder(source, tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    path = write_spec(tmp_path / "specs", spec("ft", init="../runs/src"))  # in the file: from the file's folder
    assert not (tmp_path / "runs").exists()
    with pytest.raises(SpecError, match="model.init: no such run folder"):
        load_spec(path)
    monkeypatch.chdir(source)
    assert load_spec(path, ["model.init=runs/src:best"]).model.init == f"{source / 'runs' / 'src'}:best"


def test_a_sweep_point_starts_from_the_source(source, tmp_path, cli):
    sweep = write_spec(tmp_path, {"name": "sw", "base": spec("ft", init=str(source / "runs" / "src")),
                                  "grid": {"train.lr": [1e-3, 3e-3]}}, "sweep.yaml")
    code, _, err = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    points = sorted((tmp_path / "runs" / "sw").glob("*/spec.yaml"))
    assert len(points) == 2
    expected = sha16(source / "runs" / "src" / "checkpoints" / "last.pt")
    assert all(yaml.safe_load(p.read_text())["model"]["init_sha256"] == expected for p in points)


def test_a_spec_saved_before_init_sha256_reads_it_as_none():
    assert upgrade_saved({"model": {"kind": "gpt"}})["model"]["init_sha256"] is None


def _broken(source, tmp_path) -> dict:
    """Folders that cannot be a source: an empty one, a run with a corrupt checkpoint, a LoRA run."""
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    shutil.copytree(source / "runs" / "src", corrupt)
    (corrupt / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    lora = tmp_path / "lora"
    shutil.copytree(source / "runs" / "src", lora)
    saved = yaml.safe_load((lora / "spec.yaml").read_text())
    saved["model"]["lora"] = {"r": 8}
    (lora / "spec.yaml").write_text(yaml.safe_dump(saved))
    return {"empty": tmp_path / "empty", "corrupt": corrupt, "lora": lora}


@pytest.mark.parametrize("init, model, says", [
    ("nowhere", {}, "model.init: no such run folder: "),
    ("{src}:typo", {}, "names checkpoint 'typo'"),
    ("{src}:bset", {}, "did you mean 'best'?"),
    ("{runs}/nockpt", {}, "has no checkpoints/last.pt (it was trained with output.checkpoint: none"),
    ("{empty}", {}, "has no checkpoints/last.pt (and no spec.yaml: not a noisecli run folder)"),
    ("{corrupt}", {}, "corrupt/checkpoints/last.pt: cannot load"),
    ("{lora}", {}, "is a LoRA run, whose checkpoints hold its adapters only"),
    ("{src}", {"n_embd": 16}, "do not fit this model: shapes differ: wte.weight (16, 32) for (16, 16)"),
    ("{src}", {"n_layer": 3}, "do not fit this model: missing: h.2.ln_1.weight, h.2.attn.c_attn.weight, "
                              "h.2.attn.c_proj.weight and 3 more"),
])
def test_a_source_that_cannot_be_used_is_one_line_and_nothing_is_written(source, tmp_path, cli, init, model, says):
    places = {"src": source / "runs" / "src", "runs": source / "runs", **_broken(source, tmp_path)}
    path = write_spec(tmp_path, spec("ft", init=init.format(**places), **model))
    code, out, err = cli("train", path, "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: model.init: ") and says in err, err
    assert not (tmp_path / "runs").exists()
