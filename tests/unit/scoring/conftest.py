"""Shared by the scoring unit tests: the packaged red wines and two saved models (ElasticNet, forest)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from unit.model.test_load import save
from vintage.data import packaged_path


@pytest.fixture(scope="module")
def red() -> pd.DataFrame:
    return pd.read_csv(packaged_path("red"), sep=";")


@pytest.fixture(scope="module")
def features(red: pd.DataFrame) -> list[str]:
    return [c for c in red.columns if c != "quality"]


@pytest.fixture(scope="module")
def models(red: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("elasticnet", "forest"):
        save(red, root / kind, kind)
        out[kind] = root / kind
    return out
