"""Pipeline stages. For now: the build stage (validate data -> train grid -> select -> register)."""

from vintage.pipeline.build import BuildResult, run_build

__all__ = ["BuildResult", "run_build"]
