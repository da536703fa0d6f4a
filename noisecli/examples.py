"""What `noisecli list` prints, the examples `noisecli init` copies out of the package, and the
one line a mistake on the command line gets.

The examples are package data (`example_files/`), byte-identical copies of the repository's
`experiments/` folder (tests/test_examples_and_cli.py compares them), so a `pip install
noisecli` has them too. An example is a spec plus the files it names relative to its own
folder (a model file, instruction data), copied with the same relative paths, so the spec
runs wherever it lands. Nothing here imports torch.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from noisecli.errors import SpecError
from noisecli.runs import atomic_write

FILES = Path(__file__).with_name("example_files")
LIST_CHOICES = ("models", "datasets", "noise", "regularizers", "examples")


@dataclass(frozen=True)
class Example:
    name: str
    files: tuple[str, ...]  # the spec first, then what it names; relative to the example's folder
    summary: str


EXAMPLES = {e.name: e for e in (
    Example("quickstart", ("quickstart.yaml",),
            "an MLP memorizes 300 digits; input noise against it (one run, about 10 s on a CPU)"),
    Example("your-model", ("python-model.yaml", "my_model.py"),
            "your own PyTorch model from a .py file (model.kind: python), weight noise on named layers"),
    Example("sft-neftune", ("sft-neftune-sweep.yaml", "make_instructions.py", "data/instructions.jsonl"),
            "NEFTune on 600 padded instructions, a character GPT: alpha 5 and 15 against none (12 runs)"),
    Example("pretrain-then-lora", ("pretrain-pydoc-gpt.yaml", "sft-lora-neftune-sweep.yaml", "make_tokenizer.py",
                                   "data/pydoc-tokenizer/tokenizer.json", "data/pydoc-tokenizer/tokenizer_config.json",
                                   "make_instructions.py", "data/instructions.jsonl"),
            "a GPT pretrained on pydoc, then LoRA-tuned: NEFTune against none (13 runs; needs noisecli[hf,lora])"),
    Example("findings-digits-mlp", ("findings-digits-mlp.yaml",),
            "the pre-registered digits grid: four kinds at two factors against none, 5 seeds (45 runs)"),
    Example("findings-pydoc-gpt", ("findings-pydoc-gpt.yaml",),
            "the pre-registered grid of a character GPT on pydoc text: four kinds against none (45 runs)"),
    Example("study-regularizers-digits", ("study-regularizers-digits.yaml",),
            "noise against and on top of dropout, weight decay and label smoothing on digits, 5 seeds (200 runs)"),
    Example("study-regularizers-pydoc", ("study-regularizers-pydoc.yaml",),
            "token noise and NEFTune against and on top of dropout and label smoothing, a character GPT (36 runs)"),
    Example("tune", ("tune-digits.yaml",),
            "noisecli tune: each kind's factor searched with Optuna, pruned, the best confirmed on 3 fresh seeds"),
    Example("teacher-sweep", ("teacher-sweep.yaml",),
            "an MLP memorizes noisy teacher labels: which kind holds the val loss down (18 runs)"),
    Example("pydoc-gpt", ("pydoc-gpt.yaml",), "a small character GPT on CPython's bundled docs, token noise"),
    Example("pydoc-hf", ("pydoc-hf.yaml",),
            "a transformers GPT-2 built from a config, NEFTune embedding noise (needs the hf extra)"),
    Example("shakespeare-char", ("shakespeare-char.yaml",),
            "nanoGPT's CPU recipe for character-level Shakespeare (bring your tinyshakespeare.txt)"),
)}


def complete_list(incomplete: str) -> list[str]:
    """Shell completion of `noisecli list <TAB>`."""
    return [w for w in LIST_CHOICES if w.startswith(incomplete)]


def complete_examples(incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of `noisecli init <TAB>`: each name with its summary (zsh and fish show it)."""
    return [(e.name, e.summary) for e in EXAMPLES.values() if e.name.startswith(incomplete)]


def listing(what: str | None) -> str:
    """`noisecli list [WHAT]`: the catalog's datasets, models and noise kinds, the classical regularizers and the
    examples, one line each."""
    from noisecli.catalog import DATASETS, MODELS, NOISE  # lazy: keeps --help fast

    if what is not None and what not in LIST_CHOICES:
        from noisecli.spec import suggest  # lazy: keeps --help fast

        raise SpecError(f"list: unknown {what!r}{suggest(what, LIST_CHOICES)}; "
                        "choose models, datasets, noise, regularizers or examples")
    lines = []
    for name, table in {"datasets": DATASETS, "models": MODELS, "noise": NOISE}.items():
        if what not in (None, name):
            continue
        lines.append(f"{name}:")
        width = max(len(e.name) for e in table.values())
        for e in table.values():
            extra = f"  [{e.formula}; factor = {e.factor}]" if name == "noise" else ""
            options = f"  (options: {', '.join(e.options)})" if e.options else ""
            note = f"  Note: {e.note}." if e.note else ""
            lines.append(f"  {e.name:<{width}}  {e.summary}{extra}{options}{note}")
    if what in (None, "regularizers"):
        from noisecli.regularizers import REGULARIZERS  # lazy, as the catalog above

        width = max(len(r.key) for r in REGULARIZERS)
        lines += ["regularizers:  (what report --baseline compares noise with; labels name them: dropout 0.2)",
                  *(f"  {r.key:<{width}}  {r.summary}" for r in REGULARIZERS)]
    if what in (None, "examples"):
        width = max(map(len, EXAMPLES))
        lines += ["examples:  (noisecli init NAME [DIR] copies one)",
                  *(f"  {e.name:<{width}}  {e.summary}  (files: {', '.join(e.files)})" for e in EXAMPLES.values())]
    return "".join(f"{line}\n" for line in lines)


def usage_line(e) -> str:
    """A mistake click finds, worded as noisecli words its own: lower case, on one line, `did you mean`,
    no full stop. (cli.py's `_Group` prints it; it lives here because cli.py is near its 400 lines.)"""
    text = (f"{e.message} (did you mean {' or '.join(sorted(e.possibilities))}?)" if getattr(e, "possibilities", None)
            else e.format_message())  # NoSuchOption's "(Possible options: ...)", reworded
    text = " ".join(text.replace("Value error, ", "").replace(". Did you mean", "; did you mean").split())
    return text[:1].lower() + text[1:].rstrip(".")


def _named(name: str | None) -> Example:
    if name is None:
        raise SpecError(f"init: name an example: {', '.join(EXAMPLES)} (noisecli list examples)")
    if name not in EXAMPLES:
        from noisecli.spec import suggest  # lazy: keeps --help fast

        raise SpecError(f"init: unknown example {name!r}{suggest(name, EXAMPLES)} (noisecli list examples)")
    return EXAMPLES[name]


def _subfolders(example: Example, folder: Path) -> list[Path]:
    """The folders the example's files go in, `folder` first, each before the ones inside it."""
    return sorted({folder, *(folder / p for f in example.files for p in Path(f).parents)})


def _refusals(example: Example, folder: Path) -> list[str]:
    """Why the copy cannot go ahead (one line naming every file in the way), found before anything is written."""
    if folder.exists() and not folder.is_dir():
        return [f"init: {folder} is a file, not a folder"]
    in_the_way = [str(d) for d in _subfolders(example, folder) if d.exists() and not d.is_dir()]
    taken = [str(folder / f) for f in example.files if (folder / f).exists() or (folder / f).is_symlink()]
    if in_the_way:
        return [f"init: {', '.join(in_the_way)}: a file where the example needs a folder; nothing was copied"]
    if taken:
        return [f"init: {', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; nothing was copied "
                "(move it away, or choose another folder: noisecli init NAME DIR)"]
    return []


def init_example(name: str | None, folder: Path) -> str:
    """`noisecli init NAME DIR`: copy the example's files into `folder` (made if missing), never over an
    existing file; on a failure part-way (a full disk) what was copied is removed. Returns what to print."""
    example = _named(name)
    refusals = _refusals(example, folder)
    if refusals:
        raise SpecError(refusals)
    made = [d for d in _subfolders(example, folder) if not d.exists()]
    written: list[Path] = []
    try:
        for f in example.files:
            (folder / f).parent.mkdir(parents=True, exist_ok=True)
            if (folder / f).exists():  # appeared since the check: never overwritten
                raise SpecError(f"init: {folder / f} appeared while copying; nothing of it was overwritten")
            written.append(folder / f)
            atomic_write(folder / f, (FILES / f).read_bytes())  # whole or absent, as every file noisecli writes
    except (OSError, SpecError):
        for path in written:
            path.unlink(missing_ok=True)
        for d in reversed(made):
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    here = folder.resolve() == Path.cwd().resolve()
    spec = example.files[0]
    header = (FILES / spec).read_text().splitlines()[0].removeprefix("#").strip()
    command = re.split(r"\s{2,}", header)[0]
    for name in example.files:  # every spec the command names (pretrain-then-lora names two)
        command = command.replace(f"experiments/{name}", name if here else shlex.quote(str(folder / name)))
    where = "here" if here else f"to {folder}"
    return f"copied example {example.name} {where}: {', '.join(example.files)}\nrun it: {command}\n"
