"""`data.kind: python`: the user's own data, from the function `data.target` names.

The function gets `data.args` as keyword arguments and returns a mapping with `x`, `y` and
optionally `x_val`, `y_val`, `x_test`, `y_test`, as tensors or numpy arrays; from there the
rules are npz's: float y is regression with MSE, integer y classification with cross-entropy;
without x_test/y_test a seeded `test_fraction` is carved out first, and without x_val/y_val
a seeded `val_fraction` is held out.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from noisecli.code import call, load_function
from noisecli.data import Dataset
from noisecli.data.tabular import table_from_arrays
from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest

KEYS = ("x", "y", "x_val", "y_val", "x_test", "y_test")


def load_python(spec: DataSpec) -> Dataset:
    where = f"data.target: {spec.target}"
    result = call(load_function(spec.target, "data.target"), spec.target, "data.target", spec.args, {})
    if not isinstance(result, Mapping):
        raise SpecError(f"{where} returned {type(result).__name__}; expected a mapping with x, y "
                        "(and optionally x_val, y_val, x_test, y_test)")
    unknown = [k for k in result if k not in KEYS]
    if unknown:
        raise SpecError(f"{where} returned unknown key {unknown[0]!r}{suggest(str(unknown[0]), KEYS)} "
                        f"(expected {', '.join(KEYS)})")
    return table_from_arrays(spec, {k: _array(v, f"{where}: {k}") for k, v in result.items()}, where)


def _array(value, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        try:
            return np.asarray(value)
        except ValueError as e:
            raise SpecError(f"{where}: not a rectangular array ({e})") from None
    raise SpecError(f"{where}: must be a tensor or numpy array, got {type(value).__name__}")
