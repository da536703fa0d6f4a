"""`noisecli eval`: every checkpoint holds the model that was evaluated, for every noise kind."""

import json

import pytest
import torch

from noisecli.engine.evaluation import measure
from noisecli.spec import load_spec
from noisecli.trainer import Trainer
from tests.conftest import write_spec
from tests.test_noise import KINDS, kind_spec
from tests.test_train import train_run


def eval_json(cli, *args):
    code, out, err = cli("eval", *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("kind", ["none", *KINDS])
def test_eval_of_best_and_last_equals_what_training_logged(tmp_path, cli, kind):
    spec = (kind_spec(tmp_path, kind) if kind != "none"
            else write_spec(tmp_path, {"name": "none", **KINDS["input"][0]}))
    trainer = train_run(spec, tmp_path / "runs", ["output.checkpoint=best", "train.epochs=4"])
    rows, run = trainer.state.rows, tmp_path / "runs" / trainer.spec.name
    best_row = min(rows, key=lambda r: r["val_loss"])
    assert best_row is not rows[-1] or len(rows) > 1

    best = eval_json(cli, run, "--checkpoint", "best")
    assert best["step"] == best_row["step"]
    assert best["val_loss"] == pytest.approx(best_row["val_loss"], abs=1e-5)
    last = eval_json(cli, run)  # last.pt is the default
    assert last["step"] == rows[-1]["step"]
    assert last["val_loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-5)
    if "val_acc" in rows[-1]:
        assert last["val_acc"] == pytest.approx(rows[-1]["val_acc"], abs=1e-6)
    train = eval_json(cli, run, "--split", "train")
    assert train["clean_train_loss"] == pytest.approx(rows[-1]["clean_train_loss"], abs=1e-5)
    assert "val_loss" not in train


def test_every_anti_pgd_checkpoint_holds_the_clean_point_not_the_iterate(tmp_path):
    """The defect this guards: best.pt and step_*.pt were saved with w = z + xi in the weights
    (a run logged best val 2.1888 while its best.pt evaluated to 2.5684). Read the files with
    no noisecli help at all: a plain model loaded from each must give the logged loss."""
    spec = kind_spec(tmp_path, "anticorrelated", factor=0.2)
    trainer = train_run(spec, tmp_path / "runs", ["output.checkpoint=every", "train.epochs=4"])
    fresh = Trainer(load_spec(spec), tmp_path / "other", quiet=True).setup()
    fresh.model.eval()
    files = sorted((tmp_path / "runs" / "anticorrelated" / "checkpoints").glob("step_*.pt"))
    assert len(files) == len(trainer.state.rows) >= 5
    for path, row in zip(files, trainer.state.rows):
        state = torch.load(path, weights_only=True)
        fresh.raw_model.load_state_dict(state["model"])
        total, count = (lambda s: (s["loss"], s["count"]))(measure(fresh, "val"))
        assert total.item() / count.item() == pytest.approx(row["val_loss"], abs=1e-5), path.name


def test_eval_bad_input_is_one_line_and_exit_2(tmp_path, cli, tiny_spec):
    train_run(tiny_spec, tmp_path / "runs")
    run = tmp_path / "runs" / "tiny"
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((run / "checkpoints" / "last.pt").read_bytes()[:500])
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    other = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, other)
    cases = {
        (str(tmp_path / "runs" / "nope"),): f"error: eval: {tmp_path / 'runs' / 'nope'}: no such run folder",
        (str(tmp_path / "runs"),): f"error: eval: {tmp_path / 'runs'}: no readable spec.yaml, so not a noisecli "
                                   "run folder",
        (str(run), "--checkpoint", "best"): f"error: --checkpoint: {run} has no best.pt (it is written only "
                                            "with output.checkpoint: best)",
        (str(run), "--checkpoint", "nothing.pt"): "error: --checkpoint: 'nothing.pt' is not last, best, prev or "
                                                  "an existing file",
        (str(run), "--checkpoint", str(foreign)): f"error: --checkpoint: {foreign}: cannot load (ValueError: not "
                                                  "a noisecli checkpoint)",
    }
    for args, message in cases.items():
        code, out, err = cli("eval", *args)
        assert (code, out, err.strip()) == (2, "", message), args
    for path in (damaged, other):
        code, out, err = cli("eval", run, "--checkpoint", path)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("error: --checkpoint: ") and str(path) in err


def test_eval_metrics_robustness_and_sharpness_equal_what_the_run_measured_at_its_end(tmp_path, cli):
    """`--metrics`, `--robustness` and `--sharpness` on last.pt give the numbers final.json holds
    for the end of training (same checkpoint, same fixed perturbation seeds), keyed as it keys them."""
    from tests.test_verdict import TABLE

    spec = write_spec(tmp_path, {**TABLE, "name": "p", "eval": {"robustness": {"levels": [0, 0.5]},
                                                                  "sharpness": {"rho": 0.05, "draws": 3}}})
    train_run(spec, tmp_path / "runs")
    run = tmp_path / "runs" / "p"
    final = json.loads((run / "final.json").read_text())["final"]

    only = eval_json(cli, run, "--split", "test", "--metrics", "acc,test_ece")
    assert {k for k in only if k.startswith("test_")} == {"test_acc", "test_ece"}
    assert only["test_acc"] == final["test_acc"] and only["test_ece"] == pytest.approx(final["test_ece"], abs=1e-7)

    probed = eval_json(cli, run, "--split", "test", "--robustness", "0,0.5", "--sharpness", "0.05", "--draws", "3")
    assert probed["robust_test_acc"] == pytest.approx(final["robust_test_acc"], abs=1e-7)
    assert probed["robust_test_loss"] == pytest.approx(final["robust_test_loss"], abs=1e-6)
    assert probed["robustness"]["levels"] == [0, 0.5]
    assert probed["robustness"]["test_acc"] == pytest.approx(final["robustness"]["test_acc"], abs=1e-7)
    assert probed["robustness"]["test_acc"][0] == probed["test_acc"]  # level 0 is the clean split
    assert probed["sharpness"] == pytest.approx(final["sharpness"], rel=1e-5)

    code, table, err = cli("eval", run, "--split", "val", "--metrics", "loss", "--robustness", "1")
    assert code == 0, err
    assert "robust_val_loss" in table and "val_acc" not in table and "level" in table

    cases = {("--metrics", "r2"): "error: --metrics: 'r2' is not measured on classification data (its metrics: "
                                  "loss, acc, f1, ece, brier)",
             ("--metrics", "accc"): "error: --metrics: 'accc' is not measured on classification data; did you mean "
                                    "'acc'? (its metrics: loss, acc, f1, ece, brier)",
             ("--robustness", "0.1,x"): "error: --robustness: '0.1,x' is not a comma-separated list of levels >= 0, "
                                        "e.g. 0.1,0.3",
             ("--robustness", "-1"): "error: --robustness: '-1' is not a comma-separated list of levels >= 0, "
                                     "e.g. 0.1,0.3"}
    for args, message in cases.items():
        code, out, err = cli("eval", run, *args)
        assert (code, out, err.strip()) == (2, "", message), args
