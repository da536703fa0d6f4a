"""The classical regularizers a study weighs noise against: the spec keys that set them, how a
report names them in a configuration's label (`input 0.3 + dropout 0.2`), and what `noisecli
list regularizers` prints.

A report keeps a configuration's regularizer part apart from its noise part, so that noise can
be compared with dropout, not only with no noise (`report --baseline 'dropout 0.2'`, or
`--baseline best-classical`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Regularizer:
    name: str  # as a label prints it: `dropout 0.2`
    key: str  # the dotted spec key that sets it
    summary: str
    primary: str | None = None  # a mapping-valued key: the sub-key whose value the label shows


REGULARIZERS = (
    Regularizer("dropout", "model.dropout", "dropout probability (mlp, cnn, gpt; hf: the config's dropout fields)"),
    Regularizer("weight_decay", "train.weight_decay", "decoupled weight decay (AdamW), on matrices and "
                                                      "embeddings, not on biases or norm gains"),
    Regularizer("label_smoothing", "train.label_smoothing", "cross-entropy against targets smoothed by this much "
                                                            "(classification, lm; sft on response tokens); "
                                                            "evaluation losses stay plain cross-entropy"),
    Regularizer("mixup", "train.mixup", "{alpha}: each batch mixed with a shuffled copy of itself by "
                                        "lambda ~ Beta(alpha, alpha), inputs and one-hot targets (continuous-input "
                                        "classification)", primary="alpha"),
    Regularizer("early_stopping", "train.early_stopping", "{patience, metric, min_delta}: stop after patience "
                                                          "evaluations without improvement on a val metric",
                primary="patience"),
)

OFF = (None, 0, 0.0, False)  # values that mean the regularizer is not used


def regularizer_of(flat_key: str) -> Regularizer | None:
    """The regularizer a flattened spec key belongs to (`train.mixup.alpha` -> mixup), or None."""
    return next((r for r in REGULARIZERS if flat_key == r.key or flat_key.startswith(r.key + ".")), None)


def _text(v: Any) -> str:
    return format(v, "g") if isinstance(v, float) else str(v)


def label_part(flat: dict[str, Any], varying: list[str]) -> str:
    """`dropout 0.2 + weight_decay 0.1`: the regularizers among the `varying` keys that this
    configuration uses (an off value, 0 or null, is left out), in REGULARIZERS order."""
    parts = []
    for r in REGULARIZERS:
        keys = [k for k in varying if regularizer_of(k) is r]
        if not keys:
            continue
        value = flat.get(f"{r.key}.{r.primary}") if r.primary else flat.get(r.key)
        if value in OFF or isinstance(value, bool):
            continue
        others = [f"{k.removeprefix(r.key + '.')}={_text(flat.get(k))}" for k in keys
                  if k not in (r.key, f"{r.key}.{r.primary}")]
        parts.append(" ".join([r.name, _text(value), *others]))
    return " + ".join(parts)
