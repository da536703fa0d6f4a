"""A `kind: python` target (`FILE.py:FUNCTION` or `package.module:FUNCTION`) as the spec loader
checks it: the file found (relative to the spec file) or the module found on the path, and the
file hashed, without running it (`code.py` imports it when a run is built)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

TARGET_RE = re.compile(r"^(?P<where>[^:]+):(?P<func>[A-Za-z_][A-Za-z0-9_]*)$")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def resolve_target(value: str, where: str, base: Path, problems: list[str]) -> tuple[str, str | None]:
    """(the target with its file made absolute, the file's hash); problems appended, never raised."""
    m = TARGET_RE.match(value.strip())
    if not m:
        problems.append(f"{where}: {value!r} must be FILE.py:FUNCTION or package.module:FUNCTION")
        return value, None
    source, func = m.group("where"), m.group("func")
    if source.endswith(".py"):
        path = Path(source).expanduser()
        path = (path if path.is_absolute() else base / path).resolve()
        if not path.is_file():
            problems.append(f"{where}: file not found: {path}")
            return value, None
        return f"{path}:{func}", _hash(path)
    if not MODULE_RE.match(source):
        problems.append(f"{where}: {source!r} is neither a .py file nor a module name (package.module)")
        return value, None
    try:
        found = importlib.util.find_spec(source)
    except (ImportError, ValueError) as e:
        problems.append(f"{where}: cannot find module {source!r} ({type(e).__name__}: {e})")
        return value, None
    if found is None:
        problems.append(f"{where}: no module named {source!r} (is its package installed, or on PYTHONPATH?)")
        return value, None
    origin = Path(found.origin) if found.origin and found.origin not in ("built-in", "frozen") else None
    return f"{source}:{func}", _hash(origin) if origin and origin.is_file() else None


def _hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
