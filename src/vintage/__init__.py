"""vintage."""

import os

__version__ = "0.1.0"

# MLflow 3 sends usage telemetry to MLflow's servers unless told not to. vintage talks only to the
# services its config names, so it is off unless the user sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
