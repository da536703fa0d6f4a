"""What only building a run's components can check, before anything trains: `noisecli validate`,
and a sweep's plan before its first point (`checked_plan`). The spec and plan readers
(spec/, sweep.py) check everything else without importing torch; only specs whose
components must be built to be checked (`hf` models, `kind: python` code, `sft` data) import
it here."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from noisecli.errors import SpecError
from noisecli.spec import Spec, dump_yaml, is_sweep_file, load_spec, read_yaml, spec_to_dict
from noisecli.sweep import Plan, load_plan


def checked_plan(path: Path | str, grid_options: list[str] | None = None, seeds: str | None = None,
                 overrides: list[str] | None = None, name: str | None = None, resolve_base=None) -> Plan:
    """`sweep.load_plan`, then every point's components checked as `check_buildable` checks them.
    `resolve_base`: report.best_base, for a `base: {from_report: ...}` (the cli passes it)."""
    plan = load_plan(path, grid_options, seeds, overrides, name, resolve_base)
    check_buildable([p.spec for p in plan.points])
    return plan


class _Problems:
    """Every check's problems, each said once, with the tracebacks of user code kept for NOISECLI_DEBUG."""

    def __init__(self):
        self.lines: list[str] = []
        self.tracebacks: list[str] = []

    def add(self, e: SpecError) -> None:
        self.lines += [p for p in e.problems if p not in self.lines]
        self.tracebacks += getattr(e, "tracebacks", [])

    def raise_any(self) -> None:
        if self.lines:
            error = SpecError(self.lines)
            error.tracebacks = self.tracebacks
            raise error


def check_buildable(specs: list[Spec]) -> None:
    """The checks only the components themselves can make, before anything runs: transformers'
    own config checks for `hf` models, each `data.tokenizer` loaded, and building whatever names
    user code (`kind: python`) or reads instruction data (`sft`). Only such specs import
    transformers or the user's code. Every check runs, and every problem is said (one SpecError)."""
    problems = _Problems()
    built = ("python", "sft")  # user code, and instruction files whose problems show only when read
    checks = []
    if any(s.model.kind == "hf" for s in specs):
        from noisecli.models.hf import check_hf_models  # torch and transformers: only for hf models

        checks.append(check_hf_models)
    tokenized = [s for s in specs if s.data.tokenizer is not None and s.data.kind not in built]  # sft: built below
    if tokenized:
        checks.append(lambda specs: check_tokenizers(tokenized))
    if any(s.data.kind in built or s.model.kind in built for s in specs):
        checks.append(lambda specs: check_python_specs(specs, built))
    task_keyed = [s for s in specs if s.data.kind not in built and s.model.kind not in built and _task_keyed(s)]
    if task_keyed:
        checks.append(lambda specs: check_task_keys(task_keyed))
    for check in checks:
        try:
            check(specs)
        except SpecError as e:
            problems.add(e)
    problems.raise_any()


def _task_keyed(spec: Spec) -> bool:
    """Keys whose validity depends on the data's task (early stopping on a metric other than the
    loss every task has, label smoothing, mixup)."""
    t = spec.train
    return bool(t.label_smoothing or t.mixup or (t.early_stopping or {}).get("metric", "val_loss") != "val_loss")


def check_task_keys(specs: list[Spec]) -> None:
    """Each distinct data loaded once (the task and the input kind are known only then), and the
    keys that depend on them checked as the trainer will check them."""
    from noisecli import metrics  # the metric schema: which val metrics each task records
    from noisecli.data import load_dataset  # torch: only specs with task-dependent keys come here
    from noisecli.engine.regularize import check_regularizers  # as above

    problems = _Problems()
    loaded: dict[str, object] = {}
    for spec in specs:
        key = json.dumps(spec_to_dict(spec)["data"], sort_keys=True, default=str)
        data = loaded.setdefault(key, load_dataset(spec.data))
        for check in (lambda: metrics.check_watched((spec.train.early_stopping or {}).get("metric"), data.task),
                      lambda: check_regularizers(spec.train, spec.data.kind, data)):
            try:
                check()
            except SpecError as e:
                problems.add(e)
    problems.raise_any()


def check_tokenizers(specs: list[Spec]) -> None:
    """Each distinct `data.tokenizer` loaded (local files only), as the data will load it."""
    from noisecli.hub import import_transformers, load_local  # transformers: only specs that name a tokenizer

    problems = _Problems()
    for name in dict.fromkeys(s.data.tokenizer for s in specs if s.data.tokenizer is not None):
        try:  # a tokenizer's own code never runs, as in data/text.py
            load_local(import_transformers("data.tokenizer").AutoTokenizer, name, "data.tokenizer", False)
        except SpecError as e:
            problems.add(e)
    problems.raise_any()


def check_python_specs(specs: list, kinds: tuple[str, ...] = ("python",)) -> None:
    """Build each distinct run whose data or model kind is in `kinds` (data, model and noise, in
    memory, on the CPU), so that broken code or data fails in `validate` and before a sweep
    starts, not at its first point."""
    from noisecli.trainer import Trainer  # torch: only specs that name code or sft data come here

    problems = _Problems()
    seen: set[str] = set()
    for spec in specs:
        if spec.data.kind not in kinds and spec.model.kind not in kinds:
            continue
        d = spec_to_dict(spec)
        key = json.dumps([d["data"], d["model"], d["noise"]], sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        on_cpu = copy.deepcopy(spec)
        on_cpu.device = "cpu"
        try:
            Trainer(on_cpu, "/nonexistent-never-written", quiet=True).setup()  # setup writes nothing
        except SpecError as e:
            problems.add(e)
    problems.raise_any()


def validate_file(path: Path, overrides: list[str], show: bool = False, resolve_base=None) -> str:
    """`noisecli validate`: a spec or a sweep spec checked as a run would check it (for `hf`
    models, transformers' own config checks too); the text to print, or SpecError."""
    if is_sweep_file(read_yaml(path)):
        plan = checked_plan(path, overrides=overrides, resolve_base=resolve_base)
        return f"ok: {path} (sweep {plan.name!r}: {len(plan.points)} points)\n"
    resolved = load_spec(path, overrides)
    check_buildable([resolved])
    text = dump_yaml(spec_to_dict(resolved)) + split_line(resolved) if show else ""
    return text + (f"ok: {path} (run {resolved.name!r}: data {resolved.data.kind}, model {resolved.model.kind}, "
                   f"noise {resolved.noise_label})\n")


def split_line(spec) -> str:
    """The examples (or tokens) in each split, as `train` will see them: the data is loaded."""
    from noisecli.data import load_dataset  # torch: only --show loads the data

    d = load_dataset(spec.data)
    unit = "tokens" if d.is_stream else "examples"
    return "# splits: " + " / ".join(f"{n:,} {split}" for split, n in d.split_sizes().items()) + f" {unit}\n"


def stack_refusal(spec) -> str | None:
    """Why a point cannot train in a stack for a reason only the engine knows (its noise kind
    acts where a stacked forward cannot see), for `sweep.form_groups`; None if it can."""
    from noisecli.noise import why_not_stacked  # torch: only `sweep --batched` asks

    if spec.train.mixup:  # each member would need its own mixing of its own batch; not written yet
        return "train.mixup: trained one after another (a stack mixes no batches yet)"
    return why_not_stacked(spec.noise)
