"""Scope and key names, ``${secret:...}`` references and value checks."""

from __future__ import annotations

import pytest

from vintage.errors import ConfigError
from vintage.secrets.names import (
    MAX_VALUE_BYTES,
    Scope,
    SecretRef,
    check_key,
    check_scope,
    check_value,
    find_refs,
)


@pytest.mark.parametrize(
    "name",
    ["ci", "azureml", "a", "9lives", "my_scope-2", "staging/azureml", "production/serving", "A" * 64],
)
def test_valid_scope_names(name: str) -> None:
    assert check_scope(name) == Scope(name)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a" * 65, "at most 64"),
        ("staging/" + "b" * 65, "at most 64"),
        ("", "must start with"),
        ("-scope", "must start with"),
        ("has space", "only"),
        ("dot.ted", "only"),
        ("semi;colon", "only"),
        ("ünicode", "only"),
        ("ci\n", "only"),  # a trailing newline must not slip through a `$` anchor
        ("staging/", "must start with"),
        ("/azureml", "must start with"),
        ("a/b/c", "more than one '/'"),
        ("production/azureml/extra", "more than one '/'"),
    ],
)
def test_invalid_scope_names(name: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        check_scope(name)
    assert fragment in exc.value.headline


@pytest.mark.parametrize(
    "name", ["vintage", "vintage-internal", "VINTAGE_x", "staging/vintage", "vintagex/ci"]
)
def test_reserved_scope_names(name: str) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        check_scope(name)


@pytest.mark.parametrize("name", ["_private", "staging/_x"])
def test_underscore_scope_names_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        check_scope(name)


def test_scope_environment_and_short_name() -> None:
    shared = check_scope("azureml")
    bound = check_scope("staging/azureml")
    assert shared.environment is None
    assert shared.short == "azureml"
    assert bound.environment == "staging"
    assert bound.short == "azureml"
    assert str(bound) == "staging/azureml"


@pytest.mark.parametrize("key", ["token", "client-secret", "a.b_c-d", "0", "K" * 128, "databricks_token"])
def test_valid_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", "k" * 129, ".hidden", "-x", "with space", "a/b", "tok\n", "a=b", "é"])
def test_invalid_keys(key: str) -> None:
    with pytest.raises(ConfigError, match="invalid secret key"):
        check_key(key)


@pytest.mark.parametrize("key", ["vintage", "vintage.token", "Vintage_key"])
def test_reserved_keys(key: str) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        check_key(key)


def test_secret_ref_parse_shared_and_bound() -> None:
    shared = SecretRef.parse("ci/databricks_token")
    assert shared.scope == Scope("ci")
    assert shared.key == "databricks_token"
    assert str(shared) == "ci/databricks_token"

    bound = SecretRef.parse(" production/azureml/client-secret ")
    assert bound.scope == Scope("production/azureml")
    assert bound.scope.environment == "production"
    assert bound.key == "client-secret"
    assert str(bound) == "production/azureml/client-secret"


@pytest.mark.parametrize("text", ["token", "ci/", "/token", "", "/"])
def test_secret_ref_parse_needs_scope_and_key(text: str) -> None:
    with pytest.raises(ConfigError, match="must be scope/key"):
        SecretRef.parse(text)


@pytest.mark.parametrize("text", ["a/b/c/key", "vintage/key", "ci/vintage.key", "ci/bad key", "c i/key"])
def test_secret_ref_parse_validates_names(text: str) -> None:
    with pytest.raises(ConfigError):
        SecretRef.parse(text)


def test_find_refs() -> None:
    text = "https://${secret:ci/user}:${secret:staging/azureml/client-secret}@host/${secret:ci/user}"
    refs = find_refs(text)
    assert [str(r) for r in refs] == ["ci/user", "staging/azureml/client-secret", "ci/user"]
    assert refs[1].scope.environment == "staging"


def test_find_refs_none_and_other_placeholders() -> None:
    assert find_refs("no references, ${env:HOME}, $secret:ci/x, {secret:ci/x}") == []


def test_find_refs_validates() -> None:
    with pytest.raises(ConfigError):
        find_refs("x=${secret:vintage/token}")
    with pytest.raises(ConfigError):
        find_refs("x=${secret:nokey}")


@pytest.mark.parametrize("value", ["", "a", "abc", "   "])
def test_check_value_too_short(value: str) -> None:
    with pytest.raises(ConfigError, match="at least 4 characters"):
        check_value(value)


def test_check_value_limits() -> None:
    assert check_value("abcd") == "abcd"
    exactly = "x" * MAX_VALUE_BYTES
    assert check_value(exactly) == exactly
    with pytest.raises(ConfigError, match="128 KiB"):
        check_value("x" * (MAX_VALUE_BYTES + 1))


def test_check_value_counts_bytes_not_characters() -> None:
    # 'é' is two bytes in UTF-8: fewer than MAX_VALUE_BYTES characters but too many bytes.
    value = "é" * (MAX_VALUE_BYTES // 2 + 1)
    assert len(value) < MAX_VALUE_BYTES
    with pytest.raises(ConfigError, match="128 KiB"):
        check_value(value)


@pytest.mark.parametrize(
    "name",
    ["serving__primary", "a--b", "a-_b", "a._b", "a..b", "a_", "a-", "a.", "x__"],
)
def test_doubled_or_trailing_separators_refused_in_keys(name: str) -> None:
    """``__`` separates the parts of an environment variable name, and '-' and '.' read as '_'."""
    with pytest.raises(ConfigError) as exc:
        check_key(name)
    assert "twice in a row or at the end" in exc.value.headline
    assert "vintage secrets get" in (exc.value.hint or "")  # how to rename
    assert check_key(name, existing=True) == name  # an old name can still be read and deleted


@pytest.mark.parametrize("name", ["production__serving", "staging/azure__ml", "a-/b", "ci_", "prod_-a/x"])
def test_doubled_or_trailing_separators_refused_in_scopes(name: str) -> None:
    with pytest.raises(ConfigError, match="twice in a row or at the end"):
        check_scope(name)
    assert check_scope(name, existing=True) == Scope(name)


def test_existing_names_keep_the_other_rules() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        check_scope("vintage__x", existing=True)
    with pytest.raises(ConfigError, match="invalid secret key"):
        check_key("bad key", existing=True)


@pytest.mark.parametrize("text", ["production/serving__primary", "production__serving/primary", "ci/token_"])
def test_secret_ref_refuses_names_that_collide(text: str) -> None:
    """The shared scope ``production`` with key ``serving__primary`` would read production/serving/primary's
    variable; such a reference is refused outright."""
    with pytest.raises(ConfigError, match="twice in a row"):
        SecretRef.parse(text)
