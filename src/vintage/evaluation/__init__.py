"""Evaluation of regression models, pure: the metrics beyond rmse/mae/r2 (accuracy within a tolerance,
as the wine-quality data set's paper reports), the plots of one model's holdout predictions, its
coefficients or feature importances, and the self-contained HTML report comparing a release candidate
with the production champion.

Nothing here reads a store or a registry: callers pass arrays and models, and get numbers, PNG bytes,
CSV text or HTML back. Training renders the plots in its worker processes; the pipeline's release step
writes the report.
"""

from vintage.evaluation.metrics import ACCURACY_TOLERANCES, accuracy_within, best_values, evaluation_metrics

__all__ = ["ACCURACY_TOLERANCES", "accuracy_within", "best_values", "evaluation_metrics"]
