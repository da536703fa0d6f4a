"""Hugging Face files, local only: transformers is imported on demand and nothing is downloaded.

Only `model.kind: hf`, `data.kind: hf` and `data.tokenizer` come here, so a user who never
names them never needs transformers or datasets installed, and `noisecli --help` never pays
for importing them.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from noisecli.errors import SpecError


def _import(package: str, where: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: every load below is local only
    try:
        return importlib.import_module(package)
    except ImportError:
        raise SpecError(f"{where}: needs the {package} package; install it with "
                        "pip install 'noisecli[hf]'") from None


def import_transformers(where: str):
    transformers = _import("transformers", where)
    transformers.utils.logging.set_verbosity_error()  # its warnings and bars would clutter our display
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_saved_dataset(folder: str, where: str):
    """A `datasets` Dataset or DatasetDict written by `save_to_disk`: read from the folder, never
    from the Hub (load_dataset has no per-call offline switch, so names are not taken here)."""
    datasets = _import("datasets", where)
    datasets.disable_progress_bars()
    try:
        return datasets.load_from_disk(folder)
    except Exception as e:  # noqa: BLE001 - not a saved dataset, or a damaged one
        raise SpecError(f"{where}: cannot read {folder} as a saved Hugging Face dataset ({reason(e)}); write "
                        "one with dataset.save_to_disk(folder)") from None


def reason(e: BaseException, folder: Path | None = None) -> str:
    """One line from an exception raised by transformers, datasets or safetensors: the cause
    where one is chained (huggingface_hub's validation wraps the real message); the files of
    `folder`, already named by the message around it, by their names alone."""
    text = " ".join(str(e.__cause__ or e).split()) or type(e).__name__
    if folder is not None:
        text = text.replace(f"{folder}{os.sep}", "")
    return text[:200]


def load_local(loader, source: str, where: str, trust_remote_code: bool, trust_key: str | None = None, **kwargs):
    """`loader.from_pretrained(source)` from local files only, or one line saying why not.

    `trust_remote_code` is always passed, so transformers never decides it, and never asks on
    stdin (it would, for a folder whose config has an `auto_map`, and run the code on a `y`); a
    folder that ships its own code is refused before transformers reads it unless trusted.
    `trust_key` is the spec key that would allow that code (None: nothing does); `kwargs` go to
    from_pretrained (a `config=` with noisecli's settings applied)."""
    folder = Path(source) if Path(source).is_dir() else _cached_folder(source, where)
    shipped = shipped_code(folder, tokenizer="Tokenizer" in getattr(loader, "__name__", ""))
    if shipped and not trust_remote_code:
        raise SpecError(f"{where}: {source} ships its own Python code; " + (
            f"set {trust_key}: true only if you trust it" if trust_key else "noisecli never runs it here")
            + f" ({shipped})")
    try:
        with _no_stdin():
            return loader.from_pretrained(source, local_files_only=True, trust_remote_code=trust_remote_code,
                                          **kwargs)
    except Exception as e:  # noqa: BLE001 - a missing, corrupt or foreign file: the user's to fix
        if "trust_remote_code" in str(e):
            raise SpecError(f"{where}: {source} ships its own Python code; set {trust_key or 'trust_remote_code'}: "
                            "true only if you trust it") from None
        found = "" if Path(source).is_dir() else f" (found in the local Hugging Face cache at {folder})"
        raise SpecError(f"{where}: cannot load {source}{found}: {type(e).__name__}: {reason(e, folder)}") from None


def _cached_folder(name: str, where: str) -> Path:
    """The snapshot folder of a Hugging Face name in the local cache, or one line saying it is not there."""
    hub = _import("huggingface_hub", where)
    try:
        return Path(hub.snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, or not a valid name: either way not here
        raise SpecError(f"{where}: {name!r} is not a local folder and not in the local Hugging Face "
                        "cache (noisecli never downloads; save the model with save_pretrained and give "
                        "its folder)") from None


def shipped_code(folder: Path, tokenizer: bool) -> str | None:
    """'config.json auto_map names modeling_x.py' when the folder's config (and, for a tokenizer,
    its tokenizer_config.json) points transformers at Python files in the folder; else None."""
    for name in ("tokenizer_config.json", "config.json") if tokenizer else ("config.json",):
        try:
            auto_map = json.loads((folder / name).read_text(encoding="utf-8")).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue  # absent or unreadable: transformers' own load says what is wrong
        if auto_map:
            refs = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
            flat = [r for ref in refs for r in (ref if isinstance(ref, (list, tuple)) else [ref]) if isinstance(r, str)]
            files = sorted({ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in flat})
            return f"{name} auto_map names {', '.join(files) or 'code'}"
    return None


@contextmanager
def _no_stdin():
    """stdin reads as empty while transformers runs: a prompt it might still show gets no answer."""
    saved, sys.stdin = sys.stdin, io.StringIO()
    try:
        yield
    finally:
        sys.stdin = saved
