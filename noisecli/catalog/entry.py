"""The shape of a catalog entry: a kind's options (`Option`) and the entry itself (`Entry`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

VECTOR, IMAGE, TOKENS = "vector", "image", "tokens"


@dataclass(frozen=True)
class Option:
    """One key of a kind: its type (a typing annotation, checked by the spec loader), its default
    and one line of help. The bounds (ge, gt, le, lt) and choices of a list option hold for each
    item. `path` marks values that name something on disk, relative to the spec file (to the current
    folder when given as an override: `spec.raw.apply_overrides`): 'file' and 'folder' must exist (a
    file must be a regular file, not a pipe or a device); 'any' is either; 'local' is a folder or a
    Hugging Face name in the cache; 'code' is a kind: python target (FILE.py:FUNCTION or a module)."""

    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    path: str | None = None


# A check gets the section (DataSpec, ModelSpec or NoiseSpec), its dotted path, the whole spec
# and the problem list; it appends a line per problem and never raises.
Check = Callable[[Any, str, Any, list], None]


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    target: str  # "module:function" that builds it, imported lazily
    options: dict[str, Option] = field(default_factory=dict)
    # datasets: what they provide; models and noise: what they accept (empty: anything)
    modalities: frozenset[str] = field(default_factory=frozenset)
    check: Optional[Check] = None
    factor: str = ""  # noise only: what the factor means
    formula: str = ""  # noise only
    note: str = ""  # noise only: a fact worth knowing before sweeping it (shown by `noisecli list`)
    # noise only: a typical strength, the factor of an entry that gives none (`{kind: embedding}` is
    # alpha 5); `factor` says it, with the typical range. Benchmarks and examples use it too.
    example_factor: float = 0.0


def _python_options(returns: str) -> dict[str, Option]:
    return {
        "target": Option(Optional[str], None, f"FILE.py:FUNCTION (relative to the spec file; given as an "
                                              f"override, to the current folder) or package.module:FUNCTION; "
                                              f"the function returns {returns}",
                         path="code"),
        "args": Option(dict, {}, "keyword arguments for the function"),
        "code_sha256": Option(Optional[str], None, "filled in by noisecli: the hash of the target's file, "
                                                   "so a run whose code changed is refused on resume"),
    }
