"""The content digest of a model directory: what a server says it serves, and what a swap must match.

A materialised model directory holds ``vintage-manifest.json``: the SHA-256 of every file of the model
(relative path -> hex digest), written last, when the download is complete and has loaded. The model's
digest is ``sha256:`` + the SHA-256 of that mapping in canonical JSON (sorted keys, no spaces), so it
names exactly the bytes of every file. :func:`verify` recomputes it from the files on disk; a file added,
removed or changed after materialisation gives another digest.

A directory that holds anything but regular files and directories (a symlink, a FIFO, a device) has no
digest: a symlink could point the server at files outside the model store.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Final

from vintage.errors import ServingError

MANIFEST: Final = "vintage-manifest.json"
PREFIX: Final = "sha256:"
_CHUNK = 1 << 20


def file_digests(model_dir: Path) -> dict[str, str]:
    """SHA-256 of every file below ``model_dir`` (the manifest itself excluded), by relative path.

    Raises:
        ServingError: the directory cannot be read, or holds a symlink or a special file.
    """
    out: dict[str, str] = {}
    try:
        for root, dirs, files in os.walk(model_dir, followlinks=False):
            base = Path(root)
            for name in sorted(dirs):
                if (base / name).is_symlink():
                    raise ServingError(f"the model directory holds a symlink ({name}); it cannot be served")
            for name in sorted(files):
                path = base / name
                rel = path.relative_to(model_dir).as_posix()
                if rel == MANIFEST:
                    continue
                mode = path.lstat().st_mode
                if not stat.S_ISREG(mode):
                    raise ServingError(
                        f"the model directory holds {rel}, which is not a regular file; it cannot be served"
                    )
                out[rel] = _sha256(path)
    except OSError as exc:
        raise ServingError(f"cannot read the model directory ({exc.strerror or exc})") from exc
    if not out:
        raise ServingError("the model directory is empty or missing")
    return out


def digest_of(files: dict[str, str]) -> str:
    """The digest of a manifest's file mapping."""
    blob = json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    return PREFIX + hashlib.sha256(blob).hexdigest()


def compute(model_dir: Path) -> str:
    """The digest of the files now in ``model_dir``."""
    return digest_of(file_digests(model_dir))


def write_manifest(model_dir: Path) -> str:
    """Record the digest of ``model_dir`` as it is now (call when it is complete); returns the digest."""
    files = file_digests(model_dir)
    digest = digest_of(files)
    doc = {"format": 1, "digest": digest, "files": files}
    (model_dir / MANIFEST).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return digest


def recorded(model_dir: Path) -> str | None:
    """The digest the manifest records, or ``None`` when there is no readable manifest."""
    try:
        doc = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    digest = doc.get("digest") if isinstance(doc, dict) else None
    return digest if isinstance(digest, str) and digest.startswith(PREFIX) else None


def verify(model_dir: Path, expected: str | None = None) -> str:
    """Check that the files of ``model_dir`` are the ones recorded at materialisation (and, when given,
    that they are ``expected``); returns the digest.

    Raises:
        ServingError: no manifest, or the files changed since (nothing is loaded then).
    """
    want = recorded(model_dir)
    if want is None:
        raise ServingError(
            "the model directory has no content manifest (it was not materialised by vintage)",
            hint="deploy a registered version: vintage materialises it and records its digest",
        )
    actual = compute(model_dir)
    if actual != want:
        raise ServingError(
            "the model directory's files differ from the digest recorded when it was materialised "
            f"({short(actual)} != {short(want)}); refusing to load it",
            hint="remove the directory and deploy again: vintage materialises a fresh copy",
        )
    if expected is not None and actual != expected:
        raise ServingError(f"the model directory holds {short(actual)}, not the requested {short(expected)}")
    return actual


def short(digest: str | None) -> str:
    """``sha256:0123456789ab`` (12 hex digits), for messages and tables."""
    return digest[: len(PREFIX) + 12] if digest else "-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
