"""A tiny test image for the cluster: a static HTTP server that answers every request with its host name.

Built here, never pulled: ``gcc -static`` compiles the server (gcc comes with scripts/build-kubernetes.sh),
``docker import`` makes a one-file FROM-scratch image of it in a given dockerd, ``docker push`` sends it to
a registry on 127.0.0.1. In a pod the host name is the pod's name, so a test can tell which pod answered.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from io import BytesIO
from pathlib import Path

from support.containers import ComponentError, docker_env

ECHO_PORT = 8080
ECHO_UID = 65534  # nobody: the image runs as non-root
ECHO_SOURCE = r"""
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

int main(void) {
    char host[256] = "unknown", request[4096], reply[512];
    struct sockaddr_in addr;
    int one = 1, server = socket(AF_INET, SOCK_STREAM, 0);
    signal(SIGTERM, stop);
    gethostname(host, sizeof host - 1);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(PORT);
    addr.sin_addr.s_addr = htonl(INADDR_ANY); /* the pod's own network namespace */
    setsockopt(server, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (server < 0 || bind(server, (struct sockaddr *)&addr, sizeof addr) || listen(server, 64)) return 1;
    for (;;) {
        int client = accept(server, NULL, NULL);
        if (client < 0) continue;
        if (read(client, request, sizeof request) >= 0) {
            int n = snprintf(reply, sizeof reply,
                             "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                             "Connection: close\r\n\r\n%s\n", strlen(host) + 1, host);
            if (write(client, reply, (size_t)n) < 0) { /* the client left; nothing to do */ }
        }
        close(client);
    }
}
"""


def build_echo_binary(workdir: Path) -> Path:
    """Compile the echo server statically into ``workdir/echo``.

    Raises:
        ComponentError: gcc is missing or the compilation failed.
    """
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ComponentError("gcc is missing (hint: bash scripts/build-kubernetes.sh installs it)")
    source = workdir / "echo.c"
    source.write_text(ECHO_SOURCE, encoding="utf-8")
    binary = workdir / "echo"
    proc = subprocess.run(
        [gcc, "-static", "-O2", f"-DPORT={ECHO_PORT}", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ComponentError(f"cannot compile the echo server: {proc.stderr.strip()}")
    return binary


def push_echo_image(workdir: Path, docker_host: str, reference: str) -> str:
    """Build the echo image in the dockerd at ``docker_host``, push it as ``reference``, drop it locally.

    Dropping the local copy makes the kubelet pull it from the registry (the path under test).

    Returns:
        The pushed image's repository digest (``sha256:...``).

    Raises:
        ComponentError: a docker command failed.
    """
    binary = build_echo_binary(workdir)
    buf = BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(binary, arcname="echo")
    env = docker_env(docker_host)
    changes = ["--change", 'ENTRYPOINT ["/echo"]', "--change", f"USER {ECHO_UID}"]
    changes += ["--change", f"EXPOSE {ECHO_PORT}"]
    steps: list[tuple[list[str], bytes | None]] = [
        (["docker", "import", *changes, "-", reference], buf.getvalue()),
        (["docker", "push", reference], None),
    ]
    for argv, data in steps:
        proc = subprocess.run(argv, input=data, capture_output=True, env=env, timeout=300, check=False)
        if proc.returncode != 0:
            raise ComponentError(
                f"{' '.join(argv[:2])} failed: {proc.stderr.decode(errors='replace').strip()}"
            )
    inspect = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", reference],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    digest = inspect.stdout.strip().split("@", 1)[1].split('"', 1)[0]
    subprocess.run(["docker", "rmi", reference], capture_output=True, env=env, check=True)
    return digest
