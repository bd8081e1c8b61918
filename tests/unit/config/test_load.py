"""load_spec: reading vintage.yaml, defaults, environment precedence and error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vintage.config import DEFAULT_CONFIG_FILE, WINE_FEATURES, load_spec, resolve_config_path
from vintage.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
ENET = "sklearn.linear_model.ElasticNet"


def write(directory: Path, text: str, name: str = "vintage.yaml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    return exc.value


# --- successful loads ---------------------------------------------------------------------------


def test_repo_config_loads_three_elasticnet_points() -> None:
    spec = load_spec(REPO / "vintage.yaml")

    assert len(spec.estimators) == 1
    est = spec.estimators[0]
    assert est.class_path == ENET
    assert est.params == {"random_state": 42}
    assert est.points() == [
        {"alpha": 0.5, "l1_ratio": 0.5},
        {"alpha": 0.3, "l1_ratio": 0.3},
        {"alpha": 0.1, "l1_ratio": 0.1},
    ]
    assert spec.grid_size() == 3
    assert spec.selection.threshold == 0.8
    assert spec.selection.metric == "rmse"
    assert spec.selection.direction == "minimize"
    assert spec.data.split.seed == 40
    assert spec.data.split.test_size == 0.25
    assert spec.data.dataset == "red"
    assert spec.data.target == "quality"
    assert spec.data.features == WINE_FEATURES
    assert spec.experiment == "DrinksQuality"
    assert spec.model_name == "winequality"
    assert spec.training.model_format == "cloudpickle"


def test_load_spec_reads_cwd_vintage_yaml_when_no_path_given(project: Path) -> None:
    spec = load_spec()

    assert spec.selection.threshold == 0.8
    assert spec.grid_size() == 3


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_gives_defaults(tmp_path: Path, text: str) -> None:
    spec = load_spec(write(tmp_path, text))

    assert [e.class_path for e in spec.estimators] == [ENET]
    est = spec.estimators[0]
    assert est.params == {"random_state": 42}
    assert est.points() == [
        {"alpha": 0.5, "l1_ratio": 0.5},
        {"alpha": 0.3, "l1_ratio": 0.3},
        {"alpha": 0.1, "l1_ratio": 0.1},
    ]
    assert spec.data.dataset == "red"
    assert spec.data.path is None
    assert spec.data.split.test_size == 0.25
    assert spec.data.split.seed == 40
    assert spec.selection.threshold is None
    assert spec.selection.cv is None
    assert spec.tracking_uri is None
    assert spec.state_dir == Path(".vintage")


def test_list_grid_keeps_points_literally_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        estimator:
          class: {ENET}
          grid:
            - {{alpha: 0.9}}
            - {{alpha: 0.1, l1_ratio: 0.2}}
            - {{}}
        """,
    )

    assert load_spec(path).estimators[0].points() == [{"alpha": 0.9}, {"alpha": 0.1, "l1_ratio": 0.2}, {}]


def test_mapping_grid_expands_to_cartesian_product_in_key_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        estimator:
          class: {ENET}
          grid:
            alpha: [1.0, 0.1]
            l1_ratio: [0.2, 0.5, 0.8]
        """,
    )

    points = load_spec(path).estimators[0].points()

    assert points == [
        {"alpha": 1.0, "l1_ratio": 0.2},
        {"alpha": 1.0, "l1_ratio": 0.5},
        {"alpha": 1.0, "l1_ratio": 0.8},
        {"alpha": 0.1, "l1_ratio": 0.2},
        {"alpha": 0.1, "l1_ratio": 0.5},
        {"alpha": 0.1, "l1_ratio": 0.8},
    ]


def test_estimator_without_grid_has_one_empty_point(tmp_path: Path) -> None:
    path = write(tmp_path, "estimator: {class: sklearn.linear_model.LinearRegression}\n")

    spec = load_spec(path)

    assert spec.estimators[0].points() == [{}]
    assert spec.grid_size() == 1


def test_estimator_as_single_mapping_becomes_one_element_list(tmp_path: Path) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: [{{alpha: 0.2}}]\n")

    spec = load_spec(path)

    assert len(spec.estimators) == 1
    assert spec.estimators[0].points() == [{"alpha": 0.2}]


def test_several_estimators_load_in_order_and_sum_grid_size(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        estimator:
          - class: {ENET}
            grid: {{alpha: [0.1, 0.2]}}
          - class: sklearn.neighbors.KNeighborsRegressor
            name: knn
            params: {{weights: distance}}
            grid: [{{n_neighbors: 3}}, {{n_neighbors: 5}}, {{n_neighbors: 7}}]
        """,
    )

    spec = load_spec(path)

    assert [e.class_path for e in spec.estimators] == [ENET, "sklearn.neighbors.KNeighborsRegressor"]
    assert [e.label for e in spec.estimators] == ["ElasticNet", "knn"]
    assert spec.estimators[1].params == {"weights": "distance"}
    assert spec.grid_size() == 5


def test_relative_data_path_is_resolved_against_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(conf_dir, "data:\n  path: data/wines.csv\n")

    spec = load_spec(path)

    assert spec.data.path == conf_dir / "data" / "wines.csv"
    assert spec.data.dataset is None


def test_absolute_data_path_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "somewhere" / "wines.parquet"
    path = write(tmp_path, f"data:\n  path: {target}\n")

    assert load_spec(path).data.path == target


# --- environment precedence -----------------------------------------------------------------------


def test_mlflow_tracking_uri_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "tracking_uri: http://from-file:5000\n")
    assert load_spec(path).tracking_uri == "http://from-file:5000"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")

    assert load_spec(path).tracking_uri == "http://from-env:5000"


def test_vintage_state_dir_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "state_dir: from-file\n")
    assert load_spec(path).state_dir == Path("from-file")

    monkeypatch.setenv("VINTAGE_STATE_DIR", str(tmp_path / "from-env"))

    assert load_spec(path).state_dir == tmp_path / "from-env"


def test_resolve_config_path_defaults_to_vintage_yaml() -> None:
    assert resolve_config_path() == Path(DEFAULT_CONFIG_FILE) == Path("vintage.yaml")


def test_resolve_config_path_uses_vintage_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINTAGE_CONFIG", "other/workload.yaml")

    assert resolve_config_path() == Path("other/workload.yaml")
    assert resolve_config_path("explicit.yaml") == Path("explicit.yaml")


def test_vintage_config_env_picks_the_file_load_spec_reads(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = write(project, "experiment: FromEnvFile\n", name="other.yaml")
    monkeypatch.setenv("VINTAGE_CONFIG", str(other))

    assert load_spec().experiment == "FromEnvFile"


# --- errors: file level -------------------------------------------------------------------------


def test_missing_file_is_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"

    err = config_error(path)

    assert err.exit_code == 2
    assert str(path) in err.headline
    assert "not found" in err.headline


def test_invalid_yaml_is_config_error_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment: ok\nmodel_name: [unclosed\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}:")
    assert "invalid YAML" in err.headline


def test_duplicate_key_is_config_error_with_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment: a\nmodel_name: m\nexperiment: b\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}:3:")
    assert "duplicate key 'experiment'" in err.headline


def test_duplicate_nested_key_is_config_error_with_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  target: quality\n  dataset: red\n  target: other\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}:4:")
    assert "duplicate key 'target'" in err.headline


def test_unhashable_yaml_key_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "? [a, b]\n: 1\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}:")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str")])
def test_top_level_not_mapping_is_config_error(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)

    err = config_error(path)

    assert err.exit_code == 2
    assert str(path) in err.headline
    assert "mapping" in err.headline
    assert kind in err.headline


# --- errors: schema -----------------------------------------------------------------------------


def test_unknown_top_level_key_lists_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "experimnt: x\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: experimnt: unknown key")
    for key in ("experiment", "model_name", "data", "estimator", "selection", "training", "state_dir"):
        assert key in err.headline


@pytest.mark.parametrize(
    ("text", "key_path", "allowed"),
    [
        ("data:\n  targt: q\n", "data.targt", ["dataset", "path", "target", "features", "split"]),
        ("data:\n  split: {tst_size: 0.2}\n", "data.split.tst_size", ["test_size", "seed"]),
        (f"estimator:\n  class: {ENET}\n  gird: []\n", "estimator[0].gird", ["class", "name", "grid"]),
        ("selection: {metrc: r2}\n", "selection.metrc", ["metric", "direction", "threshold", "cv"]),
    ],
)
def test_unknown_nested_key_names_key_path_and_allowed_keys(
    tmp_path: Path, text: str, key_path: str, allowed: list[str]
) -> None:
    path = write(tmp_path, text)

    err = config_error(path)

    assert err.headline.startswith(f"{path}: {key_path}: unknown key; expected one of:")
    for key in allowed:
        assert key in err.headline


def test_wrong_type_names_key_path_and_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, "selection:\n  threshold: abc\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: selection.threshold:")
    assert "number" in err.headline
    assert "'abc'" in err.headline


def test_several_problems_reported_with_count_and_details(tmp_path: Path) -> None:
    path = write(tmp_path, "selection: {threshold: abc}\ntraining: {n_jobs: 0}\n")

    err = config_error(path)

    assert "selection.threshold" in err.headline
    assert "(and 1 more problem)" in err.headline
    assert len(err.details) == 1
    assert err.details[0].startswith(f"{path}: training.n_jobs:")


@pytest.mark.parametrize(
    ("class_path", "expected"),
    [
        ("nosuch_pkg_xyz.models.Thing", "cannot import module 'nosuch_pkg_xyz.models'"),
        ("sklearn.linear_model.NoSuchRegressor", "has no attribute 'NoSuchRegressor'"),
        ("sklearn.linear_model.enet_path", "is not a scikit-learn style estimator class"),
        ("sklearn.preprocessing.StandardScaler", "is not a scikit-learn style estimator class"),
        ("ElasticNet", "is not an import path"),
    ],
)
def test_bad_estimator_import_path_is_config_error(tmp_path: Path, class_path: str, expected: str) -> None:
    path = write(tmp_path, f"estimator:\n  class: {class_path}\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: estimator[0].class:")
    assert expected in err.headline


def test_missing_estimator_class_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "estimator:\n  grid: [{alpha: 1}]\n")

    err = config_error(path)

    assert err.headline == f"{path}: estimator[0].class: required key is missing"


@pytest.mark.parametrize(
    ("grid", "expected"),
    [("[]", "the grid is empty; give at least one point"), ("{}", "the grid is empty; give at least one")],
)
def test_empty_grid_is_config_error(tmp_path: Path, grid: str, expected: str) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: {grid}\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: estimator[0].grid: {expected}")


@pytest.mark.parametrize("value", ["0.5", "[]"])
def test_mapping_grid_value_not_a_nonempty_list_is_config_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: {{alpha: {value}, l1_ratio: [0.1]}}\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}: estimator[0].grid:")
    assert "['alpha']" in err.headline
    assert "list" in err.headline


def test_grid_point_not_a_mapping_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: [{{alpha: 0.1}}, 0.5]\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}: estimator[0].grid:")
    assert "[1]" in err.headline


def test_grid_scalar_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: 0.5\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}: estimator[0].grid: expected a list of points")


def test_unknown_hyperparameter_in_grid_names_it_and_lists_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, f"estimator:\n  class: {ENET}\n  grid: [{{alpah: 0.5}}]\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: estimator[0]:")
    assert "has no parameter(s) ['alpah']" in err.headline
    assert "alpha" in err.headline.split("accepts:")[1]
    assert "l1_ratio" in err.headline.split("accepts:")[1]


def test_unknown_hyperparameter_in_params_of_second_estimator_names_its_index(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        estimator:
          - class: {ENET}
          - class: sklearn.linear_model.Ridge
            params: {{l1_ratio: 0.5}}
        """,
    )

    err = config_error(path)

    assert err.headline.startswith(f"{path}: estimator[1]: sklearn.linear_model.Ridge has no parameter(s)")
    assert "['l1_ratio']" in err.headline


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_test_size_out_of_range_is_config_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"data:\n  split:\n    test_size: {value}\n")

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: data.split.test_size:")
    assert "than" in err.headline  # "greater than 0" / "less than 1"


def test_dataset_and_path_both_given_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  dataset: red\n  path: wines.csv\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}: data:")
    assert "either `dataset`" in err.headline
    assert "not both" in err.headline


def test_target_listed_in_features_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  target: quality\n  features: [alcohol, quality]\n")

    err = config_error(path)

    assert err.headline.startswith(f"{path}: data:")
    assert "'quality'" in err.headline
    assert "features" in err.headline


def test_duplicate_feature_is_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  features: [alcohol, pH, alcohol]\n")

    err = config_error(path)

    assert "duplicate feature columns: ['alcohol']" in err.headline


@pytest.mark.parametrize(
    ("text", "key_path"),
    [
        ("data:\n  dataset: rose\n", "data.dataset"),
        ("selection:\n  metric: precision\n", "selection.metric"),
        ("selection:\n  cv: 1\n", "selection.cv"),
        ("training:\n  model_format: joblib\n", "training.model_format"),
        ("model_name: 'has space'\n", "model_name"),
    ],
)
def test_invalid_enum_or_bound_names_key_path(tmp_path: Path, text: str, key_path: str) -> None:
    path = write(tmp_path, text)

    err = config_error(path)

    assert err.exit_code == 2
    assert err.headline.startswith(f"{path}: {key_path}:")


# --- environments merge over the built-in ones ---------------------------------------------------


def test_overriding_one_key_of_production_keeps_its_api_keys_and_staging(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "environments: {production: {port: 9202}}\n"))

    assert spec.environments["production"].port == 9202
    assert spec.environments["production"].api_keys is True
    assert spec.key_scope("production") == "production/serving"
    assert spec.environments["staging"].port == 8081


def test_overriding_only_staging_keeps_production(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "environments: {staging: {workers: 2}}\n"))

    assert spec.environments["staging"].workers == 2
    assert spec.environments["staging"].port == 8081
    assert spec.environments["production"].port == 8082
    assert spec.environments["production"].api_keys is True


def test_a_new_environment_is_added_next_to_the_built_in_ones(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "environments: {qa: {port: 8090}}\n"))

    assert set(spec.environments) == {"staging", "production", "qa"}
    assert spec.environments["qa"].api_keys is False


@pytest.mark.parametrize("text", ["environments:\n", "environments: {production: }\n"])
def test_empty_environment_entries_keep_the_defaults(tmp_path: Path, text: str) -> None:
    spec = load_spec(write(tmp_path, text))

    assert spec.environments["production"].port == 8082
    assert spec.environments["production"].api_keys is True


def test_production_api_keys_still_cannot_be_turned_off(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "environments: {production: {api_keys: false}}\n"))

    assert "api_keys cannot be false" in err.headline


def test_a_port_clash_with_a_default_environment_names_both(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "environments: {staging: {port: 8082}}\n"))

    assert "staging" in err.headline and "production" in err.headline and "8082" in err.headline


def test_an_environment_that_is_not_a_mapping_names_its_key(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "environments: {production: 9202}\n"))

    assert "environments.production" in err.headline


def test_the_commented_environments_example_in_vintage_yaml_loads(tmp_path: Path) -> None:
    lines = (REPO / "vintage.yaml").read_text(encoding="utf-8").splitlines()
    start = lines.index("# environments:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    text = (REPO / "vintage.yaml").read_text(encoding="utf-8") + "\n" + "\n".join(block) + "\n"
    spec = load_spec(write(tmp_path, text))

    assert spec.environments["production"].port == 9202
    assert spec.environments["production"].api_keys is True
    assert spec.environments["production"].approvers == ["alice", "bob"]
    assert spec.environments["staging"].workers == 2
    assert spec.environments["qa"].port == 8083


# --- grid size cap ------------------------------------------------------------------------------


def _values(n: int) -> str:
    return "[" + ", ".join(str(i) for i in range(n)) + "]"


def test_grid_over_the_default_cap_is_config_error_naming_size_cap_and_setting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""\
        estimator:
          class: {ENET}
          grid: {{alpha: {_values(101)}, l1_ratio: {_values(100)}}}
        """,
    )

    err = config_error(path)

    assert err.exit_code == 2
    assert "the grid has 10,100 points" in err.headline
    assert "training.max_grid_points = 10,000" in err.headline
    assert "\n" not in err.headline


def test_huge_grid_is_refused_from_list_lengths_without_expanding_it(tmp_path: Path) -> None:
    # 10^12 points: expanding them would exhaust memory; counting them is instant.
    path = write(
        tmp_path,
        f"""\
        estimator:
          class: {ENET}
          grid: {{alpha: {_values(10_000)}, l1_ratio: {_values(10_000)}, tol: {_values(10_000)}}}
        """,
    )

    err = config_error(path)

    assert "the grid has 1,000,000,000,000 points" in err.headline
    assert "estimator[0] ElasticNet: 1,000,000,000,000" in err.headline


def test_grid_cap_counts_every_estimator_and_is_a_setting(tmp_path: Path) -> None:
    text = f"""\
        training: {{max_grid_points: CAP}}
        estimator:
          - class: {ENET}
            grid: {{alpha: [0.1, 0.2, 0.3], l1_ratio: [0.1, 0.5]}}
          - class: sklearn.linear_model.Ridge
            grid: [{{alpha: 1.0}}, {{alpha: 2.0}}]
        """
    err = config_error(write(tmp_path, text.replace("CAP", "7")))
    assert "the grid has 8 points" in err.headline
    assert "estimator[0] ElasticNet: 6, estimator[1] Ridge: 2" in err.headline
    assert "training.max_grid_points = 7" in err.headline

    spec = load_spec(write(tmp_path, text.replace("CAP", "8")))
    assert spec.grid_size() == 8
    assert spec.training.max_grid_points == 8


def test_grid_cap_must_be_positive(tmp_path: Path) -> None:
    err = config_error(write(tmp_path, "training: {max_grid_points: 0}\n"))

    assert "training.max_grid_points" in err.headline
