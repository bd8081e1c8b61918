"""Read-only secrets from ``VINTAGE_SECRET__...`` environment variables."""

from __future__ import annotations

import pytest

from vintage.errors import SecretError
from vintage.secrets.base import ScopeInfo, SecretInfo
from vintage.secrets.env import EnvProvider, variable
from vintage.secrets.names import Scope, check_scope


@pytest.mark.parametrize(
    ("scope", "key", "var"),
    [
        ("ci", "databricks_token", "VINTAGE_SECRET__CI__DATABRICKS_TOKEN"),
        ("ci", "token", "VINTAGE_SECRET__CI__TOKEN"),
        ("production/azureml", "client-secret", "VINTAGE_SECRET__PRODUCTION__AZUREML__CLIENT_SECRET"),
        ("staging/my-scope", "a.b", "VINTAGE_SECRET__STAGING__MY_SCOPE__A_B"),
        ("Mixed", "Key", "VINTAGE_SECRET__MIXED__KEY"),
    ],
)
def test_variable_names(scope: str, key: str, var: str) -> None:
    assert variable(check_scope(scope), key) == var


def test_get_from_given_environ() -> None:
    provider = EnvProvider(
        {
            "VINTAGE_SECRET__CI__TOKEN": "ci-token-value",
            "VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET": "staging-value",
        }
    )
    assert provider.get(Scope("ci"), "token") == "ci-token-value"
    assert provider.get(Scope("staging/azureml"), "client_secret") == "staging-value"
    assert provider.get(Scope("production/azureml"), "client_secret") is None
    assert provider.get(Scope("ci"), "absent") is None
    assert provider.get(Scope("azureml"), "client-secret") is None  # shared != staging-bound


@pytest.mark.parametrize(
    "value",
    [
        "$(VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY)",
        "${{ secrets.VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY }}",
    ],
)
def test_unexpanded_ci_reference_is_refused(value: str) -> None:
    # Azure passes `$(NAME)` through when the pipeline defines no variable NAME: it must not become a key.
    provider = EnvProvider({"VINTAGE_SECRET__PRODUCTION__SERVING__PRIMARY": value})

    with pytest.raises(SecretError, match="the CI does not define it"):
        provider.get(Scope("production/serving"), "primary")


def test_a_value_that_only_contains_a_macro_is_a_value() -> None:
    provider = EnvProvider({"VINTAGE_SECRET__CI__TOKEN": "x$(VINTAGE_SECRET__CI__TOKEN)"})

    assert provider.get(Scope("ci"), "token") == "x$(VINTAGE_SECRET__CI__TOKEN)"


def test_get_reads_os_environ_live(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = EnvProvider()
    assert provider.get(Scope("ci"), "token") is None
    monkeypatch.setenv("VINTAGE_SECRET__CI__TOKEN", "from-the-process-env")
    assert provider.get(Scope("ci"), "token") == "from-the-process-env"
    monkeypatch.delenv("VINTAGE_SECRET__CI__TOKEN")
    assert provider.get(Scope("ci"), "token") is None


def test_lookup_is_exact_for_case() -> None:
    provider = EnvProvider({"vintage_secret__ci__token": "lower-case-var"})
    assert provider.get(Scope("ci"), "token") is None
    assert provider.list_scopes() == []


def test_list_scopes() -> None:
    provider = EnvProvider(
        {
            "VINTAGE_SECRET__CI__TOKEN": "v-0001",
            "VINTAGE_SECRET__CI__USER": "v-0002",
            "VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET": "v-0003",
            "VINTAGE_SECRET__PRODUCTION__AZUREML__CLIENT_SECRET": "v-0004",
            "VINTAGE_SECRET__ONLYONEPART": "ignored",
            "VINTAGE_SECRET__A__B__C__D": "ignored (too many parts)",
            "VINTAGE_SECRET__CI__": "ignored (empty key)",
            "VINTAGE_SECRETS__CI__TOKEN": "ignored (other prefix)",
            "PATH": "/usr/bin",
        }
    )
    assert provider.list_scopes() == [
        ScopeInfo("ci", None, 2, "env"),
        ScopeInfo("production/azureml", "production", 1, "env"),
        ScopeInfo("staging/azureml", "staging", 1, "env"),
    ]


def test_list_keys() -> None:
    provider = EnvProvider(
        {
            "VINTAGE_SECRET__CI__TOKEN": "v-0001",
            "VINTAGE_SECRET__CI__USER_NAME": "v-0002",
            "VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET": "v-0003",
            "VINTAGE_SECRET__STAGING__OTHER": "v-0004",
            "VINTAGE_SECRET__CIX__TOKEN": "v-0005",
        }
    )
    assert provider.list_keys(Scope("ci")) == [SecretInfo("token"), SecretInfo("user_name")]
    assert provider.list_keys(Scope("staging/azureml")) == [SecretInfo("client_secret")]
    # The shared scope "staging" holds OTHER only, not the keys of staging/azureml.
    assert provider.list_keys(Scope("staging")) == [SecretInfo("other")]
    assert provider.list_keys(Scope("absent")) == []


def test_list_keys_ignores_empty_key() -> None:
    provider = EnvProvider({"VINTAGE_SECRET__CI__": "no key", "VINTAGE_SECRET__CI__TOKEN": "v-0001"})
    assert provider.list_keys(Scope("ci")) == [SecretInfo("token")]


def test_read_only() -> None:
    provider = EnvProvider({})
    assert provider.writable is False
    assert provider.name == "env"
    scope = Scope("ci")
    for call in (
        lambda: provider.create_scope(scope),
        lambda: provider.delete_scope(scope),
        lambda: provider.put(scope, "token", "some-value"),
        lambda: provider.delete(scope, "token"),
    ):
        with pytest.raises(SecretError, match="env provider is read-only") as exc:
            call()
        assert "some-value" not in str(exc.value)
        assert exc.value.hint
    assert provider.environ == {}


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ("staging/azureml", "client-secret"),
        ("staging/azureml", "client.secret"),
        ("Staging/AzureML", "client_secret"),
    ],
)
def test_one_variable_one_name(scope: str, key: str) -> None:
    """A variable holds the secret of the lower-case name it spells; names that fold onto it are refused."""
    provider = EnvProvider({"VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET": "staging-value"})
    with pytest.raises(SecretError) as exc:
        provider.get(Scope(scope), key)
    assert exc.value.headline.startswith(
        "VINTAGE_SECRET__STAGING__AZUREML__CLIENT_SECRET holds secret staging/azureml/client_secret, "
        f"not {scope}/{key}:"
    )
    assert "${secret:staging/azureml/client_secret}" in (exc.value.hint or "")
    assert "staging-value" not in f"{exc.value.headline} {exc.value.hint}"
    # Unset: nothing to refuse, the next provider is asked.
    assert EnvProvider({}).get(Scope(scope), key) is None


def test_binding_is_read_from_the_variable_name() -> None:
    provider = EnvProvider({})
    assert provider.binding(Scope("ci"), "token") is None
    assert provider.binding(Scope("production/serving"), "primary") == "production"
    # Names that break the rules (built without check_scope / check_key): the variable tells the truth.
    assert provider.binding(Scope("production"), "serving__primary") == "production"
    assert provider.binding(Scope("production__serving"), "primary") == "production"
    assert provider.binding(Scope("production"), "serving-_primary") == "production"
    assert provider.binding(Scope("staging/a"), "b__c") == "staging"
    # An environment whose name the variable folds is still its own (get refuses what is not canonical).
    assert provider.binding(Scope("prod-a/serving"), "primary") == "prod-a"
    assert provider.binding(Scope("Production/serving"), "primary") == "Production"
