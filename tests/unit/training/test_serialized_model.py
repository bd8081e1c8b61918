"""A model a worker sends back as bytes is saved as the same MLflow model directory as the object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.models import Model, infer_signature
from sklearn.ensemble import ExtraTreesRegressor

from vintage.data import packaged_path
from vintage.model.load import load_model_dir
from vintage.training.fit import serialize_model
from vintage.training.track import SerializedModel, save_sklearn_model

_VARIES = ("utc_time_created", "model_uuid")


def _save(path: Path, model: object, fmt: str, frame: pd.DataFrame, fitted: ExtraTreesRegressor) -> dict:
    example = frame.head(5)
    save_sklearn_model(
        str(path),
        Model(),
        model,
        signature=infer_signature(example, fitted.predict(example)),
        input_example=example,
        pip_requirements=["scikit-learn"],
        serialization_format=fmt,
    )
    meta = yaml.safe_load((path / "MLmodel").read_text())
    return {k: v for k, v in meta.items() if k not in _VARIES}


@pytest.mark.parametrize("fmt", ["cloudpickle", "pickle"])
def test_bytes_and_object_give_the_same_model_directory(tmp_path: Path, fmt: str) -> None:
    red = pd.read_csv(packaged_path("red"), sep=";")
    x, y = red.drop(columns="quality"), red["quality"]
    fitted = ExtraTreesRegressor(n_estimators=20, random_state=0).fit(x, y)
    data = serialize_model(fitted, fmt)
    from_object = _save(tmp_path / "object", fitted, fmt, x, fitted)
    from_bytes = _save(tmp_path / "bytes", SerializedModel(data), fmt, x, fitted)

    assert from_bytes == from_object  # flavors, signature, example info, model_size_bytes
    assert from_bytes["model_size_bytes"] > len(data)
    names = sorted(p.name for p in (tmp_path / "object").iterdir())
    assert sorted(p.name for p in (tmp_path / "bytes").iterdir()) == names
    assert (tmp_path / "bytes" / "model.pkl").read_bytes() == (tmp_path / "object" / "model.pkl").read_bytes()
    rows = x.tail(50).to_numpy(dtype=np.float64)
    served = load_model_dir(tmp_path / "bytes").predict(rows)
    np.testing.assert_array_equal(served, fitted.predict(x.tail(50)))


def test_a_format_a_worker_cannot_write_is_refused() -> None:
    with pytest.raises(ValueError, match="skops"):
        serialize_model(ExtraTreesRegressor(), "skops")
