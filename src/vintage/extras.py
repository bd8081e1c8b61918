"""The optional parts of vintage: which extra (``pyproject.toml``'s optional dependencies) brings which
module, and the one error a missing extra gives.

The core install (``requirements/core.txt``, what ``make demo`` installs) trains, serves, runs the pipeline
and keeps secrets. An engine or surface beyond that names its extra before it imports anything:
:func:`require` looks the extra's modules up (``importlib.util.find_spec``, nothing imported) and raises
:class:`MissingExtra`, whose headline says what needed the extra and whose hint says how to install it. The
CLI turns a :class:`ModuleNotFoundError` of a module listed here into the same error
(:func:`missing_extra`), for an import this module's callers did not foresee.
"""

from __future__ import annotations

import importlib.util
from typing import Final

from vintage.errors import EXIT_USAGE, VintageError

MODULES: Final[dict[str, tuple[str, ...]]] = {
    "scoring": ("pyarrow",),
    "spark": ("pyspark", "pyarrow"),
    "databricks": ("databricks.sdk",),
    "kubernetes": ("kubernetes",),
    "containers": ("uv",),
    "dashboard": ("jinja2",),
    "ui": ("flask",),
    "postgres": ("psycopg2",),
}
"""Extra -> the top-level modules that tell it is installed (the first is the one that matters most)."""

EXTRA_OF: Final[dict[str, str]] = {
    "pyarrow": "scoring",
    "pyspark": "spark",
    "databricks": "databricks",
    "kubernetes": "kubernetes",
    "jinja2": "dashboard",
    "flask": "ui",
    "psycopg2": "postgres",
}
"""Top-level module -> the extra that installs it (for :func:`missing_extra`)."""


class MissingExtra(VintageError):  # noqa: N818 - names what is missing, like the other errors' headlines
    """Something needs an optional part of vintage that is not installed (exit 2)."""

    exit_code = EXIT_USAGE

    def __init__(self, extra: str, needed_by: str, module: str) -> None:
        super().__init__(
            f"{needed_by} needs the {extra!r} extra ({module}), which is not installed",
            hint=f"pip install 'vintage[{extra}]' (in a clone of vintage: make install EXTRAS={extra})",
        )
        self.extra = extra
        self.module = module


def installed(extra: str) -> bool:
    """Whether every module of ``extra`` can be imported (none is imported here)."""
    return _absent(extra) is None


def require(extra: str, needed_by: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` is installed.

    Args:
        extra: A key of :data:`MODULES`.
        needed_by: What needs it, as the headline's subject (``"vintage score"``).
    """
    absent = _absent(extra)
    if absent is not None:
        raise MissingExtra(extra, needed_by, absent)


def missing_extra(exc: ImportError, needed_by: str) -> MissingExtra | None:
    """The :class:`MissingExtra` that ``exc`` (an import that failed) means, or None when its module is
    not one an extra installs."""
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    extra = EXTRA_OF.get(top)
    if not isinstance(exc, ModuleNotFoundError) or extra is None:
        return None
    return MissingExtra(extra, needed_by, top)


def _absent(extra: str) -> str | None:
    for module in MODULES[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return module.split(".")[0]
        except ModuleNotFoundError:  # a dotted name whose parent package is missing
            return module.split(".")[0]
    return None
