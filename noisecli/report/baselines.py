"""Reports, the baselines: which configuration each one is compared with (`report --baseline`).

- `none` (the default): the configuration of the same base with no noise (else one at factor
  0, which trains exactly like none), so `input 0.3 + dropout 0.2` is compared with `dropout
  0.2`: does noise add to dropout?
- a label as the report prints it (`dropout 0.2`, `weight_decay 0.1`, `input 0.3 + dropout
  0.2`): that configuration, for every configuration of its study (the same settings but for
  noise and regularizers): does noise beat dropout?
- `best-classical`: per study, the configuration without noise (plain `none` included) with the
  best deciding metric on val, chosen on val and compared on test, so that the choice does not
  inflate the comparison: does noise beat the best a user would have without it?

Each baseline's comparisons form their own families for Holm's correction.
"""

from __future__ import annotations

import math

from noisecli.errors import SpecError
from noisecli.report.load import Config, factor_is_zero
from noisecli.report.verdict import run_value
from noisecli.spec import suggest

NONE = "none"
BEST_CLASSICAL = "best-classical"


def is_noise_free(c: Config) -> bool:
    """No noise: `none`, or every factor of its kinds 0 (which trains bitwise like none)."""
    return c.noise == "none" or bool(c.factor) and all(factor_is_zero(f) for f in c.factor.split("/"))


def resolve(configs: list[Config], name: str, select: str, higher_is_better: bool) -> dict[str, Config]:
    """configuration key -> its baseline configuration under `name` (absent: it has none)."""
    if name == NONE:
        return _none(configs)
    if name == BEST_CLASSICAL:
        return _best_classical(configs, select, higher_is_better)
    return _labelled(configs, name)


def _none(configs: list[Config]) -> dict[str, Config]:
    """Per base, its `none` configuration, else one whose factors are all 0. A configuration
    with no runs (every seed diverged) has nothing to compare with."""
    chosen: dict[str, Config] = {c.base: c for c in configs if c.noise == "none" and c.runs}
    for c in configs:
        if c.base not in chosen and c.runs and is_noise_free(c):
            chosen[c.base] = c
    return {c.key: chosen[c.base] for c in configs if c.base in chosen}


def _labelled(configs: list[Config], label: str) -> dict[str, Config]:
    """The configuration printed as `label`, for every configuration of its study; the label
    may leave out the other settings that vary (`dropout 0.2` for `dropout 0.2 train.lr=0.01`)
    where each study has one such configuration."""
    exact = [c for c in configs if c.label == label and c.runs]
    matches = exact or [c for c in configs if _core(c) == label and c.runs]
    by_study: dict[str, Config] = {}
    for c in matches:
        if c.study in by_study:
            raise SpecError(f"--baseline: {label!r} names more than one configuration of a study "
                            f"({by_study[c.study].label!r}, {c.label!r}); name one as the report prints it")
        by_study[c.study] = c
    if not by_study:
        labels = list(dict.fromkeys([NONE, BEST_CLASSICAL] + [c.label for c in configs if c.runs]))
        raise SpecError(f"--baseline: no configuration is labelled {label!r}{suggest(label, labels)} "
                        f"(labels: {', '.join(labels)})")
    return {c.key: by_study[c.study] for c in configs if c.study in by_study}


def _core(c: Config) -> str:
    return c.label.removesuffix(" " + c.extra) if c.extra else c.label


def _best_classical(configs: list[Config], select: str, higher_is_better: bool) -> dict[str, Config]:
    """Per study, the noise-free configuration with the best mean of `select` (a val value at the
    selected checkpoint); a tie (accuracy on a few hundred examples ties often) goes to the lower
    mean best val loss, then to the earlier in table order (the fewer regularizers)."""
    best: dict[str, tuple[tuple[float, float], Config]] = {}
    for c in configs:
        values = [run_value(r, select) for r in c.runs]
        if not is_noise_free(c) or not values or None in values:
            continue
        mean = sum(values) / len(values)
        if math.isnan(mean):
            continue
        score = (mean if higher_is_better else -mean, -sum(r.best_val for r in c.runs) / len(c.runs))
        held = best.get(c.study)
        if held is None or score > held[0]:
            best[c.study] = (score, c)
    return {c.key: best[c.study][1] for c in configs if c.study in best}


def describe(name: str, mapping: dict[str, Config]) -> str:
    """`best-classical (dropout 0.2)`: the baseline as the verdict names it."""
    chosen = list(dict.fromkeys(c.label for c in mapping.values()))
    if name == NONE:
        return NONE
    return f"{name} ({', '.join(chosen)})" if name == BEST_CLASSICAL else name
