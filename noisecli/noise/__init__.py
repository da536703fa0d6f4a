"""Noise kinds: one module each, one small interface (`base.Noise`), built from the spec."""

from __future__ import annotations

import importlib

from noisecli import catalog
from noisecli.noise.base import Noise, NoiseContext, unstackable


def noise_class(kind: str) -> type[Noise]:
    module, cls = catalog.NOISE[kind].target.split(":")
    return getattr(importlib.import_module(module), cls)


def build_noises(specs, ctx: NoiseContext) -> list[Noise]:
    """One Noise per spec entry; entry i draws from its own generator seeded from the run's seed."""
    return [noise_class(spec.kind)(spec, ctx, index=i) for i, spec in enumerate(specs)]


def why_not_stacked(specs) -> str | None:
    """Why points with these noise entries cannot train as a stack (`sweep --batched`), or None."""
    for spec in specs:
        why = unstackable(noise_class(spec.kind))
        if why:
            return f"noise.kind {spec.kind}: trained one after another ({why})"
    return None
