"""The scoring server: a lean ASGI app that serves a local MLflow sklearn model (no MLflow import)."""
