"""Tables: scikit-learn's bundled datasets, npz arrays, CSV files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from noisecli.data import Dataset, split_indices, subsample
from noisecli.errors import SpecError
from noisecli.spec import DataSpec, suggest


def make_table_dataset(spec: DataSpec, x: np.ndarray, y: np.ndarray, task: str,
                       x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
                       image_shape=None, info=None) -> Dataset:
    """Split (unless a validation split is given), subsample, standardize, make tensors."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x_val is None:
        tr, va = split_indices(len(x), spec.val_fraction, spec.seed)
        tr, va = tr.numpy(), va.numpy()
        x, x_val, y, y_val = x[tr], x[va], y[tr], y[va]
    else:
        x_val = np.asarray(x_val, dtype=np.float32).reshape(len(x_val), -1)
    keep = subsample(len(x), spec.train_size, spec.seed)
    if keep is not None:
        x, y = x[keep.numpy()], y[keep.numpy()]
    if spec.standardize:
        # train statistics only, so nothing about the validation split leaks into training
        mean, std = x.mean(0), x.std(0)
        std[std < 1e-8] = 1.0
        x, x_val = (x - mean) / std, (x_val - mean) / std
    if task == "classification":
        y, y_val = torch.as_tensor(y, dtype=torch.long), torch.as_tensor(y_val, dtype=torch.long)
        n_out = int(max(y.max(), y_val.max())) + 1
    else:
        y = torch.as_tensor(np.asarray(y, np.float32).reshape(len(y), -1))
        y_val = torch.as_tensor(np.asarray(y_val, np.float32).reshape(len(y_val), -1))
        n_out = int(y.shape[1])
    return Dataset(spec.kind, task, torch.as_tensor(x), y, torch.as_tensor(x_val), y_val, n_out,
                   image_shape=image_shape, info=dict(info or {}))


# scikit-learn's bundled files: (file, has sklearn's "n_samples,n_features,names..." header row)
SKLEARN_FILES = {"digits": ("digits.csv.gz", False), "breast_cancer": ("breast_cancer.csv", True),
                 "wine": ("wine_data.csv", True)}


def read_sklearn_file(kind: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The bundled CSV read directly: importing sklearn.datasets costs seconds at every start.
    Returns None (and the caller uses sklearn's own loader) if the file is not as expected."""
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
    """x, y and optionally x_val, y_val, checked (float y is regression, integer y
    classification) and made a dataset; `where` starts every message (the file, or the target)."""
    names = set(arrays)
    missing = {"x", "y"} - names
    if missing:
        raise SpecError(f"{where}: lacks array(s) {', '.join(sorted(missing))} "
                        f"(found: {', '.join(sorted(names)) or 'none'})")
    if ("x_val" in names) != ("y_val" in names):
        raise SpecError(f"{where}: has only one of x_val, y_val; give both or neither")
    x, (y, task) = arrays["x"], _labels(arrays["y"], f"{where}: y")
    if x.ndim < 2:
        raise SpecError(f"{where}: x must have one row per example (2 or more dimensions), got shape {x.shape}")
    if len(x) != len(y):
        raise SpecError(f"{where}: x has {len(x)} rows but y has {len(y)}")
    x_val = y_val = None
    if "x_val" in names:
        x_val, (y_val, task_val) = arrays["x_val"], _labels(arrays["y_val"], f"{where}: y_val")
        if task_val != task or len(x_val) != len(y_val) or x_val.shape[1:] != x.shape[1:]:
            raise SpecError(f"{where}: x_val/y_val do not match x/y in shape or label type")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise SpecError(f"{where}: x must be finite numbers")
    return make_table_dataset(spec, x, y, task, x_val, y_val)


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
