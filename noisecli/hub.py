"""Hugging Face files, local only: transformers is imported on demand and nothing is downloaded.

Only `model.kind: hf`, `data.kind: hf` and `data.tokenizer` come here, so a user who never
names them never needs transformers or datasets installed, and `noisecli --help` never pays
for importing them.
"""

from __future__ import annotations

import importlib
import os
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


def reason(e: BaseException) -> str:
    """One line from an exception raised by transformers, datasets or safetensors: the cause
    where one is chained (huggingface_hub's validation wraps the real message)."""
    text = " ".join(str(e.__cause__ or e).split()) or type(e).__name__
    return text[:200]


def load_local(loader, source: str, where: str, **kwargs):
    """`loader.from_pretrained(source)` from local files only, or one line saying why not."""
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except Exception as e:  # noqa: BLE001 - a missing, corrupt or foreign file: the user's to fix
        if "trust_remote_code" in str(e):
            raise SpecError(f"{where}: {source} ships its own Python code; set model.trust_remote_code: "
                            "true only if you trust it") from None
        if Path(source).is_dir():
            raise SpecError(f"{where}: cannot load {source}: {reason(e)}") from None
        raise SpecError(f"{where}: {source!r} is not a local folder and not in the local Hugging Face "
                        "cache (noisecli never downloads; save the model with save_pretrained and give "
                        "its folder)") from None
