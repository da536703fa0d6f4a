"""Stacks for `sweep --batched`: which of a sweep's points train together as one stack.

Points whose specs differ only in their noise factors and seed train as one vmapped stack
(`batched.train_group`); the rest train alone, each with the reason said once. A point without
noise (`none`, which every kind at factor 0 becomes) joins a stack of noise points on the same
base where there is room: it has no hooks to run, and one stack of 16 costs about what one of
12 does, where a separate stack of its own would pay the whole per-step cost again. Which points
can share a stack is a question of their specs alone, apart from how a plan is made (`sweep`);
--dry-run and the runner both ask it here. `plural`, the counting word of these notes, is the
sweep's other messages' too, as are the lines about overrides on a sweep (`lost_overrides`, `about`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from noisecli.spec import Spec, canonical, spec_to_dict

UNBATCHED = {
    "python": "model.kind python: trained one after another (its forward is not known to run under "
              "torch.func.vmap)",
}

# transformers architectures (model.kind hf) whose members, stacked through functional_call under
# vmap, train as their points alone: tests/test_batched.py checks llama and gpt2 for the kinds that
# act inside the forward and on the weights; gpt_neox, mistral and qwen2 passed the same check by
# hand (2026-12-02, embedding noise). opt, phi3 and gemma ran but their members' curves left the
# 1e-3 of their points alone, so they, and every architecture not checked, train one after another.
STACKED_HF = ("gpt2", "gpt_neox", "llama", "mistral", "qwen2")


def batch_key(spec: Spec, alone: Callable[[Spec], str | None] | None = None) -> tuple[str | None, str]:
    """Points with the same key train as one stack: the same spec but for the noise factors and
    the seed. (None, why) for a point that trains alone; `alone` may give more reasons (the
    engine's: a noise kind that cannot be stacked), so this module needs no engine."""
    why = alone(spec) if alone else None
    if why:
        return None, why
    if spec.model.kind in UNBATCHED:
        return None, UNBATCHED[spec.model.kind]
    if spec.model.kind == "hf":
        model_type = _hf_model_type(spec.model)
        if spec.model.trust_remote_code or model_type not in STACKED_HF:
            what = "its own code" if spec.model.trust_remote_code else f"model type {model_type!r}"
            return None, (f"model.kind hf ({what}): trained one after another (stacks are verified for "
                          f"{', '.join(STACKED_HF)}: each member trains as its point alone)")
    if spec.model.lora is not None:
        return None, ("model.lora: trained one after another (a stack holds the trained tensors alone, so every "
                      "member would share the first one's frozen base; peft's forward is not known to run under "
                      "torch.func.vmap)")
    if spec.train.grad_accum > 1:
        return None, "train.grad_accum: accumulating runs are trained one after another"
    if spec.train.compile:
        return None, "train.compile: compiled runs are trained one after another"
    if spec.train.precision == "fp16":
        return None, "train.precision fp16: one loss scale would couple the members; trained one after another"
    d = canonical(spec_to_dict(spec), keep_seed=False)
    for entry in d["noise"] if isinstance(d["noise"], list) else [d["noise"]]:
        entry.pop("factor", None)
    d["device"] = spec.device
    return json.dumps(d, sort_keys=True, default=str), ""


def _base_key(key: str) -> str:
    """A stack key without its noise: what a `none` point must share with a stack it joins."""
    d = json.loads(key)
    d.pop("noise")
    return json.dumps(d, sort_keys=True)


def _noiseless(spec: Spec) -> bool:
    return all(entry.kind == "none" for entry in spec.noise)


def _hf_model_type(model) -> str | None:
    """An hf model's `model_type`: from model.config for a fresh model, else from the config.json
    of model.path's folder (a name in the Hugging Face cache is not looked up for a plan: None)."""
    if model.path is None:
        return (model.config or {}).get("model_type")
    try:
        return json.loads((Path(model.path) / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def form_groups(points: list, max_batch: int, alone: Callable[[Spec], str | None] | None = None
                ) -> tuple[list[list], list[str]]:
    """The plan's points as groups of at most `max_batch` (in plan order), and one line per
    reason some points train alone (`alone`: see `batch_key`)."""
    groups: dict[str, list] = {}
    by_base: dict[str, list[list]] = {}  # stacks of noise points, by their key without the noise
    by_reason: dict[str, list] = {}
    out: list[list] = []
    noiseless: list = []

    def place(p, key: str) -> bool:
        """Into the open stack of its key, else a new one (True)."""
        if key in groups and len(groups[key]) < max_batch:
            groups[key].append(p)
            return False
        groups[key] = [p]
        out.append(groups[key])
        return True

    for p in points:
        key, why = batch_key(p.spec, alone)
        if key is None:
            by_reason.setdefault(why, []).append(p.name)
            out.append([p])
        elif _noiseless(p.spec):
            noiseless.append((p, key))  # placed once the noise points' stacks are known
        elif place(p, key):
            by_base.setdefault(_base_key(key), []).append(groups[key])
    for p, key in noiseless:
        joined = next((g for g in by_base.get(_base_key(key), []) if len(g) < max_batch), None)
        if joined is not None:
            joined.append(p)
        else:
            place(p, key)
    notes = [f"--batched: {plural(len(names), 'point')} ({names[0]}{', ...' if len(names) > 1 else ''}): {why}"
             for why, names in by_reason.items()]
    return out, notes


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def lost_overrides(overrides: list[str], grid: dict) -> list[str]:
    """An override that every point would replace (a key the grid sets, the seed, the name) would
    be dropped without a word: one line each, saying where that setting comes from instead."""
    out = []
    for text in overrides:
        key = text.partition("=")[0].strip()
        setter = next((g for g in grid if key == g or key.startswith(g + ".")), None)
        if setter is not None:
            out.append(f"override {text!r}: the grid sets {setter} at every point, so this value would never "
                       f"be used; put it in the grid's values of {setter}, or leave it out")
        elif key == "seed":
            out.append(f"override {text!r}: each point's seed comes from the sweep's seeds; give --seeds instead")
        elif key == "name":
            out.append(f"override {text!r}: a sweep's points are named by their settings; name the sweep "
                       f"with --name {text.partition('=')[2].strip() or 'NAME'}")
    return out


def about(keys: list[str], problem: str) -> bool:
    """Whether `problem` ('noise.kind: unknown ...') is about one of the dotted `keys` or inside one."""
    where = problem.split(":")[0]
    return any(where == k or where.startswith(k + ".") for k in keys)
