"""Environment variables no test may inherit from the shell (tracking server, vintage settings)."""

FOREIGN_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_TOKEN",
    "VINTAGE_CONFIG",
    "VINTAGE_STATE_DIR",
    "VINTAGE_STATE_URL",
    "VINTAGE_MASTER_KEY",
    "VINTAGE_ACTOR",
)
