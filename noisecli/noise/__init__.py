"""Noise kinds: one module each, one small interface (`base.Noise`), built from the spec."""

from __future__ import annotations

import importlib

from noisecli import catalog
from noisecli.noise.base import Noise, NoiseContext


def build_noises(specs, ctx: NoiseContext) -> list[Noise]:
    """One Noise per spec entry; entry i draws from its own generator seeded from the run's seed."""
    out = []
    for i, spec in enumerate(specs):
        module, cls = catalog.NOISE[spec.kind].target.split(":")
        out.append(getattr(importlib.import_module(module), cls)(spec, ctx, index=i))
    return out
