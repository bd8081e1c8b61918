"""Drift of an environment's traffic against its training data (``vintage monitor``).

:func:`report` reads the environment's inference log (written by the scoring server, see
:mod:`vintage.serving.inference_log`), compares every feature and the predictions with the training data
(:mod:`vintage.monitoring.stats`: PSI, KS, missing and out-of-range rates) and returns a
:class:`MonitorReport`; :func:`vintage.monitoring.html.render` turns it into a self-contained HTML page.
"""

from vintage.monitoring.report import MonitorReport, parse_duration, report
from vintage.monitoring.stats import ColumnDrift, Thresholds

__all__ = ["ColumnDrift", "MonitorReport", "Thresholds", "parse_duration", "report"]
