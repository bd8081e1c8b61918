"""The model image: its size, the container's cold start, and req/s in the container against a local process.

Run from the repo, as root, with the container tools installed (scripts/install-container-deps.sh)::

    .venv/bin/python benchmarks/image.py [--starts 5] [--duration 10] [--repeat 3] [--json]

What it does, in one run on this machine:

1. Trains the default workload in a temporary project and materialises ``models:/winequality/1`` (the
   ElasticNet model: the NumPy linear fast path), as ``benchmarks/serving.py`` does.
2. Builds its image with ``vintage.image.build.build_image`` (buildah; the base and the dependency layer
   come from the cache when present: the first build on a machine also bootstraps the base) and reports
   the wall clock and the image size (all layers, uncompressed, as stored locally).
3. Cold start, ``--starts`` times: wall clock from launching ``podman run -d --read-only -p
   127.0.0.1:PORT:8080 -v KEYS:/run/secrets/vintage/keys:ro IMAGE`` to the first 200 from ``/ready``
   (polled every 5 ms), then ``podman rm -f``. The same for the server as a local process
   (``python -m vintage.serving --model-dir DIR --api-key-file KEYS``), for comparison.
4. Throughput, ``--repeat`` times, the two interleaved: ``wrk -t2 -c16 -d{duration}s`` (the load generator
   of ``benchmarks/serving.py``, same Lua script) POSTing the first 1 or 10 rows of the red wine data as
   ``dataframe_split`` with the API key, to the container (through podman's port on 127.0.0.1) and to the
   local process, after a warm-up of ``--warmup`` seconds. All traffic stays on the loopback interface.

Every figure is a median. Goals (the image issue): image <= 300 MB, container cold start <= 2 s, container
req/s >= 80% of the local process's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from serving import bodies, ensure_wrk, free_port, run_wrk, train_and_materialize, write_lua

GOAL_SIZE_MB = 300.0
GOAL_COLD_S = 2.0
GOAL_RATIO = 0.8
CONNECTIONS = 16
POLL_S = 0.005
START_TIMEOUT_S = 120.0
UID = 10001


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_ready(port: int, started: float, alive: Any) -> float:
    while time.perf_counter() - started < START_TIMEOUT_S:
        if ready(port):
            return time.perf_counter() - started
        if not alive():
            raise RuntimeError("the server exited before it was ready")
        time.sleep(POLL_S)
    raise RuntimeError(f"not ready after {START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def container(image: str, keys: Path) -> Iterator[tuple[int, float, int]]:
    """Run the image; yield (port, cold start s, host pid of the server); always remove it."""
    name = f"vintage-bench-{uuid.uuid4().hex[:10]}"
    port = free_port()
    argv = ["podman", "run", "-d", "--name", name, "--read-only", "-p", f"127.0.0.1:{port}:8080"]
    argv += ["-v", f"{keys}:/run/secrets/vintage/keys:ro", image]
    started = time.perf_counter()
    try:
        subprocess.run(argv, check=True, capture_output=True)

        def alive() -> bool:
            out = subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Running}}", name], capture_output=True, text=True
            )
            return out.stdout.strip() == "true"

        cold = wait_ready(port, started, alive)
        pid = int(
            subprocess.run(
                ["podman", "inspect", "--format", "{{.State.Pid}}", name],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        yield port, cold, pid
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "2", name], capture_output=True, check=False)


@contextlib.contextmanager
def local(model_dir: Path, keys: Path, workdir: Path) -> Iterator[tuple[int, float, int]]:
    """The same server as a local process; yield (port, cold start s, pid); always stop it."""
    port = free_port()
    argv = [sys.executable, "-m", "vintage.serving", "--model-dir", str(model_dir), "--port", str(port)]
    argv += ["--api-key-file", str(keys), "--state-dir", str(workdir / "state")]
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        cold = wait_ready(port, started, lambda: proc.poll() is None)
        yield port, cold, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--starts", type=int, default=5, help="cold starts per kind (median)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk load")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of discarded load first")
    p.add_argument("--repeat", type=int, default=3, help="loads per server and body (median)")
    p.add_argument("--json", action="store_true", help="print every sample as JSON too")
    args = p.parse_args()
    for tool in ("buildah", "podman"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: run scripts/install-container-deps.sh as root")
    wrk = ensure_wrk()
    from vintage.image.build import build_image

    with tempfile.TemporaryDirectory(prefix="vintage-image-bench-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        print("training and materialising the default model...", file=sys.stderr, flush=True)
        model_dir, _ = train_and_materialize(root)
        started = time.perf_counter()
        image = build_image(model_dir)
        build_s = time.perf_counter() - started
        print(f"built {image.reference} in {build_s:.1f} s", file=sys.stderr, flush=True)
        key = "bench-" + secrets.token_hex(20)
        keys = root / "keys"
        keys.write_text(key + "\n")
        os.chown(keys, UID, UID)
        keys.chmod(0o400)
        local_keys = root / "local-keys"
        local_keys.write_text(key + "\n")
        local_keys.chmod(0o600)

        cold: dict[str, list[float]] = {"container": [], "local": []}
        for _ in range(args.starts):
            with container(image.reference, keys) as (_, seconds, _):
                cold["container"].append(seconds)
            with local(model_dir, local_keys, root) as (_, seconds, _):
                cold["local"].append(seconds)

        payloads = bodies((1, 10))
        luas = {n: write_lua(root / f"body{n}.lua", body, key) for n, body in payloads.items()}
        rps: dict[tuple[str, int], list[float]] = {}
        samples: list[dict[str, Any]] = []
        for i in range(args.repeat):
            for kind in ("local", "container"):
                ctx = (
                    container(image.reference, keys)
                    if kind == "container"
                    else local(model_dir, local_keys, root)
                )
                with ctx as (port, _, pid):
                    for n, lua in luas.items():
                        run_wrk(wrk, lua, port, CONNECTIONS, args.warmup, pid)
                        s = run_wrk(wrk, lua, port, CONNECTIONS, args.duration, pid)
                        if s.errors:
                            raise SystemExit(f"{kind}: {s.errors} errors under load")
                        rate = s.requests / s.duration_s
                        rps.setdefault((kind, n), []).append(rate)
                        samples.append({"repeat": i, "server": kind, "rows": n, "rps": rate, **s.__dict__})
                        print(
                            f"  {kind:9} {n:2} rows: {rate:8.0f} req/s (server {s.server_cores:.2f} cores, "
                            f"other {s.other_cores:.2f})",
                            file=sys.stderr,
                            flush=True,
                        )

    size_mb = image.size_bytes / 1e6
    cold_c, cold_l = statistics.median(cold["container"]), statistics.median(cold["local"])
    ratios = {
        n: statistics.median(rps[("container", n)]) / statistics.median(rps[("local", n)]) for n in (1, 10)
    }
    print(f"image {image.reference} ({image.predictor} model), digest {image.digest[:19]}")
    print()
    print("| measure | container | local process | goal | met |")
    print("| --- | --- | --- | --- | --- |")
    met = size_mb <= GOAL_SIZE_MB
    print(f"| image size (uncompressed) | {size_mb:.0f} MB | - | <= {GOAL_SIZE_MB:.0f} MB | {met} |")
    print(
        f"| cold start to /ready (median of {args.starts}) | {cold_c:.2f} s | {cold_l:.2f} s | "
        f"<= {GOAL_COLD_S:.0f} s | {cold_c <= GOAL_COLD_S} |"
    )
    for n in (1, 10):
        c, loc = statistics.median(rps[("container", n)]), statistics.median(rps[("local", n)])
        print(
            f"| req/s, {n} row(s), {CONNECTIONS} conn. (median of {args.repeat}) | {c:.0f} | {loc:.0f} | "
            f">= {GOAL_RATIO:.0%} | {ratios[n]:.0%} {ratios[n] >= GOAL_RATIO} |"
        )
    print(f"| build, warm cache | {build_s:.1f} s | - | - | - |")
    if args.json:
        print(json.dumps({"image": image.to_json(), "cold": cold, "samples": samples}, indent=2))
    subprocess.run(["podman", "rmi", image.reference], capture_output=True, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
