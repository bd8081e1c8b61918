"""``push_image``: copy an image from local storage to a registry (skopeo, no daemon).

TLS is verified except for a registry on the loopback interface (``127.0.0.1``, ``localhost``, ``::1``),
where the test and air-gapped setups run a plain-HTTP registry. The registry stores compressed layers, so
its manifest digest differs from the local one; both are returned.
"""

from __future__ import annotations

import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from vintage.errors import ConfigError, ImageError
from vintage.image import tools

LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "[::1]"})
_REGISTRY_RE: Final = re.compile(r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\]):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class PushedImage:
    """An image in a registry.

    Attributes:
        reference: ``HOST:PORT/NAME:TAG``.
        digest: the registry's manifest digest (``sha256:...``); pull by ``HOST:PORT/NAME@DIGEST``.
        source: the local reference that was pushed.
    """

    reference: str
    digest: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (``vintage image push --json``)."""
        return asdict(self)


def check_registry(registry: str) -> tuple[str, int]:
    """``HOST:PORT`` split and checked.

    Raises:
        ConfigError: not ``HOST:PORT``.
    """
    match = _REGISTRY_RE.match(registry)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise ConfigError(f"invalid registry {registry!r}", hint="give HOST:PORT, e.g. 127.0.0.1:5000")
    return match["host"], int(match["port"])


def remote_reference(local: str, registry: str) -> str:
    """``localhost/vintage-wine:v1`` -> ``REGISTRY/vintage-wine:v1`` (the local registry part is replaced)."""
    first, _, rest = local.partition("/")
    path = rest if rest and ("." in first or ":" in first or first == "localhost") else local
    return f"{registry}/{path}"


def push_image(reference: str, registry: str, *, builder: str | None = None) -> PushedImage:
    """Push the local image ``reference`` to ``registry`` (``HOST:PORT``), from the containers storage
    (buildah, podman) or, with ``builder="docker"``, from the docker daemon (``$DOCKER_HOST`` if set).

    Raises:
        ConfigError: bad registry address.
        ImageError: skopeo missing, the image is not in local storage, the registry is unreachable or
            refuses the push.
    """
    from vintage.image.build import resolve_builder

    host, port = check_registry(registry)
    tls = host not in LOOPBACK
    if resolve_builder(builder) == "docker":
        daemon = os.environ.get("DOCKER_HOST")
        source = [f"--src-daemon-host={daemon}"] if daemon else []
        source.append(f"docker-daemon:{reference}")
    else:
        source = [f"containers-storage:{reference}"]
    tools.require("skopeo")
    _check_reachable(host, port, tls)
    dest = remote_reference(reference, registry)
    with tempfile.TemporaryDirectory(prefix="vintage-push-") as tmp:
        digest_file = Path(tmp) / "digest"
        tools.run(
            [
                "skopeo",
                "copy",
                "--quiet",
                f"--dest-tls-verify={'true' if tls else 'false'}",
                "--digestfile",
                str(digest_file),
                *source,
                f"docker://{dest}",
            ],
            f"cannot push {reference} to {registry}",
            hint="is the image built (vintage image build) and does the registry accept pushes?",
        )
        digest = digest_file.read_text(encoding="utf-8").strip()
    return PushedImage(reference=dest, digest=digest, source=reference)


def _check_reachable(host: str, port: int, tls: bool) -> None:
    url = f"{'https' if tls else 'http'}://{host}:{port}/v2/"
    try:
        with urllib.request.urlopen(url, timeout=5):
            return
    except urllib.error.HTTPError:
        return  # 401 and the like: it answers; the push says whether we may
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageError(
            f"registry {host}:{port} is unreachable ({reason})",
            hint="start it, or check HOST:PORT (a registry on 127.0.0.1 is spoken to over plain HTTP)",
        ) from exc
