"""The spec's sections: the typed dataclasses a spec is made of, and how noise is named.

Every key, its default, its range and its one-line reference text are declared here, once
(`opt`); the data, model and noise sections also read their kind's own options from the
catalog (`KindSection`). The lowest module of the package: the others build, write and
compare these classes. Nothing here imports torch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Optional

from noisecli import catalog

DEFAULT_EPOCHS = 3  # train.epochs when neither it nor train.max_steps is given
SEED_MAX = 2**32 - 1  # numpy's seeds stop here; the noise streams multiply the seed, and must stay in int64


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
    val_fraction: float = opt(0.2, "share of the data held out for validation (selection: the best "
                                   "checkpoint, early stopping, the report's best configuration)", gt=0, lt=1)
    test_fraction: float = opt(0.2, "share of the data held out as the test split, carved before the "
                                    "train/val split, on which the verdict is measured; 0: none. Data that "
                                    "brings its own test split keeps it", ge=0, lt=1)
    train_size: Optional[int] = opt(None, "subsample the training split to this many examples "
                                          "(or token windows' worth of text)", ge=1)
    seed: int = opt(0, "seed of the split and of synthetic data; kept apart from the run's seed "
                       "so every seed of a sweep sees the same data", ge=0, le=SEED_MAX)
    options: dict = _options_field()


@_with_options
class ModelSpec(KindSection):
    TABLE = "model"
    kind: str = opt("mlp", "model name (noisecli list models)")
    init: Optional[str] = opt(None, "RUN_DIR, RUN_DIR:best or RUN_DIR:last (default last; RUN_DIR relative to the "
                                    "spec file, given as an override to the current folder): start from that run's "
                                    "trained weights (same model, a fresh optimizer; not a LoRA run's adapters)")
    init_sha256: Optional[str] = opt(None, "filled in by noisecli: the hash of model.init's checkpoint, so a run "
                                           "whose source was retrained or replaced since is refused on resume")
    options: dict = _options_field()


@_with_options
class NoiseSpec(KindSection):
    TABLE = "noise"
    kind: str = opt("none", "noise kind (noisecli list noise)")
    factor: Optional[float] = opt(None, "strength; its meaning, typical range and default depend on the kind (each "
                                        "kind below, or noisecli list noise): left out, the kind's typical strength, "
                                        "e.g. 0.1 for input, alpha 5 for embedding; 0 for none", ge=0)
    schedule: str = opt("constant", "how the factor changes over training: constant | linear | cosine "
                                    "(decays toward 0, reached one step after the last, as transformers' "
                                    "schedulers)", choices=catalog.SCHEDULES)
    warmup_steps: int = opt(0, "steps over which the factor ramps up from 0", ge=0)
    options: dict = _options_field()
    # the entry's dotted path for messages: 'noise' for a single mapping, 'noise.N' in a list
    where: str = field(default="noise", compare=False, repr=False, metadata={"internal": True})

    def __post_init__(self) -> None:
        if self.factor is None:  # not given: the kind's own typical strength, written out in the resolved spec
            self.factor = catalog.default_factor(self.kind)


@dataclass
class TrainSpec:
    epochs: Optional[int] = opt(None, "passes over the training split (default: 3, unless train.max_steps is "
                                      "given alone: then max_steps decides, and the resolved spec says null)", ge=1)
    max_steps: Optional[int] = opt(None, "stop after this many optimizer steps (with train.epochs also given, "
                                         "whichever comes first)", ge=1)
    batch_size: int = opt(32, "examples (or token windows) per optimizer step: the global batch, across "
                                "grad_accum micro-batches and processes", ge=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step (gradient accumulation): each holds batch_size / "
                             "grad_accum examples; the step, its noise and its result are those of the whole batch",
                          ge=1)
    lr: float = opt(5e-5, "peak learning rate of AdamW", gt=0)
    weight_decay: float = opt(0.01, "AdamW decoupled weight decay", ge=0)
    label_smoothing: float = opt(0.0, "cross-entropy against labels smoothed by this much (classification, lm; "
                                      "sft on response tokens); evaluation losses stay plain cross-entropy",
                                 ge=0, lt=1)
    mixup: Optional[dict] = opt(None, "{alpha: 0.2}: each batch mixed with a shuffled copy of itself, inputs and "
                                      "targets, by lambda ~ Beta(alpha, alpha) (continuous-input classification)")
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
    early_stopping: Optional[dict] = opt(None, "{patience: N, metric: val_loss, min_delta: 0}: stop after N "
                                               "evaluations without an improvement larger than min_delta on "
                                               "the val metric named (resume keeps the count)")

    def __post_init__(self) -> None:
        # epochs not given: 3, or, when max_steps is given alone, no bound of its own (inf, written as
        # null): `max_steps: 60` trains 60 steps, not the fewer of 60 and 3 epochs. A saved spec.yaml
        # says epochs (3, or null) explicitly, so a resumed run reads the same bound it trained with.
        if self.epochs is None:
            self.epochs = DEFAULT_EPOCHS if self.max_steps is None else math.inf

    def step_budget(self, steps_per_epoch: int) -> tuple[int, str]:
        """(the steps this run trains, what bounds it: 'train.max_steps' or '3 epochs of 19 steps'); the one
        place the rule is written, for the trainer and the run's header line."""
        by_epochs = None if self.epochs == math.inf else self.epochs * steps_per_epoch
        if self.max_steps is not None and (by_epochs is None or self.max_steps <= by_epochs):
            return self.max_steps, "train.max_steps"
        return by_epochs, f"{self.epochs} epoch{'' if self.epochs == 1 else 's'} of {steps_per_epoch:,} " \
                          f"step{'' if steps_per_epoch == 1 else 's'}"


@dataclass
class OutputSpec:
    checkpoint: str = opt("last", "last | best | every (one per evaluation) | none (deleted when done)",
                          choices=("last", "best", "every", "none"))
    tracker: str = opt("none", "none | tensorboard | wandb | mlflow: also log metrics and the per-step train loss "
                               "there (extras noisecli[tensorboard], [wandb], [mlflow]); metrics.csv stays the record",
                       choices=("none", *catalog.TRACKER_PACKAGES))


@dataclass
class EvalSpec:
    robustness: Optional[dict] = opt(None, "{levels: [0.1, 0.3]}: the test metrics under test-time perturbation at "
                                           "each level (Gaussian noise of level x each feature's std on continuous "
                                           "inputs; each token replaced with probability level by a uniform "
                                           "random one, never padding), at the selected checkpoint and the end; "
                                           "robust_test_* is the mean over levels")
    sharpness: Optional[dict] = opt(None, "{rho: 0.01, draws: 8}: the mean increase of the clean training loss "
                                          "under random Gaussian weight perturbations of norm rho x each "
                                          "parameter tensor's norm (average-case sharpness), at the selected "
                                          "checkpoint and the end")


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
    eval: EvalSpec = field(default_factory=EvalSpec)

    @property
    def noise_label(self) -> str:
        """'input 0.3', 'token+weight 0.1/0.01' or 'none': the one way noise is named."""
        return noise_label([{"kind": n.kind, "factor": n.factor} for n in self.noise])


SECTIONS = {"data": DataSpec, "model": ModelSpec, "train": TrainSpec, "output": OutputSpec, "eval": EvalSpec}
KIND_SECTIONS = {"data": DataSpec, "model": ModelSpec, "noise": NoiseSpec}
SPEC_KEYS = ("name", "seed", "device", "data", "model", "noise", "train", "output", "eval")


def _public_fields(cls) -> list:
    """The fields a user may write (not `options`, which holds the kind's own keys, nor `where`)."""
    return [f for f in fields(cls) if not f.metadata.get("internal")]


def noise_entries(d: dict) -> list[dict]:
    """A resolved spec's noise entries as a list (one mapping, or a list of them)."""
    noise = d.get("noise", {"kind": "none"})
    return noise if isinstance(noise, list) else [noise]


def noise_parts(entries: list[dict]) -> tuple[str, str]:
    """('input+weight', '0.1/0.01'): the kinds joined by '+' and their factors by '/'; none has no factor."""
    kinds = "+".join(str(e.get("kind", "none")) for e in entries)
    if kinds == "none":
        return kinds, ""
    return kinds, "/".join(f"{float(_factor_of(e)):g}" for e in entries)


def _factor_of(entry: dict) -> float:
    """An entry's factor; one that gives none (or null) has its kind's default, as a NoiseSpec does."""
    factor = entry.get("factor")
    return catalog.default_factor(str(entry.get("kind", "none"))) if factor is None else factor


def noise_label(entries: list[dict]) -> str:
    kinds, factors = noise_parts(entries)
    return f"{kinds} {factors}".strip()
