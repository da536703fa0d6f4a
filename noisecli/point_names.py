"""A sweep point's identity and folder name, both made from its settings.

Two points with the same `canonical_key` would train the same thing, and are merged; a
point's folder name (`point_name`) is made of the grid settings that shape it, in safe
characters only, so that running a sweep again finds every point where it left it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from noisecli.spec import NAME_RE, Spec, canonical, spec_to_dict


def canonical_key(spec: Spec) -> str:
    """Points with equal keys would train the same thing (the factor of `none` cannot matter)."""
    return json.dumps(canonical(spec_to_dict(spec)), sort_keys=True, default=str)


def _value_text(v: Any) -> str:
    if isinstance(v, list):
        return "x".join(_value_text(x) for x in v)
    if isinstance(v, dict):  # a whole entry such as {kind: input, factor: 0.5} -> input-0.5
        return "-".join(_value_text(b) for b in v.values())
    text = str(v).replace("e+", "e") if isinstance(v, float) else str(v)  # 1e+30 -> 1e30, never 1e-30
    return re.sub(r"[^A-Za-z0-9.-]+", "_" if isinstance(v, str) else "-", text).strip("-_") or "empty"


UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")  # what NAME_RE does not allow


def point_name(settings: dict[str, Any], short: dict[str, str], seed: int) -> str:
    """The point's folder name, made of its settings: safe characters only, so that a grid key
    reaching into a free-form mapping (`model.config.label2id./etc`, `..`) can never name a
    folder outside the sweep's. Where a key had to be changed to be safe, a hash of the settings
    keeps the name unique; ordinary names are as they always were."""
    keys = {k: UNSAFE.sub("_", short[k]).strip("._-") or "key" for k in settings}
    parts = [f"{keys[k]}-{_value_text(v)}" for k, v in settings.items()] + [f"seed-{seed}"]
    name = "_".join(parts)
    settings_hash = hashlib.sha1(json.dumps([settings, seed], sort_keys=True, default=str).encode()).hexdigest()[:8]
    if any(keys[k] != short[k] for k in settings):
        name = f"{name[:90]}_{settings_hash}"
    if len(name) > 100:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:90]}_{digest}"
    return name if NAME_RE.match(name) else f"point_{settings_hash}"  # (cannot happen; never a path)
