"""The workload spec (vintage.yaml) as typed objects, and project settings.

``load_spec`` parses vintage.yaml once, at the edge; everything below works on :class:`Spec`.
"""

from vintage.config.estimators import EstimatorNode, EstimatorSpec
from vintage.config.load import DEFAULT_CONFIG_FILE, load_settings, load_spec, resolve_config_path
from vintage.config.models import (
    WINE_FEATURES,
    DataSpec,
    ProjectSettings,
    SecretsSpec,
    SelectionSpec,
    Spec,
    SplitSpec,
    TrainingSpec,
)

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "WINE_FEATURES",
    "DataSpec",
    "EstimatorNode",
    "EstimatorSpec",
    "ProjectSettings",
    "SecretsSpec",
    "SelectionSpec",
    "Spec",
    "SplitSpec",
    "TrainingSpec",
    "load_settings",
    "load_spec",
    "resolve_config_path",
]
