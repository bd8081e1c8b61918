"""The Databricks secret provider, through the real databricks-sdk over HTTP to a fake workspace.

Every test talks to ``support.fake_databricks`` on 127.0.0.1 (or to a closed port there): nothing leaves
the machine. Each test starts from an environment without any ``DATABRICKS_*`` / ``ARM_*`` variable and
with ``DATABRICKS_CONFIG_FILE`` pointing at a file that does not exist, so the developer's
``~/.databrickscfg`` is never read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from support.fake_databricks import FakeWorkspace, fake_databricks
from support.servers import free_port
from vintage.errors import ConfigError, SecretError, VintageError
from vintage.secrets.base import ScopeInfo, SecretInfo
from vintage.secrets.databricks import DatabricksProvider, local_scope, remote_scope
from vintage.secrets.names import Scope

STAGING = Scope("staging/azureml")
SHARED = Scope("ci")
VALUE = "s3cr3t-client-id-7f9a"


def _message(exc: VintageError) -> str:
    return f"{exc.headline}\n{exc.hint or ''}\n{exc}"


@pytest.fixture(autouse=True)
def _no_databricks_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith(("DATABRICKS_", "ARM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))


@pytest.fixture
def ws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorkspace]:
    """A fake workspace; DATABRICKS_TOKEN holds its token (the host is passed to the provider)."""
    with fake_databricks() as workspace:
        monkeypatch.setenv("DATABRICKS_TOKEN", workspace.token)
        yield workspace


@pytest.fixture
def provider(ws: FakeWorkspace) -> DatabricksProvider:
    return DatabricksProvider(host=ws.url)


# --------------------------------------------------------------------------------------------------
# Names and import cost
# --------------------------------------------------------------------------------------------------


def test_scope_names_map_one_to_one() -> None:
    assert remote_scope(Scope("production/serving")) == "production.serving"
    assert remote_scope(Scope("azureml")) == "azureml"
    assert local_scope("production.serving") == Scope("production/serving")
    assert local_scope("azureml") == Scope("azureml")
    assert local_scope("a.b.c") is None  # not made by vintage
    assert local_scope("vintage_internal") is None  # reserved
    with pytest.raises(ConfigError):
        remote_scope(Scope("bad.name"))


def test_importing_the_module_does_not_import_the_sdk() -> None:
    code = "import sys, vintage.secrets.databricks; print('databricks.sdk' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_client_is_built_on_first_use_only() -> None:
    provider = DatabricksProvider()  # nothing configured: no error yet
    with pytest.raises(ConfigError) as exc:
        provider.get(STAGING, "client_id")
    assert "DATABRICKS_HOST" in (exc.value.hint or "")
    assert "DATABRICKS_TOKEN" in (exc.value.hint or "")


# --------------------------------------------------------------------------------------------------
# The exact requests
# --------------------------------------------------------------------------------------------------


def test_create_scope_posts_a_databricks_backed_scope(
    ws: FakeWorkspace, provider: DatabricksProvider
) -> None:
    provider.create_scope(STAGING)

    [request] = ws.api_requests()
    assert (request.method, request.path) == ("POST", "/api/2.0/secrets/scopes/create")
    assert request.body == {"scope": "staging.azureml", "scope_backend_type": "DATABRICKS"}
    assert request.authorization == f"Bearer {ws.token}"
    assert ws.scopes["staging.azureml"].backend_type == "DATABRICKS"


def test_put_posts_a_string_value(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    ws.add_secret("staging.azureml", "other", "placeholder")
    provider.put(STAGING, "client_id", VALUE)

    [request] = ws.api_requests()
    assert (request.method, request.path) == ("POST", "/api/2.0/secrets/put")
    assert request.body == {"scope": "staging.azureml", "key": "client_id", "string_value": VALUE}
    assert request.query == {}
    assert request.authorization == f"Bearer {ws.token}"
    assert ws.scopes["staging.azureml"].secrets["client_id"].value == VALUE.encode()


def test_get_sends_scope_and_key_as_query_and_decodes_base64(
    ws: FakeWorkspace, provider: DatabricksProvider
) -> None:
    text = "pässwörd-€-ünïcode"  # the wire carries base64 of the UTF-8 bytes
    ws.add_secret("staging.azureml", "client_secret", text)

    assert provider.get(STAGING, "client_secret") == text

    [request] = ws.api_requests()
    assert (request.method, request.path) == ("GET", "/api/2.0/secrets/get")
    assert request.query == {"scope": "staging.azureml", "key": "client_secret"}
    assert request.body is None
    assert request.authorization == f"Bearer {ws.token}"


def test_list_delete_and_delete_scope_requests(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    ws.add_secret("ci", "token", VALUE)
    provider.list_keys(SHARED)
    provider.list_scopes()
    provider.delete(SHARED, "token")
    provider.delete_scope(SHARED)

    seen = [(r.method, r.path, r.query, r.body) for r in ws.api_requests()]
    assert seen == [
        ("GET", "/api/2.0/secrets/list", {"scope": "ci"}, None),
        ("GET", "/api/2.0/secrets/scopes/list", {}, None),
        ("POST", "/api/2.0/secrets/delete", {}, {"scope": "ci", "key": "token"}),
        ("POST", "/api/2.0/secrets/scopes/delete", {}, {"scope": "ci"}),
    ]
    assert {r.authorization for r in ws.api_requests()} == {f"Bearer {ws.token}"}


# --------------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------------


def test_round_trip(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    provider.create_scope(STAGING)
    assert provider.list_keys(STAGING) == []
    provider.put(STAGING, "client_id", VALUE)
    provider.put(STAGING, "a.key-with_dots", "another-value")

    keys = provider.list_keys(STAGING)
    assert [k.key for k in keys] == ["a.key-with_dots", "client_id"]
    assert all(k.created is None and k.updated for k in keys)
    assert before <= datetime.fromisoformat(keys[1].updated or "") <= datetime.now(UTC)
    assert provider.get(STAGING, "client_id") == VALUE

    provider.delete(STAGING, "client_id")
    assert provider.get(STAGING, "client_id") is None
    assert [k.key for k in provider.list_keys(STAGING)] == ["a.key-with_dots"]
    provider.delete_scope(STAGING)
    assert provider.list_scopes() == []


def test_list_keys_turns_milliseconds_into_iso_utc(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    ws.add_secret("ci", "token", VALUE)
    ws.scopes["ci"].secrets["token"].last_updated_timestamp = 1520467595000

    assert provider.list_keys(SHARED) == [SecretInfo("token", None, "2018-03-08T00:06:35+00:00")]


def test_list_scopes_maps_databricks_names_back(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    for name in ("staging.azureml", "ci", "production.serving", "a.b.c", "_internal"):
        ws.add_secret(name, "k", VALUE)

    assert provider.list_scopes() == [
        ScopeInfo("ci", None, None, "databricks"),
        ScopeInfo("production/serving", "production", None, "databricks"),
        ScopeInfo("staging/azureml", "staging", None, "databricks"),
    ]


def test_get_of_a_missing_key_or_scope_is_none(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    ws.add_secret("staging.azureml", "client_id", VALUE)

    assert provider.get(STAGING, "client_secret") is None
    assert provider.get(Scope("production/azureml"), "client_id") is None
    assert [r.query for r in ws.api_requests()] == [
        {"scope": "staging.azureml", "key": "client_secret"},
        {"scope": "production.azureml", "key": "client_id"},
    ]


def test_a_missing_scope_is_named(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    for call in (
        lambda: provider.list_keys(STAGING),
        lambda: provider.delete_scope(STAGING),
        lambda: provider.delete(STAGING, "client_id"),
        lambda: provider.put(STAGING, "client_id", VALUE),
    ):
        with pytest.raises(SecretError) as exc:
            call()
        assert exc.value.headline == "scope staging/azureml does not exist in the databricks provider"
        assert VALUE not in _message(exc.value)


def test_deleting_a_missing_key_names_the_key(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    ws.add_secret("staging.azureml", "other", VALUE)

    with pytest.raises(SecretError) as exc:
        provider.delete(STAGING, "client_id")
    assert exc.value.headline == "secret staging/azureml/client_id does not exist in the databricks provider"


def test_creating_an_existing_scope_fails(ws: FakeWorkspace, provider: DatabricksProvider) -> None:
    provider.create_scope(STAGING)

    with pytest.raises(SecretError, match=r"scope staging/azureml already exists"):
        provider.create_scope(STAGING)


def test_a_value_that_is_not_utf8_is_refused_without_quoting_it(
    ws: FakeWorkspace, provider: DatabricksProvider
) -> None:
    ws.add_secret("ci", "blob", b"\xff\xfe\xfd\xfc-binary")

    with pytest.raises(SecretError, match="is not UTF-8 text") as exc:
        provider.get(SHARED, "blob")
    assert exc.value.__cause__ is None
    assert "binary" not in _message(exc.value)


# --------------------------------------------------------------------------------------------------
# Credentials and failures
# --------------------------------------------------------------------------------------------------


def test_permission_denied_names_the_secret_and_never_the_token(
    ws: FakeWorkspace, provider: DatabricksProvider
) -> None:
    ws.add_secret("staging.azureml", "client_id", VALUE)
    ws.denied.add("staging.azureml")

    with pytest.raises(SecretError) as exc:
        provider.get(STAGING, "client_id")

    headline = exc.value.headline
    assert "staging/azureml/client_id" in headline
    assert "PermissionDenied" in headline
    assert "\n" not in headline
    assert ws.token not in _message(exc.value)
    assert VALUE not in _message(exc.value)
    assert len(ws.api_requests()) == 1  # not retried


def test_a_wrong_token_gives_a_clear_error(ws: FakeWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "dapi-wrong-token-0000000000000000"
    monkeypatch.setenv("DATABRICKS_TOKEN", wrong)

    with pytest.raises(SecretError) as exc:
        DatabricksProvider(host=ws.url).put(SHARED, "token", VALUE)

    assert "writing secret ci/token" in exc.value.headline
    assert "Unauthenticated" in exc.value.headline
    assert "DATABRICKS_TOKEN" in (exc.value.hint or "")
    assert wrong not in _message(exc.value)
    assert VALUE not in _message(exc.value)
    [request] = ws.api_requests()  # sent once, with the configured token
    assert request.authorization == f"Bearer {wrong}"


def test_an_invalid_token_answered_with_403_mentions_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real workspaces answer a bad PAT with 403 {"error_code": 403, "message": "Invalid access token."}
    with fake_databricks(invalid_token_status=403) as ws:
        monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong-token-0000000000000000")
        with pytest.raises(SecretError) as exc:
            DatabricksProvider(host=ws.url).list_scopes()

    assert "PermissionDenied: Invalid access token." in exc.value.headline
    assert "DATABRICKS_TOKEN" in (exc.value.hint or "")
    assert "dapi-wrong-token" not in _message(exc.value)


def test_an_unreachable_host_fails_with_a_secret_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-token-for-a-closed-port")
    host = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    with pytest.raises(SecretError) as exc:
        DatabricksProvider(host=host).get(STAGING, "client_id")

    assert "reading secret staging/azureml/client_id" in exc.value.headline
    assert f"cannot reach the Databricks workspace at {host}" in exc.value.headline
    assert "DATABRICKS_HOST" in (exc.value.hint or "")
    assert "dapi-token-for-a-closed-port" not in _message(exc.value)


def test_no_token_is_a_config_error(ws: FakeWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABRICKS_TOKEN")

    with pytest.raises(ConfigError) as exc:
        DatabricksProvider(host=ws.url).list_scopes()
    assert "cannot configure the Databricks client" in exc.value.headline
    assert "DATABRICKS_TOKEN" in (exc.value.hint or "")
    assert ws.api_requests() == []


def test_host_and_token_from_the_environment(ws: FakeWorkspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABRICKS_HOST", ws.url)
    ws.add_secret("ci", "token", VALUE)

    assert DatabricksProvider().get(SHARED, "token") == VALUE
    assert ws.api_requests()[0].authorization == f"Bearer {ws.token}"


def test_host_and_token_from_a_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with fake_databricks(token="dapi-profile-token-1234") as ws:
        cfg = tmp_path / "databrickscfg"
        cfg.write_text(f"[ci]\nhost = {ws.url}\ntoken = {ws.token}\n")
        monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(cfg))
        ws.add_secret("ci", "token", VALUE)

        assert DatabricksProvider(profile="ci").get(SHARED, "token") == VALUE
        assert ws.api_requests()[0].authorization == "Bearer dapi-profile-token-1234"


def test_an_injected_client_is_used_as_is(ws: FakeWorkspace) -> None:
    from databricks.sdk import WorkspaceClient

    ws.add_secret("ci", "token", VALUE)
    client = WorkspaceClient(host=ws.url, token=ws.token)

    assert DatabricksProvider(client=client).get(SHARED, "token") == VALUE
