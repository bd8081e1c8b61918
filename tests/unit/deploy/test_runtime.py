"""What the container runtime wrapper asks for: a read-only container reachable on 127.0.0.1 only, with
limits, labels and read-only mounts; the image's numeric user; inspect results read defensively."""

from __future__ import annotations

import pytest

from vintage.deploy.runtime import RunSpec, labels_of, run_args, running, user_ids


def test_run_args_publish_on_loopback_only_read_only_with_limits() -> None:
    args = run_args(
        RunSpec(
            name="vintage-staging-0123456789ab-cafe0123",
            image="localhost/vintage-winequality:1",
            host_port=18081,
            labels={"vintage.environment": "staging", "vintage.version": "1"},
            mounts={"/state/envs/staging/keys/c": "/run/secrets/vintage"},
            writable={"/state/envs/staging/inference": "/var/lib/vintage/inference"},
            memory="1g",
            pids_limit=128,
            args=["--api-key-file", "/run/secrets/vintage/keys"],
        )
    )
    assert args[args.index("--publish") + 1] == "127.0.0.1:18081:8080"
    assert args.count("--publish") == 1
    assert "--read-only" in args
    assert args[args.index("--pids-limit") + 1] == "128"
    assert args[args.index("--memory") + 1] == "1g"
    volumes = [args[i + 1] for i, a in enumerate(args) if a == "--volume"]
    assert volumes == [
        "/state/envs/staging/keys/c:/run/secrets/vintage:ro",
        "/state/envs/staging/inference:/var/lib/vintage/inference:rw",  # the only writable one
    ]
    assert "vintage.environment=staging" in args
    assert not any(a.startswith(("--env", "-e")) for a in args)
    image_at = args.index("localhost/vintage-winequality:1")
    assert args[image_at + 1 :] == ["--api-key-file", "/run/secrets/vintage/keys"]


def test_no_memory_limit_when_none() -> None:
    assert "--memory" not in run_args(RunSpec(name="c", image="i", host_port=1, memory=None))


@pytest.mark.parametrize(
    ("user", "ids"),
    [
        ("10001", (10001, 10001)),
        ("10001:10002", (10001, 10002)),
        ("", None),
        ("vintage", None),
        ("1:x", None),
    ],
)
def test_user_ids_are_numeric_or_none(user: str, ids: tuple[int, int] | None) -> None:
    assert user_ids({"Config": {"User": user}}) == ids


def test_inspect_results_are_read_defensively() -> None:
    assert running({"State": {"Running": True}})
    assert running({"State": {"Status": "running"}})
    assert not running({"State": {"Status": "exited"}})
    assert not running(None)
    assert labels_of({"Config": {"Labels": {"a": "b"}}}) == {"a": "b"}
    assert labels_of({"Labels": {"a": "b"}}) == {"a": "b"}  # image inspect (docker) keeps them on top
    assert labels_of(None) == {}
