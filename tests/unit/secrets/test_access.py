"""SecretReader: environment binding, provider order, audit, redaction, ``${secret:...}`` resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from vintage import audit, redact
from vintage.errors import ConfigError, SecretAccessError, SecretError
from vintage.secrets.access import SecretReader, has_refs, open_provider
from vintage.secrets.base import ScopeInfo, SecretInfo
from vintage.secrets.env import EnvProvider
from vintage.secrets.local import LocalStore
from vintage.secrets.names import Scope, SecretRef

PROD_VALUE = "prod-client-secret-9f8e7d"
STAGING_VALUE = "staging-client-secret-1a2b"
SHARED_VALUE = "ci-databricks-token-5c6d"


class DictProvider:
    """A provider over a dict that counts its reads."""

    writable = False

    def __init__(self, name: str, values: dict[str, str]) -> None:
        self.name = name
        self.values = values
        self.reads: list[str] = []

    def get(self, scope: Scope, key: str) -> str | None:
        self.reads.append(f"{scope}/{key}")
        return self.values.get(f"{scope}/{key}")

    def list_scopes(self) -> list[ScopeInfo]:
        return []

    def list_keys(self, scope: Scope) -> list[SecretInfo]:
        return []

    def create_scope(self, scope: Scope) -> None:
        raise NotImplementedError

    def delete_scope(self, scope: Scope) -> None:
        raise NotImplementedError

    def put(self, scope: Scope, key: str, value: str) -> None:
        raise NotImplementedError

    def delete(self, scope: Scope, key: str) -> None:
        raise NotImplementedError


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / ".vintage"


@pytest.fixture
def provider() -> DictProvider:
    return DictProvider(
        "dict",
        {
            "production/azureml/client-secret": PROD_VALUE,
            "staging/azureml/client-secret": STAGING_VALUE,
            "ci/token": SHARED_VALUE,
        },
    )


def _reads(state_dir: Path) -> list[audit.AuditEvent]:
    return audit.events(state_dir, action="secret.read")


def _audit_bytes(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.glob("audit.db*")))


# ------------------------------------------------------------------------------- environment binding


def test_staging_cannot_read_production(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:deploy", environment="staging")
    with pytest.raises(SecretAccessError) as exc:
        reader.get("production/azureml/client-secret")
    assert "stage:deploy" in exc.value.headline
    assert "'staging'" in exc.value.headline
    assert "'production'" in exc.value.headline
    assert provider.reads == []  # refused before any provider is asked
    assert not redact.active()
    [event] = _reads(state_dir)
    assert event.target == "production/azureml/client-secret"
    assert event.outcome == "denied"
    assert event.reader == "stage:deploy"
    assert event.environment == "staging"
    assert PROD_VALUE.encode() not in _audit_bytes(state_dir)


PROD_KEY_VAR = "VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY"


def test_staging_cannot_read_production_through_a_colliding_shared_name(state_dir: Path) -> None:
    """The shared scope ``production`` with key ``serving__primary`` spells production/serving/primary's
    variable: the name is refused and the attempt is recorded as denied, not as a shared read."""
    provider = EnvProvider({PROD_KEY_VAR: PROD_VALUE})
    reader = SecretReader(state_dir, [provider], reader="serve:staging", environment="staging")
    with pytest.raises(ConfigError, match="twice in a row") as exc:
        reader.get("production/serving__primary")
    assert PROD_VALUE not in f"{exc.value.headline} {exc.value.hint}"
    assert reader.values_read == []
    [event] = _reads(state_dir)
    assert (event.target, event.outcome, event.environment) == (
        "production/serving__primary",
        "denied",
        "staging",
    )
    assert "invalid name" in event.detail
    assert PROD_VALUE.encode() not in _audit_bytes(state_dir)


@pytest.mark.parametrize("operator", [False, True])
@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ("production", "serving__primary"),
        ("production__serving", "primary"),
        ("production", "serving-_primary"),
    ],
)
def test_binding_checked_on_the_variable_actually_read(
    state_dir: Path, scope: str, key: str, operator: bool
) -> None:
    """A name that slipped past the rules (say, stored before them) is checked against the environment of the
    variable it would read: production's, so no reader gets it, not even an operator."""
    provider = EnvProvider({PROD_KEY_VAR: PROD_VALUE})
    reader = SecretReader(
        state_dir, [provider], reader="serve:staging", environment="staging", operator=operator
    )
    with pytest.raises(SecretAccessError) as exc:
        reader.get(SecretRef(Scope(scope), key))  # built without check_scope / check_key
    assert f"its variable {PROD_KEY_VAR} belongs to environment 'production'" in exc.value.headline
    assert PROD_VALUE not in f"{exc.value.headline} {exc.value.hint}"
    [event] = _reads(state_dir)
    assert (event.target, event.outcome) == (f"{scope}/{key}", "denied")
    assert event.detail == f"provider=env: {PROD_KEY_VAR} belongs to environment 'production'"


def test_environment_with_a_dash_reads_its_scopes_past_the_env_provider(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prod-a``'s variables would be ``VINTAGE_SECRET__PROD_A__...``, which only ``prod_a`` may read: the
    env provider refuses them when set, and the reader still reaches the local store when they are not."""
    store = LocalStore(state_dir)
    store.create_scope(Scope("prod-a/serving"))
    store.put(Scope("prod-a/serving"), "primary", PROD_VALUE)
    reader = SecretReader(state_dir, [EnvProvider(), store], reader="serve:prod-a", environment="prod-a")
    assert reader.get("prod-a/serving/primary") == PROD_VALUE
    monkeypatch.setenv("VINTAGE_SECRET__PROD_A__SERVING__PRIMARY", STAGING_VALUE)
    with pytest.raises(SecretError, match="holds secret prod_a/serving/primary, not prod-a/serving/primary"):
        reader.get("prod-a/serving/primary")
    other = SecretReader(state_dir, [EnvProvider()], reader="serve:prod_a", environment="prod_a")
    assert other.get("prod_a/serving/primary") == STAGING_VALUE


def test_old_names_in_the_local_store_still_readable_by_an_operator(state_dir: Path) -> None:
    """The local store keeps names exactly: an old name can be read (to rename it), with no variable check."""
    store = LocalStore(state_dir)
    store.create_scope(Scope("production"))
    store.put(Scope("production"), "serving__primary", PROD_VALUE)
    reader = SecretReader(state_dir, [store], reader="cli:secrets get", operator=True)
    assert reader.get(SecretRef(Scope("production"), "serving__primary")) == PROD_VALUE


def test_own_environment_and_shared_scopes_readable(state_dir: Path, provider: DictProvider) -> None:
    prod = SecretReader(state_dir, [provider], reader="serve:production", environment="production")
    assert prod.get("production/azureml/client-secret") == PROD_VALUE
    assert prod.get("ci/token") == SHARED_VALUE
    with pytest.raises(SecretAccessError):
        prod.get("staging/azureml/client-secret")
    staging = SecretReader(state_dir, [provider], reader="stage:deploy", environment="staging")
    assert staging.get(SecretRef.parse("staging/azureml/client-secret")) == STAGING_VALUE
    assert staging.get("ci/token") == SHARED_VALUE
    outcomes = [(e.target, e.outcome, e.environment) for e in _reads(state_dir)]
    assert outcomes == [
        ("production/azureml/client-secret", "ok", "production"),
        ("ci/token", "ok", "production"),
        ("staging/azureml/client-secret", "denied", "production"),
        ("staging/azureml/client-secret", "ok", "staging"),
        ("ci/token", "ok", "staging"),
    ]


def test_reader_without_environment_reads_only_shared(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:build")
    assert reader.get("ci/token") == SHARED_VALUE
    for ref in ("staging/azureml/client-secret", "production/azureml/client-secret"):
        with pytest.raises(SecretAccessError, match="a stage without an environment"):
            reader.get(ref)
    assert [e.outcome for e in _reads(state_dir)] == ["ok", "denied", "denied"]
    assert [e.environment for e in _reads(state_dir)] == ["", "", ""]


def test_operator_reads_every_scope(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="cli", operator=True)
    assert reader.get("production/azureml/client-secret") == PROD_VALUE
    assert reader.get("staging/azureml/client-secret") == STAGING_VALUE
    assert reader.get("ci/token") == SHARED_VALUE
    assert [e.outcome for e in _reads(state_dir)] == ["ok", "ok", "ok"]
    assert {e.reader for e in _reads(state_dir)} == {"cli"}


def test_access_error_is_a_secret_error(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:deploy", environment="staging")
    with pytest.raises(SecretError):
        reader.get("production/azureml/client-secret")


# ----------------------------------------------------------------------------------------- providers


def test_env_before_local_first_hit_wins(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, provider: DictProvider
) -> None:
    store = LocalStore(state_dir)
    store.create_scope(Scope("ci"))
    store.put(Scope("ci"), "token", "from-the-local-store")
    store.put(Scope("ci"), "user", "local-only-user")
    monkeypatch.setenv("VINTAGE_SECRET__CI__TOKEN", "from-the-environment")
    reader = SecretReader(state_dir, [EnvProvider(), store], reader="stage:build")

    assert reader.get("ci/token") == "from-the-environment"
    assert reader.get("ci/user") == "local-only-user"
    details = [(e.target, e.detail) for e in _reads(state_dir)]
    assert details == [("ci/token", "provider=env"), ("ci/user", "provider=local")]

    # The other order: the local store wins.
    reader = SecretReader(state_dir, [store, EnvProvider()], reader="stage:build")
    assert reader.get("ci/token") == "from-the-local-store"
    assert _reads(state_dir)[-1].detail == "provider=local"


def test_later_providers_not_asked_after_a_hit(state_dir: Path, provider: DictProvider) -> None:
    second = DictProvider("second", {"ci/token": "second-value"})
    reader = SecretReader(state_dir, [provider, second], reader="stage:build")
    assert reader.get("ci/token") == SHARED_VALUE
    assert second.reads == []


def test_missing_secret(state_dir: Path, provider: DictProvider) -> None:
    second = DictProvider("second", {})
    reader = SecretReader(state_dir, [provider, second], reader="stage:build")
    with pytest.raises(SecretError) as exc:
        reader.get("ci/absent")
    assert "ci/absent" in exc.value.headline
    assert "looked in: dict, second" in exc.value.headline
    assert "--scope ci --key absent" in (exc.value.hint or "")
    assert provider.reads == ["ci/absent"] and second.reads == ["ci/absent"]
    [event] = _reads(state_dir)
    assert (event.target, event.outcome) == ("ci/absent", "missing")


def test_missing_secret_without_providers(state_dir: Path) -> None:
    reader = SecretReader(state_dir, [], reader="stage:build")
    with pytest.raises(SecretError, match=r"looked in: no providers"):
        reader.get("ci/token")


def test_short_value_from_env_refused(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINTAGE_SECRET__CI__PIN", "123")
    reader = SecretReader(state_dir, [EnvProvider()], reader="stage:build")
    with pytest.raises(SecretError, match="shorter than 4 characters") as exc:
        reader.get("ci/pin")
    assert "env provider" in exc.value.headline
    assert not redact.active()  # never registered, so "123" is not eaten from ordinary text
    [event] = _reads(state_dir)
    assert (event.outcome, event.detail) == ("refused-short", "provider=env")


def test_empty_value_from_env_refused(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINTAGE_SECRET__CI__TOKEN", "")
    reader = SecretReader(state_dir, [EnvProvider()], reader="stage:build")
    with pytest.raises(SecretError, match="shorter than"):
        reader.get("ci/token")


def test_provider_error_propagates(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(state_dir)
    store.create_scope(Scope("ci"))
    store.put(Scope("ci"), "token", SHARED_VALUE)
    store.key_file.write_text("A" * 43 + "=")  # a well-formed but wrong key
    reader = SecretReader(state_dir, [store], reader="stage:build")
    with pytest.raises(SecretError, match="does not open"):
        reader.get("ci/token")
    assert not redact.active()
    from vintage import audit

    [event] = audit.events(state_dir, action="secret.read")
    assert (event.target, event.outcome, event.reader) == ("ci/token", "error", "stage:build")
    assert event.detail.startswith("provider=local: the master key")


def test_invalid_reference(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:build")
    with pytest.raises(ConfigError):
        reader.get("no-key")
    with pytest.raises(ConfigError):
        reader.get("vintage/token")
    assert provider.reads == []


# -------------------------------------------------------------------------------- redaction, audit


def test_value_registered_with_redactor(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:build")
    assert redact.redact(SHARED_VALUE) == SHARED_VALUE
    value = reader.get("ci/token")
    assert redact.redact(value) == "[REDACTED]"
    assert redact.redact(f"token={value};") == "token=[REDACTED];"


def test_audit_holds_no_value(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, provider: DictProvider
) -> None:
    monkeypatch.setenv("VINTAGE_SECRET__CI__TOKEN", "env-token-value-abcdef")
    reader = SecretReader(state_dir, [EnvProvider(), provider], reader="stage:build", environment="staging")
    reader.get("ci/token")
    reader.get("staging/azureml/client-secret")
    with pytest.raises(SecretAccessError):
        reader.get("production/azureml/client-secret")
    with pytest.raises(SecretError):
        reader.get("ci/absent")
    assert len(_reads(state_dir)) == 4
    raw = _audit_bytes(state_dir)
    assert b"ci/token" in raw  # the scan does see the trail's text...
    for value in ("env-token-value-abcdef", STAGING_VALUE, PROD_VALUE):
        assert value.encode() not in raw  # ...but no value
    for event in _reads(state_dir):
        assert event.actor and event.time


def test_from_spec_opens_configured_providers(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vintage.config.models import SecretsSpec

    monkeypatch.setenv("VINTAGE_SECRET__CI__TOKEN", "from-env-provider")
    reader = SecretReader.from_spec(SecretsSpec(), state_dir, reader="stage:build")
    assert [p.name for p in reader.providers] == ["env", "local"]
    assert reader.get("ci/token") == "from-env-provider"


def test_open_provider(state_dir: Path) -> None:
    assert isinstance(open_provider("local", state_dir), LocalStore)
    assert isinstance(open_provider("env", state_dir), EnvProvider)
    with pytest.raises(SecretError, match="unknown secret provider 'vault'"):
        open_provider("vault", state_dir)


# --------------------------------------------------------------------------------------- resolution


def test_resolve(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:deploy", environment="staging")
    assert reader.resolve("no refs here") == "no refs here"
    assert provider.reads == []
    assert (
        reader.resolve("id=${secret:staging/azureml/client-secret}&t=${secret:ci/token}")
        == f"id={STAGING_VALUE}&t={SHARED_VALUE}"
    )
    assert reader.resolve("${secret: ci/token }") == SHARED_VALUE
    with pytest.raises(SecretAccessError):
        reader.resolve("x=${secret:production/azureml/client-secret}")
    with pytest.raises(ConfigError):
        reader.resolve("x=${secret:vintage/token}")


def test_resolve_data(state_dir: Path, provider: DictProvider) -> None:
    reader = SecretReader(state_dir, [provider], reader="stage:build")
    data = {
        "url": "https://host/?t=${secret:ci/token}",
        "nested": [{"deep": "${secret:ci/token}"}, 3, None, ("${secret:ci/token}", 1.5)],
        "plain": "text",
        "${secret:ci/token}": "keys are not resolved",
        "flag": True,
    }
    resolved = reader.resolve_data(data)
    assert resolved == {
        "url": f"https://host/?t={SHARED_VALUE}",
        "nested": [{"deep": SHARED_VALUE}, 3, None, (SHARED_VALUE, 1.5)],
        "plain": "text",
        "${secret:ci/token}": "keys are not resolved",
        "flag": True,
    }
    assert isinstance(resolved["nested"][3], tuple)
    assert data["url"] == "https://host/?t=${secret:ci/token}"  # the input is not modified


def test_has_refs() -> None:
    assert has_refs("${secret:ci/token}")
    assert has_refs({"a": [1, {"b": ("x", "pre ${secret:ci/token}")}]})
    assert not has_refs({"${secret:ci/token}": "keys do not count"})
    assert not has_refs(["plain", 1, None, {"a": "b"}])
