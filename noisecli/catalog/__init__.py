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
from typing import Optional

from noisecli.catalog.entry import IMAGE, TOKENS, VECTOR, Check, Entry, Option, _python_options  # noqa: F401 - the names callers read here
from noisecli.catalog.models import MODELS

SCHEDULES = ("constant", "linear", "cosine")
# output.tracker -> the package it needs (looked for by the spec loader, imported only by trackers.py)
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}


# ----------------------------------------------------------------------------- datasets

STANDARDIZE = Option(bool, True, "scale each input feature to zero mean, unit variance (train statistics)")
BLOCK_SIZE = Option(int, 64, "context length, in characters (or tokens with data.tokenizer)", ge=2)
TOKENIZER = Option(Optional[str], None, "a Hugging Face tokenizer, as a local folder or a name already in the "
                                        "local cache (default: characters)", path="local")


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
