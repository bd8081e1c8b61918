"""Grid training: expand the grid, fit points in parallel processes, log one MLflow run per point, select."""

from vintage.training.grid import GridPoint, expand_grid
from vintage.training.runner import PointRun, TrainingReport, log_chosen_files, train_grid
from vintage.training.select import select_best

__all__ = [
    "GridPoint",
    "PointRun",
    "TrainingReport",
    "expand_grid",
    "log_chosen_files",
    "select_best",
    "train_grid",
]
