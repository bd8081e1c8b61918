"""The ``estimator`` entries of vintage.yaml: one estimator class, or a composite built from several.

A plain entry names a class (``class``), its fixed ``params`` and a ``grid``. A composite entry also fills
the estimator-valued constructor arguments of its class from YAML (the *slots*):

* ``steps`` (a :class:`sklearn.pipeline.Pipeline`; ``class`` may be left out): every step but the last
  must transform; step names default to scikit-learn's ``make_pipeline`` naming (the lower-case class
  name, ``-1``/``-2`` added when it repeats);
* ``regressor``, ``transformer``, ``func``, ``inverse_func``
  (:class:`sklearn.compose.TransformedTargetRegressor`; ``func`` is an import path such as ``numpy.log1p``);
* ``estimators`` and ``final_estimator`` (Voting and Stacking), ``transformer_list`` (FeatureUnion) and
  ``estimator`` (Bagging, SelectFromModel, ...).

A slot holds a nested entry (``class``, ``params``, its own slots; no ``grid``) or just an import path.
Fixed parameters of nested entries and the root's ``params`` and ``grid`` all end up in one flat mapping
keyed the scikit-learn way (``elasticnet__alpha``); the names are checked when the file is read against
``get_params(deep=True)`` of the estimator the entry builds (without fitting it).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import itertools
import math
import re
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from vintage.config.base import Strict as _Strict

HyperValue = Any  # YAML scalars, lists and mappings all reach the estimator unchanged

# The original pipeline's three Databricks job runs.
DEFAULT_ESTIMATOR: dict[str, Any] = {
    "class": "sklearn.linear_model.ElasticNet",
    "params": {"random_state": 42},
    "grid": [
        {"alpha": 0.5, "l1_ratio": 0.5},
        {"alpha": 0.3, "l1_ratio": 0.3},
        {"alpha": 0.1, "l1_ratio": 0.1},
    ],
}

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
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED = 40  # accepted names shown in an error message


# --- classes ---------------------------------------------------------------------------------------


def _import_attr(path: str, example: str) -> Any:
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
    cls = _import_attr(path, "sklearn.linear_model.ElasticNet")
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
    cls = _import_attr(path, "sklearn.preprocessing.StandardScaler")
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
    func = _import_attr(path, "numpy.log1p")
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


def _required_params(cls: type[Any]) -> set[str]:
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
    cls = _import_attr(str(structure["class"]), PIPELINE)
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
    return {k: v for k, v in model.get_params(deep=True).items() if not _structural(v)}


def _is_estimator(value: Any) -> bool:
    return hasattr(value, "get_params") and hasattr(value, "fit") and not inspect.isclass(value)


def _structural(value: Any) -> bool:
    if _is_estimator(value):
        return True
    if isinstance(value, list | tuple):
        return any(_is_estimator(v) or (isinstance(v, tuple) and any(map(_is_estimator, v))) for v in value)
    return False


# --- the YAML entries ------------------------------------------------------------------------------


class _Problems:
    """Problems found in one entry, each at a key path below it; raised as one ValidationError whose key
    paths pydantic prefixes with the entry's own (``estimator[1].steps[0].class``)."""

    def __init__(self) -> None:
        self.items: list[InitErrorDetails] = []

    def add(self, loc: tuple[str | int, ...], message: str, value: Any = None) -> None:
        self.items.append(
            InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
        )

    def raise_any(self, title: str) -> None:
        if self.items:
            raise ValidationError.from_exception_data(title, self.items)


def _slot_shorthand(value: object) -> object:
    """A slot may hold just an import path: ``regressor: sklearn.linear_model.Ridge``."""
    return {"class": value} if isinstance(value, str) else value


class EstimatorNode(_Strict):
    """An estimator class with fixed parameters and, for a composite, its nested estimators (no grid)."""

    class_path: str = Field(alias="class")
    name: str | None = None
    params: dict[str, HyperValue] = Field(default_factory=dict)
    steps: list[EstimatorNode] | None = None
    estimators: list[EstimatorNode] | None = None
    transformer_list: list[EstimatorNode] | None = None
    final_estimator: EstimatorNode | None = None
    regressor: EstimatorNode | None = None
    transformer: EstimatorNode | None = None
    estimator: EstimatorNode | None = None
    func: str | None = None
    inverse_func: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        out = dict(value)
        if "steps" in out and "class" not in out:
            out["class"] = PIPELINE
        for slot in LIST_SLOTS:
            if isinstance(out.get(slot), list):
                out[slot] = [_slot_shorthand(v) for v in out[slot]]
        for slot in SINGLE_SLOTS:
            if slot in out:
                out[slot] = _slot_shorthand(out[slot])
        return out

    @field_validator("class_path")
    @classmethod
    def _importable(cls, value: str) -> str:
        import_component(value)
        return value

    @model_serializer(mode="wrap")
    def _without_empty_slots(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # `vintage config show` prints what the entry uses, not a dozen unused slots as null.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if not (k in SLOTS and v is None)}

    @field_validator(*LIST_SLOTS)
    @classmethod
    def _not_empty(cls, value: list[EstimatorNode] | None) -> list[EstimatorNode] | None:
        if value is not None and not value:
            raise ValueError("give at least one estimator")
        return value

    @model_validator(mode="after")
    def _check_entry(self) -> EstimatorNode:
        problems = _Problems()
        self._check_structure(problems)
        problems.raise_any(type(self).__name__)
        if self.is_composite:
            self._check_composite_params(problems, "params", self.params, root=False)
            problems.raise_any(type(self).__name__)
        elif not isinstance(self, EstimatorSpec):
            known = estimator_param_names(import_component(self.class_path))
            unknown = sorted(set(self.params) - known)
            if unknown:
                problems.add(("params",), f"{self.class_path} {_no_params(unknown, known)}")
            problems.raise_any(type(self).__name__)
        from vintage.config.models import check_secret_refs

        check_secret_refs(self.params, "params")
        return self

    # -- structure --

    @property
    def is_composite(self) -> bool:
        """True when the entry fills estimator-valued arguments (steps, regressor, ...) from YAML."""
        return any(getattr(self, slot) is not None for slot in SLOTS)

    def children(self) -> list[tuple[tuple[str | int, ...], str, EstimatorNode, Role]]:
        """The nested entries: (key path below this entry, parameter prefix, entry, what it must do)."""
        out: list[tuple[tuple[str | int, ...], str, EstimatorNode, Role]] = []
        for slot, role in LIST_SLOTS.items():
            items: list[EstimatorNode] = getattr(self, slot) or []
            names = self._names(items)
            for i, (item, name) in enumerate(zip(items, names, strict=True)):
                last = slot == "steps" and i == len(items) - 1
                out.append(((slot, i), name, item, "fit" if last else role))
        for slot, role in SINGLE_SLOTS.items():
            child: EstimatorNode | None = getattr(self, slot)
            if child is not None:
                out.append(((slot,), slot, child, role))
        return out

    @staticmethod
    def _names(items: list[EstimatorNode]) -> list[str]:
        unnamed = iter(default_names([i.class_path for i in items if i.name is None]))
        return [i.name if i.name is not None else next(unnamed) for i in items]

    def structure(self) -> dict[str, Any]:
        """The entry's classes and slots, without parameters, as JSON-able data
        (:func:`build_estimator` builds it; training keys and run parameters record it)."""
        out: dict[str, Any] = {"class": self.class_path}
        for loc, name, child, _ in self.children():
            if len(loc) == 2:
                out.setdefault(str(loc[0]), []).append({"name": name, **child.structure()})
            else:
                out[str(loc[0])] = child.structure()
        for slot in CALLABLE_SLOTS:
            if getattr(self, slot) is not None:
                out[slot] = getattr(self, slot)
        return out

    @property
    def description(self) -> str:
        """The structure in one line (:func:`describe`), e.g. ``Pipeline(StandardScaler, ElasticNet)``."""
        return describe(self.structure())

    def flat_params(self) -> dict[str, HyperValue]:
        """Every fixed parameter of the entry and its nested entries, keyed ``prefix__param``
        (the nested ones first; this entry's own ``params`` win)."""
        out: dict[str, HyperValue] = {}
        for _, prefix, child, _ in self.children():
            out.update({f"{prefix}__{k}": v for k, v in child.flat_params().items()})
        out.update(self.params)
        return out

    def build(self) -> Any:
        """The unfitted estimator with the fixed parameters (secret references left as text)."""
        return build_estimator(self.structure(), self.flat_params())

    def _skeleton(self) -> Any:
        """The estimator built with its nested entries' parameters only: what this entry's own
        ``params`` (and a root's grid) are checked against."""
        nested = {k: v for k, v in self.flat_params().items() if k not in self.params}
        return build_estimator(self.structure(), nested)

    def capabilities(self) -> set[str]:
        """What the built estimator can do (``predict``, ``transform``): a Pipeline can what its last
        step can."""
        if self.steps:
            return self.steps[-1].capabilities()
        cls = _import_attr(self.class_path, PIPELINE)
        return {m for m in ("predict", "transform") if hasattr(cls, m)}

    def role_loc(self) -> tuple[str | int, ...]:
        """Where to point when the entry cannot do what its parent needs: its class, or for a Pipeline
        its last step's."""
        if self.steps:
            return ("steps", len(self.steps) - 1, *self.steps[-1].role_loc())
        return ("class",)

    def _given(self) -> set[str]:
        """The constructor arguments the entry sets (slots and params; the root adds its grid)."""
        return {s for s in SLOTS if getattr(self, s) is not None} | set(self.params)

    def _check_arguments(self, problems: _Problems) -> None:
        if is_mllib(self.class_path):
            return
        cls = _import_attr(self.class_path, PIPELINE)
        for missing in sorted(_required_params(cls) - self._given()):
            where = "a key of the entry" if missing in SLOTS else "a parameter"
            problems.add((missing,), f"{self.class_path} needs `{missing}` ({where})")
        for slot in (*LIST_SLOTS, *SINGLE_SLOTS):
            if slot in self.params:
                problems.add(("params", slot), f"give `{slot}` as a key of the entry, not under params")

    def _check_structure(self, problems: _Problems) -> None:
        self._check_arguments(problems)
        if not self.is_composite:
            return
        if is_mllib(self.class_path):
            problems.add(("class",), f"{self.class_path}: Spark MLlib estimators cannot be composed here")
            return
        cls = _import_attr(self.class_path, PIPELINE)
        accepted = estimator_param_names(cls)
        for slot in SLOTS:
            if getattr(self, slot) is not None and slot not in accepted:
                problems.add((slot,), f"{self.class_path} takes no `{slot}` argument")
        self._check_children(problems, accepted)
        for slot in CALLABLE_SLOTS:
            path = getattr(self, slot)
            if path is not None:
                try:
                    import_callable(path)
                except ValueError as exc:
                    problems.add((slot,), str(exc), path)

    def _check_children(self, problems: _Problems, accepted: set[str]) -> None:
        seen: dict[tuple[str, str], tuple[str | int, ...]] = {}
        for loc, name, child, role in self.children():
            if len(loc) == 2:
                where = (*loc, "name")
                if not _NAME.match(name) or "__" in name:
                    problems.add(where, f"name {name!r}: use letters, digits, '_', '-', '.', and no '__'")
                elif name in accepted:
                    problems.add(where, f"name {name!r} is also an argument of {self.class_path}; rename it")
                elif (str(loc[0]), name) in seen:
                    problems.add(where, f"name {name!r} is used twice; give the entries distinct `name`s")
                seen[(str(loc[0]), name)] = loc
            elif child.name is not None:
                problems.add((*loc, "name"), f"`{loc[0]}` is named by its key; remove `name`")
            can = child.capabilities()
            if role != "fit" and role not in can:
                what = "transform (a transformer)" if role == "transform" else "predict (an estimator)"
                slot_text = "every step but the last" if loc[0] == "steps" else f"`{loc[0]}`"
                problems.add(
                    (*loc, *child.role_loc()),
                    f"{slot_text} must {what}: {child.leaf_class()} has no {role} method",
                )

    def leaf_class(self) -> str:
        """The class :meth:`role_loc` points at."""
        return self.steps[-1].leaf_class() if self.steps else self.class_path

    def _check_composite_params(
        self, problems: _Problems, key: str, names: Any, *, root: bool, index: int | None = None
    ) -> None:
        """Check parameter names against ``get_params(deep=True)`` of the built estimator."""
        try:
            built = self._skeleton()
        except Exception as exc:  # a constructor refusing an argument: the entry cannot be built
            problems.add((key,), f"cannot build {self.description}: {type(exc).__name__}: {exc}")
            return
        deep = built.get_params(deep=True)
        prefixes = {prefix for _, prefix, _, _ in self.children()}
        known = {
            k
            for k, v in deep.items()
            if not _structural(v)
            and k not in CALLABLE_SLOTS
            and ("__" not in k or k.split("__", 1)[0] in prefixes)
        }
        bad = sorted(set(names) - known)
        loc: tuple[str | int, ...] = (key,) if index is None else (key, index)
        replaced = [b for b in bad if b in deep or b in CALLABLE_SLOTS]
        if replaced:
            problems.add(
                (*loc, replaced[0]),
                f"`{replaced[0]}` is a part of {self.description}, not a parameter: give each alternative "
                "as its own estimator entry",
            )
        elif bad:
            problems.add((*loc, bad[0]), f"{self.description} {_no_params(bad, known)}")


def _no_params(unknown: list[str], known: set[str]) -> str:
    hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
    listed = sorted(known)
    shown = ", ".join(listed[:_MAX_LISTED]) + (", ..." if len(listed) > _MAX_LISTED else "")
    hint = f"; did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    return f"has no parameter(s) {unknown}{hint}; it accepts: {shown}"


class EstimatorSpec(EstimatorNode):
    """One ``estimator`` entry: an estimator (plain or composite), its fixed parameters and its grid.

    ``grid`` is either a list of points (each a mapping of parameter -> value, taken literally) or a
    mapping of parameter -> list of values, expanded as a cartesian product. For a composite the names
    are scikit-learn's nested ones (``elasticnet__alpha``).
    """

    grid: list[dict[str, HyperValue]] | dict[str, list[HyperValue]] = Field(
        default_factory=lambda: [dict[str, HyperValue]()]
    )

    @field_validator("class_path")
    @classmethod
    def _importable(cls, value: str) -> str:
        import_estimator(value)
        return value

    @field_validator("grid", mode="before")
    @classmethod
    def _grid_shape(cls, value: object) -> object:
        # Checked before pydantic tries both union members, so the user gets one clear message.
        if isinstance(value, list):
            if not value:
                raise ValueError("the grid is empty; give at least one point")
            bad = [i for i, p in enumerate(value) if not isinstance(p, dict)]
            if bad:
                raise ValueError(f"grid point(s) {bad} are not mappings of parameter: value")
            return value
        if isinstance(value, dict):
            if not value:
                raise ValueError("the grid is empty; give at least one parameter with a list of values")
            empty = [k for k, v in value.items() if not isinstance(v, list) or not v]
            if empty:
                raise ValueError(
                    f"grid parameter(s) {empty} need a non-empty list of values (a mapping grid is a product)"
                )
            return value
        raise ValueError(
            "expected a list of points ([{alpha: 0.5}, ...]) or a mapping of parameter -> list of values"
        )

    @model_validator(mode="after")
    def _known_params(self) -> EstimatorSpec:
        from vintage.config.models import check_secret_refs

        if self.is_composite:
            problems = _Problems()
            if "predict" not in self.capabilities():
                problems.add(
                    self.role_loc(),
                    f"the estimator must predict: {self.leaf_class()} has no predict method",
                )
            problems.raise_any(type(self).__name__)
            if isinstance(self.grid, dict):
                self._check_composite_params(problems, "grid", self.grid, root=True)
            else:
                for i, point in enumerate(self.grid):
                    self._check_composite_params(problems, "grid", point, root=True, index=i)
            problems.raise_any(type(self).__name__)
        else:
            known = estimator_param_names(import_estimator(self.class_path))
            used = set(self.params) | self.grid_params()
            unknown = sorted(used - known)
            if unknown:
                raise ValueError(
                    f"{self.class_path} has no parameter(s) {unknown}; it accepts: {', '.join(sorted(known))}"
                )
        check_secret_refs(self.grid, "grid")
        return self

    def _given(self) -> set[str]:
        grid = self.grid if isinstance(self.grid, list) else [self.grid]
        in_every_point = set.intersection(*(set(p) for p in grid)) if grid else set()
        return super()._given() | in_every_point

    @property
    def label(self) -> str:
        """Short name used in run names: ``name``, else the class name (a composite: its description)."""
        if self.name:
            return self.name
        return self.description if self.is_composite else self.class_path.rpartition(".")[2]

    @property
    def is_classifier(self) -> bool:
        """True when the estimator is a scikit-learn classifier (``is_classifier`` of it built with its
        fixed parameters; a class that cannot be built that way counts as a regressor)."""
        if is_mllib(self.class_path):
            return False
        from sklearn.base import is_classifier

        try:
            if self.is_composite:
                return bool(is_classifier(self.build()))
            return bool(is_classifier(import_estimator(self.class_path)(**self.params)))
        except Exception:  # a constructor that needs more than the fixed parameters
            return False

    def random_state_keys(self) -> set[str]:
        """The parameters named ``random_state`` (nested ones as ``step__random_state``) that the entry
        does not set itself: training gives them the split seed."""
        if not self.is_composite:
            names = estimator_param_names(import_estimator(self.class_path))
            return {"random_state"} - set(self.params) if "random_state" in names else set()
        prefixes = {prefix for _, prefix, _, _ in self.children()}
        deep = self._skeleton().get_params(deep=True)
        return {
            k
            for k in deep
            if k.rpartition("__")[2] == "random_state"
            and ("__" not in k or k.split("__", 1)[0] in prefixes)
            and k not in self.flat_params()
        }

    def grid_params(self) -> set[str]:
        """The parameter names the grid sets (without expanding it)."""
        if isinstance(self.grid, list):
            return {k for point in self.grid for k in point}
        return set(self.grid)

    def point_count(self) -> int:
        """How many points :meth:`points` gives, computed without expanding the grid (a mapping grid
        has the product of its list lengths)."""
        if isinstance(self.grid, list):
            return len(self.grid)
        return math.prod(len(values) for values in self.grid.values())

    def points(self) -> list[dict[str, HyperValue]]:
        """The grid expanded to explicit points, in a stable order."""
        if isinstance(self.grid, list):
            return [dict(p) for p in self.grid]
        keys = list(self.grid)
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*self.grid.values())]
