"""The user's own code, named by a spec with `kind: python` — the one way a spec runs code.

A target is `FILE.py:FUNCTION` (a file relative to the spec file) or
`package.module:FUNCTION` (importable from the current environment). Only the file or module
a `kind: python` spec names is ever imported; every other spec imports nothing it names.
The run records a hash of the target's file (`code_sha256`), so resuming a run whose code
changed is refused like resuming one whose spec changed (the target is checked and hashed when
the spec is read, by `targets.resolve_target`, without running it; this module imports it).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

from noisecli.errors import SpecError
from noisecli.spec import suggest


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
