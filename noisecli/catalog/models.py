"""The models a spec can name (`model.kind`), each with its own options and rules."""

from __future__ import annotations

from typing import Optional

from noisecli.catalog.entry import IMAGE, TOKENS, VECTOR, Entry, Option, _python_options


DROPOUT = Option(float, 0.0, "dropout probability", ge=0, lt=1)
GRADIENT_CHECKPOINTING = Option(bool, False, "recompute each block's activations in the backward instead of "
                                             "keeping them (less memory, about a third more time; same result)")


def _check_gpt(model, where: str, spec, problems: list[str]) -> None:
    if model.n_embd % model.n_head:
        problems.append(f"{where}.n_embd: {model.n_embd} must be a multiple of {where}.n_head ({model.n_head})")


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
                  "dtype": Option(str, "fp32", "the weights' precision: fp32 | bf16 (bf16 weights, fp32 AdamW "
                                               "state) | fp16", choices=("fp32", "bf16", "fp16")),
                  "lora": Option(Optional[dict], None, "{r: 8, alpha: 16, dropout: 0.0, targets: [q_proj, v_proj], "
                                                       "dora: false}: train LoRA (or DoRA) adapters through peft, the "
                                                       "base frozen (extra noisecli[lora])"),
                  "gradient_checkpointing": GRADIENT_CHECKPOINTING,
              }, frozenset({TOKENS}), check=_check_hf),
        Entry("python", "your own model: a Python function (model.target) returning a torch.nn.Module whose "
                        "forward(x) gives logits or predictions like the built-in models",
              "noisecli.models.python:build_python",
              _python_options("an nn.Module; it also receives whichever of n_inputs, n_outputs, task, vocab_size, "
                              "block_size its signature names")),
    ]
}
