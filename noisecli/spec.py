"""The experiment spec: typed dataclasses, YAML loading, KEY=VALUE overrides, validation.

Validation collects every problem, each on one line that starts with the key's dotted
path, and raises once (`SpecError`). Nothing here imports torch.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional, Union, get_args, get_origin, get_type_hints

import yaml

from noisecli import catalog
from noisecli.errors import SpecError
from noisecli.targets import resolve_target

# \Z, not $: `$` also matches before a trailing newline, and "run\n" would name an odd folder
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)\Z")
SEED_MAX = 2**32 - 1  # numpy's seeds stop here; the noise streams multiply the seed, and must stay in int64
INT_MAX = 2**63 - 1  # any larger integer overflows torch (int64) wherever it is used
# YAML 1.1 reads `1e-4` (no dot) as a string; the contract says it is a number.
# YAML 1.1 reads these words as booleans; on a command line they are meant as words
YAML11_WORDS = ("yes", "no", "on", "off", "y", "n")
FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def opt(default: Any, help: str, *, choices=None, ge=None, gt=None, le=None, lt=None):
    """A spec field: its default, its one-line reference text, and its allowed values."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


class KindSection:
    """A spec section whose keys depend on its `kind` (data, model, noise).

    The fields every kind shares are dataclass fields; the options of the chosen kind
    (declared, with defaults and help, in its catalog entry) live in `options` and read as
    attributes: `spec.model.n_layer`. An option not set falls back to its declared default.

    The accessor is total over the catalog: an option that only other kinds of this section
    declare reads as None (unset) here, so code that looks across specs of several kinds (the
    `model.path` of each point of a gpt-vs-hf sweep) needs no kind check to stay safe. A name
    that no kind declares is still an AttributeError: a typo in noisecli's own code.
    """

    TABLE: ClassVar[str]  # "data" | "model" | "noise": which catalog table names the kinds

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        table = catalog.TABLES[self.TABLE]
        entry = table.get(self.__dict__.get("kind"))
        if entry is not None and name in entry.options:
            return copy.deepcopy(entry.options[name].default)
        if any(name in e.options for e in table.values()):
            return None
        raise AttributeError(f"{self.TABLE} kind {self.__dict__.get('kind')!r} has no option {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in {f.name for f in fields(self)} or name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.options[name] = value


def _with_options(cls):
    """Let the constructor take the kind's options as keywords: NoiseSpec(kind='weight', mode=...).
    Every option of the kind not given holds its default, so a section left out of a spec
    (`Spec()`'s ModelSpec()) resolves exactly as `{kind: <default>}` written out does."""
    cls = dataclass(cls)
    init, names = cls.__init__, {f.name for f in fields(cls)}

    def __init__(self, **kwargs):
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in names}
        init(self, **kwargs)
        self.options.update(options)
        entry = catalog.TABLES[cls.TABLE].get(self.kind)
        if entry is not None:  # the declared order first, as the resolved spec writes them
            declared = {n: self.options.get(n, copy.deepcopy(o.default)) for n, o in entry.options.items()}
            self.options = {**declared, **self.options}

    cls.__init__ = __init__
    return cls


def _options_field():
    return field(default_factory=dict, metadata={"help": "the kind's own options", "internal": True})


@_with_options
class DataSpec(KindSection):
    TABLE = "data"
    kind: str = opt("digits", "dataset name (noisecli list datasets)")
    val_fraction: float = opt(0.2, "share of the data held out for validation", gt=0, lt=1)
    train_size: Optional[int] = opt(None, "subsample the training split to this many examples "
                                          "(or token windows' worth of text)", ge=1)
    seed: int = opt(0, "seed of the split and of synthetic data; kept apart from the run's seed "
                       "so every seed of a sweep sees the same data", ge=0, le=SEED_MAX)
    options: dict = _options_field()


@_with_options
class ModelSpec(KindSection):
    TABLE = "model"
    kind: str = opt("mlp", "model name (noisecli list models)")
    options: dict = _options_field()


@_with_options
class NoiseSpec(KindSection):
    TABLE = "noise"
    kind: str = opt("none", "noise kind (noisecli list noise)")
    factor: float = opt(0.01, "strength; its meaning depends on the kind (noisecli list noise)", ge=0)
    schedule: str = opt("constant", "how the factor changes over training: constant | linear | cosine "
                                    "(decays toward 0, reached one step after the last, as transformers' "
                                    "schedulers)", choices=catalog.SCHEDULES)
    warmup_steps: int = opt(0, "steps over which the factor ramps up from 0", ge=0)
    options: dict = _options_field()
    # the entry's dotted path for messages: 'noise' for a single mapping, 'noise.N' in a list
    where: str = field(default="noise", compare=False, repr=False, metadata={"internal": True})


@dataclass
class TrainSpec:
    epochs: int = opt(3, "passes over the training split", ge=1)
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (at most epochs' worth)", ge=1)
    batch_size: int = opt(32, "examples (or token windows) per step", ge=1)
    lr: float = opt(5e-5, "peak learning rate of AdamW", gt=0)
    weight_decay: float = opt(0.01, "AdamW decoupled weight decay", ge=0)
    betas: list[float] = opt([0.9, 0.999], "AdamW betas [beta1, beta2]")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0 turns clipping off)", ge=0)
    lr_schedule: str = opt("constant", "constant | cosine | linear (decays toward min_lr, reached one step "
                                       "after the last, as in transformers' get_cosine_schedule_with_warmup)",
                           choices=("constant", "cosine", "linear"))
    warmup_steps: int = opt(0, "linear learning-rate warmup steps", ge=0)
    min_lr: float = opt(0.0, "where cosine and linear decay to (one step after the last trained step)", ge=0)
    eval_every: Optional[int] = opt(None, "steps between evaluations (default: once per epoch)", ge=1)
    eval_batches: int = opt(20, "text datasets: batches of fixed windows per evaluation split", ge=1)
    precision: str = opt("auto", "auto (bf16 on CUDA, else fp32) | fp32 | bf16 | fp16",
                         choices=("auto", "fp32", "bf16", "fp16"))
    compile: bool = opt(False, "torch.compile the model")


@dataclass
class OutputSpec:
    checkpoint: str = opt("last", "last | best | every (one per evaluation) | none (deleted when done)",
                          choices=("last", "best", "every", "none"))
    tracker: str = opt("none", "none | tensorboard | wandb | mlflow: also log metrics and the per-step train loss "
                               "there (extras noisecli[tensorboard], [wandb], [mlflow]); metrics.csv stays the record",
                       choices=("none", "tensorboard", "wandb", "mlflow"))


@dataclass
class Spec:
    name: Optional[str] = opt(None, "run name, the folder under runs/ (default: the spec file's stem)")
    seed: int = opt(0, "seed of initialization, data order and noise draws", ge=0, le=SEED_MAX)
    device: str = opt("auto", "auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps")
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    noise: list[NoiseSpec] = field(default_factory=lambda: [NoiseSpec()])
    train: TrainSpec = field(default_factory=TrainSpec)
    output: OutputSpec = field(default_factory=OutputSpec)

    @property
    def noise_label(self) -> str:
        """'input 0.3', 'token+weight 0.1/0.01' or 'none': the one way noise is named."""
        return noise_label([{"kind": n.kind, "factor": n.factor} for n in self.noise])


SECTIONS = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec, "output": OutputSpec}
KIND_SECTIONS = {"data": DataSpec, "model": ModelSpec, "noise": NoiseSpec}
SPEC_KEYS = ("name", "seed", "device", "data", "model", "noise", "train", "output")


# --------------------------------------------------------------------------- loading

# A spec is a few levels deep and a few hundred values long. These bounds keep what a YAML
# document can ask for far from what breaks the code that walks it (deepcopy, flatten, json
# and the checks recurse; Python stops near 1000 frames) or fills memory (billion laughs).
MAX_DEPTH = 50
MAX_VALUES = 100_000  # after expanding every *alias
MAX_SPEC_BYTES = 10 * 2**20


class SpecLoader(yaml.SafeLoader):
    """yaml.safe_load's loader with the limits above, and a key given twice in one mapping
    refused (plain safe_load silently keeps the last, so a spec would not say what it does)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._values = 0
        self._shapes: dict[int, tuple[int, int] | None] = {}  # id(node) -> (values, depth) once expanded

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):  # the anchored node again, whole: count it whole
            node = super().compose_node(parent, index)
            values, depth = self._shape(node, mark)
            self._account(values, self._depth + depth, mark)
            return node
        self._depth += 1
        self._account(1, self._depth, mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def _account(self, values: int, depth: int, mark) -> None:
        self._values += values
        if depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep; "
                                              "a spec is a few levels deep", mark)
        if self._values > MAX_VALUES:
            raise yaml.composer.ComposerError(None, None, f"more than {MAX_VALUES:,} values once its aliases "
                                              "(*name) are expanded; a spec is far smaller", mark)

    def _shape(self, node, mark) -> tuple[int, int]:
        """(values, depth) of a node with its aliases expanded, each distinct node walked once."""
        if id(node) in self._shapes:
            shape = self._shapes[id(node)]
            if shape is None:
                raise yaml.composer.ComposerError(None, None, "an alias (*name) inside the node it names", mark)
            return shape
        self._shapes[id(node)] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        shapes = [self._shape(child, mark) for child in children]
        shape = (1 + sum(v for v, _ in shapes), 1 + max((d for _, d in shapes), default=0))
        self._shapes[id(node)] = shape
        return shape

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then own keys: an override, not a repeat
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = key in first
                except TypeError:
                    continue  # an unhashable key: the base class says so
                if seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} appears twice (first on line {first[key] + 1}); give it once",
                        key_node.start_mark)
                first[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """yaml.safe_load with SpecLoader's limits: every spec, override and --grid value is read here."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def _short(text: str, limit: int = 80) -> str:
    """repr(text), cut to `limit` characters: a message stays one readable line."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def _read_text(path: Path) -> str:
    """A spec file's text: a regular file of at most MAX_SPEC_BYTES (a FIFO would hang, /dev/zero
    would fill memory)."""
    if not path.exists():
        raise SpecError(f"{path}: file not found")
    if path.is_dir():
        raise SpecError(f"{path}: is a folder, expected a YAML file")
    if not path.is_file():
        raise SpecError(f"{path}: not a regular file (a pipe, a device or a socket); give a YAML file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SPEC_BYTES + 1)
        if len(data) > MAX_SPEC_BYTES:
            raise SpecError(f"{path}: larger than {MAX_SPEC_BYTES // 2**20} MB; a spec is a small YAML file")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: cannot read: {e}") from None


def read_yaml(path: Path) -> dict:
    """Read a YAML mapping; every way it can be wrong is one SpecError line naming the file."""
    text = _read_text(path)
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}{where}: bad YAML: {what}") from None
    if raw is None:
        raise SpecError(f"{path}: the file is empty; a spec needs at least `data:` or `model:`")
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: expected a mapping of keys (name, data, model, noise, train, ...), "
                        f"got a {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """'noise.factor=0.05' -> (['noise', 'factor'], 0.05); the value is read as a YAML scalar."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError(f"override {_short(text)}: must be in the form key=value, e.g. noise.factor=0.05")
    if value.strip().lower() in YAML11_WORDS:  # `noise.factor=yes` is the word, not True
        return key.split("."), value.strip()
    try:
        parsed = load_yaml(value) if value.strip() else None
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None)
        raise SpecError(f"override {_short(key + '=' + value)}: cannot read the value"
                        + (f": {why}" if why else f" {_short(value)}")) from None
    return key.split("."), parsed


def set_dotted(raw: dict, keys: list[str], value: Any) -> str | None:
    """Set raw[k1][k2]... = value in place, making sections as needed; returns a problem or None.

    A list (noise: [...]) is indexed by number (noise.0.factor); a one-entry list may be
    addressed as if it were the entry (noise.factor).
    """
    node: Any = raw
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            where = ".".join(keys[:i])
            if key.isdigit() and int(key) < len(node):
                if last:
                    node[int(key)] = value
                    return None
                node = node[int(key)]
                continue
            if len(node) != 1:
                return f"{where} is a list of {len(node)}; name an entry by its index, e.g. {where}.0.{key}"
            node = node[0]
        if not isinstance(node, dict):
            return f"{'.'.join(keys[:i])} is not a section"
        if last:
            node[key] = value
            return None
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
    return None


LOCAL_KEYS = ("path", "tokenizer")  # values that name files or folders, relative to where they are written


def local_or_name(value: str, base: Path, always_local: bool = False) -> str:
    """`value` made absolute against `base` when it names something local; otherwise it is
    left as it is, a Hugging Face name ("gpt2", "org/model") to look up in the local cache.
    A value that starts like a path (/, ./, ../, ~) is always local."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if always_local or value.startswith((".", "~")) or (base / path).exists():
        return str((base / path).resolve())
    return value


def apply_overrides(raw: dict, overrides: list[str], cwd: Path | None = None) -> dict:
    """Set each dotted key in a copy of `raw`. Paths given here are relative to the cwd."""
    raw = copy.deepcopy(raw)
    problems = []
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except SpecError as e:
            problems += e.problems
            continue
        if keys[-1] in LOCAL_KEYS and isinstance(value, str):
            value = local_or_name(value, cwd or Path.cwd(), always_local=keys == ["data", "path"])
        problem = set_dotted(raw, keys, value)
        if problem:
            problems.append(f"override {_short(text)}: {problem}")
    if problems:
        raise SpecError(problems)
    return raw


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


# --------------------------------------------------------------------------- validation


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


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


def _public_fields(cls) -> list:
    """The fields a user may write (not `options`, which holds the kind's own keys, nor `where`)."""
    return [f for f in fields(cls) if not f.metadata.get("internal")]


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

    # noise: one mapping, or a list of mappings applied together
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
    spec.noise = noises

    if "name" in raw and raw["name"] is None:  # `name: null` or `name=`: the default is the file's stem
        problems.append("name: empty; give the run a name (it names a folder under the runs folder), "
                        "or leave the key out to use the spec file's name")
    if spec.name is not None and not NAME_RE.match(spec.name):
        problems.append(f"name: {spec.name!r} must be 1-100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (it names a folder under the runs folder)")
    if not DEVICE_RE.match(spec.device):
        problems.append(f"device: must be auto, cpu, cuda, cuda:N or mps; got {spec.device!r}")

    base = base_dir or Path.cwd()
    dataset = model = None
    if _check_kind("data", spec.data.kind, catalog.DATASETS, "dataset", problems):
        dataset = catalog.DATASETS[spec.data.kind]
        _resolve_paths(spec.data, "data", dataset, base, problems)
    if _check_kind("model", spec.model.kind, catalog.MODELS, "model", problems):
        model = catalog.MODELS[spec.model.kind]
        _resolve_paths(spec.model, "model", model, base, problems)
        if dataset is not None and not catalog.fits(model, dataset):
            fits = [m.name for m in catalog.MODELS.values() if catalog.fits(m, dataset)]
            problems.append(f"model.kind: {model.name!r} cannot read data kind {dataset.name!r} "
                            f"({'/'.join(sorted(dataset.modalities))}); use one of: {', '.join(fits)}")
    for section, entry, where in ((spec.data, dataset, "data"), (spec.model, model, "model")):
        if entry is not None and entry.check is not None:
            entry.check(section, where, spec, problems)
    _check_noise(spec, dataset, problems)

    _check_tracker(spec, problems)
    t = spec.train
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        problems.append(f"train.betas: must be two numbers in [0, 1), got {t.betas!r}")
    if t.lr_schedule != "constant" and t.min_lr > t.lr:
        problems.append(f"train.min_lr: {t.min_lr} is above train.lr ({t.lr}); the schedule decays to min_lr")
    if problems:
        raise SpecError(problems)
    return spec


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
    """A folder made absolute (it must exist), or a Hugging Face name left for the cache lookup."""
    resolved = local_or_name(value, base)
    if Path(resolved).is_absolute() and not Path(resolved).is_dir():
        problems.append(f"{where}: folder not found: {resolved}")
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


# --------------------------------------------------------------------------- writing


def _section_dict(obj) -> dict:
    """A section as the resolved spec writes it: its shared keys, then its kind's options."""
    out = {f.name: copy.deepcopy(getattr(obj, f.name)) for f in _public_fields(obj)}
    if isinstance(obj, KindSection):
        out.update(copy.deepcopy(obj.options))
    return out


def spec_to_dict(spec: Spec) -> dict:
    """The resolved spec, every default filled in; loads back to an equal Spec."""
    noise = [_section_dict(n) for n in spec.noise]
    return {
        "name": spec.name,
        "seed": spec.seed,
        "device": spec.device,
        "data": _section_dict(spec.data),
        "model": _section_dict(spec.model),
        "noise": noise[0] if len(noise) == 1 else noise,
        "train": _section_dict(spec.train),
        "output": _section_dict(spec.output),
    }


def noise_entries(d: dict) -> list[dict]:
    """A resolved spec's noise entries as a list (one mapping, or a list of them)."""
    noise = d.get("noise", {"kind": "none"})
    return noise if isinstance(noise, list) else [noise]


def noise_parts(entries: list[dict]) -> tuple[str, str]:
    """('input+weight', '0.1/0.01'): the kinds joined by '+' and their factors by '/'; none has no factor."""
    kinds = "+".join(str(e.get("kind", "none")) for e in entries)
    if kinds == "none":
        return kinds, ""
    return kinds, "/".join(f"{float(e.get('factor', NoiseSpec.__dataclass_fields__['factor'].default)):g}"
                           for e in entries)


def noise_label(entries: list[dict]) -> str:
    kinds, factors = noise_parts(entries)
    return f"{kinds} {factors}".strip()


def canonical(d: dict, keep_seed: bool = True) -> dict:
    """A resolved spec reduced to what shapes the result: without its name and device (a run
    may move), without the factor of `none` (it cannot matter), and with `keep_seed=False`
    without its seed (what makes runs of one configuration). Sweeps name points by it, and
    reports group runs by it."""
    d = copy.deepcopy(d)
    for key in ("name", "device") + (() if keep_seed else ("seed",)):
        d.pop(key, None)
    entries = [{"kind": "none"} if e.get("kind") == "none" else e for e in noise_entries(d)]
    d["noise"] = entries[0] if len(entries) == 1 else entries
    return d


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists of mappings are indexed (noise.0.kind)."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}.{i}"))
    else:
        out[prefix] = d
    return out


def spec_diff(old: dict, new: dict) -> list[str]:
    """'key: old -> new' for every setting that differs; the name and the device do not count
    (a run may be resumed under another name or on another device)."""
    a, b = flatten(old), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in ("name", "device") and a.get(k) != b.get(k)]


def read_saved_spec(path: Path) -> dict | None:
    """A run folder's spec.yaml as a mapping, or None when it is missing or damaged."""
    try:
        old = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return old if isinstance(old, dict) else None


def dump_yaml(d: dict) -> str:
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)
