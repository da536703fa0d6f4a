"""Synthetic data with known structure: a teacher network, and a Markov chain language."""

from __future__ import annotations

import bisect
import math

import numpy as np

from noisecli.data import Dataset
from noisecli.data.tabular import make_table_dataset
from noisecli.data.text import make_text_dataset
from noisecli.spec import DataSpec


def load_teacher(spec: DataSpec) -> Dataset:
    """x ~ N(0, I); y from a random one-hidden-layer tanh network, with label noise.

    A small `n_samples` (or `train_size`) and a wide student overfit readily, which is
    where noise injection has something to do.
    """
    rng = np.random.default_rng(spec.seed)
    d, h = spec.n_features, spec.teacher_hidden
    w1 = rng.normal(0, 1 / math.sqrt(d), (d, h))
    out = max(spec.n_classes, 1)
    w2 = rng.normal(0, 1 / math.sqrt(h), (h, out))
    x = rng.normal(0, 1, (spec.n_samples, d))
    f = np.tanh(x @ w1) @ w2
    f = f / (f.std() + 1e-12)  # unit signal, so label_noise reads as a noise-to-signal ratio
    if spec.n_classes == 0:
        y = (f + spec.label_noise * rng.normal(0, 1, f.shape)).astype(np.float32)
        task = "regression"
    else:
        logits = 3.0 * f
        if spec.label_noise > 0:  # Gumbel-max: a sample from softmax(logits / label_noise)
            logits = logits / spec.label_noise + rng.gumbel(size=logits.shape)
        y = logits.argmax(1).astype(np.int64)
        task = "classification"
    return make_table_dataset(spec, x, y, task, info={"teacher_hidden": h})


def markov_chain(vocab: int, concentration: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random transition matrix (rows ~ Dirichlet) and its stationary distribution."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab, concentration), size=vocab)
    p = np.clip(p, 1e-12, None)
    p /= p.sum(1, keepdims=True)
    vals, vecs = np.linalg.eig(p.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    return p, pi / pi.sum()


def entropy_rate(p: np.ndarray, pi: np.ndarray) -> float:
    """H = -sum_i pi_i sum_j P_ij log P_ij, in nats: the best loss per predicted token given the past."""
    return float(-(pi[:, None] * p * np.log(p)).sum())


def load_markov(spec: DataSpec) -> Dataset:
    p, pi = markov_chain(spec.vocab_size, spec.concentration, spec.seed)
    rng = np.random.default_rng(spec.seed + 1)
    cum = np.cumsum(p, 1).tolist()
    last = spec.vocab_size - 1  # read once: a spec option is a lookup, and this loop runs per token
    state = int(rng.choice(spec.vocab_size, p=pi))
    seq = []
    for u in rng.random(spec.n_tokens).tolist():
        seq.append(state)
        state = min(bisect.bisect(cum[state], u), last)
    # symbols as printable characters so the text path (and its vocabulary) is shared
    alphabet = [chr(ord("a") + i) if i < 26 else chr(0x100 + i) for i in range(spec.vocab_size)]
    text = "".join(alphabet[s] for s in seq)
    h_rate = entropy_rate(p, pi)
    h_first = float(-(pi * np.log(pi)).sum())
    # The first position of a window has no context, so its best loss is the marginal entropy.
    best = ((spec.block_size - 1) * h_rate + h_first) / spec.block_size
    info = {"entropy_rate": round(h_rate, 5), "best_possible_loss": round(best, 5)}
    ds = make_text_dataset(spec, text, info)
    if ds.n_outputs != spec.vocab_size:
        ds.info["note"] = f"only {ds.n_outputs} of {spec.vocab_size} symbols occur in the text"
    return ds
