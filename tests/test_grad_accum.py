"""train.grad_accum: K micro-batches per optimizer step take the step one batch takes, for every
noise kind (the draws of forward kinds made for the whole batch, each micro-batch keeping its
rows), with label smoothing and mixup, on classification, language-model and instruction data."""

import json

import pytest
import torch

from noisecli.spec import load_spec
from noisecli.trainer import train_run
from tests.conftest import TINY, metrics_rows, write_spec
from tests.test_sft import EXAMPLES, GPT

STEPS = 6
DIGITS = {**TINY, "train": {"max_steps": STEPS, "batch_size": 16, "lr": 3e-3, "eval_every": 3}}
MARKOV = {"data": {"kind": "markov", "block_size": 16, "n_tokens": 4000}, "model": GPT,
          "train": {"max_steps": STEPS, "batch_size": 8, "lr": 3e-3, "eval_every": 3, "eval_batches": 2}}
SFT = {"data": {"kind": "sft", "path": "instructions.jsonl"}, "model": GPT,
       "train": {"max_steps": STEPS, "batch_size": 8, "lr": 3e-3, "eval_every": 3}}

CASES = {
    "none": (DIGITS, {"kind": "none"}, {}),
    "input": (DIGITS, {"kind": "input", "factor": 0.3}, {}),
    "weight": (DIGITS, {"kind": "weight", "factor": 0.05}, {}),
    "activation-mlp": (DIGITS, {"kind": "activation", "factor": 0.2}, {}),
    "gradient": (DIGITS, {"kind": "gradient", "factor": 0.01}, {}),
    "anticorrelated": (DIGITS, {"kind": "anticorrelated", "factor": 0.01}, {}),
    "smoothing+mixup": (DIGITS, {"kind": "input", "factor": 0.1}, {"label_smoothing": 0.1, "mixup": {"alpha": 0.4}}),
    "token": (MARKOV, {"kind": "token", "factor": 0.1}, {}),
    "embedding-lm": (MARKOV, {"kind": "embedding", "factor": 5}, {}),
    "activation-gpt": (MARKOV, {"kind": "activation", "factor": 0.1}, {}),
    "embedding-sft-batch": (SFT, {"kind": "embedding", "factor": 5, "length": "batch", "on": "response"}, {}),
    "embedding-sft-example": (SFT, [{"kind": "embedding", "factor": 5}, {"kind": "token", "factor": 0.1}], {}),
}
# micro-batches of unequal rows: 16 rows in 3 (6, 5, 5); 36 instruction examples in batches of 8
# end each epoch with 4 rows, in 3 (2, 1, 1), the loss still the mean over the batch's response tokens
UNEVEN = {"activation-mlp": 3, "embedding-sft-batch": 3}


def train(tmp_path, base: dict, noise, train: dict, k: int):
    folder = tmp_path / f"k{k}"
    folder.mkdir()
    (folder / "instructions.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EXAMPLES))
    spec = write_spec(folder, {**base, "name": "r", "noise": noise,
                               "train": {**base["train"], **train, "grad_accum": k}})
    train_run(load_spec(spec), folder / "runs", quiet=True)
    run = folder / "runs" / "r"
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"], metrics_rows(run)


@pytest.mark.parametrize("case,k", [(c, 2) for c in CASES] + list(UNEVEN.items()),
                         ids=list(CASES) + [f"{c}-k{k}" for c, k in UNEVEN.items()])
def test_micro_batches_take_the_step_one_batch_takes(tmp_path, case, k):
    base, noise, extra = CASES[case]
    one, rows_one = train(tmp_path, base, noise, extra, 1)
    two, rows_two = train(tmp_path, base, noise, extra, k)
    for name, w in one.items():
        assert torch.allclose(two[name].float(), w.float(), atol=1e-5, rtol=1e-4), name
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one] == [3, 6]
    for a, b in zip(rows_one, rows_two):  # the logged train loss is the whole batch's mean
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5, abs=1e-6)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5, abs=1e-6)


def test_the_noise_a_forward_kind_adds_differs_between_micro_batches_as_between_rows(tmp_path):
    """Not a trivial equality: with noise the weights move away from the noiseless run's, and four
    micro-batches still give the one-batch result (each keeps its own rows of the whole draw)."""
    base, noise, _ = CASES["activation-mlp"]
    one, _ = train(tmp_path, base, noise, {}, 1)
    four, _ = train(tmp_path, base, noise, {}, 4)
    clean, _ = train(tmp_path, base, {"kind": "none"}, {}, 8)
    for name, w in one.items():
        assert torch.allclose(four[name], w, atol=1e-5, rtol=1e-4), name
    assert max((clean[n] - w).abs().max().item() for n, w in one.items()) > 1e-3


def test_more_micro_batches_than_examples_is_refused_in_one_line(tmp_path, cli):
    spec = write_spec(tmp_path, {**DIGITS, "name": "r", "train": {**DIGITS["train"], "grad_accum": 32}})
    code, out, err = cli("train", str(spec))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train.batch_size: 16 examples cannot fill train.grad_accum 32 micro-batches; lower grad_accum" in err
    assert not (tmp_path / "runs" / "r").exists()


def test_accumulating_points_of_a_batched_sweep_train_one_after_another(tmp_path):
    from noisecli.spec import spec_from_dict
    from noisecli.stacks import batch_key

    spec = spec_from_dict({**DIGITS, "name": "r", "train": {**DIGITS["train"], "grad_accum": 2}})
    assert batch_key(spec) == (None, "train.grad_accum: accumulating runs are trained one after another")
    assert not (tmp_path / "runs" / "r").exists()
