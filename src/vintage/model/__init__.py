"""A model directory: load it for scoring, its manifest and digest, materialise it from the registry.

Used by the scoring server and batch scoring. ``load`` and ``digest`` never import MLflow; only
``materialize`` does, inside its functions. This ``__init__`` imports nothing.
"""
