"""Rules that span keys of the train, data and eval sections (checked after each section was
built on its own), and the one way a mistyped name gets a suggestion."""

from __future__ import annotations

import difflib
import math

from noisecli import metrics
from noisecli.spec.sections import Spec


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_train(spec: Spec, problems: list[str]) -> None:
    """Rules across train keys, and the held-out shares of the data."""
    t = spec.train
    if len(t.betas) != 2 or not all(0 <= b < 1 for b in t.betas):
        problems.append(f"train.betas: must be two numbers in [0, 1), got {t.betas!r}")
    if t.lr_schedule != "constant" and t.min_lr > t.lr:
        problems.append(f"train.min_lr: {t.min_lr} is above train.lr ({t.lr}); the schedule decays to min_lr")
    if t.early_stopping is not None:
        t.early_stopping = _early_stopping(t.early_stopping, problems)
    if t.mixup is not None:
        t.mixup = _mixup(t.mixup, problems)
    e = spec.eval
    if e.robustness is not None:
        e.robustness = _probe(e.robustness, "eval.robustness", {"levels": None}, problems)
    if e.sharpness is not None:
        e.sharpness = _probe(e.sharpness, "eval.sharpness", {"rho": 0.01, "draws": 8}, problems)
    d = spec.data
    if 0 < d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction >= 1:
        problems.append(f"data.test_fraction: {d.test_fraction} with data.val_fraction {d.val_fraction} "
                        "leaves nothing to train on; their sum must be below 1")


def _probe(raw: dict, where: str, defaults: dict, problems: list[str]) -> dict:
    """eval.robustness {levels} or eval.sharpness {rho, draws}, with its defaults filled in."""
    for key in raw:
        if key not in defaults:
            problems.append(f"{where}.{key}: unknown key{suggest(str(key), list(defaults))} "
                            f"(keys: {', '.join(defaults)})")
    out = {**defaults, **{k: v for k, v in raw.items() if k in defaults}}
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if "levels" in defaults and not (isinstance(out["levels"], list) and out["levels"]
                                     and all(number(v) and v >= 0 for v in out["levels"])):
        problems.append(f"{where}.levels: must be a non-empty list of numbers >= 0, got {out['levels']!r}")
    if "rho" in defaults and not (number(out["rho"]) and out["rho"] > 0):
        problems.append(f"{where}.rho: must be a number > 0, got {out['rho']!r}")
    if "draws" in defaults and (isinstance(out["draws"], bool) or not isinstance(out["draws"], int)
                                or not 1 <= out["draws"] <= 1000):
        problems.append(f"{where}.draws: must be a whole number from 1 to 1000, got {out['draws']!r}")
    return out


EARLY_STOPPING_KEYS = ("patience", "metric", "min_delta")
MIXUP_KEYS = ("alpha",)


def _mixup(raw, problems: list[str]) -> dict:
    """train.mixup {alpha}, alpha > 0 (Beta(alpha, alpha): small alpha mixes little, 1 uniformly)."""
    where = "train.mixup"
    if not isinstance(raw, dict):
        problems.append(f"{where}: must be a mapping like {{alpha: 0.2}}, got {raw!r}")
        return {"alpha": None}
    for key in raw:
        if key not in MIXUP_KEYS:
            problems.append(f"{where}.{key}: unknown key{suggest(str(key), MIXUP_KEYS)} "
                            f"(keys: {', '.join(MIXUP_KEYS)})")
    alpha = raw.get("alpha", 0.2)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        problems.append(f"{where}.alpha: must be a number > 0, got {alpha!r}")
    return {"alpha": alpha}


def _early_stopping(raw: dict, problems: list[str]) -> dict:
    """train.early_stopping with its defaults filled in (as the resolved spec shows it)."""
    where = "train.early_stopping"
    for key in raw:
        if key not in EARLY_STOPPING_KEYS:
            problems.append(f"{where}.{key}: unknown key{suggest(str(key), EARLY_STOPPING_KEYS)} "
                            f"(keys: {', '.join(EARLY_STOPPING_KEYS)})")
    patience, metric, min_delta = raw.get("patience"), raw.get("metric", "val_loss"), raw.get("min_delta", 0.0)
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
        problems.append(f"{where}.patience: must be a whole number of evaluations >= 1, got {patience!r}")
    watchable = [f"val_{m.name}" for m in metrics.METRICS]
    if metric not in watchable:
        problems.append(f"{where}.metric: must be a validation metric ({', '.join(watchable)}); "
                        f"got {metric!r}{suggest(str(metric), watchable)}")
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
        problems.append(f"{where}.min_delta: must be a number >= 0, got {min_delta!r}")
    return {"patience": patience, "metric": metric, "min_delta": min_delta}
