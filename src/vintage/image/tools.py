"""Running the container tools (buildah, podman, skopeo, mmdebstrap) and the image cache directory."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from vintage.errors import ImageError, first_line
from vintage.fsutil import user_cache_dir

INSTALL_HINT: Final = "install the container tools: sudo bash scripts/install-container-deps.sh"
_TAIL_LINES = 12


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/vintage/image`` (default ``~/.cache/vintage/image``): base tarballs, wheels."""
    return user_cache_dir("image")


def require(tool: str) -> str:
    """The path of ``tool``.

    Raises:
        ImageError: it is not installed (the hint says how to install it).
    """
    path = shutil.which(tool)
    if path is None:
        raise ImageError(f"{tool} is not installed (needed to build and push images)", hint=INSTALL_HINT)
    return path


def run(argv: Sequence[str], what: str, *, hint: str | None = None, timeout: float = 1800) -> str:
    """Run a tool; return its stdout (stripped).

    Raises:
        ImageError: the tool is missing, failed or timed out; the headline names ``what`` and the tool's
            last error line.
    """
    exe = require(argv[0])
    try:
        proc = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s", hint=hint) from exc
    except OSError as exc:
        raise ImageError(f"{what}: cannot run {argv[0]} ({first_line(exc)})", hint=hint) from exc
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        reason = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        details = lines[-_TAIL_LINES:] if len(lines) > 1 else None
        raise ImageError(f"{what}: {reason}", hint=hint, details=details)
    return proc.stdout.strip()


def normalise(path: Path) -> None:
    """Modes independent of the build machine's umask: directories 0755, files 0644 (0755 if executable)."""
    for root, dirs, files in os.walk(path):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in files:
            file = Path(root) / name
            mode = file.lstat().st_mode
            if stat.S_ISREG(mode):
                file.chmod(0o755 if mode & stat.S_IXUSR else 0o644)
    path.chmod(0o755)
