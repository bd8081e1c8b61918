"""``vintage secrets``: scopes and secrets, the way the databricks CLI handles them, values never printed.

Every change is appended to the audit trail, and so is every change that fails (outcome ``failed``, with
the error's headline, never a value). Names that break the naming rules are usage errors and are not
recorded. ``get``, ``list``, ``delete`` and ``delete-scope`` accept names stored before the rule against
doubled separators (``serving__primary``), so such a secret can be read, put under a new name and deleted.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vintage.cli import state

if TYPE_CHECKING:
    from vintage.secrets.base import Provider

app = typer.Typer(
    help="Scoped, encrypted, per-environment secrets (values are never printed to a terminal).",
    no_args_is_help=True,
)

ProviderOpt = Annotated[
    str,
    typer.Option(
        "--provider", "-p", help="Where the secrets live: local (default) | env (read-only) | databricks."
    ),
]
ScopeOpt = Annotated[str, typer.Option("--scope", "-s", help="Scope: NAME or ENVIRONMENT/NAME.")]
KeyOpt = Annotated[str, typer.Option("--key", "-k", help="Key inside the scope.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _provider(name: str) -> Provider:
    from vintage.secrets.access import open_provider

    settings = state.settings()
    return open_provider(name, settings.state_dir.resolve(), settings.secrets)


def _state_dir() -> Path:
    return state.settings().state_dir.resolve()


def _audit(action: str, target: str, outcome: str = "ok", detail: str = "") -> None:
    from vintage import audit

    audit.record(_state_dir(), action, target, outcome, reader="cli", detail=detail)


@contextlib.contextmanager
def _recorded(action: str, target: str, detail: str) -> Iterator[None]:
    """Run one change; if it fails, append it to the audit trail as ``failed`` with the headline, then
    raise the error. A failure to record does not hide the error."""
    from vintage.errors import VintageError

    try:
        yield
    except VintageError as exc:
        with contextlib.suppress(VintageError):
            _audit(action, target, "failed", detail=f"{detail} error={exc.headline[:200]}".strip())
        raise


@app.command("create-scope")
def create_scope(
    name: Annotated[str, typer.Argument(help="NAME (shared) or ENVIRONMENT/NAME, e.g. production/serving.")],
    provider: ProviderOpt = "local",
) -> None:
    """Create a scope."""
    from vintage.secrets.names import check_scope

    scope = check_scope(name)
    with _recorded("scope.create", scope.name, f"provider={provider}"):
        _provider(provider).create_scope(scope)
    _audit("scope.create", scope.name, detail=f"provider={provider}")
    bound = f" (bound to environment {scope.environment})" if scope.environment else " (shared)"
    state.err().print(f"created scope {scope}{bound}")


@app.command("list-scopes")
def list_scopes(provider: ProviderOpt = "local", json_out: JsonOpt = False) -> None:
    """List scopes with their environment and number of keys."""
    from rich.table import Table

    found = _provider(provider).list_scopes()
    if json_out:
        state.print_json(
            [
                {"scope": s.name, "environment": s.environment, "keys": s.keys, "backend": s.backend}
                for s in found
            ]
        )
        return
    if not found:
        state.out().print(
            f"no scopes in the {provider} provider (create one with `vintage secrets create-scope`)"
        )
        return
    table = Table(title=f"Secret scopes ({provider})", title_justify="left")
    for col in ("scope", "environment", "keys"):
        table.add_column(col)
    for s in found:
        table.add_row(s.name, s.environment or "(shared)", "" if s.keys is None else str(s.keys))
    state.out().print(table)


@app.command("delete-scope")
def delete_scope(
    name: Annotated[str, typer.Argument(help="Scope to delete, with every secret in it.")],
    provider: ProviderOpt = "local",
) -> None:
    """Delete a scope and every secret in it."""
    from vintage.secrets.names import check_scope

    scope = check_scope(name, existing=True)
    with _recorded("scope.delete", scope.name, f"provider={provider}"):
        _provider(provider).delete_scope(scope)
    _audit("scope.delete", scope.name, detail=f"provider={provider}")
    state.err().print(f"deleted scope {scope}")


def _read_value(from_file: Path | None, generate: bool, nbytes: int) -> tuple[str, str]:
    """The value to store and where it came from."""
    from vintage.errors import ConfigError

    if generate:
        from vintage.secrets.local import generate_value

        return generate_value(nbytes), "generated"
    if from_file is not None:
        try:
            text = from_file.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read {from_file.name} as UTF-8 text ({exc.__class__.__name__})"
            ) from None
        return _strip_newline(text), "file"
    if sys.stdin.isatty():
        value = typer.prompt("Value", hide_input=True, confirmation_prompt=True, prompt_suffix=": ")
        return value, "prompt"
    text = sys.stdin.read()
    if not text:
        raise ConfigError(
            "no value on standard input",
            hint="pipe the value in, or use --from-file PATH or --generate (never an argument)",
        )
    return _strip_newline(text), "stdin"


def _strip_newline(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


@app.command("put")
def put(
    scope: ScopeOpt,
    key: KeyOpt,
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="Read the value from this file (one trailing newline dropped)."),
    ] = None,
    generate: Annotated[
        bool, typer.Option("--generate", help="Store a new random url-safe value (e.g. an API key).")
    ] = False,
    nbytes: Annotated[int, typer.Option("--bytes", min=16, max=512, help="Entropy of --generate.")] = 32,
    provider: ProviderOpt = "local",
) -> None:
    """Store a secret. The value comes from a hidden prompt, standard input, --from-file or --generate —
    never from the command line."""
    from vintage.errors import ConfigError
    from vintage.secrets.names import check_key, check_scope, check_value

    sc, k = check_scope(scope), check_key(key)
    with _recorded("secret.put", f"{sc}/{k}", f"provider={provider}"):
        if generate and from_file is not None:
            raise ConfigError("give either --generate or --from-file, not both")
        value, source = _read_value(from_file, generate, nbytes)
        check_value(value)
        from vintage import redact

        redact.register(value)
        _provider(provider).put(sc, k, value)
    _audit("secret.put", f"{sc}/{k}", detail=f"provider={provider} source={source}")
    what = "generated a random value for" if generate else "stored"
    state.err().print(
        f"{what} {sc}/{k}" + (f" (read it with `vintage secrets get -s {sc} -k {k}`)" if generate else "")
    )


@app.command("list")
def list_keys(scope: ScopeOpt, provider: ProviderOpt = "local", json_out: JsonOpt = False) -> None:
    """List the keys of a scope with their times (never their values)."""
    from rich.table import Table

    from vintage.secrets.names import check_scope

    sc = check_scope(scope, existing=True)
    found = _provider(provider).list_keys(sc)
    if json_out:
        state.print_json([{"key": s.key, "created": s.created, "updated": s.updated} for s in found])
        return
    if not found:
        state.out().print(f"scope {sc} holds no secrets")
        return
    table = Table(title=f"Secrets in {sc} ({provider})", title_justify="left")
    for col in ("key", "created", "updated"):
        table.add_column(col)
    for s in found:
        table.add_row(s.key, s.created or "", s.updated or "")
    state.out().print(table)


@app.command("get")
def get(
    scope: ScopeOpt,
    key: KeyOpt,
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the value even to a terminal.")] = False,
    provider: ProviderOpt = "local",
) -> None:
    """Write a secret's value to standard output — only when it is piped or redirected, or with --reveal."""
    from vintage.errors import ConfigError
    from vintage.secrets.access import SecretReader
    from vintage.secrets.names import SecretRef, check_key, check_scope

    ref = SecretRef(check_scope(scope, existing=True), check_key(key, existing=True))
    if sys.stdout.isatty() and not reveal:
        raise ConfigError(
            "refusing to print a secret to a terminal",
            hint="pipe or redirect the output (e.g. `| pbcopy`, `> file`), or pass --reveal",
        )
    reader = SecretReader(_state_dir(), [_provider(provider)], reader="cli:secrets get", operator=True)
    value = reader.get(ref)
    # Raw, unredacted, on purpose: this is the one command whose job is to hand the value over.
    sys.stdout.write(value + ("\n" if sys.stdout.isatty() else ""))
    sys.stdout.flush()


@app.command("delete")
def delete(scope: ScopeOpt, key: KeyOpt, provider: ProviderOpt = "local") -> None:
    """Delete one secret."""
    from vintage.secrets.names import check_key, check_scope

    sc, k = check_scope(scope, existing=True), check_key(key, existing=True)
    with _recorded("secret.delete", f"{sc}/{k}", f"provider={provider}"):
        _provider(provider).delete(sc, k)
    _audit("secret.delete", f"{sc}/{k}", detail=f"provider={provider}")
    state.err().print(f"deleted {sc}/{k}")


@app.command("rotate-key")
def rotate_key(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            "--new-key-file",
            help="Where to write the new master key (required when it comes from VINTAGE_MASTER_KEY).",
        ),
    ] = None,
) -> None:
    """Re-encrypt every secret of the local store under a new master key."""
    from vintage.secrets.local import MASTER_KEY_ENV, LocalStore

    with _recorded("key.rotate", "local", ""):
        count = LocalStore(_state_dir()).rotate_key(new_key_file)
    _audit("key.rotate", "local", detail=f"values={count}")
    console = state.err()
    console.print(f"re-encrypted {count} secret(s) under a new master key")
    if new_key_file is not None:
        console.print(
            f"the new key is in {new_key_file}; set {MASTER_KEY_ENV} to its content, then delete it"
        )


@app.command("new-master-key")
def new_master_key(
    reveal: Annotated[bool, typer.Option("--reveal", help="Print the key even to a terminal.")] = False,
) -> None:
    """Print a new random master key (for VINTAGE_MASTER_KEY in CI)."""
    from vintage.errors import ConfigError
    from vintage.secrets.local import new_master_key as make

    if sys.stdout.isatty() and not reveal:
        raise ConfigError(
            "refusing to print a master key to a terminal", hint="redirect it to a file or pass --reveal"
        )
    sys.stdout.write(make() + "\n")


@app.command("sync")
def sync(
    source: Annotated[str, typer.Option("--from", help="Provider to copy from (e.g. env).")] = "env",
    target: Annotated[str, typer.Option("--to", help="Provider to copy into (e.g. local).")] = "local",
    scopes: Annotated[
        list[str] | None, typer.Option("--scope", "-s", help="Only this scope (repeatable). Default: all.")
    ] = None,
) -> None:
    """Copy secrets from one provider into another (e.g. CI variables into the local store), creating
    scopes as needed. Values are never shown."""
    from vintage.errors import SecretError
    from vintage.secrets.access import SecretReader
    from vintage.secrets.names import SecretRef, check_key, check_scope

    src, dst = _provider(source), _provider(target)
    if not dst.writable:
        raise SecretError(f"cannot sync into the {target} provider: it is read-only")
    wanted = [check_scope(s) for s in scopes or []] or [check_scope(s.name) for s in src.list_scopes()]
    existing = {s.name for s in dst.list_scopes()}
    reader = SecretReader(_state_dir(), [src], reader=f"cli:secrets sync {source}->{target}", operator=True)
    copied = created = 0
    for sc in wanted:
        keys = src.list_keys(sc)
        if not keys:
            continue
        if sc.name not in existing:
            with _recorded("scope.create", sc.name, f"provider={target} by=sync"):
                dst.create_scope(sc)
            _audit("scope.create", sc.name, detail=f"provider={target} by=sync")
            existing.add(sc.name)
            created += 1
        for info in keys:
            ref = SecretRef(sc, check_key(info.key))
            value = reader.get(ref)
            with _recorded("secret.put", str(ref), f"provider={target} source=sync:{source}"):
                dst.put(sc, ref.key, value)
            _audit("secret.put", str(ref), detail=f"provider={target} source=sync:{source}")
            copied += 1
    if copied == 0:
        raise SecretError(
            f"no secrets to copy: the {source} provider holds none"
            + (f" in scope(s) {', '.join(map(str, wanted))}" if scopes else ""),
            hint="CI variables must be named VINTAGE_SECRET__<SCOPE>__<KEY> "
            "(or VINTAGE_SECRET__<ENVIRONMENT>__<SCOPE>__<KEY>)",
        )
    state.err().print(
        f"copied {copied} secret(s) from {source} into {target} "
        f"({len(wanted)} scope(s) looked at, {created} created)"
    )
