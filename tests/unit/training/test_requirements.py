"""A logged model's pip requirements: every installed distribution its classes and functions come from."""

from __future__ import annotations

from importlib.metadata import version

import numpy as np
import pandas as pd
import yaml
from sklearn.ensemble import VotingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from vintage.training import track
from vintage.training.code import referenced_modules


def _names(pins: list[str]) -> dict[str, str]:
    return dict(pin.split("==", 1) for pin in pins)


def test_the_base_set_and_the_serialisation_library_are_pinned() -> None:
    pins = _names(track.model_requirements(["sklearn.linear_model._coordinate_descent"], "cloudpickle"))
    assert pins == {
        name: version(name) for name in ("cloudpickle", "numpy", "pandas", "scikit-learn", "scipy")
    }
    assert "cloudpickle" not in _names(track.model_requirements([], "pickle"))


def test_a_member_of_a_composite_adds_its_distribution() -> None:
    """A function from PyYAML deep inside a Voting ensemble's pipeline: PyYAML is required to load it."""
    member = make_pipeline(
        FunctionTransformer(np.asarray, inverse_func=yaml.safe_load, check_inverse=False), Ridge()
    )
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    model = VotingRegressor([("r", Ridge()), ("p", member)]).fit(x, [0.0, 1.0, 2.0, 3.0])
    pins = _names(track.model_requirements(referenced_modules(model), "pickle"))
    assert pins["PyYAML"] == version("PyYAML")


def test_project_code_the_standard_library_and_vintage_add_nothing() -> None:
    pins = _names(
        track.model_requirements(["mypkg.models", "builtins", "functools", "vintage.metrics"], "pickle")
    )
    assert set(pins) == {"numpy", "pandas", "scikit-learn", "scipy"}
