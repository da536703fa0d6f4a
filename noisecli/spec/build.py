"""Validation: a raw mapping (already overridden) made into a checked `Spec`.

Each value is checked against its field's type and range (`_coerce`, `_check_range`), each
section's keys against its dataclass or its kind's declared options (`_build`), then what
spans keys: kinds that exist and fit the data, paths that resolve, the tracker's package.
Every problem is collected, each on one line that starts with the key's dotted path, and
raised once (`SpecError`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import MISSING, is_dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from noisecli import catalog
from noisecli.errors import SpecError
from noisecli.spec.init_source import resolve_init
from noisecli.spec.raw import HubName, local_or_name
from noisecli.spec.rules import check_train, suggest
from noisecli.spec.sections import SECTIONS, KindSection, NoiseSpec, Spec, _public_fields
from noisecli.targets import resolve_target

# \Z, not $: `$` also matches before a trailing newline, and "run\n" would name an odd folder
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)\Z")
INT_MAX = 2**63 - 1  # any larger integer overflows torch (int64) wherever it is used
# YAML 1.1 reads `1e-4` (no dot) as a string; the contract says it is a number.
FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _coerce(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; returns the converted value or MISSING."""
    origin = get_origin(tp)
    if origin is Union:  # Optional[X]
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where, problems)
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            if isinstance(value, (int, float, str)) and not isinstance(value, bool):
                value = [value]  # `hidden: 64` means one layer of 64
            else:
                problems.append(f"{where}: must be a list, got {_describe(value)}")
                return MISSING
        out = [_coerce(v, item_tp, f"{where}.{i}", problems) for i, v in enumerate(value)]
        return MISSING if any(v is MISSING for v in out) else out
    return _coerce_scalar(value, tp, where, problems)


def _coerce_scalar(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """`_coerce` for the types that hold one value: bool, int, float, str, dict."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        problems.append(f"{where}: must be true or false, got {_describe(value)}")
        return MISSING
    if tp is int:
        if isinstance(value, str) and FLOAT_RE.match(value.strip()):
            value = float(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        problems.append(f"{where}: must be an integer, got {_describe(value)}")
        return MISSING
    if tp is float:
        if isinstance(value, str) and FLOAT_RE.match(value.strip()):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                problems.append(f"{where}: must be a finite number, got {value!r}")
                return MISSING
            return float(value)
        problems.append(f"{where}: must be a number, got {_describe(value)}")
        return MISSING
    if tp is str:
        if isinstance(value, str):
            return value
        problems.append(f"{where}: must be a string, got {_describe(value)}")
        return MISSING
    if tp is dict:  # passed on as keyword arguments (model.config), so keys must be names
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return copy.deepcopy(value)
        problems.append(f"{where}: must be a mapping of names to values, got {_describe(value)}")
        return MISSING
    raise TypeError(f"unsupported spec type {tp!r}")  # a bug in this file, not a user error


def _check_range(value: Any, meta: dict, where: str, problems: list[str]) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is None:
            continue
        if meta["choices"] and v not in meta["choices"]:
            problems.append(f"{where}: must be one of {', '.join(meta['choices'])}; got {v!r}"
                            f"{suggest(v, meta['choices'])}")
            return
        for bound, ok, text in (("ge", lambda a, b: a >= b, ">="), ("gt", lambda a, b: a > b, ">"),
                                ("le", lambda a, b: a <= b, "<="), ("lt", lambda a, b: a < b, "<")):
            if meta[bound] is not None and isinstance(v, (int, float)) and not ok(v, meta[bound]):
                problems.append(f"{where}: must be {text} {meta[bound]}, got {v!r}")
                return
        if isinstance(v, int) and abs(v) > INT_MAX:  # whatever the key, torch would overflow on it
            problems.append(f"{where}: {v:.3g} is too large for any setting (at most 2**63 - 1)")
            return


def _build(cls, raw: Any, where: str, problems: list[str]):
    """Make a dataclass from a mapping: unknown keys, types and ranges checked."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping of keys, got {_describe(raw)}")
        return cls()
    if issubclass(cls, KindSection):
        return _build_kind(cls, raw, where, problems)
    names = [f.name for f in _public_fields(cls)]
    for key in raw:
        if key not in names:
            hint = suggest(key, names) or (_section_key(str(key)) if not where else "") or \
                f" (valid keys: {', '.join(names)})"
            problems.append(f"{f'{where}.{key}' if where else key}: unknown key{hint}")
    return cls(**_typed_fields(cls, raw, where, problems))


def _section_key(key: str) -> str:
    """A top-level key that belongs in a section (`lr=1e-3` for `train.lr=1e-3`): the hint."""
    dotted = [f"{section}.{f.name}" for section, c in {**SECTIONS, "noise": NoiseSpec}.items()
              for f in _public_fields(c) if f.name != "options"]
    dotted += [f"{section}.{o}" for section, table in catalog.TABLES.items() for e in table.values() for o in e.options]
    exact = sorted({d for d in dotted if d.split(".", 1)[1] == key})
    if exact:
        return f"; did you mean {' or '.join(map(repr, exact))}?"
    return suggest(key, dict.fromkeys(d for d in dotted))


def _typed_fields(cls, raw: dict, where: str, problems: list[str]) -> dict:
    """The values of `raw` that are fields of `cls`, each checked against its type and range."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in _public_fields(cls)}
    kwargs = {}
    for f in (known[k] for k in raw if k in known):  # in the order written, as the messages are
        path = f"{where}.{f.name}" if where else f.name
        if is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], raw[f.name], path, problems)
            continue
        converted = _coerce(raw[f.name], hints[f.name], path, problems)
        if converted is not MISSING:
            _check_range(converted, f.metadata, path, problems)
            kwargs[f.name] = converted
    return kwargs


def _build_kind(cls, raw: dict, where: str, problems: list[str]):
    """A data, model or noise section: the shared keys, then the options of its kind, each
    checked against the kind's own declaration. A key that belongs to another kind says so."""
    shared = [f.name for f in _public_fields(cls) if f.name != "options"]
    section = cls(**_typed_fields(cls, {k: v for k, v in raw.items() if k in shared}, where, problems))
    table = catalog.TABLES[cls.TABLE]
    entry = table.get(section.kind)
    owners: dict[str, list[str]] = {}
    for e in table.values():
        for name in e.options:
            owners.setdefault(name, []).append(e.name)
    for key, value in raw.items():
        if key in shared:
            continue
        path = f"{where}.{key}"
        if entry is not None and key in entry.options:
            option = entry.options[key]
            converted = _coerce(value, option.type, path, problems)
            if converted is not MISSING:
                _check_range(converted, vars(option), path, problems)
                section.options[key] = converted
        elif key in owners:
            if entry is not None:  # (with an unknown kind, the kind's own line says what is wrong)
                problems.append(f"{path}: does not apply to {cls.TABLE} kind {entry.name!r} "
                                f"(used by {', '.join(owners[key])})")
        else:
            names = shared + list(entry.options if entry else [])
            problems.append(f"{path}: unknown key{suggest(key, names) or ' (valid keys: ' + ', '.join(names) + ')'}")
    if entry is not None:
        for name, option in entry.options.items():
            section.options.setdefault(name, copy.deepcopy(option.default))
        section.options = {name: section.options[name] for name in entry.options}  # the declared order
    return section


def _check_kind(section: str, kind: str, table: dict, what: str, problems: list[str]) -> bool:
    if kind in table:
        return True
    problems.append(f"{section}.kind: unknown {what} {kind!r}{suggest(kind, table)} "
                    f"(noisecli list {'noise' if what == 'noise kind' else what + 's'})")
    return False


def spec_from_dict(raw: dict, base_dir: Path | None = None) -> Spec:
    """Validate a raw mapping (already overridden) and return the Spec. Collects every problem."""
    problems: list[str] = []
    raw = dict(raw)
    noise_raw = raw.pop("noise", None)
    spec = _build(Spec, {k: v for k, v in raw.items()}, "", problems)
    spec.noise = _build_noise(noise_raw, problems)
    _check_name_and_device(raw, spec, problems)
    dataset = _check_components(spec, base_dir or Path.cwd(), problems)
    _check_noise(spec, dataset, problems)

    _check_tracker(spec, problems)
    check_train(spec, problems)
    if problems:
        raise SpecError(problems)
    return spec


def _build_noise(noise_raw: Any, problems: list[str]) -> list[NoiseSpec]:
    """The noise section: one mapping, or a list of mappings applied together."""
    listed = isinstance(noise_raw, list)
    entries = noise_raw if listed else [noise_raw]
    noises = []
    for i, entry in enumerate(entries):
        noise = _build(NoiseSpec, entry, f"noise.{i}" if listed else "noise", problems)
        noise.where = f"noise.{i}" if listed else "noise"
        noises.append(noise)
    if listed and not noise_raw:
        problems.append("noise: an empty list; write `kind: none` for no noise")
        noises = [NoiseSpec()]
    return noises


def _check_name_and_device(raw: dict, spec: Spec, problems: list[str]) -> None:
    """The run's name (it names a folder under the runs folder) and its device."""
    if "name" in raw and raw["name"] is None:  # `name: null` or `name=`: the default is the file's stem
        problems.append("name: empty; give the run a name (it names a folder under the runs folder), "
                        "or leave the key out to use the spec file's name")
    if spec.name is not None and not NAME_RE.match(spec.name):
        problems.append(f"name: {spec.name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (it names a folder under the runs folder)")
    if not DEVICE_RE.match(spec.device):
        problems.append(f"device: must be auto, cpu, cuda, cuda:N or mps; got {spec.device!r}")


def _check_components(spec: Spec, base: Path, problems: list[str]) -> catalog.Entry | None:
    """The data and model kinds: known, their paths resolved against `base`, the model able to
    read the data, and each kind's own checks. Returns the dataset's entry (None if unknown)."""
    dataset = model = None
    if _check_kind("data", spec.data.kind, catalog.DATASETS, "dataset", problems):
        dataset = catalog.DATASETS[spec.data.kind]
        _resolve_paths(spec.data, "data", dataset, base, problems)
    if _check_kind("model", spec.model.kind, catalog.MODELS, "model", problems):
        model = catalog.MODELS[spec.model.kind]
        _resolve_paths(spec.model, "model", model, base, problems)
        spec.model.init, spec.model.init_sha256 = resolve_init(spec.model.init, base, problems,
                                                                recorded=spec.model.init_sha256)
        if dataset is not None and not catalog.fits(model, dataset):
            fits = [m.name for m in catalog.MODELS.values() if catalog.fits(m, dataset)]
            problems.append(f"model.kind: {model.name!r} cannot read data kind {dataset.name!r} "
                            f"({'/'.join(sorted(dataset.modalities))}); use one of: {', '.join(fits)}")
    for section, entry, where in ((spec.data, dataset, "data"), (spec.model, model, "model")):
        if entry is not None and entry.check is not None:
            entry.check(section, where, spec, problems)
    return dataset


def _check_tracker(spec: Spec, problems: list[str]) -> None:
    """The tracker's package must be installed (looked for, not imported)."""
    import importlib.util

    package = catalog.TRACKER_PACKAGES.get(spec.output.tracker)  # (a misspelled tracker has its own line already)
    if package is not None and importlib.util.find_spec(package) is None:
        problems.append(f"output.tracker: {spec.output.tracker} needs the {package} package: "
                        f"pip install 'noisecli[{spec.output.tracker}]'")


def _resolve_paths(section: KindSection, where: str, entry: catalog.Entry, base: Path, problems: list[str]) -> None:
    """Options that name files or folders, made absolute against the spec file's folder: a
    `file` or `folder` must exist; a `local` value is a folder or a Hugging Face cache name."""
    for name, option in entry.options.items():
        value = section.options.get(name)
        if option.path is None:
            continue
        if option.path == "local":
            if value is not None:
                section.options[name] = _local_folder(value, f"{where}.{name}", base, problems)
            continue
        if option.path == "code":  # a kind: python target, hashed so that a changed file is noticed
            if value is None:
                problems.append(f"{where}.{name}: required for {where} kind {entry.name!r} "
                                "(FILE.py:FUNCTION or package.module:FUNCTION)")
                continue
            section.options[name], section.options["code_sha256"] = resolve_target(value, f"{where}.{name}",
                                                                                  base, problems)
            continue
        if value is None:
            problems.append(f"{where}.{name}: required for {where} kind {entry.name!r}")
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if path.exists() and not path.is_file() and not path.is_dir():
            # a FIFO would hang the loader and /dev/zero fill memory: data is regular files and folders
            problems.append(f"{where}.{name}: not a regular file (a pipe, a device or a socket): {path}")
            continue
        exists = {"folder": path.is_dir, "file": path.is_file, "any": path.exists}[option.path]()
        if not exists:
            problems.append(f"{where}.{name}: {'file or folder' if option.path == 'any' else option.path} "
                            f"not found: {path}")
            continue
        section.options[name] = str(path.resolve())


def _local_folder(value: str, where: str, base: Path, problems: list[str]) -> str:
    """A folder made absolute (it must exist), or a Hugging Face name left for the cache lookup.
    Never one for the other: a name given on the command line is not looked for next to the spec
    file, and a name in the spec file that is a folder in the current folder (where transformers
    would read it from) is refused rather than read from there."""
    if isinstance(value, HubName):  # an override that is no folder in the current folder
        return str(value)
    resolved = local_or_name(value, base)
    if Path(resolved).is_absolute():
        if not Path(resolved).is_dir():
            problems.append(f"{where}: folder not found: {resolved}")
    elif Path(value).expanduser().exists():
        problems.append(f"{where}: {value!r} is not a folder next to the spec file ({base / value} not found), "
                        f"and as a Hugging Face name it would be read from {Path(value).resolve()} in the current "
                        "folder; give the folder's path relative to the spec file, or an absolute path")
    return resolved


def _check_noise(spec: Spec, dataset: catalog.Entry | None, problems: list[str]) -> None:
    seen: set[str] = set()
    for noise in spec.noise:
        where = noise.where
        if not _check_kind(where, noise.kind, catalog.NOISE, "noise kind", problems):
            continue
        entry = catalog.NOISE[noise.kind]
        if noise.kind in seen:
            problems.append(f"{where}.kind: {noise.kind!r} is listed twice; give it once")
        seen.add(noise.kind)
        if noise.kind == "none" and len(spec.noise) > 1:
            problems.append(f"{where}.kind: 'none' cannot be combined with other kinds")
        before = len(problems)
        if entry.check is not None:
            entry.check(noise, where, spec, problems)
        kind_refused = any(p.startswith(f"{where}.kind:") for p in problems[before:])
        if dataset is not None and not catalog.fits(entry, dataset) and not kind_refused:
            problems.append(f"{where}.kind: {noise.kind!r} does not apply to data kind "
                            f"{dataset.name!r} ({'/'.join(sorted(dataset.modalities))})")
