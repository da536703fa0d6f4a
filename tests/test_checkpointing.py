"""`model.gradient_checkpointing`: the blocks' activations recomputed in the backward, and the
training the same as without it, step by step, for gpt and a tiny hf Llama, with and without
noise acting inside the forward (embedding, activation) or on the weights."""

import pytest
import torch

from noisecli.data import load_dataset
from noisecli.models import build_model
from noisecli.spec import load_spec
from tests.conftest import assert_same_curves, metrics_rows, write_spec
from tests.test_train import train_run

pytest.importorskip("transformers")

DATA = {"kind": "markov", "block_size": 16, "n_tokens": 4000}
TRAIN = {"max_steps": 6, "batch_size": 8, "lr": 3e-3, "eval_every": 3, "eval_batches": 2}
GPT = {"kind": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "dropout": 0.0}
LLAMA = {"kind": "hf", "config": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
                                  "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
                                  "max_position_embeddings": 64}}
MODELS = {"gpt": GPT, "llama": LLAMA}
# inside a block: modules the recomputation runs again, their hooks with them (torch stops the
# recomputation once it has what the backward needs, so a block's last module may not rerun)
INNER = {"gpt": ["h.*.attn"], "llama": ["model.model.layers.*.self_attn"]}
NOISES = {"none": {"kind": "none"}, "embedding": {"kind": "embedding", "factor": 5.0},
          "weight": {"kind": "weight", "factor": 0.01}, "activation": {"kind": "activation", "factor": 0.3}}


def spec(model: dict, noise: dict, checkpointing: bool, name: str = "r") -> dict:
    return {"name": name, "data": DATA, "model": {**model, "gradient_checkpointing": checkpointing},
            "noise": noise, "train": TRAIN}


def assert_same_training(tmp_path, model: dict, noise: dict) -> None:
    """Trained with and without checkpointing: every row's losses and the final weights agree."""
    runs = []
    for on in (False, True):
        path = write_spec(tmp_path, spec(model, noise, on), f"spec-{on}.yaml")
        runs.append(train_run(path, tmp_path / f"runs-{on}"))
    off, on = runs
    assert on.spec.model.gradient_checkpointing and not off.spec.model.gradient_checkpointing
    assert_same_curves(off.state.rows, on.state.rows, rel=1e-6)
    a, b = off.raw_model.state_dict(), on.raw_model.state_dict()
    assert a.keys() == b.keys()  # the option adds no module: checkpoints of either load into the other
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)


@pytest.mark.parametrize("noise", ["none", "embedding", "weight", "activation"])
@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_checkpointing_trains_as_without_it(tmp_path, model, noise):
    assert_same_training(tmp_path, MODELS[model], NOISES[noise])


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_activation_noise_inside_the_recomputed_blocks_is_drawn_once(tmp_path, model):
    """Hooks on modules inside a block run again when the block is recomputed: the noise they add
    must be the first forward's, not a second draw (noise/base.py keeps it)."""
    noise = {"kind": "activation", "factor": 0.3, "targets": INNER[model]}
    assert_same_training(tmp_path, MODELS[model], noise)


def test_gpt_dropout_masks_are_redrawn_the_same_in_the_recomputation(tmp_path):
    assert_same_training(tmp_path, {**GPT, "dropout": 0.2}, NOISES["none"])


def forward_calls(tmp_path, model: dict, checkpointing: bool, train: bool) -> int:
    """How often the first block's MLP starts in one forward and backward."""
    s = load_spec(write_spec(tmp_path, spec(model, NOISES["none"], checkpointing)))
    net = build_model(s.model, load_dataset(s.data))
    mlp = next(m for n, m in net.named_modules() if n.endswith(("h.0.mlp", "layers.0.mlp")))
    calls = []
    mlp.register_forward_pre_hook(lambda *_: calls.append(1))
    net.train(train)
    net(torch.randint(0, 16, (2, 16))).sum().backward()
    return len(calls)


@pytest.mark.parametrize("model", ["gpt", "llama"])
def test_the_blocks_are_recomputed_in_training_only(tmp_path, model):
    assert forward_calls(tmp_path, MODELS[model], False, train=True) == 1
    assert forward_calls(tmp_path, MODELS[model], True, train=True) == 2  # the forward, then the recomputation
    assert forward_calls(tmp_path, MODELS[model], True, train=False) == 1  # eval mode keeps its activations


def test_hf_checkpointing_keeps_the_cache_off(tmp_path):
    s = load_spec(write_spec(tmp_path, spec(LLAMA, NOISES["none"], True)))
    net = build_model(s.model, load_dataset(s.data))
    assert net.model.config.use_cache is False
    assert all(layer.gradient_checkpointing for layer in net.model.model.layers)


def test_a_batched_sweep_of_checkpointed_points_trains_as_without_it(tmp_path, cli):
    """torch's checkpoint cannot run under vmap: a stack's forward is not recomputed, the result the same."""
    rows = {}
    for on in (False, True):
        sweep = write_spec(tmp_path, {"name": f"sw-{on}", "base": spec(GPT, NOISES["embedding"], on),
                                      "grid": {"noise.factor": [1.0, 5.0]}}, f"sweep-{on}.yaml")
        code, out, err = cli("sweep", sweep, "--runs-dir", tmp_path / "runs", "--batched", "--quiet")
        assert code == 0, err
        rows[on] = [metrics_rows(p) for p in sorted((tmp_path / "runs" / f"sw-{on}").glob("*/"))
                    if (p / "metrics.jsonl").exists()]
    assert len(rows[True]) == 2
    for off, on in zip(rows[False], rows[True]):
        assert_same_curves(off, on, rel=1e-6)
