"""The one error hierarchy of vintage.

Every error the library raises on purpose is a :class:`VintageError`. The CLI catches it in one place,
prints ``headline`` (one line: what was wrong), then ``hint`` (how to fix it), and exits with
``exit_code``. Exceptions from MLflow, scikit-learn or the file system are translated at the boundary
with ``raise ... from exc`` so the original stays available under ``--verbose``.

    VintageError                 exit 1 unless stated
     ├── ConfigError             exit 2: vintage.yaml or a command-line option is wrong
     ├── DataError               the data set is missing, unreadable or invalid
     ├── TrackingError           the MLflow tracking store cannot be reached or refused a write
     ├── TrainingError           no grid point could be trained
     │    └── SelectionError     no run meets the selection threshold
     ├── RegistryError           registering or reading a model version failed
     ├── Interrupted             exit 130: stopped by Ctrl-C / SIGTERM after cleaning up
     ├── ServingError            the scoring server cannot load or serve a model
     ├── SparkError              Spark could not be started or reached, or a Spark job failed
     ├── DeployError             an environment could not be started, swapped, stopped or rolled back
     ├── MonitoringError         an inference log is missing or cannot be compared with the training data
     │    └── DriftDetected      exit 4: `vintage monitor` found a feature or the predictions drifted
     ├── PipelineError           a pipeline run failed, was rejected or cannot be resumed
     │    ├── WaitingApproval    exit 3: the run stopped at an approval gate (not a failure)
     │    └── ApprovalRejected   an approver rejected the stage (the stage and run are ``rejected``)
     └── SecretError             a secret is missing, the store cannot be opened or the key is wrong
          └── SecretAccessError  a reader asked for a scope of another environment
"""

from __future__ import annotations

from vintage.redact import redact

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class VintageError(Exception):
    """Root of every error vintage raises on purpose.

    Args:
        headline: One line saying what was wrong. Must never contain a secret value.
        hint: How to fix it (optional, printed under the headline).
        details: Extra lines (for example the offending rows of a data file).
    """

    exit_code: int = EXIT_RUNTIME

    def __init__(self, headline: str, *, hint: str | None = None, details: list[str] | None = None) -> None:
        # Redacted here, so no secret value reaches a message however the error was built.
        headline = redact(headline)
        super().__init__(headline)
        self.headline = headline
        self.hint = redact(hint) if hint else hint
        self.details = [redact(d) for d in details or []]

    def __str__(self) -> str:
        return self.headline


class ConfigError(VintageError):
    """vintage.yaml, an environment variable or a command-line option is wrong."""

    exit_code = EXIT_USAGE


class DataError(VintageError):
    """The data set is missing, unreadable or fails validation."""


class TrackingError(VintageError):
    """The MLflow tracking store cannot be reached or refused an operation."""


class TrainingError(VintageError):
    """Training failed as a whole (every grid point failed)."""


class SelectionError(TrainingError):
    """No run meets the selection threshold; nothing was registered."""


class RegistryError(VintageError):
    """Registering, aliasing or reading a model version failed."""


class Interrupted(VintageError):  # noqa: N818 - reads better at the call site
    """Stopped by Ctrl-C or SIGTERM; state was cleaned up before exiting."""

    exit_code = 130


class ServingError(VintageError):
    """The scoring server cannot load or serve a model."""


class SparkError(VintageError):
    """Spark could not be started or reached, or a Spark job failed."""


class DeployError(VintageError):
    """An environment could not be started, swapped to a new model, stopped or rolled back."""


class MonitoringError(VintageError):
    """An environment's inference log is missing (nothing logged yet) or cannot be compared with the
    training data."""


EXIT_DRIFT = 4


class DriftDetected(MonitoringError):  # noqa: N818 - a finding, not a failure of vintage
    """``vintage monitor`` found a feature or the predictions past a threshold (cron and CI alert on 4)."""

    exit_code = EXIT_DRIFT


class ImageError(VintageError):
    """A container image could not be built, inspected or pushed (builder missing, registry unreachable)."""


class PipelineError(VintageError):
    """A pipeline run failed (a step failed, a gate refused), was rejected, or cannot be resumed."""


EXIT_WAITING_APPROVAL = 3


class WaitingApproval(PipelineError):  # noqa: N818 - a state, not a failure
    """The run reached an approval gate and stopped; ``vintage approve`` then ``vintage resume`` go on."""

    exit_code = EXIT_WAITING_APPROVAL


class ApprovalRejected(PipelineError):  # noqa: N818 - a decision, not a failure of vintage
    """An approver rejected the stage at its approval gate: the stage is ``rejected``, not ``failed``."""


class SecretError(VintageError):
    """A secret is missing, the secret store cannot be opened, or its master key is wrong."""


class SecretAccessError(SecretError):
    """A pipeline stage or served environment asked for a scope bound to another environment."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its class name if empty), cut to ``limit`` characters.

    Used wherever a library exception becomes part of a one-line headline.
    """
    text = redact(str(exc).strip())
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
