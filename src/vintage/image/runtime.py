"""The runtime layer: the lean server's Python dependencies, installed with hashes from requirements/lock.txt.

Only what ``python -m vintage.serving`` imports goes in (uvicorn, httptools, uvloop, orjson, NumPy,
prometheus-client, PyYAML); scikit-learn (with SciPy, joblib, threadpoolctl) only for a model the NumPy
linear fast path cannot serve, plus cloudpickle or skops when its file needs them. No MLflow, pandas, pyarrow
or training dependencies. The wheels are installed on the build machine (``uv pip install --target`` for the
image's platform and Python, ``--no-deps --require-hashes``) into a directory cached per package set, and
compiled to ``.pyc`` files that hold a hash of their source, not a time (``unchecked-hash``), so two builds
give the same bytes.
"""

from __future__ import annotations

import compileall
import hashlib
import py_compile
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from vintage.errors import ImageError
from vintage.image import tools
from vintage.image.base import PYTHON

# What the server imports; their own dependencies come from the lock file (its "# via" comments).
SERVER: Final = ("numpy", "orjson", "uvicorn", "httptools", "uvloop", "prometheus-client", "pyyaml")
SKLEARN: Final = ("scikit-learn", "threadpoolctl")
BY_FORMAT: Final = {"cloudpickle": ("cloudpickle",), "pickle": (), "skops": ("skops",)}
UV_PLATFORM: Final = "x86_64-manylinux_2_28"  # the lock file's platform
SITE_DIR: Final = "/opt/vintage/site"  # where the packages lie in the image
_LAYOUT_VERSION = 2


def lock_file() -> Path:
    """requirements/lock.txt of the source tree (the hashes every install is checked against)."""
    import vintage

    here = Path(vintage.__file__).resolve().parents[2] / "requirements" / "lock.txt"
    if not here.is_file():
        raise ImageError(
            "requirements/lock.txt not found next to the vintage package",
            hint="build images from a vintage source checkout (make install)",
        )
    return here


def packages_for(predictor: str, serialization_format: str) -> tuple[str, ...]:
    """The distributions the server imports for a model served by ``predictor`` (``linear`` or other);
    :func:`closure` adds what they depend on."""
    if predictor == "linear":
        return SERVER
    return (*SERVER, *SKLEARN, *BY_FORMAT.get(serialization_format, ()))


def closure(lock_text: str, roots: Iterable[str]) -> set[str]:
    """``roots`` and everything they depend on, as resolved in a ``uv pip compile`` lock file.

    The lock file says, under each pin, which packages required it (``# via``); reversed, that gives each
    package's dependencies.

    Raises:
        ImageError: a root is not in the lock file.
    """
    needed_by: dict[str, set[str]] = {}
    current: str | None = None
    in_via = False
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            current, in_via = _norm(line.split("==", 1)[0]), False
            needed_by.setdefault(current, set())
            continue
        text = line.strip()
        if current is None or not text.startswith("#"):
            continue
        body = text.lstrip("#").strip()
        if body.startswith("via"):
            in_via = True
            body = body[3:].strip()
        if in_via and body:
            needed_by[current].add(_norm(body.split(" ", 1)[0]))
    deps: dict[str, set[str]] = {}
    for name, parents in needed_by.items():
        for parent in parents:
            deps.setdefault(parent, set()).add(name)
    todo = [_norm(r) for r in roots]
    missing = sorted(r for r in todo if r not in needed_by)
    if missing:
        raise ImageError(f"requirements/lock.txt has no pinned version of {', '.join(missing)}")
    found: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += deps.get(name, ())
    return found


def pinned(lock_text: str, names: Iterable[str]) -> str:
    """The entries of a ``uv pip compile --generate-hashes`` lock file for ``names``, hashes included.

    Raises:
        ImageError: a name is not in the lock file.
    """
    wanted = {_norm(n) for n in names}
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lock_text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name = _norm(line.split("==", 1)[0])
            current = entries.setdefault(name, []) if name in wanted else None
            if current is not None:
                current.append(line)
        elif current is not None and line.strip().startswith("--hash="):
            current.append(line)
        else:
            current = None
    missing = sorted(wanted - entries.keys())
    if missing:
        raise ImageError(f"requirements/lock.txt has no pinned version of {', '.join(missing)}")
    return "".join("\n".join(entries[name]) + "\n" for name in sorted(entries))


def ensure_site(names: Iterable[str]) -> Path:
    """A directory holding ``names`` installed for the image's Python (cached by package set).

    Raises:
        ImageError: pip fails (no network, a hash mismatch).
    """
    from filelock import FileLock

    lock = lock_file().read_text(encoding="utf-8")
    requirements = pinned(lock, closure(lock, names))
    key = hashlib.sha256(f"{_LAYOUT_VERSION}|{UV_PLATFORM}|{PYTHON}|{requirements}".encode()).hexdigest()[:16]
    root = tools.cache_dir() / "runtime"
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with FileLock(str(root / f"{key}.lock")):
        if final.is_dir():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
        try:
            (tmp / "requirements.txt").write_text(requirements, encoding="utf-8")
            _pip_install(tmp / "requirements.txt", tmp / "site")
            shutil.rmtree(tmp / "site" / "bin", ignore_errors=True)  # console scripts for the build machine
            compile_tree(tmp / "site", SITE_DIR)
            tools.normalise(tmp / "site")
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _pip_install(requirements: Path, target: Path) -> None:
    """uv (as ``make install`` uses it) installs the pinned wheels for the image into ``target``."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise ImageError("uv is not installed (it installs the image's Python packages)", hint="make install")
    tools.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--python",
            sys.executable,
            "--no-deps",
            "--require-hashes",
            "--no-build",
            "--target",
            str(target),
            "--python-platform",
            UV_PLATFORM,
            "--python-version",
            f"{PYTHON[0]}.{PYTHON[1]}",
            "-r",
            str(requirements),
        ],
        "cannot install the server's Python packages for the image",
        hint="uv needs the package index (PyPI or UV_INDEX_URL); the versions and hashes are those of "
        "requirements/lock.txt",
    )


def compile_tree(path: Path, image_path: str) -> None:
    """Compile every ``.py`` below ``path`` to ``.pyc`` with source hashes (no timestamps), when the build
    machine runs the image's Python version; otherwise leave them out (the server then compiles at start).

    ``image_path`` is where ``path`` lies in the image: the file names inside the ``.pyc`` files (for
    tracebacks) must not depend on the build directory.
    """
    if sys.version_info[:2] != PYTHON:
        return
    # One process, directories in sorted order: the same bytes every time. A file that does not compile
    # (test data in some packages) is left as source.
    compileall.compile_dir(
        str(path),
        ddir=image_path,
        quiet=2,
        workers=1,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")
