"""Hugging Face files, local only: transformers is imported on demand and nothing is downloaded.

Only `model.kind: hf` and `data.tokenizer` come here, so a user who never names them never
needs transformers installed, and `noisecli --help` never pays for importing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from noisecli.errors import SpecError


def import_transformers(where: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only below
    try:
        import transformers
    except ImportError:
        raise SpecError(f"{where}: needs the transformers package; install it with "
                        "pip install 'noisecli[hf]'") from None
    transformers.utils.logging.set_verbosity_error()  # its warnings and bars would clutter our display
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_local(loader, source: str, where: str, **kwargs):
    """`loader.from_pretrained(source)` from local files only, or one line saying why not."""
    try:
        return loader.from_pretrained(source, local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if "trust_remote_code" in str(e):
            raise SpecError(f"{where}: {source} ships its own Python code; set model.trust_remote_code: "
                            "true only if you trust it") from None
        if Path(source).is_dir():
            raise SpecError(f"{where}: cannot load {source}: {reason}") from None
        raise SpecError(f"{where}: {source!r} is not a local folder and not in the local Hugging Face "
                        "cache (noisecli never downloads; save the model with save_pretrained and give "
                        "its folder)") from None
