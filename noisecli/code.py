"""The user's own code, named by a spec with `kind: python` — the one way a spec runs code.

A target is `FILE.py:FUNCTION` (a file relative to the spec file) or
`package.module:FUNCTION` (importable from the current environment). Only the file or module
a `kind: python` spec names is ever imported; every other spec imports nothing it names.
The run records a hash of the target's file (`code_sha256`), so resuming a run whose code
changed is refused like resuming one whose spec changed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from noisecli.errors import SpecError

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


def load_function(target: str, where: str) -> Callable:
    """Import the target's file or module and return its function; one SpecError line on failure."""
    source, _, func = target.rpartition(":")
    try:
        if source.endswith(".py"):
            path = Path(source)
            name = f"noisecli_user_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.path.insert(0, str(path.parent))  # so the file can import its neighbours
            try:
                sys.modules[name] = module
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(str(path.parent))
        else:
            module = importlib.import_module(source)
    except Exception as e:  # noqa: BLE001 - the user's code failing to import is their input to fix
        raise user_failure(f"{where}: importing {source} failed", e) from None
    fn = getattr(module, func, None)
    if not callable(fn):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        from noisecli.spec import suggest

        raise SpecError(f"{where}: {source} has no function {func!r}{suggest(func, names)}")
    return fn


def call(fn: Callable, target: str, where: str, args: dict[str, Any], offered: dict[str, Any]) -> Any:
    """fn(**args, plus whichever of `offered` its signature names); its failure is one SpecError line."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    extra = {k: v for k, v in offered.items() if (k in params or takes_any) and k not in args}
    try:
        return fn(**args, **extra)
    except Exception as e:  # noqa: BLE001 - an exception in the user's function is their input to fix
        raise user_failure(f"{where}: {target} raised", e) from None


DEBUG_ENV = "NOISECLI_DEBUG"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def user_failure(text: str, e: BaseException) -> SpecError:
    """The one line for an exception in the user's code, with its full traceback kept on the error
    (`tracebacks`) for the CLI to print under NOISECLI_DEBUG=1: the line alone rarely says which
    of the user's own lines failed. (Once a run folder exists, training failures go to error.log.)"""
    hint = "" if debugging() else f" (set {DEBUG_ENV}=1 for the traceback)"
    error = SpecError(f"{text} {_one_line(e)}{hint}")
    error.tracebacks = ["".join(traceback.format_exception(e))]
    return error


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")[:300]


def check_python_specs(specs: list, kinds: tuple[str, ...] = ("python",)) -> None:
    """Build each distinct run whose data or model kind is in `kinds` (data, model and noise, in
    memory, on the CPU), so that broken code or data fails in `validate` and before a sweep
    starts, not at its first point."""
    import copy
    import json

    from noisecli.spec import spec_to_dict
    from noisecli.trainer import Trainer

    problems: list[str] = []
    tracebacks: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        if spec.data.kind not in kinds and spec.model.kind not in kinds:
            continue
        d = spec_to_dict(spec)
        key = json.dumps([d["data"], d["model"], d["noise"]], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        on_cpu = copy.deepcopy(spec)
        on_cpu.device = "cpu"
        try:
            Trainer(on_cpu, "/nonexistent-never-written", quiet=True).setup()  # setup writes nothing
        except SpecError as e:
            problems += [p for p in e.problems if p not in problems]
            tracebacks += getattr(e, "tracebacks", [])
    if problems:
        error = SpecError(problems)
        error.tracebacks = tracebacks
        raise error
