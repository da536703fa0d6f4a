"""docs/reference.md, generated from the spec's dataclasses and the catalog's entries.

    python -m noisecli.reference > docs/reference.md

A test compares the file with this output, so the reference cannot drift from the code:
every key, its default and its meaning come from the one place that defines them.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

from noisecli import catalog
from noisecli.spec import KIND_SECTIONS, SECTIONS, Spec, _public_fields

INTRO = """\
# Spec reference

Generated from the code by `python -m noisecli.reference > docs/reference.md` (a test
fails when the two disagree).

Every key has a default, so a spec can be three lines long. Unknown keys are errors, as
are keys that only another kind uses (`data.block_size` with `digits`): each kind below
lists its own options. `1e-4` is a number. Relative paths (`data.path`, `data.tokenizer`,
`model.path`, the FILE.py of `data.target`/`model.target`) are relative to the spec file;
given as an override, to the current folder, never the other: a `model.path` or
`data.tokenizer` that is not a folder there is a Hugging Face name looked up in the local
cache only. Overrides set any key by its dotted path: `noisecli train SPEC
noise.factor=0.05 model.hidden=[64,64]`; `noise.0.factor` names an entry of a list of noise
kinds; `KEY=null` removes a key (its default applies again), e.g. `data.kind=npz
data.target=null data.path=x.npz`.
"""


def _default(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return f"`{text}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _field_default(f) -> object:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


def _table(rows: list[tuple[str, object, str]]) -> list[str]:
    out = ["| key | default | meaning |", "| --- | --- | --- |"]
    out += [f"| `{key}` | {_default(default)} | {_cell(help_)} |" for key, default, help_ in rows]
    return out


def _shared_rows(cls, prefix: str) -> list[tuple[str, object, str]]:
    return [(f"{prefix}{f.name}", _field_default(f), f.metadata["help"]) for f in _public_fields(cls)
            if f.name != "options"]


def spec_keys() -> list[str]:
    """Every dotted key a spec takes, each kind's options once: what the shell completes a
    KEY=VALUE override from (the same fields and entries the reference is rendered from)."""
    keys = [f.name for f in fields(Spec) if f.name not in SECTIONS]
    for section, cls in KIND_SECTIONS.items():
        keys += [key for key, _, _ in _shared_rows(cls, f"{section}.")]
        keys += [f"{section}.{name}" for entry in catalog.TABLES[section].values() for name in entry.options]
    for section in ("train", "output", "eval"):
        keys += [key for key, _, _ in _shared_rows(SECTIONS[section], f"{section}.")]
    return sorted(set(keys))


def render() -> str:
    lines = [INTRO, "## Top level", ""]
    lines += _table([(f.name, _field_default(f), f.metadata["help"]) for f in fields(Spec)
                     if f.name not in ("data", "model", "noise", "train", "output", "eval")])
    titles = {"data": "Data (`data:`)", "model": "Model (`model:`)", "noise": "Noise (`noise:`, one entry or a list)"}
    for section, cls in KIND_SECTIONS.items():
        lines += ["", f"## {titles[section]}", "", f"Keys every {section} kind takes:", ""]
        lines += _table(_shared_rows(cls, f"{section}."))
        for entry in catalog.TABLES[section].values():
            lines += ["", f"### {section}.kind: `{entry.name}`", "", entry.summary + "."]
            if entry.formula:
                lines[-1] += f" `{entry.formula}`; factor = {entry.factor}."
            if entry.note:
                lines[-1] += f" Note: {entry.note}."
            if entry.options:
                lines += [""] + _table([(f"{section}.{name}", o.default, o.help + (
                    f" ({' | '.join(o.choices)})" if o.choices and " | " not in o.help else ""))
                    for name, o in entry.options.items()])
    for section in ("train", "output", "eval"):
        lines += ["", f"## {section.capitalize()} (`{section}:`)", ""]
        lines += _table(_shared_rows(SECTIONS[section], f"{section}."))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
