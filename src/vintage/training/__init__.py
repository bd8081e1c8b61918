"""Grid training: expand the grid, fit points in parallel processes, log one MLflow run per point, select."""

from vintage.training.grid import GridPoint, expand_grid
from vintage.training.runner import PointRun, TrainingReport, train_grid
from vintage.training.select import select_best

__all__ = ["GridPoint", "PointRun", "TrainingReport", "expand_grid", "select_best", "train_grid"]
