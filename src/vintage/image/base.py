"""The base image: Debian bookworm with Python 3.11, from Debian packages (mmdebstrap), built once.

No Docker Hub: the root filesystem is bootstrapped from the Debian mirror the machine already uses (or
``$VINTAGE_DEBIAN_MIRROR``), with the essential packages plus ``python3-minimal`` and the standard library,
no documentation, man pages or apt lists, and one unprivileged user (``vintage``, uid/gid 10001). The tarball
is cached in :func:`vintage.image.tools.cache_dir` and imported as ``localhost/vintage-base:<recipe>``, where
``<recipe>`` is a hash of everything below that shapes it: change the recipe and a new base is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final

from vintage.errors import ImageError
from vintage.image import tools

SUITE: Final = "bookworm"
PYTHON: Final = (3, 11)  # bookworm's Python; the runtime layer's wheels and .pyc files are for it
UID: Final = 10001
USER: Final = "vintage"
PACKAGES: Final = ("python3-minimal", "python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
ENV_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_EXCLUDES: Final = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
_HOOKS: Final = (
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*',
    f'echo "{USER}:x:{UID}:{UID}:vintage scoring server:/nonexistent:/usr/sbin/nologin" >> "$1"/etc/passwd',
    f'echo "{USER}:x:{UID}:" >> "$1"/etc/group',
    # Debian's .pyc files record the source's mtime, which the builder's --timestamp 0 resets: they would be
    # stale in the image, and a read-only server would recompile the standard library at every start. Hash
    # based ones stay valid (a few test files that do not compile are left as source, hence `|| true`).
    'chroot "$1" /usr/bin/python3.11 -m compileall -q -f --invalidation-mode unchecked-hash '
    "/usr/lib/python3.11 || true",
)
RECIPE_VERSION: Final = 1
_SOURCES: Final = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"


def recipe_hash() -> str:
    """12 hex digits naming the base recipe (packages, excludes, hooks, suite)."""
    recipe = {
        "v": RECIPE_VERSION,
        "suite": SUITE,
        "packages": PACKAGES,
        "excludes": _EXCLUDES,
        "hooks": _HOOKS,
        "path": ENV_PATH,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def reference() -> str:
    """The base image's reference in local storage."""
    return f"localhost/vintage-base:{recipe_hash()}"


def containerfile() -> str:
    """The Containerfile importing the root filesystem tarball (``rootfs.tar`` in the context)."""
    return f'FROM scratch\nADD rootfs.tar /\nENV PATH={ENV_PATH} LANG=C.UTF-8\nCMD ["/usr/bin/python3"]\n'


def mirrors() -> list[str]:
    """``deb URI SUITE main`` lines for bookworm, its updates and security, from the machine's apt sources.

    ``$VINTAGE_DEBIAN_MIRROR`` (a URI) overrides them; with no bookworm source, Debian's default mirror.
    """
    override = os.environ.get("VINTAGE_DEBIAN_MIRROR")
    if override:
        return [f"deb {override} {SUITE} main"]
    found: list[str] = []
    for uri, suite in _apt_sources():
        if suite in (SUITE, f"{SUITE}-updates", f"{SUITE}-security"):
            line = f"deb {uri} {suite} main"
            if line not in found:
                found.append(line)
    if not any(line.split()[2] == SUITE for line in found):
        found.insert(0, f"deb {DEFAULT_MIRROR} {SUITE} main")
    return found


def _apt_sources() -> list[tuple[str, str]]:
    """(URI, suite) pairs of the ``deb`` entries in one-line and deb822 apt source files."""
    files: list[Path] = []
    for src in _SOURCES:
        if src.is_file():
            files.append(src)
        elif src.is_dir():
            files += sorted(p for p in src.iterdir() if p.suffix in (".list", ".sources"))
    pairs: list[tuple[str, str]] = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError:
            continue
        if file.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = _deb822(stanza)
                if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                    continue
                pairs += [
                    (u, s) for u in fields.get("uris", "").split() for s in fields.get("suites", "").split()
                ]
        else:
            for line in text.splitlines():
                words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    pairs.append((words[1], words[2]))
    return pairs


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    return fields


def mmdebstrap_argv(target: Path) -> list[str]:
    """The command that bootstraps the root filesystem into the tarball ``target``."""
    argv = [
        "mmdebstrap",
        "--quiet",
        "--variant=essential",
        "--mode=root",
        "--format=tar",
        f"--include={','.join(PACKAGES)}",
    ]
    argv += [f"--dpkgopt=path-exclude={pattern}" for pattern in _EXCLUDES]
    argv += [f"--customize-hook={hook}" for hook in _HOOKS]
    return [*argv, SUITE, str(target), *mirrors()]


def ensure_base(builder: str) -> str:
    """The base image's reference, building it first if local storage does not hold it.

    Raises:
        ImageError: mmdebstrap or the builder is missing or fails.
    """
    from filelock import FileLock

    ref = reference()
    if _exists(builder, ref):
        return ref
    cache = tools.cache_dir() / "base" / recipe_hash()
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".lock")):
        if _exists(builder, ref):
            return ref
        tarball = cache / "rootfs.tar"
        if not tarball.is_file():
            partial = cache / "rootfs.tar.partial"
            partial.unlink(missing_ok=True)
            tools.run(
                mmdebstrap_argv(partial),
                "cannot bootstrap the Debian base image",
                hint="mmdebstrap needs root and the Debian mirror (set VINTAGE_DEBIAN_MIRROR to another one)",
            )
            partial.replace(tarball)
        (cache / "Containerfile").write_text(containerfile(), encoding="utf-8")
        _build(builder, ref, cache)
    return ref


def _build(builder: str, ref: str, context: Path) -> None:
    from vintage.image.build import build_argv, drop_intermediates

    tools.run(build_argv(builder, ref, context), f"cannot import the base image {ref}")
    drop_intermediates(builder, ref)


def _exists(builder: str, ref: str) -> bool:
    exe = shutil.which(builder)
    if exe is None:
        raise ImageError(f"{builder} is not installed (needed to build images)", hint=tools.INSTALL_HINT)
    argv = (
        [exe, "inspect", "--type", "image", ref] if builder == "buildah" else [exe, "image", "inspect", ref]
    )
    return subprocess.run(argv, capture_output=True, check=False, stdin=subprocess.DEVNULL).returncode == 0
