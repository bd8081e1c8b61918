"""load_model_dir: MLflow sklearn model directories scored without MLflow, equal to mlflow.pyfunc."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from vintage.data import packaged_path
from vintage.errors import ServingError
from vintage.model.load import VINTAGE_META, file_sha256, load_model_dir

FORMATS = ("cloudpickle", "pickle", "skops")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def red() -> pd.DataFrame:
    return pd.read_csv(packaged_path("red"), sep=";")


@pytest.fixture(scope="module")
def features(red: pd.DataFrame) -> pd.DataFrame:
    return red.drop(columns="quality")


def _estimator(kind: str) -> Any:
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import ElasticNet, Lasso, LinearRegression, Ridge

    return {
        "elasticnet": lambda: ElasticNet(alpha=0.1, l1_ratio=0.1, random_state=42),
        "forest": lambda: RandomForestRegressor(n_estimators=5, random_state=0),
        "lasso": lambda: Lasso(alpha=0.01),
        "ridge": lambda: Ridge(alpha=1.0),
        "linear": LinearRegression,
    }[kind]()


def save(red: pd.DataFrame, path: Path, kind: str, fmt: str = "cloudpickle", signature: bool = True) -> Any:
    """Fit ``kind`` on the red wines and save it with mlflow.sklearn.save_model; returns the estimator."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    x, y = red.drop(columns="quality"), red["quality"]
    model = _estimator(kind).fit(x, y)
    extra: dict[str, Any] = {}
    if fmt == "skops":  # as vintage train does: the model's own types are trusted
        import skops.io

        extra["skops_trusted_types"] = list(skops.io.get_untrusted_types(data=skops.io.dumps(model)))
    if signature:
        extra["signature"] = infer_signature(x, model.predict(x))
        extra["input_example"] = x.head(5)
    mlflow.sklearn.save_model(
        model, str(path), serialization_format=fmt, pip_requirements=["scikit-learn"], **extra
    )
    return model


@pytest.fixture(scope="module")
def saved(red: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """Save each (kind, format) once per module: ``saved("forest", "skops")`` -> model directory."""
    cache: dict[tuple[str, str], Path] = {}

    def get(kind: str, fmt: str = "cloudpickle") -> Path:
        if (kind, fmt) not in cache:
            path = tmp_path_factory.mktemp("models") / f"{kind}-{fmt}"
            save(red, path, kind, fmt)
            cache[kind, fmt] = path
        return cache[kind, fmt]

    return get


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", ["elasticnet", "forest"])
def test_predictions_equal_mlflow_pyfunc(saved, features, kind, fmt):
    import mlflow.pyfunc

    path = saved(kind, fmt)
    model = load_model_dir(path)
    rows = features.head(50)
    expected = mlflow.pyfunc.load_model(str(path)).predict(rows)
    got = model.predict(rows.to_numpy(dtype=np.float64))
    assert got.dtype == np.float64 and got.shape == (50,)
    np.testing.assert_allclose(got, np.asarray(expected, dtype=np.float64), rtol=1e-12, atol=0)
    assert model.info.serialization_format == fmt
    assert model.predictor == ("linear" if kind == "elasticnet" else "estimator")


def test_info_columns_signature_and_example(saved, features):
    model = load_model_dir(saved("elasticnet"))
    info = model.info
    assert info.columns == tuple(features.columns) and len(info.columns) == 11
    assert info.column_types == ("double",) * 11
    assert info.flavor == "sklearn"
    assert (info.name, info.version, info.model_uri, info.run_id) == (None, None, None, None)
    assert info.signature is not None
    assert [c["name"] for c in info.signature["inputs"]] == list(features.columns)
    assert info.signature["outputs"][0]["type"] == "tensor"
    example = model.example()
    assert example is not None and example.shape == (5, 11) and example.dtype == np.float64
    np.testing.assert_array_equal(example, features.head(5).to_numpy())
    example[0, 0] = -1.0  # a copy: the model's own example is untouched
    assert model.example()[0, 0] == features.iloc[0, 0]  # type: ignore[index]


@pytest.mark.parametrize("kind", ["elasticnet", "lasso", "ridge", "linear"])
def test_linear_fast_path_equals_the_estimator_on_all_red_wines(saved, features, kind):
    path = saved(kind)
    model = load_model_dir(path)
    assert model.predictor == "linear"
    with (path / "model.pkl").open("rb") as fh:
        estimator = pickle.load(fh)
    expected = estimator.predict(features)
    np.testing.assert_allclose(model.predict(features.to_numpy()), expected, rtol=1e-12, atol=0)
    for n in (1, 10):
        rows = features.head(n)
        np.testing.assert_allclose(
            model.predict(rows.to_numpy()), estimator.predict(rows), rtol=1e-12, atol=0
        )


def test_linear_fast_path_rejects_non_finite_input_like_sklearn(saved):
    model = load_model_dir(saved("elasticnet"))
    x = np.ones((2, 11))
    x[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(x)


def test_wrong_width_is_a_value_error(saved):
    model = load_model_dir(saved("forest"))
    with pytest.raises(ValueError, match="rows of 11 values"):
        model.predict(np.ones((1, 10)))
    with pytest.raises(ValueError, match="rows of 11 values"):
        model.predict(np.ones(11))


def test_general_path_does_not_warn_about_feature_names(saved, features):
    import warnings

    model = load_model_dir(saved("forest"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.predict(features.head(3).to_numpy())


def _composite(kind: str) -> Any:
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import StackingRegressor, VotingRegressor
    from sklearn.linear_model import ElasticNet, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeRegressor

    scaled = make_pipeline(StandardScaler(), ElasticNet(alpha=0.1))
    members = [("scaled", scaled), ("tree", DecisionTreeRegressor(max_depth=3, random_state=0))]
    return {
        "pipeline": lambda: scaled,
        "ttr": lambda: TransformedTargetRegressor(regressor=Ridge(), func=np.log1p, inverse_func=np.expm1),
        "voting": lambda: VotingRegressor(members),
        "stacking": lambda: StackingRegressor(members, final_estimator=Ridge(), cv=3),
    }[kind]()


@pytest.mark.parametrize("kind", ["pipeline", "ttr", "voting", "stacking"])
def test_a_composite_fitted_on_a_frame_does_not_warn_about_feature_names(red, features, tmp_path, kind):
    """Every member fitted on the DataFrame forgets its column names, not only the outer estimator."""
    import warnings

    import mlflow.sklearn
    from mlflow.models import infer_signature

    fitted = _composite(kind).fit(features, red["quality"])
    sig = infer_signature(features, fitted.predict(features))
    mlflow.sklearn.save_model(
        fitted, str(tmp_path / kind), serialization_format="cloudpickle", signature=sig, pip_requirements=[]
    )
    model = load_model_dir(tmp_path / kind)
    rows = features.head(20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = model.predict(rows.to_numpy(dtype=np.float64))
    np.testing.assert_allclose(got, fitted.predict(rows), rtol=1e-12, atol=0)


def _with_meta(path: Path, model_file: str = "model.pkl", **extra: Any) -> None:
    model = load_model_dir(path)
    assert model.linear is not None
    linear = {**model.linear.to_json(), "model_sha256": file_sha256(path / model_file)}
    meta = {"name": "winequality", "version": "3", "run_id": "r1", "model_uri": "models:/winequality/3"}
    (path / VINTAGE_META).write_text(json.dumps({**meta, "linear": linear, **extra}))


def _cold(path: Path) -> dict[str, Any]:
    """Load and predict in a fresh interpreter: which heavy modules got imported, and how long it took."""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        started = time.perf_counter()
        from pathlib import Path
        from vintage.model.load import load_model_dir
        model = load_model_dir(Path({str(path)!r}))
        pred = model.predict(model.example())
        seconds = time.perf_counter() - started
        print(json.dumps({{"seconds": seconds, "predictor": model.predictor, "pred": pred.tolist(),
                          "name": model.info.name, "version": model.info.version,
                          "modules": [m for m in ("mlflow", "sklearn", "pandas") if m in sys.modules]}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("kind", ["elasticnet", "forest"])
def test_cold_load_in_a_subprocess_does_not_import_mlflow(saved, kind):
    result = _cold(saved(kind, "pickle"))
    print(f"cold load + predict of a plain {kind} MLflow directory: {result['seconds'] * 1000:.0f} ms")
    assert "mlflow" not in result["modules"]
    assert len(result["pred"]) == 5


def test_stored_coefficients_serve_without_sklearn(red, tmp_path):
    path = tmp_path / "enet"
    estimator = save(red, path, "elasticnet")
    _with_meta(path)
    result = _cold(path)
    print(f"cold load + predict with stored coefficients: {result['seconds'] * 1000:.0f} ms")
    assert result["modules"] == []  # neither mlflow, nor scikit-learn, nor pandas
    assert result["predictor"] == "linear"
    assert (result["name"], result["version"]) == ("winequality", "3")
    expected = estimator.predict(red.drop(columns="quality").head(5))
    np.testing.assert_allclose(result["pred"], expected, rtol=1e-12, atol=0)


def test_stored_coefficients_of_another_model_file_are_ignored(red, tmp_path):
    path = tmp_path / "enet"
    save(red, path, "elasticnet")
    _with_meta(path)
    meta = json.loads((path / VINTAGE_META).read_text())
    meta["linear"]["coef"] = [0.0] * 11  # would predict the intercept only
    meta["linear"]["model_sha256"] = "0" * 64
    (path / VINTAGE_META).write_text(json.dumps(meta))
    model = load_model_dir(path)
    assert model.info.name == "winequality"
    assert model.linear is not None and model.linear.coef.any()  # from the unpickled estimator


def test_multi_output_models_are_refused(red, tmp_path):
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from sklearn.linear_model import LinearRegression

    x = red.drop(columns="quality")
    y = red[["quality", "alcohol"]]
    model = LinearRegression().fit(x, y)
    mlflow.sklearn.save_model(model, str(tmp_path / "m"), signature=infer_signature(x, model.predict(x)))
    with pytest.raises(ServingError, match=r"predictions of shape \(1, 2\)"):
        load_model_dir(tmp_path / "m")


# --- errors ----------------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    with pytest.raises(ServingError, match=r"model directory .*nowhere does not exist") as exc:
        load_model_dir(tmp_path / "nowhere")
    assert exc.value.hint


def test_directory_without_mlmodel(tmp_path):
    with pytest.raises(ServingError, match="is not an MLflow model directory: it has no MLmodel file"):
        load_model_dir(tmp_path)


def test_model_without_sklearn_flavor(red, tmp_path):
    path = tmp_path / "m"
    save(red, path, "elasticnet")
    mlmodel = yaml.safe_load((path / "MLmodel").read_text())
    del mlmodel["flavors"]["sklearn"]
    (path / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ServingError, match=r"is not a scikit-learn model \(flavors: python_function\)"):
        load_model_dir(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_model_file(red, tmp_path, fmt):
    path = tmp_path / "m"
    save(red, path, "elasticnet", fmt)
    name = "model.skops" if fmt == "skops" else "model.pkl"
    (path / name).write_bytes(b"definitely not a model")
    with pytest.raises(ServingError, match=f"cannot load the model file .*{name} \\({fmt}\\)") as exc:
        load_model_dir(path)
    assert "corrupt" in (exc.value.hint or "")


def test_missing_model_file(red, tmp_path):
    path = tmp_path / "m"
    save(red, path, "forest", "pickle")
    (path / "model.pkl").unlink()
    with pytest.raises(ServingError, match=r"the model file .*model.pkl is missing"):
        load_model_dir(path)


def test_model_without_signature(red, tmp_path):
    path = tmp_path / "m"
    save(red, path, "elasticnet", signature=False)
    with pytest.raises(ServingError, match="has no column signature") as exc:
        load_model_dir(path)
    assert "signature" in (exc.value.hint or "")


def test_unreadable_mlmodel(tmp_path):
    (tmp_path / "MLmodel").write_text("flavors: [unclosed")
    with pytest.raises(ServingError, match=r"cannot read .*MLmodel"):
        load_model_dir(tmp_path)


def test_corrupt_vintage_meta(red, tmp_path):
    path = tmp_path / "m"
    save(red, path, "elasticnet")
    (path / VINTAGE_META).write_text("{not json")
    with pytest.raises(ServingError, match=r"cannot read .*vintage-model.json"):
        load_model_dir(path)
