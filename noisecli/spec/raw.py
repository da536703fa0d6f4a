"""The raw spec: the mapping a YAML file or a KEY=VALUE override gives, before validation.

Every spec, override and --grid value is read by `SpecLoader`, whose limits keep a YAML
document far from what would break the code that walks it, and which refuses a key given
twice. Overrides set (or, with KEY=null, remove) dotted keys in the mapping; paths they give
are relative to the current folder, and made absolute here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from noisecli import catalog
from noisecli.errors import SpecError
from noisecli.spec.rules import suggest
from noisecli.spec.sections import KIND_SECTIONS, SECTIONS, SPEC_KEYS, _public_fields
from noisecli.targets import TARGET_RE

# YAML 1.1 reads these words as booleans; on a command line they are meant as words
YAML11_WORDS = ("yes", "no", "on", "off", "y", "n")

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
    """Set each dotted key in a copy of `raw`; `KEY=null` removes the key (its default applies
    again: `data.kind=npz data.target=null data.path=x.npz`). One rule for paths: those given here
    are relative to the current folder (`cwd`), those in the spec file to the spec file's folder."""
    raw = copy.deepcopy(raw)
    problems, given = [], []
    for text in overrides:
        try:
            keys, value = parse_override(text)
        except SpecError as e:
            problems += e.problems
            continue
        if value is None and text.partition("=")[2].strip():  # `KEY=null` (`KEY=` is an empty value)
            problem = remove_dotted(raw, keys)
        else:
            problem = set_dotted(raw, keys, value)
            given.append(keys)
        if problem:
            problems.append(f"override {_short(text)}: {problem}")
    if problems:
        raise SpecError(problems)
    for keys in given:
        _paths_from(raw, keys, cwd or Path.cwd())
    return raw


def remove_dotted(raw: dict, keys: list[str]) -> str | None:
    """Remove raw[k1][k2]... in place (a one-entry list addressed as its entry, as `set_dotted` does);
    returns a problem or None. A key that is not there is nothing to remove, unless no spec has such
    a key: a typo, named with a suggestion."""
    node: Any = raw
    for i, key in enumerate(keys):
        if isinstance(node, list):
            if key.isdigit() and int(key) < len(node):
                if i == len(keys) - 1:
                    del node[int(key)]
                    return None
                node = node[int(key)]
                continue
            if len(node) != 1:
                where = ".".join(keys[:i])
                return f"{where} is a list of {len(node)}; name an entry by its index, e.g. {where}.0.{key}"
            node = node[0]
        if not isinstance(node, dict) or key not in node:
            return _unknown_key(keys)
        if i == len(keys) - 1:
            del node[key]
            return None
        node = node[key]
    return None


def _unknown_key(keys: list[str]) -> str | None:
    """'no key ...' when no spec has the dotted key `keys` (checked to the depth of a section's keys)."""
    names = [k for k in keys if not k.isdigit()]  # noise.0.factor is noise's `factor`
    if names[0] not in SPEC_KEYS:
        return f"no key {names[0]!r} to remove{suggest(names[0], SPEC_KEYS)}"
    cls = {**SECTIONS, **KIND_SECTIONS}.get(names[0])
    if len(names) != 2 or cls is None:
        return None  # a top-level key, or deeper than a section's keys (model.config.n_layer): nothing to check
    known = [f.name for f in _public_fields(cls) if f.name != "options"]
    if names[0] in catalog.TABLES:
        known += [o for e in catalog.TABLES[names[0]].values() for o in e.options if o not in known]
    return None if names[1] in known else f"no key {names[1]!r} in {names[0]} to remove{suggest(names[1], known)}"


class HubName(str):
    """A `model.path` or `data.tokenizer` given on the command line that is no folder in the current
    folder: a Hugging Face name for the local cache, never taken for a folder next to the spec file
    (`build._local_folder` reads the mark, and writes the value as a plain string)."""


# how a value of each kind of path option is made absolute (`catalog.Option.path`)
PATH_FAMILY = {"file": "path", "folder": "path", "any": "path", "local": "local", "code": "code"}


def _paths_from(raw: dict, keys: list[str], cwd: Path) -> None:
    """The paths an override set (in a section set whole too: `data={kind: npz, path: x.npz}`) made
    absolute against `cwd`, so that the spec file's folder never resolves them. Which keys are
    paths is the kind's to say (`data.target` is code for python data, a column name for csv)."""
    section = raw.get(keys[0]) if keys[0] in ("data", "model") and len(keys) <= 2 else None
    if not isinstance(section, dict):
        return
    for name in [keys[1]] if len(keys) == 2 else list(section):
        family = _path_family(keys[0], section.get("kind"), name)
        value = section.get(name)
        if family is not None and isinstance(value, str) and not isinstance(value, HubName):
            section[name] = _absolute(value, family, cwd)


def _path_family(section: str, kind: Any, name: str) -> str | None:
    """'path', 'local', 'code', 'init' or None: what `section.name` names for `kind`; for a kind that does
    not say (left to the grid, or unknown), what every kind that has the option agrees it names."""
    if (section, name) == ("model", "init"):  # every kind's key, no kind's option: RUN_DIR[:best|last]
        return "init"
    table = catalog.TABLES[section]
    entry = table.get(kind) if isinstance(kind, str) else None
    if entry is not None and name in entry.options:
        return PATH_FAMILY.get(entry.options[name].path)
    families = {PATH_FAMILY.get(e.options[name].path) for e in table.values() if name in e.options}
    return families.pop() if len(families) == 1 else None


def split_init(value: str) -> tuple[str, str | None]:
    """model.init's RUN_DIR and the checkpoint after its last ':' (None when none is named; a ':'
    followed by a '/' belongs to the folder's path)."""
    run, colon, which = value.rpartition(":")
    return (run, which) if colon and "/" not in which else (value, None)


def _absolute(value: str, family: str, cwd: Path) -> str:
    if family == "init":  # the run folder made absolute, the checkpoint's name kept as given
        run, which = split_init(value)
        return f"{_absolute(run, 'path', cwd)}{'' if which is None else ':' + which}" if run else value
    if family == "local":  # a folder here, or a Hugging Face name
        resolved = local_or_name(value, cwd)
        return resolved if Path(resolved).is_absolute() else HubName(resolved)
    if family == "code":  # FILE.py:FUNCTION has a file; package.module:FUNCTION is found on the path
        m = TARGET_RE.match(value.strip())
        if not m or not m.group("where").endswith(".py"):
            return value
        return f"{_absolute(m.group('where'), 'path', cwd)}:{m.group('func')}"
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (cwd / path).resolve())
