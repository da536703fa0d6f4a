"""The resolved spec as a plain mapping: written out, read back, and compared.

A run folder's spec.yaml is `dump_yaml(spec_to_dict(spec))`, every default filled in;
`canonical`, `flatten` and `spec_diff` say which settings shape a result and which differ,
for resuming a run, naming a sweep's points and grouping runs in reports.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml

from noisecli.spec.raw import load_yaml
from noisecli.spec.sections import KindSection, Spec, TrainSpec, _public_fields, noise_entries


def _section_dict(obj) -> dict:
    """A section as the resolved spec writes it: its shared keys, then its kind's options."""
    out = {f.name: copy.deepcopy(getattr(obj, f.name)) for f in _public_fields(obj)}
    if isinstance(obj, KindSection):
        out.update(copy.deepcopy(obj.options))
    if isinstance(obj, TrainSpec) and obj.epochs == math.inf:  # max_steps alone bounds the run: `epochs: null`
        out["epochs"] = None
    return out


def spec_to_dict(spec: Spec) -> dict:
    """The resolved spec, every default filled in; loads back to an equal Spec."""
    noise = [_section_dict(n) for n in spec.noise]
    return {
        "name": spec.name,
        "seed": spec.seed,
        "device": spec.device,
        "data": _section_dict(spec.data),
        "model": _section_dict(spec.model),
        "noise": noise[0] if len(noise) == 1 else noise,
        "train": _section_dict(spec.train),
        "output": _section_dict(spec.output),
        "eval": _section_dict(spec.eval),
    }



def canonical(d: dict, keep_seed: bool = True) -> dict:
    """A resolved spec reduced to what shapes the result: without its name and device (a run
    may move), without the factor of `none` (it cannot matter), and with `keep_seed=False`
    without its seed (what makes runs of one configuration). Sweeps name points by it, and
    reports group runs by it."""
    d = copy.deepcopy(d)
    for key in ("name", "device") + (() if keep_seed else ("seed",)):
        d.pop(key, None)
    entries = [{"kind": "none"} if e.get("kind") == "none" else e for e in noise_entries(d)]
    d["noise"] = entries[0] if len(entries) == 1 else entries
    return d


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of mappings are indexed (noise.0.kind)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = d
    return out


def spec_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that differs; the name and the device do not count
    (a run may be resumed under another name or on another device), nor the factor of `none`
    (it cannot matter; a run of before per-kind default factors saved 0.01 there, now 0)."""
    a, b = flatten(without_none_factor(old)), flatten(without_none_factor(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in ("name", "device") and a.get(k) != b.get(k)]


def without_none_factor(d: dict) -> dict:
    """`d` with the factor of each `none` noise entry left out, every other key where it was."""
    noise = d.get("noise")
    if not isinstance(noise, (dict, list)):
        return d
    entries = [{k: v for k, v in e.items() if k != "factor"} if isinstance(e, dict) and e.get("kind") == "none"
               else e for e in (noise if isinstance(noise, list) else [noise])]
    return {**d, "noise": entries if isinstance(noise, list) else entries[0]}


def read_saved_spec(path: Path, upgrade: bool = True) -> dict | None:
    """A run folder's spec.yaml as a mapping, or None when it is missing or damaged; read as
    what it trained (`upgrade_saved`), or with `upgrade=False` as written (to tell a file cut
    short from one an older noisecli wrote whole)."""
    try:
        old = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(old, dict):
        return None
    return upgrade_saved(old) if upgrade else old


# keys added after runs were saved without them: (section, key, the value that trained as those
# runs did); a saved section that lacks one reads it so, and resumes and sweeps see no change
ADDED_KEYS = (("data", "test_fraction", 0.0),  # no test split before there was one (today's default: 0.2)
              ("train", "label_smoothing", 0.0), ("train", "mixup", None), ("train", "grad_accum", 1),
              ("model", "init", None), ("model", "init_sha256", None))
# a model kind's options added since it was first saved, with what a run saved without them trained as
MODEL_ADDED = {"hf": {"dropout": None, "lora": None, "dtype": "fp32", "gradient_checkpointing": False},
               "gpt": {"gradient_checkpointing": False, "lora": None}}


def upgrade_saved(d: dict) -> dict:
    """A spec saved by an older noisecli, read as what it trained (ADDED_KEYS): a data section
    without `test_fraction` was split without a test split (0), not with today's default; one
    without label smoothing, mixup or accumulation trained without them; an hf model without
    `dropout` kept its config's own, in fp32, without LoRA (MODEL_ADDED); sft data and embedding
    noise without the keys of SFT_ADDED and EMBEDDING_ADDED trained as those values say."""
    for section, key, value in ADDED_KEYS:
        part = d.get(section)
        if isinstance(part, dict) and key not in part:
            d = {**d, section: {**part, key: value}}
    model = d.get("model")
    if isinstance(model, dict) and model.get("kind") in MODEL_ADDED:
        added = MODEL_ADDED[model["kind"]]
        d = {**d, "model": {**model, **{k: v for k, v in added.items() if k not in model}}}
    return _upgrade_sft(d)


# sft data and embedding noise saved before these keys: no EOS or BOS, prompt and response
# tokenized apart, the last assistant message scored; the noise on every position, NEFTune's scale
SFT_ADDED = {"eos": False, "bos": False, "template": None, "tokenize": "separate", "loss_on": "last"}
EMBEDDING_ADDED = {"on": "all", "scale": "absolute"}


def _upgrade_sft(d: dict) -> dict:
    data = d.get("data")
    if isinstance(data, dict) and data.get("kind") == "sft":
        d = {**d, "data": {**data, **{k: v for k, v in SFT_ADDED.items() if k not in data}}}
    noise = d.get("noise")
    if isinstance(noise, (dict, list)):
        entries = [{**e, **{k: v for k, v in EMBEDDING_ADDED.items() if k not in e}}
                   if isinstance(e, dict) and e.get("kind") == "embedding" else e
                   for e in (noise if isinstance(noise, list) else [noise])]
        d = {**d, "noise": entries if isinstance(noise, list) else entries[0]}
    return d


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
