"""A spec file read, overridden and validated: `load_spec`, the one way `train` and
`validate` get a Spec; and `is_sweep_file`, which tells a sweep spec from a run's.

The top of the package: it joins reading (`raw`) and validation (`build`).
"""

from __future__ import annotations

from pathlib import Path

from noisecli.errors import SpecError
from noisecli.spec.build import spec_from_dict, suggest
from noisecli.spec.raw import apply_overrides, read_yaml
from noisecli.spec.sections import SPEC_KEYS, Spec


def is_sweep_file(raw: dict) -> bool:
    """A sweep spec has `base` or `grid`; a misspelling of either (`bsae:`, `grids:`) counts too,
    so that it is named as a sweep key with a suggestion, not as an unknown spec key."""
    return "grid" in raw or "base" in raw or any(
        k not in SPEC_KEYS and suggest(str(k), ("base", "grid")) for k in raw)


def load_spec(path: Path | str, overrides: list[str] | None = None) -> Spec:
    """Read, override and validate a spec file; raises SpecError listing every problem."""
    path = Path(path)
    raw = read_yaml(path)
    if is_sweep_file(raw):
        raise SpecError(f"{path}: this is a sweep spec (base, grid, seeds); run it with: noisecli sweep {path}")
    raw = apply_overrides(raw, overrides or [])
    raw.setdefault("name", path.stem)
    return spec_from_dict(raw, base_dir=path.parent)
