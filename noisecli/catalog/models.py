"""The models a spec can name (`model.kind`), each with its own options and rules."""

from __future__ import annotations

import difflib
from typing import Optional

from noisecli.catalog.entry import IMAGE, TOKENS, VECTOR, Entry, Option, _python_options


DROPOUT = Option(float, 0.0, "dropout probability", ge=0, lt=1)
GRADIENT_CHECKPOINTING = Option(bool, False, "recompute each block's activations in the backward instead of "
                                             "keeping them (less memory, about a third more time; same result)")


LORA_OPTION = Option(Optional[dict], None, "{r: 8, alpha: 16, dropout: 0.0, targets: null, dora: false}: train "
                                           "LoRA (or DoRA) adapters through peft, the base frozen; targets null: "
                                           "peft's default for the model type (llama: [q_proj, v_proj]; gpt2 and "
                                           "gpt: [c_attn]); extra noisecli[lora]")


def _check_gpt(model, where: str, spec, problems: list[str]) -> None:
    if model.n_embd % model.n_head:
        problems.append(f"{where}.n_embd: {model.n_embd} must be a multiple of {where}.n_head ({model.n_head})")
    _check_lora(model, where, problems)


def _check_hf(model, where: str, spec, problems: list[str]) -> None:
    """What can be checked without importing transformers; the rest is checked when the model
    is built (and by `validate`), still before anything is written."""
    config_refused = any(p.startswith((f"{where}.config:", f"{where}.path:")) for p in problems)
    if model.path is None and model.config is None and not config_refused:
        problems.append(f"{where}.path: model kind 'hf' needs {where}.path (a local folder or cached name) "
                        f"or {where}.config (a transformers config to build a fresh model from)")
    elif model.path is not None and model.config is not None:
        problems.append(f"{where}.config: give {where}.path (pretrained weights) or {where}.config (a fresh "
                        "model), not both")
    if model.config is not None and not isinstance(model.config.get("model_type"), str):
        problems.append(f"{where}.config.model_type: required, the transformers model type (e.g. gpt2, llama)")
    from noisecli.catalog import DATASETS  # the package's table (it imports this module)

    dataset = DATASETS.get(spec.data.kind)
    reads_text = dataset is not None and "tokenizer" in dataset.options  # characters unless told otherwise
    if model.path is not None and reads_text and spec.data.tokenizer is None:
        problems.append(f"data.tokenizer: a pretrained model reads the token ids of its own tokenizer, not "
                        f"characters; set data.tokenizer (usually to {where}.path, {model.path!r})")
    _check_lora(model, where, problems)
    if model.dtype == "fp16" and model.lora is None:
        problems.append(f"{where}.dtype: fp16 weights train only under {where}.lora (the adapters stay fp32): AdamW "
                        "on fp16 weights underflows (its eps 1e-8 is 0 in fp16); use bf16, or fp32 weights with "
                        "train.precision: fp16")


LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": None, "dora": False}  # model.lora's keys and defaults
# peft's and other tools' names for the same keys, so a LoraConfig copied into a spec gets a did-you-mean
LORA_ALIASES = {"rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout",
                "target_modules": "targets", "use_dora": "dora"}


def _check_lora(model, where: str, problems: list[str]) -> None:
    """model.lora (hf and gpt), its defaults filled in."""
    if model.lora is not None:
        model.lora = _lora(model.lora, f"{where}.lora", problems)


def _lora(raw, where: str, problems: list[str]) -> dict:
    """model.lora with its defaults filled in (as the resolved spec shows it); a line per bad key."""
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of {', '.join(LORA)}; got {raw!r}")
        return raw
    for key in [k for k in raw if k not in LORA]:
        close = [LORA_ALIASES[key]] if key in LORA_ALIASES else difflib.get_close_matches(str(key), LORA, 1, 0.5)
        problems.append(f"{where}.{key}: unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
                        + f" (keys: {', '.join(LORA)})")
    full = {**LORA, **{k: v for k, v in raw.items() if k in LORA}}
    r, alpha, dropout, targets, dora = (full[k] for k in LORA)
    number = (int, float)
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        problems.append(f"{where}.r: the adapters' rank, a whole number >= 1; got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, number) or not alpha > 0:
        problems.append(f"{where}.alpha: the adapters' scale (alpha / r multiplies them), a number > 0; got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, number) or not 0 <= dropout < 1:
        problems.append(f"{where}.dropout: dropout on the adapters' input, a number in [0, 1); got {dropout!r}")
    listed = isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    if not (targets is None or targets == "all-linear" or listed):
        problems.append(f"{where}.targets: module names (or their last parts, e.g. [q_proj, v_proj]), all-linear, "
                        f"or null for peft's default for the model type; got {targets!r}")
    if not isinstance(dora, bool):
        problems.append(f"{where}.dora: true or false (DoRA: weight-decomposed adapters); got {dora!r}")
    return full


MODELS = {
    e.name: e
    for e in [
        Entry("linear", "one linear layer on the flattened input", "noisecli.models.mlp:build_linear",
              {}, frozenset({VECTOR})),
        Entry("mlp", "multi-layer perceptron (model.hidden, model.activation, model.dropout)",
              "noisecli.models.mlp:build_mlp", {
                  "hidden": Option(list[int], [256, 256], "hidden layer widths", ge=1),
                  "activation": Option(str, "relu", "relu | gelu | tanh", choices=("relu", "gelu", "tanh")),
                  "dropout": DROPOUT,
              }, frozenset({VECTOR})),
        Entry("cnn", "small convolutional net for small images such as digits (model.channels)",
              "noisecli.models.cnn:build_cnn", {
                  "dropout": DROPOUT,
                  "channels": Option(list[int], [16, 32], "channels of each 3x3 conv block", ge=1),
              }, frozenset({IMAGE})),
        Entry("gpt", "small causal transformer (model.n_layer, n_head, n_embd, dropout; context = data.block_size)",
              "noisecli.models.gpt:build_gpt", {
                  "dropout": DROPOUT,
                  "n_layer": Option(int, 4, "transformer blocks", ge=1),
                  "n_head": Option(int, 4, "attention heads", ge=1),
                  "n_embd": Option(int, 128, "embedding width (a multiple of n_head)", ge=1),
                  "bias": Option(bool, False, "bias in linear and layer-norm layers"),
                  "gradient_checkpointing": GRADIENT_CHECKPOINTING,
                  "lora": LORA_OPTION,
              }, frozenset({TOKENS}), check=_check_gpt),
        Entry("hf", "a transformers causal language model: local folder or cached name (model.path), or a "
                    "fresh one from a config (model.config); needs transformers",
              "noisecli.models.hf:build_hf", {
                  "path": Option(Optional[str], None, "a transformers model, as a local folder or a name already "
                                                      "in the local Hugging Face cache (nothing is downloaded)",
                                 path="local"),
                  "config": Option(Optional[dict], None, "build a fresh model from a transformers config instead: "
                                                         "model_type plus that config's keys, e.g. "
                                                         "{model_type: gpt2, n_layer: 2}"),
                  "trust_remote_code": Option(bool, False, "run Python code shipped in the model's folder "
                                                           "(never implied)"),
                  "dropout": Option(Optional[float], None, "set every dropout probability of the config (each "
                                                           "field named *dropout* or *pdrop*: gpt2's resid/embd/"
                                                           "attn_pdrop, llama's attention_dropout, ...); null: the "
                                                           "config's own", ge=0, lt=1),
                  "dtype": Option(str, "fp32", "the weights' precision: fp32 | bf16 (weights and AdamW state "
                                               "in bf16; under model.lora the frozen base alone, the adapters and "
                                               "their AdamW state stay fp32) | fp16 (only under model.lora)",
                                  choices=("fp32", "bf16", "fp16")),
                  "lora": LORA_OPTION,
                  "gradient_checkpointing": GRADIENT_CHECKPOINTING,
              }, frozenset({TOKENS}), check=_check_hf),
        Entry("python", "your own model: a Python function (model.target) returning a torch.nn.Module whose "
                        "forward(x) gives logits or predictions like the built-in models",
              "noisecli.models.python:build_python",
              _python_options("an nn.Module; it also receives whichever of n_inputs, n_outputs, task, vocab_size, "
                              "block_size its signature names")),
    ]
}
