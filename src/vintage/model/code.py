"""Put the code a model ships with on the import path: source only, never bytecode, its own copy first.

A model whose estimator (or anything inside it) is a class from the project rather than an installed
package is logged with that module's source in the model directory's ``code/`` folder, named by the
sklearn flavor's ``code`` key in ``MLmodel`` (MLflow's ``code_paths`` convention, which
``mlflow.pyfunc.load_model`` also follows). Before such a model is unpickled, :func:`activate`:

* prepends ``<model>/code`` to ``sys.path`` (as MLflow's ``_add_code_from_conf_to_system_path`` does),
  so the pickle finds ``mypkg.models.ClippedRidge`` in any process and any working directory;
* drops modules of the same top-level names that were imported from somewhere else (the training
  project, or another model's ``code/``), so a model always runs the code it was trained with, also when
  one process loads two versions (the pipeline's gates, a server's hot swap);
* imports from those directories through a finder that compiles the ``.py`` source and neither reads nor
  writes ``__pycache__``: a ``.pyc`` written into the model directory would change its content digest
  (:mod:`vintage.model.digest`), and one planted there would run code the digest never covered.

This module imports nothing heavy; the scoring server calls it.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from vintage.errors import ServingError

FLAVOR_KEY: Final = "code"
CODE_DIR: Final = "code"

# Held while a model is made importable and unpickled: two loads in one process (a server swapping while
# the gates compare) must not see each other's modules in between.
_LOCK = threading.RLock()
_ROOTS: set[str] = set()


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module's source each time: no ``__pycache__`` read or written in the model."""

    def get_code(self, fullname: str) -> Any:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def _path_hook(path: str) -> importlib.machinery.FileFinder:
    """Claims ``<model>/code`` and every directory below it; any other path goes to the next hook."""
    if not any(path == root or path.startswith(root + os.sep) for root in _ROOTS):
        raise ImportError("not a model code directory")
    return importlib.machinery.FileFinder(path, (_SourceOnlyLoader, [".py"]))


def top_level_names(code_dir: Path) -> tuple[str, ...]:
    """The importable top-level names in a ``code/`` directory: packages (directories) and ``.py`` files."""
    names = set()
    for entry in code_dir.iterdir():
        name = entry.name if entry.is_dir() else entry.stem if entry.suffix == ".py" else ""
        if name.isidentifier():
            names.add(name)
    return tuple(sorted(names))


def code_dir(model_dir: Path, flavor: Mapping[str, Any]) -> Path | None:
    """The model's shipped code directory named by the flavor's ``code`` key, or None when it has none.

    Raises:
        ServingError: the key names something that is not a directory inside the model directory.
    """
    sub = flavor.get(FLAVOR_KEY)
    if not sub:
        return None
    root = model_dir.resolve()
    path = (root / str(sub)).resolve()
    if path == root or root not in path.parents or not path.is_dir():
        raise ServingError(
            f"the model in {model_dir} names code directory {sub!r}, which is not a folder inside it",
            hint="the model directory is incomplete or was edited; materialise the version again",
        )
    return path


@contextlib.contextmanager
def shipped(path: Path | None) -> Iterator[tuple[str, ...]]:
    """Around unpickling a model: its code ``path`` activated (:func:`activate`), no other model's activated
    until the block ends. ``None`` (a model without code) does nothing. Yields the top-level names."""
    if path is None:
        yield ()
        return
    with _LOCK:
        yield activate(path)


def activate(path: Path) -> tuple[str, ...]:
    """Make the model code in ``path`` (a ``code/`` directory) importable ahead of anything else.

    It stays importable afterwards (a module imported only when the model predicts is found there too).

    Returns:
        The top-level module names it provides.
    """
    root = str(path.resolve())
    names = top_level_names(Path(root))
    with _LOCK:
        if _path_hook not in sys.path_hooks:
            sys.path_hooks.insert(0, _path_hook)
        _ROOTS.add(root)
        for cached in [p for p in list(sys.path_importer_cache) if p == root or p.startswith(root + os.sep)]:
            sys.path_importer_cache.pop(cached, None)  # a finder made before the hook, or an older copy
        for name in [m for m in list(sys.modules) if m.split(".", 1)[0] in names]:  # list(): threads import
            if not _loaded_from(sys.modules.get(name), root):
                sys.modules.pop(name, None)
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    return names


def _loaded_from(module: Any, root: str) -> bool:
    """True when ``module`` (or every part of a namespace package) was imported from below ``root``."""
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    places = [origin] if isinstance(origin, str) and origin != "namespace" else []
    if not places:
        places = [str(p) for p in getattr(module, "__path__", None) or []]
    return bool(places) and all(str(p).startswith(root + os.sep) for p in places)
