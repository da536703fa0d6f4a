"""What can be named in a spec: datasets, models, noise kinds, each with its own options and rules.

One entry per kind, and everything the spec needs to know about that kind is in it: a
one-line summary, the options only it takes (type, default, help, allowed values), what
data it provides or accepts, and a `check` for rules that span keys. The code that builds
the kind is named by `target` ("module:function") and imported only when a run starts, so
`noisecli --help`, `validate` and `list` never pay for `import torch`. Adding a kind is
its module plus one entry here; validation, `noisecli list`, the resolved spec.yaml and
docs/reference.md all read from the entry.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

VECTOR, IMAGE, TOKENS = "vector", "image", "tokens"
SCHEDULES = ("constant", "linear", "cosine")
# output.tracker -> the package it needs (looked for by the spec loader, imported only by trackers.py)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


@dataclass(frozen=True)
class Option:
    """One key of a kind: its type (a typing annotation, checked by the spec loader), its default
    and one line of help. The bounds (ge, gt, le, lt) and choices of a list option hold for each
    item. `path` marks values that name something on disk, relative to the spec file (to the current
    folder when given as an override: `spec.raw.apply_overrides`): 'file' and 'folder' must exist (a
    file must be a regular file, not a pipe or a device); 'any' is either; 'local' is a folder or a
    Hugging Face name in the cache; 'code' is a kind: python target (FILE.py:FUNCTION or a module)."""

    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    path: str | None = None


# A check gets the section (DataSpec, ModelSpec or NoiseSpec), its dotted path, the whole spec
# and the problem list; it appends a line per problem and never raises.
Check = Callable[[Any, str, Any, list], None]


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    target: str  # "module:function" that builds it, imported lazily
    options: dict[str, Option] = field(default_factory=dict)
    # datasets: what they provide; models and noise: what they accept (empty: anything)
    modalities: frozenset[str] = field(default_factory=frozenset)
    check: Optional[Check] = None
    factor: str = ""  # noise only: what the factor means
    formula: str = ""  # noise only
    note: str = ""  # noise only: a fact worth knowing before sweeping it (shown by `noisecli list`)
    # noise only: a typical strength, the factor of an entry that gives none (`{kind: embedding}` is
    # alpha 5); `factor` says it, with the typical range. Benchmarks and examples use it too.
    example_factor: float = 0.0


# ----------------------------------------------------------------------------- datasets

STANDARDIZE = Option(bool, True, "scale each input feature to zero mean, unit variance (train statistics)")
BLOCK_SIZE = Option(int, 64, "context length, in characters (or tokens with data.tokenizer)", ge=2)
TOKENIZER = Option(Optional[str], None, "a Hugging Face tokenizer, as a local folder or a name already in the "
                                        "local cache (default: characters)", path="local")


def _python_options(returns: str) -> dict[str, Option]:
    return {
        "target": Option(Optional[str], None, f"FILE.py:FUNCTION (relative to the spec file; given as an "
                                              f"override, to the current folder) or package.module:FUNCTION; "
                                              f"the function returns {returns}",
                         path="code"),
        "args": Option(dict, {}, "keyword arguments for the function"),
        "code_sha256": Option(Optional[str], None, "filled in by noisecli: the hash of the target's file, "
                                                   "so a run whose code changed is refused on resume"),
    }


def _file(what: str) -> Option:
    return Option(Optional[str], None, f"{what} (relative to the spec file)", path="file")


def _check_sft(data, where: str, spec, problems: list[str]) -> None:
    """data.template: 'chat' needs a tokenizer and pairs; a format text has {prompt} then {response}, once each."""
    t, fields = data.template, ("prompt", "response")
    if t is not None and data.messages is not None:
        problems.append(f"{where}.template: applies to prompt/response pairs; {where}.messages are rendered with "
                        "the tokenizer's chat template (leave data.template out)")
    elif t == "chat" and data.tokenizer is None:
        problems.append(f"{where}.template: 'chat' renders each pair with the tokenizer's chat template; set "
                        f"{where}.tokenizer (a Hugging Face tokenizer with one)")
    elif t is not None and t != "chat":
        names = re.findall(r"\{(\w+)\}", t)
        wrong = [n for n in dict.fromkeys(names) if n not in fields]
        for n in wrong:
            close = "".join(f"; did you mean {{{c}}}?" for c in difflib.get_close_matches(n, fields, 1, 0.5))
            problems.append(f"{where}.template: {{{n}}} is not filled in{close} (only {{prompt}} and {{response}} are)")
        if not wrong and names != list(fields):
            problems.append(f"{where}.template: must hold {{prompt}} and {{response}} once each, {{prompt}} first, "
                            f"or be 'chat'; got {t!r}")


DATASETS = {
    e.name: e
    for e in [
        Entry("digits", "8x8 handwritten digits, 1,797 images, 10 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_digits", {"standardize": STANDARDIZE}, frozenset({VECTOR, IMAGE})),
        Entry("breast_cancer", "Wisconsin breast cancer, 569 x 30 features, 2 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_breast_cancer", {"standardize": STANDARDIZE}, frozenset({VECTOR})),
        Entry("wine", "wine recognition, 178 x 13 features, 3 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_wine", {"standardize": STANDARDIZE}, frozenset({VECTOR})),
        Entry("teacher", "synthetic regression or classification from a random teacher network",
              "noisecli.data.synthetic:load_teacher", {
                  "standardize": STANDARDIZE,
                  "n_samples": Option(int, 1000, "number of examples", ge=4),
                  "n_features": Option(int, 20, "input dimension", ge=1),
                  "n_classes": Option(int, 0, "0 for regression, else the number of classes", ge=0),
                  "teacher_hidden": Option(int, 32, "hidden width of the random teacher network", ge=1),
                  "label_noise": Option(float, 0.5, "std of the noise on regression targets, or the temperature "
                                                    "of sampled class labels", ge=0),
              }, frozenset({VECTOR})),
        Entry("pydoc", "character-level text of CPython's bundled pydoc topics (about 465k chars)",
              "noisecli.data.text:load_pydoc", {"block_size": BLOCK_SIZE, "tokenizer": TOKENIZER},
              frozenset({TOKENS})),
        Entry("markov", "synthetic character language with a known entropy rate (the best possible loss)",
              "noisecli.data.synthetic:load_markov", {
                  "block_size": BLOCK_SIZE,
                  "vocab_size": Option(int, 16, "number of symbols", ge=2, le=256),
                  "n_tokens": Option(int, 200_000, "length of the generated text", ge=100),
                  "concentration": Option(float, 0.3, "Dirichlet concentration of each transition row "
                                                      "(smaller = more predictable)", gt=0),
              }, frozenset({TOKENS})),
        Entry("text", "any UTF-8 text file, character-level or through data.tokenizer (data.path, data.block_size)",
              "noisecli.data.text:load_text", {"path": _file("the UTF-8 text file"), "block_size": BLOCK_SIZE,
                                               "tokenizer": TOKENIZER}, frozenset({TOKENS})),
        Entry("hf", "the text column of a Hugging Face dataset saved with save_to_disk (data.path, data.column); "
                    "needs datasets", "noisecli.data.text:load_hf", {
                  "path": Option(Optional[str], None, "the folder written by save_to_disk (relative to the spec "
                                                      "file)", path="folder"),
                  "column": Option(str, "text", "the column that holds the text"),
                  "block_size": BLOCK_SIZE, "tokenizer": TOKENIZER,
              }, frozenset({TOKENS})),
        Entry("npz", "arrays x, y (and optionally x_val, y_val) from a .npz file (data.path)",
              "noisecli.data.tabular:load_npz", {"path": _file("the .npz file"), "standardize": STANDARDIZE},
              frozenset({VECTOR})),
        Entry("python", "your own data: a Python function (data.target) returning a mapping of x, y and "
                        "optionally x_val, y_val (tensors or numpy arrays; as for npz)",
              "noisecli.data.python:load_python", {**_python_options("a mapping with x, y (x_val, y_val)"),
                                                   "standardize": STANDARDIZE}, frozenset({VECTOR})),
        Entry("sft", "instruction data: prompt/response pairs (or chat messages) from a JSONL, JSON or CSV file or a "
                     "save_to_disk folder; one padded sequence each, loss on the response (or assistant) tokens",
              "noisecli.data.sft:load_sft", {
                  "path": Option(Optional[str], None, "a .jsonl, .json or .csv file of examples, or a save_to_disk "
                                                      "folder (relative to the spec file)", path="any"),
                  "prompt": Option(str, "prompt", "the column that holds the prompt"),
                  "response": Option(str, "response", "the column that holds the response (the loss is on it)"),
                  "messages": Option(Optional[str], None, "instead of prompt/response: a column of chat messages "
                                                          "({role, content}), rendered with the tokenizer's chat "
                                                          "template; data.loss_on says which tokens are scored"),
                  "max_length": Option(Optional[int], None, "pad every example to this many tokens, truncating "
                                                            "longer responses (default: the longest example)", ge=2),
                  "tokenizer": TOKENIZER,
                  "eos": Option(bool, True, "prompt/response text: end each response with the end-of-sequence token, "
                                            "scored (characters: a reserved id, the last); chat templates end turns "
                                            "with their own tokens"),
                  "bos": Option(bool, True, "prompt/response text: begin each example with what the tokenizer puts "
                                            "before a text (its BOS, where it adds one, as TRL does)"),
                  "template": Option(Optional[str], None, "pairs: a text with {prompt} then {response}, once each (e.g."
                                                          " 'Q: {prompt}\\nA: {response}'; other {name}s are refused), "
                                                          "or 'chat': the pair through the tokenizer's chat template"),
                  "tokenize": Option(str, "joint", "joint: the whole text at once, the response from where the prompt"
                                                   "'s tokens stop matching (TRL, the NEFTune code); separate: apart",
                                     choices=("joint", "separate")),
                  "loss_on": Option(str, "assistant", "assistant: every assistant turn (with {% generation %} tags, "
                                                      "the tagged tokens); last: the last one; all: every token; for "
                                                      "pairs assistant and last are the response",
                                    choices=("assistant", "last", "all")),
              }, frozenset({TOKENS}), check=_check_sft),
        Entry("csv", "a CSV table with a header; data.target names the label column (default: the last)",
              "noisecli.data.tabular:load_csv", {
                  "path": _file("the CSV file"),
                  "target": Option(Optional[str], None, "the label column (default: the last column)"),
                  "task": Option(str, "auto", "auto | classification | regression",
                                 choices=("auto", "classification", "regression")),
                  "standardize": STANDARDIZE,
              }, frozenset({VECTOR})),
    ]
}

# ----------------------------------------------------------------------------- models

DROPOUT = Option(float, 0.0, "dropout probability", ge=0, lt=1)


def _check_gpt(model, where: str, spec, problems: list[str]) -> None:
    if model.n_embd % model.n_head:
        problems.append(f"{where}.n_embd: {model.n_embd} must be a multiple of {where}.n_head ({model.n_head})")


def _check_hf(model, where: str, spec, problems: list[str]) -> None:
    """What can be checked without importing transformers; the rest is checked when the model
    is built (and by `validate`), still before anything is written."""
    config_refused = any(p.startswith((f"{where}.config:", f"{where}.path:")) for p in problems)
    if model.path is None and model.config is None and not config_refused:
        problems.append(f"{where}.path: model kind 'hf' needs {where}.path (a local folder or cached name) "
                        f"or {where}.config (a transformers config to build a fresh model from)")
    elif model.path is not None and model.config is not None:
        problems.append(f"{where}.config: give {where}.path (pretrained weights) or {where}.config (a fresh "
                        "model), not both")
    if model.config is not None and not isinstance(model.config.get("model_type"), str):
        problems.append(f"{where}.config.model_type: required, the transformers model type (e.g. gpt2, llama)")
    dataset = DATASETS.get(spec.data.kind)
    reads_text = dataset is not None and "tokenizer" in dataset.options  # characters unless told otherwise
    if model.path is not None and reads_text and spec.data.tokenizer is None:
        problems.append(f"data.tokenizer: a pretrained model reads the token ids of its own tokenizer, not "
                        f"characters; set data.tokenizer (usually to {where}.path, {model.path!r})")


MODELS = {
    e.name: e
    for e in [
        Entry("linear", "one linear layer on the flattened input", "noisecli.models.mlp:build_linear",
              {}, frozenset({VECTOR})),
        Entry("mlp", "multi-layer perceptron (model.hidden, model.activation, model.dropout)",
              "noisecli.models.mlp:build_mlp", {
                  "hidden": Option(list[int], [256, 256], "hidden layer widths", ge=1),
                  "activation": Option(str, "relu", "relu | gelu | tanh", choices=("relu", "gelu", "tanh")),
                  "dropout": DROPOUT,
              }, frozenset({VECTOR})),
        Entry("cnn", "small convolutional net for small images such as digits (model.channels)",
              "noisecli.models.cnn:build_cnn", {
                  "dropout": DROPOUT,
                  "channels": Option(list[int], [16, 32], "channels of each 3x3 conv block", ge=1),
              }, frozenset({IMAGE})),
        Entry("gpt", "small causal transformer (model.n_layer, n_head, n_embd, dropout; context = data.block_size)",
              "noisecli.models.gpt:build_gpt", {
                  "dropout": DROPOUT,
                  "n_layer": Option(int, 4, "transformer blocks", ge=1),
                  "n_head": Option(int, 4, "attention heads", ge=1),
                  "n_embd": Option(int, 128, "embedding width (a multiple of n_head)", ge=1),
                  "bias": Option(bool, False, "bias in linear and layer-norm layers"),
              }, frozenset({TOKENS}), check=_check_gpt),
        Entry("hf", "a transformers causal language model: local folder or cached name (model.path), or a "
                    "fresh one from a config (model.config); needs transformers",
              "noisecli.models.hf:build_hf", {
                  "path": Option(Optional[str], None, "a transformers model, as a local folder or a name already "
                                                      "in the local Hugging Face cache (nothing is downloaded)",
                                 path="local"),
                  "config": Option(Optional[dict], None, "build a fresh model from a transformers config instead: "
                                                         "model_type plus that config's keys, e.g. "
                                                         "{model_type: gpt2, n_layer: 2}"),
                  "trust_remote_code": Option(bool, False, "run Python code shipped in the model's folder "
                                                           "(never implied)"),
                  "dropout": Option(Optional[float], None, "set every dropout probability of the config (each "
                                                           "field named *dropout* or *pdrop*: gpt2's resid/embd/"
                                                           "attn_pdrop, llama's attention_dropout, ...); null: the "
                                                           "config's own", ge=0, lt=1),
              }, frozenset({TOKENS}), check=_check_hf),
        Entry("python", "your own model: a Python function (model.target) returning a torch.nn.Module whose "
                        "forward(x) gives logits or predictions like the built-in models",
              "noisecli.models.python:build_python",
              _python_options("an nn.Module; it also receives whichever of n_inputs, n_outputs, task, vocab_size, "
                              "block_size its signature names")),
    ]
}

# ----------------------------------------------------------------------------- noise

PARAMETER_TARGETS = Option(Optional[list[str]], None, "parameter-name globs (default: the weights of linear, "
                                                      "conv and embedding layers)")


def _check_token(noise, where: str, spec, problems: list[str]) -> None:
    if noise.factor > 1:
        problems.append(f"{where}.factor: token noise replaces each token with probability factor; "
                        f"must be in [0, 1], got {noise.factor}")


def _check_input(noise, where: str, spec, problems: list[str]) -> None:
    dataset = DATASETS.get(spec.data.kind)
    if dataset is not None and TOKENS in dataset.modalities:
        problems.append(f"{where}.kind: 'input' adds Gaussian noise to continuous inputs, but data kind "
                        f"{dataset.name!r} gives integer token ids (Gaussian noise cast back to an id moves "
                        f"ids at random: at std {noise.factor:g} {_moved(noise.factor)}); use 'token' or "
                        "'embedding' instead")


def _moved(std: float) -> str:
    """What adding N(0, std^2) and truncating to an integer does to a token id, in words."""
    return "about half of them move to the id below" if std < 0.5 else "most of them move"


def _check_embedding(noise, where: str, spec, problems: list[str]) -> None:
    """noise.on tells prompt from response, which only instruction data has, and only when not every
    token is scored."""
    if noise.on == "all":
        return
    if spec.data.kind != "sft":
        problems.append(f"{where}.on: {noise.on!r} needs instruction data (data.kind: sft), where a prompt and a "
                        f"response are told apart; data kind {spec.data.kind!r} has neither (use {where}.on: all)")
    elif spec.data.loss_on == "all":
        problems.append(f"{where}.on: {noise.on!r} with data.loss_on: all: every token is scored, so no prompt is "
                        f"told from the response; use {where}.on: all, or another data.loss_on")


NOISE = {
    e.name: e
    for e in [
        Entry("none", "no noise: the baseline every other kind is compared with",
              "noisecli.noise.base:NoNoise", factor="unused", formula="-"),
        Entry("input", "Gaussian (or uniform) noise added to continuous inputs",
              "noisecli.noise.input:InputNoise", {
                  "distribution": Option(str, "gaussian", "gaussian | uniform (same std)",
                                         choices=("gaussian", "uniform")),
              }, frozenset({VECTOR, IMAGE}), check=_check_input,
              factor="standard deviation, typically 0.05-0.5 on standardized inputs; default 0.1",
              formula="x + factor * N(0, 1)", example_factor=0.1),
        Entry("token", "each input token replaced by a random one (uniform or unigram); targets stay clean",
              "noisecli.noise.token:TokenNoise", {
                  "replace_with": Option(str, "uniform", "draw replacements uniformly or from the training "
                                                         "split's unigram frequencies",
                                         choices=("uniform", "unigram")),
                  "include_prompt": Option(bool, True, "instruction data (sft): replace prompt tokens too, not only "
                                                       "the response's (padding is never replaced)"),
              }, frozenset({TOKENS}), check=_check_token,
              factor="replacement probability p, in [0, 1], typically 0.05-0.2; default 0.1",
              formula="x_i -> random token with probability p", example_factor=0.1),
        Entry("embedding", "NEFTune: uniform noise on the input embeddings, scaled by each example's length",
              "noisecli.noise.embedding:EmbeddingNoise", {
                  "distribution": Option(str, "uniform", "uniform (NEFTune) | gaussian, same scale",
                                         choices=("gaussian", "uniform")),
                  "length": Option(str, "example", "L in the scale: example (each example's own, padding clean: the "
                                                   "authors' code), batch (the batch's longest, noise up to it: "
                                                   "transformers' hook under dynamic padding), padded (the padded "
                                                   "length, noise on padding: transformers' hook at one length)",
                                   choices=("example", "batch", "padded")),
                  "on": Option(str, "all", "sft: all (the authors' code), prompt (the paper's Algorithm 1) or response "
                                           "(the scored tokens); L stays the whole example's",
                               choices=("all", "prompt", "response")),
                  "scale": Option(str, "absolute", "absolute: alpha / sqrt(L * d); relative: e * (1 + alpha * U(-1,1)),"
                                                   " noise proportional to the embedding (TRL PR 904, not merged)",
                                  choices=("absolute", "relative")),
              }, frozenset({TOKENS}), check=_check_embedding,
              factor="alpha (scale relative: the relative amplitude), typically 5-15 (NEFTune's values); default 5",
              formula="e + alpha / sqrt(L_i * d) * U(-1, 1)", example_factor=5.0),
        Entry("weight", "Gaussian noise on the weights for forward and backward; the optimizer updates "
              "the clean weights", "noisecli.noise.weight:WeightNoise", {
                  "mode": Option(str, "additive", "w + factor*eps (additive) or w * (1 + factor*eps) "
                                                  "(multiplicative)", choices=("additive", "multiplicative")),
                  "targets": PARAMETER_TARGETS,
              }, factor="standard deviation (relative with mode multiplicative), typically 0.01-0.1; default 0.01",
              formula="grad at w + factor * N(0, 1), step on w", example_factor=0.01),
        Entry("activation", "Gaussian noise on the outputs of chosen layers (forward hooks)",
              "noisecli.noise.activation:ActivationNoise", {
                  "targets": Option(Optional[list[str]], None, "module-name globs (default: every transformer "
                                                               "block, else every hidden nonlinearity)"),
              }, factor="standard deviation, typically 0.1-1; default 0.1", formula="h + factor * N(0, 1)",
              example_factor=0.1),
        Entry("gradient", "annealed Gaussian noise on the clipped gradients (Neelakantan et al. 2015)",
              "noisecli.noise.gradient:GradientNoise", {
                  "gamma": Option(float, 0.55, "the variance decays as factor / (1 + t)^gamma", ge=0),
              }, factor="eta, typically 0.01-1 (Neelakantan et al.'s values); default 0.01",
              formula="g + N(0, eta / (1 + t)^gamma)", example_factor=0.01),
        Entry("anticorrelated", "Anti-PGD: the perturbation is the difference of two successive draws",
              "noisecli.noise.anticorrelated:AnticorrelatedNoise", {"targets": PARAMETER_TARGETS},
              factor="standard deviation, typically 0.01-0.1 (as for weight noise); default 0.01",
              formula="w + xi_{n+1} - xi_n, xi ~ N(0, factor^2)",
              note="with train.weight_decay 0 it trains exactly like additive weight noise (sweep one, not both)",
              example_factor=0.01),
    ]
}

TABLES = {"data": DATASETS, "model": MODELS, "noise": NOISE}


def fits(entry: Entry, dataset: Entry) -> bool:
    """Whether a model or noise kind can act on what `dataset` provides."""
    return not entry.modalities or bool(entry.modalities & dataset.modalities)


def default_factor(kind: str) -> float:
    """The factor of a noise entry that gives none: its kind's typical strength (0 for none or
    an unknown kind, which validation refuses)."""
    entry = NOISE.get(kind)
    return entry.example_factor if entry is not None else 0.0


def noise_kinds_for(dataset_name: str) -> dict[str, float]:
    """Every noise kind that applies to a dataset, with its example factor (benchmarks iterate this)."""
    dataset = DATASETS[dataset_name]
    return {e.name: e.example_factor for e in NOISE.values() if e.name != "none" and fits(e, dataset)}
