"""`hf`: a transformers causal language model, pretrained from local files or fresh from a config.

The model is wrapped so the trainer sees what it sees from `gpt`: token ids in, logits out,
and `get_input_embeddings()` for the embedding noise. Weights are in `model.dtype` (fp32 by
default: precision then comes from autocast, as for every model), and `trust_remote_code` is
only ever what the spec says.
"""

from __future__ import annotations

import json
import re

import torch
from torch import nn

from noisecli.data import Dataset
from noisecli.errors import SpecError
from noisecli.hub import import_transformers, load_local, reason
from noisecli.spec import ModelSpec, Spec, suggest


class HFCausalLM(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx, use_cache=False).logits  # (B, T, vocab)


def _fresh_config(transformers, spec: ModelSpec, vocab_size: int | None):
    """The config named by model.config, every key checked against that model type's own;
    the vocabulary is the data's unless the config names one."""
    options = dict(spec.config)
    model_type = options.pop("model_type")
    try:
        default = transformers.AutoConfig.for_model(model_type)
    except ValueError:
        hint = suggest(model_type, transformers.CONFIG_MAPPING.keys()) or " (a transformers model type such as gpt2)"
        raise SpecError(f"model.config.model_type: unknown {model_type!r}{hint}") from None
    valid = set(default.to_dict()) | set(getattr(default, "attribute_map", {}))
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise SpecError([f"model.config.{k}: not a key of the {model_type} config{suggest(k, valid)}"
                         for k in unknown])
    if vocab_size is not None:
        options.setdefault("vocab_size", vocab_size)
    try:
        config = transformers.AutoConfig.for_model(model_type, **options)
    except Exception as e:  # noqa: BLE001 - transformers' own checks of the values (types, shapes)
        field = re.search(r"field '(\w+)'", str(e))
        where = f"model.config.{field.group(1)}" if field and field.group(1) in options else "model.config"
        raise SpecError(f"{where}: {reason(e)}") from None
    if type(config) not in transformers.MODEL_FOR_CAUSAL_LM_MAPPING:
        raise SpecError(f"model.config.model_type: {model_type!r} has no causal language model in transformers")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # GPT-2's 50256 means nothing here
        value = getattr(config, key, None)
        if isinstance(value, int) and value >= config.vocab_size:
            setattr(config, key, None)
    return config


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # model.dtype

DROPOUT_WORDS = ("dropout", "pdrop")  # how transformers' configs name their dropout probabilities


def set_dropout(config, p: float | None) -> list[str]:
    """model.dropout: every float field of the config named like a dropout probability set to p
    (gpt2: resid_pdrop, embd_pdrop, attn_pdrop, ...; llama: attention_dropout); the fields set."""
    if p is None:
        return []
    keys = [k for k, v in config.to_dict().items()
            if any(w in k for w in DROPOUT_WORDS) and isinstance(v, float) and not isinstance(v, bool)]
    if not keys:
        raise SpecError(f"model.dropout: the {config.model_type} config has no dropout field to set")
    for k in keys:
        setattr(config, k, float(p))
    return keys


def build_hf(spec: ModelSpec, ds: Dataset) -> nn.Module:
    transformers = import_transformers("model.kind: 'hf'")
    auto = transformers.AutoModelForCausalLM
    if spec.config is not None:
        config = _fresh_config(transformers, spec, ds.n_outputs)
        set_dropout(config, spec.dropout)
        try:
            model = auto.from_config(config, trust_remote_code=spec.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - values the config accepted but the model cannot use
            raise SpecError(f"model.config: transformers cannot build this {config.model_type}: {reason(e)}") from None
        where = "model.config"
    else:
        trust = (spec.path, "model.path", spec.trust_remote_code, "model.trust_remote_code")
        config = {}
        if spec.dropout is not None:  # dropout modules read p when built: the config first, then the weights
            config = {"config": load_local(transformers.AutoConfig, *trust)}
            set_dropout(config["config"], spec.dropout)
        model = load_local(auto, *trust, **config)
        where = "model.path"
    model = model.to(DTYPES[spec.dtype])  # the config's or the checkpoint's own dtype never decides
    if spec.gradient_checkpointing:
        _checkpoint_layers(model)
    vocab = model.get_input_embeddings().num_embeddings
    if ds.n_outputs > vocab:
        raise SpecError(f"{where}: the model has {vocab} token embeddings but the data has {ds.n_outputs} "
                        "token ids; use the model's own tokenizer (data.tokenizer) or a larger vocab_size")
    context = getattr(model.config, "max_position_embeddings", None)
    if isinstance(context, int) and ds.block_size is not None and ds.block_size > context:
        key = "data.max_length" if ds.task == "sft" else "data.block_size"  # sft pads to max_length
        raise SpecError(f"{key}: {ds.block_size} is longer than the model's context ({context}); "
                        f"lower {key}" + (" or raise the config's context length" if spec.config is not None else ""))
    return HFCausalLM(model)


def _checkpoint_layers(model: nn.Module) -> None:
    """model.gradient_checkpointing: each decoder layer recomputed in the backward, non-reentrant
    (the reentrant kind leaves parameters without gradients when no input of a layer needs one),
    no KV cache (the forward asks for none either). transformers 5 checkpoints a layer's forward,
    not its __call__, so hooks on the layers (activation noise's default targets) run once."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise SpecError(f"model.gradient_checkpointing: transformers' {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # its name since transformers 5.x (the old one warns)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def check_hf_models(specs: list[Spec]) -> None:
    """For `validate` and a sweep's plan: what can be checked of each distinct hf model without
    data or weights (the config's keys and values, or that model.path holds a loadable config),
    so a typo in model.config is found before any run starts rather than by every point."""
    problems: list[str] = []
    seen = set()
    for spec in specs:
        m = spec.model
        if m.kind != "hf":  # a sweep may compare hf with other kinds: only hf models are checked here
            continue
        key = json.dumps([m.path, m.config, m.trust_remote_code], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        transformers = import_transformers("model.kind: 'hf'")
        try:
            if m.config is not None:
                _fresh_config(transformers, m, None)
            else:
                load_local(transformers.AutoConfig, m.path, "model.path", m.trust_remote_code,
                           "model.trust_remote_code")
        except SpecError as e:
            problems += [p for p in e.problems if p not in problems]
    if problems:
        raise SpecError(problems)
