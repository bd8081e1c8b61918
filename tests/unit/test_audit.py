"""The audit trail: append, list, filter, actor, redaction, file mode."""

from __future__ import annotations

import getpass
import stat
import threading
from datetime import datetime
from pathlib import Path

import pytest

from vintage import audit, redact
from vintage.errors import VintageError

SECRET = "audit-secret-value-42"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".vintage"


def test_record_and_events(state_dir: Path) -> None:
    audit.record(state_dir, "secret.read", "ci/token", reader="stage:build", detail="provider=env")
    audit.record(
        state_dir, "secret.put", "staging/azureml/key", "failed", environment="staging", actor="alice"
    )
    first, second = audit.events(state_dir)
    assert first.id < second.id
    assert (first.action, first.target, first.outcome, first.reader, first.environment, first.detail) == (
        "secret.read",
        "ci/token",
        "ok",
        "stage:build",
        "",
        "provider=env",
    )
    assert (second.action, second.outcome, second.environment, second.actor, second.reader) == (
        "secret.put",
        "failed",
        "staging",
        "alice",
        "",
    )
    assert datetime.fromisoformat(first.time).tzinfo is not None


def test_no_trail_yet(state_dir: Path) -> None:
    assert audit.events(state_dir) == []
    assert not state_dir.exists()  # listing does not create anything


def test_filter_by_action_prefix(state_dir: Path) -> None:
    for action in ("secret.read", "model.register", "secret.put", "secretive", "secret.rotate-key"):
        audit.record(state_dir, action, "t")
    assert [e.action for e in audit.events(state_dir, action="secret.")] == [
        "secret.read",
        "secret.put",
        "secret.rotate-key",
    ]
    assert [e.action for e in audit.events(state_dir, action="secret")] == [
        "secret.read",
        "secret.put",
        "secretive",
        "secret.rotate-key",
    ]
    assert [e.action for e in audit.events(state_dir, action="secret.read")] == ["secret.read"]
    assert audit.events(state_dir, action="deploy.") == []
    assert len(audit.events(state_dir, action=None)) == 5
    assert len(audit.events(state_dir, action="")) == 5


def test_prefix_wildcards_are_literal(state_dir: Path) -> None:
    for action in ("a_b.x", "aXb.x", "100%.done", "100x.done", "1000.done", "c\\d.x", "cXd.x"):
        audit.record(state_dir, action, "t")
    assert [e.action for e in audit.events(state_dir, action="a_b")] == ["a_b.x"]
    assert [e.action for e in audit.events(state_dir, action="100%")] == ["100%.done"]
    assert [e.action for e in audit.events(state_dir, action="c\\d")] == ["c\\d.x"]
    assert audit.events(state_dir, action="%") == []
    assert audit.events(state_dir, action="_") == []


def test_prefix_is_case_sensitive(state_dir: Path) -> None:
    audit.record(state_dir, "secret.read", "t")
    audit.record(state_dir, "SECRET.read", "t")
    assert [e.action for e in audit.events(state_dir, action="secret.")] == ["secret.read"]


def test_filter_by_target(state_dir: Path) -> None:
    audit.record(state_dir, "secret.read", "ci/token")
    audit.record(state_dir, "secret.read", "ci/token2")
    audit.record(state_dir, "secret.put", "ci/token")
    found = audit.events(state_dir, target="ci/token")
    assert [(e.action, e.target) for e in found] == [("secret.read", "ci/token"), ("secret.put", "ci/token")]
    assert [e.action for e in audit.events(state_dir, action="secret.put", target="ci/token")] == [
        "secret.put"
    ]


def test_limit_keeps_the_newest(state_dir: Path) -> None:
    for n in range(5):
        audit.record(state_dir, "secret.read", f"ci/k{n}")
    assert [e.target for e in audit.events(state_dir, limit=2)] == ["ci/k3", "ci/k4"]
    assert [e.target for e in audit.events(state_dir, limit=10)] == [f"ci/k{n}" for n in range(5)]
    assert [e.target for e in audit.events(state_dir, action="secret.", limit=1)] == ["ci/k4"]


def test_actor(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    audit.record(state_dir, "a.default", "t")
    monkeypatch.setenv("VINTAGE_ACTOR", "ci-job-1234")
    assert audit.current_actor() == "ci-job-1234"
    audit.record(state_dir, "a.env", "t")
    audit.record(state_dir, "a.explicit", "t", actor="bob")
    default, env, explicit = audit.events(state_dir)
    assert default.actor == getpass.getuser()
    assert env.actor == "ci-job-1234"
    assert explicit.actor == "bob"


def test_actor_unknown_when_no_user(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise OSError("no user")

    monkeypatch.setattr(getpass, "getuser", no_user)
    assert audit.current_actor() == "unknown"


def test_fields_are_redacted(state_dir: Path) -> None:
    redact.register(SECRET)
    audit.record(
        state_dir,
        "secret.read",
        f"ci/{SECRET}",
        f"failed: {SECRET}",
        reader=f"stage:{SECRET}",
        detail=f"provider=env {SECRET}",
        actor=f"user-{SECRET}",
    )
    [event] = audit.events(state_dir)
    assert event.target == "ci/[REDACTED]"
    assert event.outcome == "failed: [REDACTED]"
    assert event.reader == "stage:[REDACTED]"
    assert event.detail == "provider=env [REDACTED]"
    assert event.actor == "user-[REDACTED]"
    raw = b"".join(p.read_bytes() for p in state_dir.glob("audit.db*"))
    assert b"[REDACTED]" in raw
    assert SECRET.encode() not in raw


def test_file_mode(state_dir: Path) -> None:
    audit.record(state_dir, "secret.read", "ci/token")
    path = state_dir / audit.AUDIT_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    audit.events(state_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_mode_while_open(state_dir: Path) -> None:
    """The trail (and its WAL) is private from the moment it exists, not only once closed."""
    with audit._connect(state_dir) as conn:
        conn.execute(
            "INSERT INTO events (time, actor, action, target, outcome) VALUES ('t', 'a', 'b', 'c', 'd')"
        )
        files = sorted(state_dir.glob("audit.db*"))
        assert [p.name for p in files] == ["audit.db", "audit.db-shm", "audit.db-wal"]
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_unwritable_state_dir(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(VintageError, match="cannot open the audit trail"):
        audit.record(not_a_dir, "secret.read", "ci/token")


def test_concurrent_writers(state_dir: Path) -> None:
    audit.record(state_dir, "setup", "t")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                audit.record(state_dir, "secret.read", f"w{n}/k{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    targets = {e.target for e in audit.events(state_dir, action="secret.read")}
    assert targets == {f"w{n}/k{i}" for n in range(4) for i in range(10)}


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "is empty (0 bytes)"), (b"garbage, not a database\n" * 100, "is not an SQLite database")],
)
def test_damaged_trail_is_an_error_naming_the_file_and_is_kept(
    state_dir: Path, content: bytes, problem: str
) -> None:
    audit.record(state_dir, "secret.read", "ci/token")
    path = state_dir / audit.AUDIT_FILE
    path.write_bytes(content)
    for call in (lambda: audit.events(state_dir), lambda: audit.record(state_dir, "x", "y")):
        with pytest.raises(VintageError) as exc:
            call()
        assert exc.value.headline == f"the audit trail {path} is damaged: {problem}"
    assert path.read_bytes() == content


def test_truncated_trail_is_an_error(state_dir: Path) -> None:
    for i in range(200):
        audit.record(state_dir, "secret.read", f"ci/token{i}")
    path = state_dir / audit.AUDIT_FILE
    path.write_bytes(path.read_bytes()[:6000])
    with pytest.raises(VintageError, match="is damaged: database disk image is malformed"):
        audit.events(state_dir)
