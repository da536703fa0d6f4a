"""`model.lora`: LoRA (or DoRA) adapters over an hf or gpt model's frozen base, through peft.

peft's `get_peft_model` wraps the transformers model, and the wrapper stays inside noisecli's
`HFCausalLM`, so the trainer sees what it sees without LoRA: token ids in, logits out, and
`get_input_embeddings()` (peft hands it the base's embedding, where NEFTune hooks). Only the
adapters require grad, so the optimizer, gradient noise and clipping see only them.

noisecli's own `gpt` goes through peft's custom-model path (`task_type=None`: a plain
`PeftModel` over any nn.Module) inside `LoRAGPT`, which keeps gpt's face: ids in, logits out,
the base's `wte` as the input embedding, its `block_size`. Its default targets are GPT-2's in
peft, `c_attn` (each block's fused q, k, v projection); `all-linear` is every linear layer but
the output head (`c_attn`, `c_proj`, `c_fc`), the head being the tied input embedding. Its
blocks keep `checkpointed` (gradient checkpointing) under peft: the adapters inside a block are
recomputed with it. `model.init` loads the source's weights into the plain gpt before this
module adds the adapters (models/__init__.py), so the frozen base is the pretrained model.

Names gain peft's prefix: `model.base_model.model.` and then the transformers (or gpt) names, and each
adapted layer holds `base_layer` (the frozen original), `lora_A.default` and `lora_B.default`
(DoRA also `lora_magnitude_vector.default`). Noise defaults follow (noise/params.py,
noise/activation.py): weight and anticorrelated noise on the trainable weight matrices (the
adapters' A and B), activation noise on the transformer blocks; globs name peft's names.

The adapters are fp32 whatever `model.dtype` is (the base alone is cast), as QLoRA-style
training keeps them. A checkpoint holds the trainable tensors alone (`trainable_only`,
engine/state.py): the frozen base is rebuilt from the spec (model.path's files, model.config or
gpt's options under the run's seed, model.init's source) on resume, `eval` and `export`.
"""

from __future__ import annotations

import warnings

from torch import nn

from noisecli.errors import SpecError
from noisecli.hub import reason
from noisecli.models.gpt import GPT
from noisecli.models.hf import HFCausalLM
from noisecli.spec import ModelSpec, suggest


class LoRACausalLM(HFCausalLM):
    """HFCausalLM over a peft model: its checkpoints hold the trainable tensors only."""

    trainable_only = True


def import_peft():
    try:
        import peft
    except ImportError:
        raise SpecError("model.lora: needs the peft package; install it with pip install 'noisecli[lora]'") from None
    return peft


class LoRAGPT(nn.Module):
    """A gpt under peft: what the trainer sees from a gpt, its checkpoints the trainable tensors only."""

    trainable_only = True

    def __init__(self, model: nn.Module, block_size: int):
        super().__init__()
        self.model = model
        self.block_size = block_size  # the context: `eval --generate` reads it as from a gpt

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()  # peft hands over the base's wte

    def forward(self, idx):
        return self.model(idx)  # (B, T, vocab)


# gpt's targets: null is GPT-2's default in peft; all-linear leaves out lm_head (the tied embedding)
GPT_TARGETS = {None: ["c_attn"], "all-linear": ["c_attn", "c_proj", "c_fc"]}


def add_lora(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """The hf model (an HFCausalLM) or the gpt with adapters on `model.lora.targets`, the rest frozen."""
    if not isinstance(model, (HFCausalLM, GPT)):
        raise SpecError(f"model.lora: adapters are added to model.kind 'hf' and 'gpt' only, not {spec.kind!r}")
    peft = import_peft()
    options = spec.lora
    base = model.model if isinstance(model, HFCausalLM) else model
    targets = options["targets"]
    if isinstance(model, GPT) and not isinstance(targets, list):  # null or all-linear: gpt's names for them
        targets = GPT_TARGETS[targets]
    if isinstance(targets, list):
        _check_targets(base, targets, spec.kind)
    config = peft.LoraConfig(r=options["r"], lora_alpha=options["alpha"], lora_dropout=options["dropout"],
                             target_modules=targets, use_dora=options["dora"],
                             task_type="CAUSAL_LM" if isinstance(model, HFCausalLM) else None)
    wrapped = _peft_model(peft, base, config, options["targets"])
    for p in wrapped.parameters():
        if p.requires_grad:  # adapters in fp32 under a bf16/fp16 base (peft's default already; made sure)
            p.data = p.data.float()
    return LoRACausalLM(wrapped) if isinstance(model, HFCausalLM) else LoRAGPT(wrapped, model.block_size)


def _peft_model(peft, base: nn.Module, config, asked) -> nn.Module:
    """peft's get_peft_model, its refusals as one line naming model.lora.targets."""
    with warnings.catch_warnings():  # peft's notes (it sets Conv1D's fan_in_fan_out itself) would clutter the display
        warnings.simplefilter("ignore")
        try:
            return peft.get_peft_model(base, config)
        except ValueError as e:  # no default targets for this model type, a layer peft cannot adapt
            if asked is None:
                raise SpecError(f"model.lora.targets: peft has no default for model type "
                                f"{base.config.model_type!r}; name the layers to adapt (its layers: "
                                f"{', '.join(_layers(base)[:12])})") from None
            raise SpecError(f"model.lora.targets: {reason(e)}") from None


def _check_targets(model: nn.Module, targets: list[str], kind: str) -> None:
    """Each target names some module (as peft matches them: the whole name or its last parts)."""
    names = [n for n, _ in model.named_modules() if n]
    leaves = _layers(model)
    what = model.config.model_type if kind == "hf" else kind
    problems = []
    for t in targets:
        if not any(n == t or n.endswith(f".{t}") for n in names):
            problems.append(f"model.lora.targets: {t!r} names no module of this {what}"
                            f"{suggest(t, leaves)} (its layers: {', '.join(leaves[:12])})")
    if problems:
        raise SpecError(problems)


def _layers(model: nn.Module) -> list[str]:
    """The last parts of the names of the model's layers with weights (q_proj, c_attn, ...)."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                   if n and not list(m.children()) and "weight" in m._parameters})
