"""`model.kind: python`: the user's own nn.Module, from the function `model.target` names.

The function gets `model.args` as keyword arguments, plus whichever of n_inputs, n_outputs,
task, vocab_size and block_size its signature names. What it returns must be an nn.Module
whose forward(x) gives what the built-in models give: (B, n_outputs) for tables, (B, T,
vocab_size) for text. That is checked on two training examples before anything is written,
so a wrong model is one error line, not a failure at step 1.
"""

from __future__ import annotations

import torch
from torch import nn

from noisecli.code import call, load_function, user_failure
from noisecli.data import Dataset
from noisecli.errors import SpecError
from noisecli.spec import ModelSpec


def build_python(spec: ModelSpec, ds: Dataset) -> nn.Module:
    offered = {"n_inputs": ds.n_features, "n_outputs": ds.n_outputs, "task": ds.task,
               "vocab_size": ds.n_outputs if ds.is_tokens else None, "block_size": ds.block_size}
    model = call(load_function(spec.target, "model.target"), spec.target, "model.target", spec.args, offered)
    if not isinstance(model, nn.Module):
        raise SpecError(f"model.target: {spec.target} returned {type(model).__name__}, not a torch.nn.Module")
    _check_forward(model, spec.target, ds)
    return model


@torch.no_grad()
def _check_forward(model: nn.Module, target: str, ds: Dataset) -> None:
    if ds.is_stream:
        x = torch.stack([ds.x_train[i: i + ds.block_size] for i in (0, 1)])  # (2, T)
        expected = (2, ds.block_size, ds.n_outputs)
    elif ds.is_tokens:
        x = ds.x_train[:2]  # (2, T) padded examples
        expected = (2, ds.block_size, ds.n_outputs)
    else:
        x = ds.x_train[:2]
        expected = (2, ds.n_outputs)
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    except Exception as e:  # noqa: BLE001 - the user's forward failing is their input to fix
        raise user_failure(f"model.target: {target}: forward on 2 training examples of shape {tuple(x.shape)} "
                           "failed:", e) from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise SpecError(f"model.target: {target}: forward on 2 training examples returned {got}; expected "
                        f"a tensor of shape {expected} ({'logits over the vocabulary' if ds.is_tokens else ds.task})")
