"""What can be named in a spec: datasets, models, noise kinds.

Torch-free on purpose: `noisecli --help`, `validate` and `list` read this table without
paying for `import torch`. The code behind each entry is imported only when it is built.

`options` lists the section keys that only this entry uses; validation refuses such a key
when the entry that uses it is not the one chosen (a `block_size` next to `digits` is a
mistake worth one line, not a silently ignored setting).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    name: str
    summary: str
    target: str  # "module:function" that builds it, imported lazily
    options: tuple[str, ...] = ()
    # datasets: what they provide; models and noise: what they accept
    modalities: frozenset[str] = field(default_factory=frozenset)
    factor: str = ""  # noise only: what the factor means
    formula: str = ""  # noise only


VECTOR, IMAGE, TOKENS = "vector", "image", "tokens"

DATASETS = {
    e.name: e
    for e in [
        Entry("digits", "8x8 handwritten digits, 1,797 images, 10 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_sklearn", ("standardize",), frozenset({VECTOR, IMAGE})),
        Entry("breast_cancer", "Wisconsin breast cancer, 569 x 30 features, 2 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_sklearn", ("standardize",), frozenset({VECTOR})),
        Entry("wine", "wine recognition, 178 x 13 features, 3 classes (scikit-learn, bundled)",
              "noisecli.data.tabular:load_sklearn", ("standardize",), frozenset({VECTOR})),
        Entry("teacher", "synthetic regression or classification from a random teacher network",
              "noisecli.data.synthetic:load_teacher",
              ("n_samples", "n_features", "n_classes", "teacher_hidden", "label_noise", "standardize"),
              frozenset({VECTOR})),
        Entry("pydoc", "character-level text of CPython's bundled pydoc topics (about 465k chars)",
              "noisecli.data.text:load_pydoc", ("block_size", "tokenizer"), frozenset({TOKENS})),
        Entry("markov", "synthetic character language with a known entropy rate (the best possible loss)",
              "noisecli.data.synthetic:load_markov",
              ("block_size", "vocab_size", "n_tokens", "concentration"), frozenset({TOKENS})),
        Entry("text", "any UTF-8 text file, character-level or through data.tokenizer (data.path, data.block_size)",
              "noisecli.data.text:load_text", ("path", "block_size", "tokenizer"), frozenset({TOKENS})),
        Entry("hf", "the text column of a Hugging Face dataset saved with save_to_disk (data.path, data.column); "
                    "needs datasets", "noisecli.data.text:load_hf", ("path", "column", "block_size", "tokenizer"),
              frozenset({TOKENS})),
        Entry("npz", "arrays x, y (and optionally x_val, y_val) from a .npz file (data.path)",
              "noisecli.data.tabular:load_npz", ("path", "standardize"), frozenset({VECTOR})),
        Entry("csv", "a CSV table with a header; data.target names the label column (default: the last)",
              "noisecli.data.tabular:load_csv", ("path", "target", "task", "standardize"), frozenset({VECTOR})),
    ]
}

MODELS = {
    e.name: e
    for e in [
        Entry("linear", "one linear layer on the flattened input", "noisecli.models.mlp:build_linear",
              (), frozenset({VECTOR})),
        Entry("mlp", "multi-layer perceptron (model.hidden, model.activation, model.dropout)",
              "noisecli.models.mlp:build_mlp", ("hidden", "activation", "dropout"), frozenset({VECTOR})),
        Entry("cnn", "small convolutional net for small images such as digits (model.channels)",
              "noisecli.models.cnn:build_cnn", ("channels", "dropout"), frozenset({IMAGE})),
        Entry("gpt", "small causal transformer (model.n_layer, n_head, n_embd, dropout; context = data.block_size)",
              "noisecli.models.gpt:build_gpt", ("n_layer", "n_head", "n_embd", "dropout", "bias"),
              frozenset({TOKENS})),
        Entry("hf", "a transformers causal language model: local folder or cached name (model.path), or a "
                    "fresh one from a config (model.config); needs transformers",
              "noisecli.models.hf:build_hf", ("path", "config", "trust_remote_code"), frozenset({TOKENS})),
    ]
}

NOISE = {
    e.name: e
    for e in [
        Entry("none", "no noise: the baseline every other kind is compared with",
              "noisecli.noise.base:NoNoise", factor="unused", formula="-"),
        Entry("input", "Gaussian (or uniform) noise added to continuous inputs",
              "noisecli.noise.input:InputNoise", ("distribution",), frozenset({VECTOR, IMAGE}),
              factor="standard deviation", formula="x + factor * N(0, 1)"),
        Entry("token", "each input token replaced by a random one (uniform or unigram); targets stay clean",
              "noisecli.noise.token:TokenNoise", ("replace_with",), frozenset({TOKENS}),
              factor="replacement probability p", formula="x_i -> random token with probability p"),
        Entry("embedding", "NEFTune: uniform noise on the input embeddings, scaled by each example's length",
              "noisecli.noise.embedding:EmbeddingNoise", ("distribution",), frozenset({TOKENS}),
              factor="alpha (NEFTune used 5-15)", formula="e + alpha / sqrt(L_i * d) * U(-1, 1)"),
        Entry("weight", "Gaussian noise on the weights for forward and backward; the optimizer updates "
              "the clean weights", "noisecli.noise.weight:WeightNoise", ("mode", "targets"),
              factor="standard deviation", formula="grad at w + factor * N(0, 1), step on w"),
        Entry("activation", "Gaussian noise on the outputs of chosen layers (forward hooks)",
              "noisecli.noise.activation:ActivationNoise", ("targets",),
              factor="standard deviation", formula="h + factor * N(0, 1)"),
        Entry("gradient", "annealed Gaussian noise on the clipped gradients (Neelakantan et al. 2015)",
              "noisecli.noise.gradient:GradientNoise", ("gamma",),
              factor="eta", formula="g + N(0, eta / (1 + t)^gamma)"),
        Entry("anticorrelated", "Anti-PGD: the perturbation is the difference of two successive draws; with "
              "train.weight_decay 0 it trains exactly like additive weight noise (sweep one, not both)",
              "noisecli.noise.anticorrelated:AnticorrelatedNoise", ("targets",),
              factor="standard deviation", formula="w + xi_{n+1} - xi_n, xi ~ N(0, factor^2)"),
    ]
}

SCHEDULES = ("constant", "linear", "cosine")
