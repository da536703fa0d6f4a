"""Tables: scikit-learn's bundled datasets, npz arrays, CSV files."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np
import torch

from noisecli.data import Dataset, carve_test, split_indices, subsample
from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest


def make_table_dataset(spec: DataSpec, x: np.ndarray, y: np.ndarray, task: str,
                       x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                       image_shape=None, info=None, x_test: np.ndarray | None = None,
                       y_test: np.ndarray | None = None) -> Dataset:
    """Carve the test split (unless one is given), split off validation (unless given),
    subsample, standardize on the training split's statistics, make tensors."""
    x, x_val, x_test = _features(x), _features(x_val), _features(x_test)
    val_fraction = spec.val_fraction
    if x_test is None and spec.test_fraction > 0:
        rest, te = (i.numpy() for i in carve_test(len(x), spec.test_fraction, spec.seed))
        x, x_test, y, y_test = x[rest], x[te], y[rest], y[te]
        val_fraction = min(0.99, spec.val_fraction / (1 - spec.test_fraction))  # still a share of the whole
    if x_val is None:
        tr, va = (i.numpy() for i in split_indices(len(x), val_fraction, spec.seed))
        x, x_val, y, y_val = x[tr], x[va], y[tr], y[va]
    keep = subsample(len(x), spec.train_size, spec.seed)
    if keep is not None:
        x, y = x[keep.numpy()], y[keep.numpy()]
    if spec.standardize:
        # train statistics only, so nothing about the held-out splits leaks into training
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-8] = 1.0
        x, x_val = (x - mean) / std, (x_val - mean) / std
        x_test = None if x_test is None else (x_test - mean) / std
    y, y_val, y_test = (_targets(a, task) for a in (y, y_val, y_test))
    if task == "classification":
        n_out = int(max(int(a.max()) for a in (y, y_val, y_test) if a is not None)) + 1
    else:
        n_out = int(y.shape[1])
    return Dataset(spec.kind, task, torch.as_tensor(x), y, torch.as_tensor(x_val), y_val, n_out,
                   image_shape=image_shape, info=dict(info or {}),
                   x_test=None if x_test is None else torch.as_tensor(x_test), y_test=y_test)


def _features(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float32).reshape(len(a), -1)


def _targets(a, task: str) -> torch.Tensor | None:
    """Class ids (N,), or regression targets (N, K)."""
    if a is None:
        return None
    if task == "classification":
        return torch.as_tensor(a, dtype=torch.long)
    return torch.as_tensor(np.asarray(a, np.float32).reshape(len(a), -1))


# scikit-learn's bundled files: (file, has sklearn's "n_samples,n_features,names..." header row)
SKLEARN_FILES = {"digits": ("digits.csv.gz", False), "breast_cancer": ("breast_cancer.csv", True),
                 "wine": ("wine_data.csv", True)}


def read_sklearn_file(kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The bundled CSV read directly: importing sklearn.datasets costs seconds at every start.
    Returns None (and the caller uses sklearn's own loader) if the file is not as expected.
    Parsed once per process (a sweep opens every point's run here: 16 parses of digits were a
    tenth of a 16-point stack's time), each caller given its own copy."""
    arrays = _parsed_sklearn_file(kind)
    return None if arrays is None else (arrays[0].copy(), arrays[1].copy())


@functools.lru_cache(maxsize=None)
def _parsed_sklearn_file(kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    name, has_header = SKLEARN_FILES[kind]
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    try:
        rows = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, dtype=np.float64)
        if has_header:
            with open(path) as f:
                n, d = (int(v) for v in f.readline().split(",")[:2])
            if rows.shape != (n, d + 1):
                return None
    except (OSError, ValueError):
        return None
    x, y = rows[:, :-1], rows[:, -1]
    if not np.array_equal(y, np.round(y)):
        return None
    return x, y.astype(np.int64)


def _load_sklearn(spec: DataSpec, name: str, image_shape: tuple[int, ...] | None = None) -> Dataset:
    arrays = read_sklearn_file(name)
    if arrays is None:
        from sklearn import datasets as skd  # bundled files, no download

        bunch = getattr(skd, f"load_{name}")()
        arrays = bunch.data, bunch.target
    return make_table_dataset(spec, *arrays, "classification", image_shape=image_shape)


def load_digits(spec: DataSpec) -> Dataset:
    return _load_sklearn(spec, "digits", image_shape=(1, 8, 8))  # rows are 8x8 images: cnn can read them


def load_breast_cancer(spec: DataSpec) -> Dataset:
    return _load_sklearn(spec, "breast_cancer")


def load_wine(spec: DataSpec) -> Dataset:
    return _load_sklearn(spec, "wine")


def _labels(y: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """Integer labels mean classification, floats regression (the contract's rule)."""
    if np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_):
        if y.ndim != 1:
            raise SpecError(f"{what}: integer labels must be one-dimensional, got shape {y.shape}")
        if y.min() < 0:
            raise SpecError(f"{what}: class labels must be >= 0, found {int(y.min())}")
        return y.astype(np.int64), "classification"
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise SpecError(f"{what}: contains NaN or infinite targets")
        return y.astype(np.float32), "regression"
    raise SpecError(f"{what}: labels must be integers or floats, got dtype {y.dtype}")


def load_npz(spec: DataSpec) -> Dataset:
    path = Path(spec.path)
    try:
        npz = np.load(path, allow_pickle=False)  # never unpickle objects from a file
        arrays = {name: npz[name] for name in npz.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input to fix
        raise SpecError(f"data.path: cannot read {path} as .npz: {e}") from None
    return table_from_arrays(spec, arrays, f"data.path: {path.name}")


def table_from_arrays(spec: DataSpec, arrays: dict[str, np.ndarray], where: str) -> Dataset:
    """x, y and optionally x_val, y_val and x_test, y_test, checked (float y is regression, integer
    y classification) and made a dataset; `where` starts every message (the file, or the target)."""
    names = set(arrays)
    missing = {"x", "y"} - names
    if missing:
        raise SpecError(f"{where}: lacks array(s) {', '.join(sorted(missing))} "
                        f"(found: {', '.join(sorted(names)) or 'none'})")
    for held in ("val", "test"):
        if (f"x_{held}" in names) != (f"y_{held}" in names):
            raise SpecError(f"{where}: has only one of x_{held}, y_{held}; give both or neither")
    x, (y, task) = arrays["x"], _labels(arrays["y"], f"{where}: y")
    if x.ndim < 2:
        raise SpecError(f"{where}: x must have one row per example (2 or more dimensions), got shape {x.shape}")
    if len(x) != len(y):
        raise SpecError(f"{where}: x has {len(x)} rows but y has {len(y)}")
    given = {}
    for held in ("val", "test"):
        if f"x_{held}" in names:
            if len(arrays[f"x_{held}"]) == 0 or len(arrays[f"y_{held}"]) == 0:
                raise SpecError(f"{where}: x_{held} has no rows; leave it out to split one off")
            xh, (yh, task_h) = arrays[f"x_{held}"], _labels(arrays[f"y_{held}"], f"{where}: y_{held}")
            if task_h != task or len(xh) != len(yh) or xh.shape[1:] != x.shape[1:]:
                raise SpecError(f"{where}: x_{held}/y_{held} do not match x/y in shape or label type")
            given.update({f"x_{held}": xh, f"y_{held}": yh})
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise SpecError(f"{where}: x must be finite numbers")
    return make_table_dataset(spec, x, y, task, **given)


def load_csv(spec: DataSpec) -> Dataset:
    path = Path(spec.path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SpecError(f"data.path: cannot read {path} as CSV: {e}") from None
    if len(rows) < 3:
        raise SpecError(f"data.path: {path} needs a header row and at least 2 data rows")
    header, body = rows[0], rows[1:]
    if spec.target is None:
        col = len(header) - 1
    elif spec.target in header:
        col = header.index(spec.target)
    else:
        raise SpecError(f"data.target: no column {spec.target!r} in {path.name}{suggest(spec.target, header)}")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise SpecError(f"data.path: {path.name} line {bad[0]}: expected {len(header)} fields")
    features = [i for i in range(len(header)) if i != col]
    try:
        x = np.array([[float(r[i]) for i in features] for r in body], dtype=np.float32)
    except ValueError as e:
        raise SpecError(f"data.path: {path.name}: feature columns must be numbers ({e})") from None
    raw_y = [r[col].strip() for r in body]
    task = spec.task
    if task == "auto":
        task = "classification" if all(_is_int(v) for v in raw_y) or not all(_is_float(v) for v in raw_y) \
            else "regression"
    if task == "regression":
        if not all(_is_float(v) for v in raw_y):
            raise SpecError(f"data.task: regression needs numeric values in column {header[col]!r}")
        y = np.array([float(v) for v in raw_y], dtype=np.float32)
    else:
        classes = sorted(set(raw_y), key=lambda v: (not _is_int(v), int(v) if _is_int(v) else 0, v))
        y = np.array([classes.index(v) for v in raw_y], dtype=np.int64)
    return make_table_dataset(spec, x, y, task, info={"target": header[col]})


def _is_int(v: str) -> bool:
    try:
        int(v)
        return True
    except ValueError:
        return False


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False
