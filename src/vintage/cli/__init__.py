"""The ``vintage`` command line (typer + rich). Commands are thin: parse, call the library, render.

Heavy libraries (MLflow, scikit-learn, pandas) are imported inside the commands, never at start-up.
"""
