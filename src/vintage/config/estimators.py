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
import itertools
import math
import re
from typing import Any

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
from vintage.config.estimator_classes import (
    CALLABLE_SLOTS,
    LIST_SLOTS,
    MLLIB_RESERVED,
    PIPELINE,
    SINGLE_SLOTS,
    SLOTS,
    Role,
    build_estimator,
    default_names,
    describe,
    estimator_param_names,
    import_attr,
    import_callable,
    import_component,
    import_estimator,
    is_mllib,
    is_structural,
    loggable_params,
    required_params,
)

__all__ = [
    "DEFAULT_ESTIMATOR",
    "MLLIB_RESERVED",
    "EstimatorNode",
    "EstimatorSpec",
    "build_estimator",
    "default_names",
    "describe",
    "estimator_param_names",
    "import_callable",
    "import_component",
    "import_estimator",
    "is_mllib",
    "loggable_params",
]

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

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED = 40  # accepted names shown in an error message


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
        cls = import_attr(self.class_path, PIPELINE)
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
        cls = import_attr(self.class_path, PIPELINE)
        for missing in sorted(required_params(cls) - self._given()):
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
        cls = import_attr(self.class_path, PIPELINE)
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
            if not is_structural(v)
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
