"""`model.init: RUN_DIR[:best|last]` as the spec loader checks it, without torch: the run folder
found (relative to the spec file; given as an override, to the current folder), its checkpoint
named, and that file hashed (`model.init_sha256`), so a run whose source was retrained or
replaced since is refused on resume, as a changed `kind: python` file is. `models/init.py`
loads the weights when the model is built."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from noisecli.spec.raw import load_yaml, split_init
from noisecli.spec.rules import suggest

CHECKPOINTS = ("last", "best")  # what may follow RUN_DIR's ':' (last when nothing does)
_HASHES: dict[tuple, str] = {}  # (file, size, mtime) -> hash: a sweep's points read one source many times


def resolve_init(value: str | None, base: Path, problems: list[str],
                 recorded: str | None = None) -> tuple[str | None, str | None]:
    """(RUN_DIR made absolute, with its checkpoint named: '/abs/run:last', the checkpoint's hash);
    problems appended, never raised. None: no model.init. `recorded`: the hash a saved run's spec
    holds; such a spec is read whole when its source has moved or gone (eval and export of a run
    whose checkpoint holds every weight never read the source; models/init.py says so if asked)."""
    if value is None:
        return None, None
    run, which = split_init(value)
    if which is not None and which not in CHECKPOINTS:
        problems.append(f"model.init: {value!r} names checkpoint {which!r}; RUN_DIR, RUN_DIR:best or "
                        f"RUN_DIR:last{suggest(which, CHECKPOINTS)}")
        return value, None
    if not run.strip():
        problems.append(f"model.init: {value!r} names no run folder (RUN_DIR, RUN_DIR:best or RUN_DIR:last)")
        return value, None
    path = Path(run).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    which = which or "last"
    resolved = f"{path}:{which}"
    if not path.is_dir():
        if recorded is not None:
            return resolved, recorded
        problems.append(f"model.init: no such run folder: {path}")
        return resolved, None
    source = _source_spec(path)
    model = source.get("model") if isinstance(source.get("model"), dict) else {}
    if model.get("lora") is not None:
        problems.append(f"model.init: {path} is a LoRA run, whose checkpoints hold its adapters only; merge them "
                        f"into a model folder (noisecli export {path} OUT_DIR --merge) and start from that with "
                        "model.path")
        return resolved, None
    checkpoint = path / "checkpoints" / f"{which}.pt"
    if not checkpoint.is_file():
        problems.append(f"model.init: {path} has no checkpoints/{which}.pt ({_missing(source, which)})")
        return resolved, None
    return resolved, _hash(checkpoint)


def _source_spec(path: Path) -> dict:
    """The source run's spec.yaml as written ({} when it has none or it is unreadable)."""
    try:
        saved = load_yaml((path / "spec.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _missing(source: dict, which: str) -> str:
    """Why a run folder has no such checkpoint, as far as its spec.yaml tells."""
    if not source:
        return "and no spec.yaml: not a noisecli run folder"
    output = source.get("output") if isinstance(source.get("output"), dict) else {}
    policy = output.get("checkpoint")
    if policy == "none":
        return "it was trained with output.checkpoint: none, which deletes them when the run ends; train it " \
               "with output.checkpoint: last or best"
    if which == "best" and policy != "best":
        return "best.pt is written only with output.checkpoint: best; name :last"
    return "it has not reached an evaluation yet"


def _hash(path: Path) -> str:
    """The file's sha256 (16 hex digits, as code_sha256), read once per file version in a process."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()[:16]
    return _HASHES[key]
