"""The project code a fitted model needs, found and staged so it is logged with the model.

A pickled model names every class (and function) it holds by module: ``mypkg.models.ClippedRidge``. A
class from scikit-learn, another installed distribution, the standard library or vintage itself is
there wherever the model is served; a class from the training project is not. :func:`plan` walks the
fitted model (its attributes, or its ``get_params()`` values, so a Pipeline's steps, a
TransformedTargetRegressor's regressor and a Voting/Stacking ensemble's members are all seen), keeps
the modules that are not installed, and names the source to ship for each: the top-level package
directory (``mypkg/``) or the single module file (``models.py``). :func:`stage` copies that source, minus
caches and hidden files, into a folder whose entries are passed to ``mlflow.sklearn.log_model`` as
``code_paths``: MLflow stores them in the model's ``code/`` folder, which every loader puts on the
import path (:mod:`vintage.model.code`).

A module that cannot be shipped as source is refused with a :class:`~vintage.errors.TrainingError`: a
class defined in ``__main__`` (a script or notebook), a compiled extension, a namespace package spread
over several folders, a package holding symlinks or compiled files, or one larger than
:data:`MAX_BYTES` / :data:`MAX_FILES`.
"""

from __future__ import annotations

import functools
import importlib.machinery
import os
import shutil
import site
import stat
import sys
import sysconfig
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vintage.errors import TrainingError

MAX_BYTES: Final = 10 * 1024 * 1024
MAX_FILES: Final = 1000
# Objects visited in one model at most (a 300-tree forest is ~1,000): a bound, not a budget.
MAX_NODES: Final = 200_000
# Data holders: their contents never hold an estimator class, and walking a DataFrame is slow.
_OPAQUE: Final = frozenset({"numpy", "pandas", "scipy", "pyarrow"})
_SKIP_DIRS: Final = frozenset({"__pycache__"})
_SKIP_SUFFIXES: Final = frozenset({".pyc", ".pyo"})
_COMPILED: Final = frozenset({*importlib.machinery.EXTENSION_SUFFIXES, ".so", ".pyd", ".dylib", ".dll"})
_HINT_MAIN = (
    "move the class into a module file of the project (e.g. mypkg/models.py) and name it as "
    "mypkg.models.<Class>: vintage ships that module's source with the model"
)
_HINT_INSTALL = (
    "install it as a package in every environment that loads the model, or keep the class in plain .py files"
)


@dataclass(frozen=True)
class ShippedCode:
    """The project modules a model needs: top-level names and the source to ship for each.

    Attributes:
        modules: top-level module names (``mypkg``), sorted.
        sources: for each name, its package directory or single ``.py`` file.
    """

    modules: tuple[str, ...] = ()
    sources: tuple[Path, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.modules)


def plan(model: Any) -> ShippedCode:
    """The project code ``model`` needs (empty when everything it holds is installed).

    Raises:
        TrainingError: a module cannot be shipped (see the module docstring).
    """
    return plan_modules(referenced_modules(model))


def plan_modules(modules: dict[str, str]) -> ShippedCode:
    """:func:`plan` for module names already known (module -> the class or function that needs it).

    Raises:
        TrainingError: a module cannot be shipped.
    """
    found: dict[str, Path] = {}
    for module, what in sorted(modules.items()):
        top = module.split(".", 1)[0]
        if top in found or _installed(module, what):
            continue
        _check_module(module, what)
        found[top] = _source(top, what)
    names = tuple(sorted(found))
    for name in names:
        _scan(found[name], name)
    return ShippedCode(names, tuple(found[n] for n in names))


def referenced_modules(model: Any) -> dict[str, str]:
    """Every module a class or function inside ``model`` comes from -> one such ``module.Name``."""
    out: dict[str, str] = {}
    seen: set[int] = set()
    stack: list[Any] = [model]
    while stack and len(seen) < MAX_NODES:
        obj = stack.pop()
        if id(obj) in seen or obj is None or isinstance(obj, str | bytes | int | float | complex):
            continue
        seen.add(id(obj))
        if isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType):
            _record(out, obj)
            continue
        if isinstance(obj, types.MethodType | types.ModuleType):
            stack.append(getattr(obj, "__func__", None))
            continue
        _record(out, type(obj))
        if type(obj).__module__.split(".", 1)[0] in _OPAQUE:
            continue
        if isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        else:
            # scikit-learn keeps every constructor parameter as an attribute of the same name, so the
            # attributes hold what get_params() returns and the fitted parts besides (``estimators_``);
            # get_params() (slow: it inspects the signature) only for an object without them.
            attrs = getattr(obj, "__dict__", None)
            stack.extend(attrs.values() if isinstance(attrs, dict) else _params(obj))
    return out


def stage(code: ShippedCode, dest: Path) -> list[str]:
    """Copy the source of ``code`` into ``dest`` (which must exist); the paths to pass as ``code_paths``.

    Caches (``__pycache__``, ``.pyc``) and hidden files or folders (``.git``, ``.env``, a state dir) are
    left out.
    """
    paths = []
    for name, source in zip(code.modules, code.sources, strict=True):
        target = dest / source.name
        if source.is_file():
            shutil.copyfile(source, target)
        else:
            for file in _files(source, name):
                out = target / file.relative_to(source)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, out)
        paths.append(str(target))
    return paths


# --- classifying ----------------------------------------------------------------------------------


def _record(out: dict[str, str], obj: Any) -> None:
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and module not in out:
        out[module] = f"{module}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _params(obj: Any) -> list[Any]:
    get_params = getattr(obj, "get_params", None)
    if not callable(get_params):
        return []
    try:
        values = get_params(deep=False)
    except Exception:  # a half-built or odd estimator: its attributes are walked anyway
        return []
    return list(values.values()) if isinstance(values, dict) else []


def _installed(module: str, what: str) -> bool:
    """True for the standard library, builtins, vintage and modules from an install location."""
    top = module.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names or top == "vintage":
        return True
    if top in ("__main__", "__mp_main__") or top.startswith("<"):
        return False
    loaded = sys.modules.get(module)
    file = getattr(loaded, "__file__", None)
    if loaded is not None and file is None and not hasattr(loaded, "__path__"):
        return True  # built into the interpreter
    return file is not None and any(_below(Path(file), root) for root in _install_roots())


def _check_module(module: str, what: str) -> None:
    top = module.split(".", 1)[0]
    if top in ("__main__", "__mp_main__"):
        raise TrainingError(
            f"{what} is defined in __main__, so it cannot be shipped with the model", hint=_HINT_MAIN
        )
    loaded = sys.modules.get(module)
    if loaded is None or sys.modules.get(top) is None:
        raise TrainingError(
            f"{what} comes from {module!r}, which is not an importable module, so it cannot be shipped",
            hint=_HINT_MAIN,
        )
    file = getattr(loaded, "__file__", None)
    if file is not None and not file.endswith(".py"):
        raise TrainingError(
            f"{what} comes from {Path(file).name}, which is not Python source, so it cannot be shipped",
            hint=_HINT_INSTALL,
        )


def _source(top: str, what: str) -> Path:
    """The package directory or the module file of the top-level module ``top``."""
    loaded = sys.modules[top]
    paths = [str(p) for p in getattr(loaded, "__path__", None) or []]
    file = getattr(loaded, "__file__", None)
    if file is not None and not file.endswith(".py"):
        raise TrainingError(
            f"{what} needs {top} from {Path(file).name}, which is not Python source, so it cannot be shipped",
            hint=_HINT_INSTALL,
        )
    if not paths:
        return Path(str(file)).resolve()
    if len(paths) != 1:
        raise TrainingError(
            f"{what} needs the namespace package {top!r}, which spans {len(paths)} folders, "
            "so it cannot be shipped",
            hint="give the package an __init__.py in one folder",
        )
    return Path(paths[0]).resolve()


def _scan(source: Path, name: str) -> None:
    """Refuse a package that holds compiled or odd files or is too large (a single file: its size)."""
    files = [source] if source.is_file() else _files(source, name)
    if len(files) > MAX_FILES:
        raise TrainingError(
            f"module {name} has {len(files)} files (over {MAX_FILES}), too many to ship with the model",
            hint="keep the estimator's code in a small package of its own",
        )
    size = sum(f.stat().st_size for f in files)
    if size > MAX_BYTES:
        raise TrainingError(
            f"module {name} holds {size / 1e6:.1f} MB (over {MAX_BYTES / 1e6:.0f} MB), "
            "too much to ship with the model",
            hint="keep the estimator's code in a small package of its own (data files elsewhere)",
        )


def _files(source: Path, name: str) -> list[Path]:
    """The files of package ``source`` to ship, sorted.

    Raises:
        TrainingError: a symlink, a special file or a compiled extension below ``source``.
    """
    out: list[Path] = []
    for root, dirs, files in os.walk(source, followlinks=False):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        for entry in [*dirs, *files]:
            path = base / entry
            if entry.startswith(".") or path.suffix in _SKIP_SUFFIXES:
                continue
            rel = path.relative_to(source.parent)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise TrainingError(
                    f"module {name} holds {rel}, which is not a regular file, so it cannot be shipped",
                    hint="replace the link by the file itself, or move it out of the package",
                )
            if stat.S_ISREG(mode) and any(entry.endswith(s) for s in _COMPILED):
                raise TrainingError(
                    f"module {name} holds the compiled file {rel}; vintage ships Python source only",
                    hint=_HINT_INSTALL,
                )
            if stat.S_ISREG(mode):
                out.append(path)
    return sorted(out)


@functools.cache
def _install_roots() -> list[Path]:
    roots = {sysconfig.get_path(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    roots.add(site.getusersitepackages())
    return [Path(r).resolve() for r in roots if r]


def _below(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False
