"""Load a local MLflow scikit-learn model directory for scoring, without importing MLflow.

Importing MLflow costs about a second and ~170 MB; importing scikit-learn costs about as much again
(it pulls in SciPy and pandas). The scoring server has to be ready within a second, so this module
reads the model directory itself:

* ``MLmodel`` (YAML) gives the ``sklearn`` flavor (file name, serialization format), the input
  signature (column names and types, in order) and the input example.
* ``vintage-model.json`` (optional, written by :func:`vintage.model.materialize.materialize`) gives
  the registered name, version and URI, and for plain linear models their coefficients. When those
  coefficients belong to the model file (same SHA-256) the model is served with NumPy alone:
  ``x @ coef + intercept``, without unpickling, so scikit-learn is never imported.
* Otherwise the estimator is unpickled (``pickle``/``cloudpickle``) or loaded with skops, after the
  project code the model was logged with (``code/``, :mod:`vintage.model.code`) is put on the import
  path; fitted ``ElasticNet``, ``Lasso``, ``Ridge`` and ``LinearRegression`` models with one target
  still predict through the NumPy fast path (checked against the estimator's own ``predict`` on load).

Trust: a model directory is code. Pickle runs arbitrary code when loaded, and for skops files every type
found in the file is trusted (``skops.io.get_untrusted_types(file=...)``), which makes skops no safer
than pickle here. That is deliberate: the server only loads models that vintage trained and registered
itself; the safety boundary is who can write to the registry and to the model directory, not the file
format.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import isfinite
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from vintage.errors import ServingError, first_line
from vintage.model import code as model_code

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

MLMODEL: Final = "MLmodel"
VINTAGE_META: Final = "vintage-model.json"
FLAVOR: Final = "sklearn"
FORMATS: Final = ("cloudpickle", "pickle", "skops")
NUMERIC_TYPES: Final = frozenset({"double", "float", "long", "integer"})
LINEAR_TYPES: Final = ("ElasticNet", "Lasso", "Ridge", "LinearRegression")
# Tolerance when checking the NumPy fast path against the estimator's own predict (both compute the same
# dot product; only the BLAS kernel may differ).
RTOL: Final = 1e-12
ATOL: Final = 1e-12

_HINT_DIR = "materialize a registered model into a local directory first (vintage.model.materialize)"


@dataclass(frozen=True)
class ModelInfo:
    """What the server reports about the model it serves (``/version``)."""

    name: str | None
    version: str | None
    run_id: str | None
    model_uri: str | None
    flavor: str
    serialization_format: str
    columns: tuple[str, ...]
    column_types: tuple[str, ...]
    signature: dict[str, Any] | None
    code: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinearParams:
    """A plain linear model reduced to its numbers: ``predict(x) = x @ coef + intercept``."""

    estimator: str
    coef: FloatArray
    intercept: float

    def to_json(self) -> dict[str, Any]:
        """JSON form (floats round-trip exactly through ``repr``)."""
        return {"estimator": self.estimator, "coef": self.coef.tolist(), "intercept": self.intercept}

    def terms(self) -> list[tuple[int, float]]:
        """The terms of the ordered sum every vintage scorer computes: (feature index, coefficient).

        ``prediction = intercept + c[j1] * x[j1] + c[j2] * x[j2] + ...`` over the non-zero coefficients,
        evaluated left to right with one rounding per product and per addition: the scoring server and the
        local batch engine (NumPy) and the Spark engine's SQL expression (Java doubles, no fused
        multiply-add) all compute it, so their predictions are bit-identical. A zero coefficient adds an
        exact zero to a finite sum, so leaving it out changes no bit. scikit-learn's own ``predict`` (a
        matrix product: another summation order) agrees to about 1e-15 relative.
        """
        return [(j, float(c)) for j, c in enumerate(self.coef) if c != 0.0]


class LoadedModel:
    """A model ready to score: 2-D float64 rows in ``info.columns`` order -> 1-D float64 predictions."""

    def __init__(
        self,
        info: ModelInfo,
        predict: Callable[[FloatArray], FloatArray],
        example: FloatArray | None,
        linear: LinearParams | None,
    ) -> None:
        self.info = info
        self._predict = predict
        self._example = example
        self._linear = linear
        self._width = len(info.columns)
        self._rows = _linear_rows(linear) if linear is not None else None

    @property
    def linear(self) -> LinearParams | None:
        """The coefficients when the model is served by the NumPy fast path, else None."""
        return self._linear

    @property
    def predictor(self) -> str:
        """``"linear"`` (NumPy fast path) or ``"estimator"`` (the estimator's own predict)."""
        return "linear" if self._linear is not None else "estimator"

    def predict(self, x: FloatArray) -> FloatArray:
        """Predict rows ``x`` (shape ``(n, len(info.columns))``, columns in ``info.columns`` order).

        Raises:
            ValueError: ``x`` has the wrong shape, or contains NaN/infinity for a linear model (as
                scikit-learn does); the estimator's own input errors pass through unchanged.
        """
        if x.ndim != 2 or x.shape[1] != self._width:
            raise ValueError(f"expected rows of {self._width} values, got an array of shape {x.shape}")
        return self._predict(x)

    def predict_rows(self, rows: Sequence[Sequence[float]]) -> FloatArray | list[float]:
        """Predict a few rows given as Python numbers (a small request's, as the scoring server parsed
        them), columns in ``info.columns`` order: the same numbers :meth:`predict` gives for them as a
        matrix. A linear model sums them as Python floats and answers a list (no NumPy call); another
        model predicts them as a matrix.

        Raises:
            ValueError: a row has the wrong length, or a value is NaN or infinite (a linear model).
        """
        if self._rows is None:
            return self.predict(np.array(rows, dtype=np.float64).reshape(-1, self._width))
        if not all(len(row) == self._width for row in rows):
            raise ValueError(f"expected rows of {self._width} values")
        return self._rows(rows)

    def example(self) -> FloatArray | None:
        """The model's input example as a 2-D float64 array in ``info.columns`` order (a copy)."""
        return None if self._example is None else self._example.copy()


def load_model_dir(path: Path) -> LoadedModel:
    """Load the scikit-learn model in the local MLflow model directory ``path``.

    Raises:
        ServingError: the directory or its MLmodel is missing or unreadable, the model is not a
            scikit-learn model, has no column signature, or its file cannot be loaded.
    """
    started = time.perf_counter()
    mlmodel = _read_mlmodel(path)
    flavor = _sklearn_flavor(path, mlmodel)
    signature = _signature(mlmodel)
    columns, types = _columns(path, signature)
    meta = read_meta(path)
    fmt = str(flavor.get("serialization_format") or "pickle")
    model_file = path / str(flavor.get("pickled_model") or "")
    shipped = model_code.code_dir(path, flavor)
    info = ModelInfo(
        name=_opt_str(meta.get("name")),
        version=_opt_str(meta.get("version")),
        run_id=_opt_str(mlmodel.get("run_id")) or _opt_str(meta.get("run_id")),
        model_uri=_opt_str(meta.get("model_uri")),
        flavor=FLAVOR,
        serialization_format=fmt,
        columns=columns,
        column_types=types,
        signature=signature,
        code=model_code.top_level_names(shipped) if shipped else (),
    )
    example = _read_example(path, mlmodel, columns)
    linear = _stored_linear(meta, model_file, len(columns))
    if linear is not None:
        model = LoadedModel(info, _linear_predict(linear), example, linear)
    else:
        with model_code.shipped(shipped):  # the project modules the model was logged with, if any
            estimator = _load_estimator(model_file, fmt)
        model = _from_estimator(info, estimator, example)
    _warm_up(model, path)
    log.info(
        "loaded %s from %s (%s, %s%s) in %.0f ms",
        info.name or "model",
        path,
        fmt,
        model.predictor,
        f", code: {', '.join(info.code)}" if info.code else "",
        (time.perf_counter() - started) * 1000,
    )
    return model


def read_meta(path: Path) -> dict[str, Any]:
    """The ``vintage-model.json`` next to MLmodel, or ``{}`` when there is none.

    Raises:
        ServingError: the file exists but is not a JSON object.
    """
    file = path / VINTAGE_META
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServingError(f"cannot read {file}: {exc}", hint=_HINT_DIR) from exc
    if not isinstance(data, dict):
        raise ServingError(f"{file} is not a JSON object", hint=_HINT_DIR)
    return data


def file_sha256(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def linear_params(estimator: Any) -> LinearParams | None:
    """The coefficients of a fitted plain linear regressor with one target, else None.

    Only the exact classes ``ElasticNet``, ``Lasso``, ``Ridge`` and ``LinearRegression`` qualify
    (subclasses may override ``predict``).
    """
    cls = type(estimator)
    if not cls.__module__.startswith("sklearn.linear_model.") or cls.__name__ not in LINEAR_TYPES:
        return None
    import sklearn.linear_model as lm  # already imported by unpickling the estimator

    if cls not in tuple(getattr(lm, name) for name in LINEAR_TYPES):
        return None
    coef: Any = getattr(estimator, "coef_", None)
    intercept: Any = getattr(estimator, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.ndim != 1 or intercept is None or np.ndim(intercept) != 0:
        return None
    try:
        value = float(intercept)
    except (TypeError, ValueError):
        return None
    return LinearParams(cls.__name__, np.ascontiguousarray(coef, dtype=np.float64), value)


# --- MLmodel ---------------------------------------------------------------------------------------


def _read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_dir():
        raise ServingError(f"model directory {path} does not exist", hint=_HINT_DIR)
    file = path / MLMODEL
    if not file.is_file():
        raise ServingError(f"{path} is not an MLflow model directory: it has no MLmodel file", hint=_HINT_DIR)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ServingError(f"cannot read {file}: {first_line(exc)}", hint=_HINT_DIR) from exc
    if not isinstance(data, dict):
        raise ServingError(f"{file} is not an MLmodel file (not a YAML mapping)", hint=_HINT_DIR)
    return data


def _sklearn_flavor(path: Path, mlmodel: Mapping[str, Any]) -> Mapping[str, Any]:
    flavors = mlmodel.get("flavors")
    flavor = flavors.get(FLAVOR) if isinstance(flavors, dict) else None
    if not isinstance(flavor, dict):
        found = ", ".join(sorted(flavors)) if isinstance(flavors, dict) and flavors else "none"
        raise ServingError(
            f"the model in {path} is not a scikit-learn model (flavors: {found})",
            hint="vintage serves models logged with mlflow.sklearn (as `vintage train` does)",
        )
    if not flavor.get("pickled_model"):
        raise ServingError(f"the sklearn flavor in {path / MLMODEL} names no model file", hint=_HINT_DIR)
    return flavor


def _signature(mlmodel: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = mlmodel.get("signature")
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("inputs", "outputs", "params") and isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError as exc:
                raise ServingError(f"the model signature's {key} is not valid JSON: {exc}") from exc
        else:
            out[key] = value
    return out


def _columns(path: Path, signature: Mapping[str, Any] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inputs = signature.get("inputs") if signature else None
    if not isinstance(inputs, list) or not inputs or not all(_is_column(c) for c in inputs):
        raise ServingError(
            f"the model in {path} has no column signature (named input columns)",
            hint="log the model with a signature inferred from a DataFrame (vintage train does)",
        )
    names = tuple(str(c["name"]) for c in inputs)
    types = tuple(str(c.get("type")) for c in inputs)
    bad = [f"{n} ({t})" for n, t in zip(names, types, strict=True) if t not in NUMERIC_TYPES]
    if bad:
        raise ServingError(
            f"the model in {path} has non-numeric input columns: {', '.join(bad)}",
            hint="the scoring server accepts numeric features only",
        )
    return names, types


def _is_column(spec: Any) -> bool:
    return isinstance(spec, dict) and isinstance(spec.get("name"), str) and "type" in spec


def _read_example(path: Path, mlmodel: Mapping[str, Any], columns: tuple[str, ...]) -> FloatArray | None:
    """The saved input example (pandas split orient: ``{"columns": [...], "data": [[...], ...]}``)."""
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict) or not info.get("artifact_path"):
        return None
    file = path / str(info["artifact_path"])
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        names = list(data["columns"])
        rows = np.asarray(data["data"], dtype=np.float64)
        order = [names.index(c) for c in columns]
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise ValueError(f"shape {rows.shape} does not match {len(names)} columns")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the input example %s: %s", file, first_line(exc))
        return None
    return np.ascontiguousarray(rows[:, order])


# --- estimator -------------------------------------------------------------------------------------


def _stored_linear(meta: Mapping[str, Any], model_file: Path, width: int) -> LinearParams | None:
    """The coefficients materialize stored, if they belong to this very model file."""
    raw = meta.get("linear")
    if not isinstance(raw, dict):
        return None
    try:
        coef = np.asarray(raw["coef"], dtype=np.float64)
        params = LinearParams(str(raw["estimator"]), coef, float(raw["intercept"]))
        sha = str(raw["model_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring the stored linear coefficients: %s", first_line(exc))
        return None
    if coef.ndim != 1 or coef.shape[0] != width:
        log.warning("ignoring the stored linear coefficients: %d values for %d columns", coef.size, width)
        return None
    if not model_file.is_file() or file_sha256(model_file) != sha:
        log.warning(
            "ignoring the stored linear coefficients: %s changed since they were stored", model_file.name
        )
        return None
    return params


def _load_estimator(file: Path, fmt: str) -> Any:
    """Unpickle (pickle, cloudpickle) or skops-load the estimator file."""
    if fmt not in FORMATS:
        raise ServingError(
            f"unknown serialization format {fmt!r} for {file.name}",
            hint=f"expected one of {', '.join(FORMATS)}",
        )
    if not file.is_file():
        raise ServingError(f"the model file {file} is missing", hint=_HINT_DIR)
    try:
        estimator = _load_skops(file) if fmt == "skops" else _load_pickle(file)
    except ModuleNotFoundError as exc:  # a class from a module neither installed nor shipped with it
        raise ServingError(
            f"cannot load the model file {file} ({fmt}): ModuleNotFoundError: {first_line(exc)}",
            hint="the model was logged without that module's code: train it again with this vintage "
            "(it ships project modules in the model's code/ folder), or install the module here",
        ) from exc
    except Exception as exc:  # any unpickling failure (corrupt file, missing class, ...)
        raise ServingError(
            f"cannot load the model file {file} ({fmt}): {type(exc).__name__}: {first_line(exc)}",
            hint="the file is corrupt, or was written by an incompatible scikit-learn version",
        ) from exc
    if not callable(getattr(estimator, "predict", None)):
        raise ServingError(f"{file} holds a {type(estimator).__name__}, which has no predict method")
    return estimator


def _load_pickle(file: Path) -> Any:
    # cloudpickle.load is pickle.load; a cloudpickle-written file imports cloudpickle by itself if it
    # needs it, so plain pickle reads both formats.
    import pickle

    with file.open("rb") as fh:
        return pickle.load(fh)


def _load_skops(file: Path) -> Any:
    import skops.io

    trusted = skops.io.get_untrusted_types(file=file)
    log.debug("trusting the skops types of %s: %s", file.name, trusted)
    return skops.io.load(file, trusted=trusted)


def _from_estimator(info: ModelInfo, estimator: Any, example: FloatArray | None) -> LoadedModel:
    """Wrap a loaded estimator: NumPy fast path for plain linear models, else its own predict."""
    _check_features(info, estimator)
    _drop_feature_names(estimator)
    linear = linear_params(estimator)
    if linear is not None and linear.coef.shape[0] == len(info.columns):
        probe = example if example is not None else np.ones((1, len(info.columns)))
        fast = _linear_predict(linear)(probe)
        slow = _estimator_predict(estimator)(probe)
        if np.allclose(fast, slow, rtol=RTOL, atol=ATOL):
            return LoadedModel(info, _linear_predict(linear), example, linear)
        log.warning("the NumPy fast path disagrees with %s.predict; using the estimator", linear.estimator)
    return LoadedModel(info, _estimator_predict(estimator), example, None)


def _check_features(info: ModelInfo, estimator: Any) -> None:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and tuple(str(n) for n in names) != info.columns:
        raise ServingError(
            "the model's signature columns differ from the features it was fitted on",
            details=[f"signature: {', '.join(info.columns)}", f"fitted:    {', '.join(map(str, names))}"],
        )
    width = getattr(estimator, "n_features_in_", None)
    if isinstance(width, int) and width != len(info.columns):
        raise ServingError(f"the model expects {width} features but its signature has {len(info.columns)}")


SMALL_BATCH_ROWS: Final = 12
"""Up to this many rows, the linear fast path sums with Python floats row by row (a request's few rows:
~1 us for one row, against ~12 us for NumPy's per-call overhead on eleven tiny arrays); above it, NumPy
sums column by column over all rows at once."""


def _linear_predict(params: LinearParams) -> Callable[[FloatArray], FloatArray]:
    """``x`` (rows x features) -> the ordered sum of :meth:`LinearParams.terms`.

    Both branches compute each row's ``intercept + c[j1] * x[j1] + ...`` left to right with one rounding
    per product and per addition (Python floats and NumPy's float64 are the same IEEE doubles; a Python
    ``*`` then ``+`` are two operations, never fused), so a row's prediction has the same bits whichever
    branch, and whichever batch, it is scored in (tests/unit/model/test_linear_paths.py).
    """
    terms, first = params.terms(), np.float64(params.intercept)
    few = _linear_rows(params)

    def predict(x: FloatArray) -> FloatArray:
        if len(x) <= SMALL_BATCH_ROWS:
            return np.array(few(x.tolist()), dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinity")
        out: FloatArray = np.full(len(x), first)
        for j, c in terms:
            out += c * x[:, j]
        return out

    return predict


def _linear_rows(params: LinearParams) -> Callable[[Sequence[Sequence[float]]], list[float]]:
    """Rows of Python numbers -> the ordered sum of each, as Python floats (no NumPy call).

    The sum is compiled once per model into one expression, ``lambda r: ((b + c1 * r[j1]) + c2 * r[j2])
    + ...``, built as a syntax tree from the coefficients (float constants) and the column indexes (int
    constants), never from text: Python evaluates it left to right, one rounding per operation, as the
    loop it replaces did, at ~0.1 us less per term and row.
    """
    code = compile(_sum_tree(params), "<linear sum>", "eval")
    one_row: Callable[[Sequence[float]], float] = eval(code)  # a code object from _sum_tree: no text

    def rows_sum(rows: Sequence[Sequence[float]]) -> list[float]:
        # A NaN or an infinity makes the plain sum non-finite; a finite sum can still overflow, so only a
        # non-finite sum is looked at value by value.
        if not isfinite(sum(map(sum, rows))) and not all(isfinite(v) for row in rows for v in row):
            raise ValueError("input contains NaN or infinity")
        return list(map(one_row, rows))

    return rows_sum


def _sum_tree(params: LinearParams) -> ast.Expression:
    """``lambda r: intercept + c1 * r[j1] + c2 * r[j2] + ...`` over :meth:`LinearParams.terms`."""
    row = ast.Name("r", ast.Load())
    total: ast.expr = ast.Constant(float(params.intercept))
    for j, c in params.terms():
        term = ast.BinOp(ast.Constant(c), ast.Mult(), ast.Subscript(row, ast.Constant(j), ast.Load()))
        total = ast.BinOp(total, ast.Add(), term)
    signature = ast.arguments(posonlyargs=[], args=[ast.arg("r")], kwonlyargs=[], kw_defaults=[], defaults=[])
    return ast.fix_missing_locations(ast.Expression(ast.Lambda(signature, total)))


def _estimator_predict(estimator: Any) -> Callable[[FloatArray], FloatArray]:
    method = estimator.predict

    def predict(x: FloatArray) -> FloatArray:
        out = np.asarray(method(x), dtype=np.float64)
        if out.ndim == 2 and out.shape[1] == 1:
            out = out[:, 0]
        return out

    return predict


def _drop_feature_names(estimator: Any) -> None:
    """Forget the fitted column names, in the estimator and every estimator inside it (their order was
    checked against the signature).

    An estimator fitted on a DataFrame warns "X does not have valid feature names" for every ndarray it
    predicts. Wrapping the rows in a DataFrame costs ~250 µs per call; ``warnings.catch_warnings`` is
    cheap but not thread-safe (large requests predict on worker threads). Without ``feature_names_in_``
    scikit-learn skips the name check and still checks the number of features. A composite's members
    (a Pipeline's first step, a TransformedTargetRegressor's regressor, a Voting or Stacking ensemble's
    estimators) were fitted on the DataFrame too, so the fitted attributes are walked (at most
    :data:`_MAX_NODES` objects); a read-only ``feature_names_in_`` (a Pipeline's, which reads its first
    step's) is left alone.
    """
    stack: list[Any] = [estimator]
    seen: set[int] = set()
    while stack and len(seen) < _MAX_NODES:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        attrs = getattr(obj, "__dict__", None)
        if not isinstance(attrs, dict):
            continue
        if attrs.get("feature_names_in_") is not None:
            del obj.feature_names_in_
        for value in attrs.values():
            stack.extend(_estimators_in(value))


_MAX_NODES = 100_000


def _estimators_in(value: Any, depth: int = 0) -> list[Any]:
    """Estimators held by an attribute: itself, or inside a list, tuple or dict (a Pipeline's
    ``steps``, a ColumnTransformer's ``transformers_``, a Voting ensemble's ``named_estimators_``)."""
    if hasattr(value, "get_params") and not isinstance(value, type):
        return [value]
    if depth >= 2:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [est for item in value for est in _estimators_in(item, depth + 1)]
    return []


def _warm_up(model: LoadedModel, path: Path) -> None:
    """Predict the example once: fails early for multi-output models and warms caches for request one."""
    rows = model.example()
    probe = rows if rows is not None else np.zeros((1, len(model.info.columns)))
    try:
        out = model.predict(probe)
    except Exception as exc:  # whatever the estimator raises, the model cannot be served
        raise ServingError(f"the model in {path} cannot predict its own input example: {exc}") from exc
    if out.shape != (probe.shape[0],):
        raise ServingError(
            f"the model in {path} returns predictions of shape {out.shape} for {probe.shape[0]} rows",
            hint="the scoring server serves single-output regressors and classifiers",
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
