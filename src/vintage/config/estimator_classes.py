"""The classes behind vintage.yaml's ``estimator`` entries: importing and checking them, the slot table of
composite estimators, building an estimator from its structure and describing it in one line.

Used by the config models (:mod:`vintage.config.estimators`) when a file is read, and by training workers
(:meth:`vintage.training.grid.GridPoint.build`) to instantiate a point.
"""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

PIPELINE = "sklearn.pipeline.Pipeline"

Role = Literal["predict", "transform", "fit"]
# Estimator-valued constructor arguments filled from YAML, and what their estimators must be able to do.
# A list slot holds named estimators (its items' names prefix their parameters); a single slot's
# parameters are prefixed with the slot's own name, as scikit-learn's get_params(deep=True) does.
LIST_SLOTS: dict[str, Role] = {"steps": "transform", "estimators": "predict", "transformer_list": "transform"}
SINGLE_SLOTS: dict[str, Role] = {
    "regressor": "predict",
    "final_estimator": "predict",
    "transformer": "transform",
    "estimator": "fit",
}
CALLABLE_SLOTS: tuple[str, ...] = ("func", "inverse_func")
SLOTS: tuple[str, ...] = (*LIST_SLOTS, *SINGLE_SLOTS, *CALLABLE_SLOTS)


# --- classes ---------------------------------------------------------------------------------------


def import_attr(path: str, example: str) -> Any:
    """The object ``package.module.name`` names.

    Raises:
        ValueError: the module cannot be imported or has no such attribute.
    """
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not an import path; expected e.g. {example!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module {module_name!r} ({exc})") from exc
    value = getattr(module, attr, None)
    if value is None:
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    return value


def import_estimator(path: str) -> type[Any]:
    """Import ``package.module.Class`` and check it looks like a scikit-learn regressor.

    Raises:
        ValueError: the path cannot be imported or is not an estimator class.
    """
    cls = import_attr(path, "sklearn.linear_model.ElasticNet")
    if is_mllib(path):
        if not inspect.isclass(cls) or not hasattr(cls, "fit") or not _mllib_params(cls):
            raise ValueError(f"{path!r} is not a Spark MLlib estimator class (needs fit and Params)")
        return cls
    if not inspect.isclass(cls) or not all(hasattr(cls, m) for m in ("fit", "predict", "get_params")):
        raise ValueError(
            f"{path!r} is not a scikit-learn style estimator class (needs fit/predict/get_params)"
        )
    return cls


def import_component(path: str) -> type[Any]:
    """Import the class of a nested entry (a step, a sub-estimator): any scikit-learn style estimator
    or transformer (``fit`` and ``get_params``); what it must do besides is checked by its parent.

    Raises:
        ValueError: the path cannot be imported, is not such a class, or is a Spark MLlib class.
    """
    if is_mllib(path):
        raise ValueError(f"{path!r}: Spark MLlib classes cannot be nested in a scikit-learn estimator")
    cls = import_attr(path, "sklearn.preprocessing.StandardScaler")
    if not inspect.isclass(cls) or not all(hasattr(cls, m) for m in ("fit", "get_params")):
        raise ValueError(
            f"{path!r} is not a scikit-learn style estimator or transformer (needs fit/get_params)"
        )
    return cls


def import_callable(path: str) -> Any:
    """Import a function named by its import path (``numpy.log1p``).

    Raises:
        ValueError: the path cannot be imported or is not callable.
    """
    func = import_attr(path, "numpy.log1p")
    if not callable(func) or inspect.isclass(func):
        raise ValueError(f"{path!r} is not a function")
    return func


# Columns vintage itself sets on a Spark MLlib estimator: not user parameters.
MLLIB_RESERVED: frozenset[str] = frozenset({"featuresCol", "labelCol", "predictionCol"})


def is_mllib(class_path: str) -> bool:
    """True for a Spark MLlib estimator class path (``pyspark.ml.regression.LinearRegression``)."""
    return class_path.startswith("pyspark.ml.")


def _mllib_params(cls: type[Any]) -> set[str]:
    from pyspark.ml.param import Param  # only reached for pyspark.ml classes, so PySpark is importable

    return {n for n in dir(cls) if isinstance(getattr(cls, n, None), Param)}


def estimator_param_names(cls: type[Any]) -> set[str]:
    """The constructor argument names of an estimator class (what ``set_params`` accepts).

    For a Spark MLlib class: its ``Param`` names, less the columns vintage sets (:data:`MLLIB_RESERVED`).
    """
    if cls.__module__.startswith("pyspark.ml."):
        return _mllib_params(cls) - MLLIB_RESERVED
    names = getattr(cls, "_get_param_names", None)
    if callable(names):
        return set(names())
    sig = inspect.signature(cls.__init__)
    return {p for p in sig.parameters if p != "self"}


def required_params(cls: type[Any]) -> set[str]:
    """The constructor arguments of ``cls`` without a default."""
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return set()
    return {
        n
        for n, p in sig.parameters.items()
        if n != "self"
        and p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }


def default_names(class_paths: list[str]) -> list[str]:
    """scikit-learn's ``make_pipeline`` naming: the lower-case class name, with ``-1``, ``-2``, ...
    appended to every occurrence of a name that repeats."""
    names = [p.rpartition(".")[2].lower() for p in class_paths]
    counts = {n: names.count(n) for n in names}
    seen: dict[str, int] = defaultdict(int)
    out = []
    for name in names:
        if counts[name] > 1:
            seen[name] += 1
            out.append(f"{name}-{seen[name]}")
        else:
            out.append(name)
    return out


# --- building --------------------------------------------------------------------------------------


def build_estimator(structure: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """Instantiate the (unfitted) estimator a structure describes, with flat ``step__param`` params.

    ``structure`` is :meth:`EstimatorNode.structure`: ``{"class": ...}`` plus slots; every parameter is
    passed to the constructor of the entry it belongs to (its prefix names the step or slot).

    Raises:
        ValueError: a parameter's prefix names no step or slot of the structure.
        TypeError: a constructor refuses a parameter.
    """
    cls = import_attr(str(structure["class"]), PIPELINE)
    kwargs: dict[str, Any] = {k: v for k, v in params.items() if "__" not in k}
    children: dict[str, Mapping[str, Any]] = {}
    for slot in SINGLE_SLOTS:
        if slot in structure:
            children[slot] = structure[slot]
    for slot in LIST_SLOTS:
        for child in structure.get(slot, ()):
            children[str(child["name"])] = child
    stray = sorted({k.split("__", 1)[0] for k in params if "__" in k} - set(children))
    if stray:
        raise ValueError(f"parameter prefix(es) {stray} name no step or slot of {describe(structure)}")
    built = {name: build_estimator(child, _below(params, name)) for name, child in children.items()}
    for slot in SINGLE_SLOTS:
        if slot in structure:
            kwargs[slot] = built[slot]
    for slot in LIST_SLOTS:
        if slot in structure:
            kwargs[slot] = [(str(c["name"]), built[str(c["name"])]) for c in structure[slot]]
    for slot in CALLABLE_SLOTS:
        if slot in structure:
            kwargs[slot] = import_callable(str(structure[slot]))
    return cls(**kwargs)


def _below(params: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    start = prefix + "__"
    return {k[len(start) :]: v for k, v in params.items() if k.startswith(start)}


def describe(structure: Mapping[str, Any]) -> str:
    """The structure in one readable line: ``Pipeline(StandardScaler, ElasticNet)``,
    ``VotingRegressor(ridge=Ridge, forest=RandomForestRegressor)``, ..."""
    short = str(structure["class"]).rpartition(".")[2]
    parts: list[str] = []
    for slot in LIST_SLOTS:
        items = list(structure.get(slot, ()))
        defaults = default_names([str(c["class"]) for c in items])
        for item, default in zip(items, defaults, strict=True):
            text = describe(item)
            parts.append(text if item["name"] == default else f"{item['name']}={text}")
    for slot in SINGLE_SLOTS:
        if slot in structure:
            parts.append(f"{slot}={describe(structure[slot])}")
    for slot in CALLABLE_SLOTS:
        if slot in structure:
            parts.append(f"{slot}={str(structure[slot]).rpartition('.')[2]}")
    return f"{short}({', '.join(parts)})" if parts else short


def loggable_params(model: Any) -> dict[str, Any]:
    """A (fitted or not) estimator's parameters, flattened the scikit-learn way (``elasticnet__alpha``),
    without the values that are estimators or lists of them (the structure is logged on its own)."""
    return {k: v for k, v in model.get_params(deep=True).items() if not is_structural(v)}


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and hasattr(value, "fit") and not inspect.isclass(value)


def is_structural(value: Any) -> bool:
    """True for a parameter value that is an estimator or a list of (named) estimators."""
    if _is_estimator(value):
        return True
    if isinstance(value, list | tuple):
        return any(_is_estimator(v) or (isinstance(v, tuple) and any(map(_is_estimator, v))) for v in value)
    return False
