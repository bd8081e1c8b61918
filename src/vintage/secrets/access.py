"""Reading secrets on behalf of a pipeline stage, a served environment or an operator.

:class:`SecretReader` is the only way vintage's own code reads a secret. For each read it

1. refuses a scope bound to another environment (staging never reads ``production/...``; a stage without
   an environment, such as ``build``, reads only shared scopes), and a name that breaks the naming rules;
2. asks the providers in order (default: environment variables, then the local store) and takes the first
   value found; before asking a provider, checks that what it would read belongs to the scope's own
   environment (for environment variables: the environment part of the variable name itself);
3. registers the value with the redactor, so it never appears in output, logs or MLflow;
4. appends the read to the audit trail (scope, key, reader, environment, outcome; never the value).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vintage import audit, redact
from vintage.errors import ConfigError, SecretAccessError, SecretError, VintageError
from vintage.plugins import SECRET_PROVIDERS
from vintage.secrets.base import Provider
from vintage.secrets.names import REF_PATTERN, RENAME_HINT, SecretRef

if TYPE_CHECKING:
    from vintage.config.models import SecretsSpec

PROVIDER_NAMES = SECRET_PROVIDERS.names()


def open_provider(name: str, state_dir: Path, spec: SecretsSpec | None = None) -> Provider:
    """One provider by name: its row of :data:`vintage.plugins.SECRET_PROVIDERS`, built with ``from_spec``.

    Raises:
        SecretError: unknown provider name.
    """
    if name not in SECRET_PROVIDERS:
        raise SecretError(SECRET_PROVIDERS.unknown(name))
    provider: Provider = SECRET_PROVIDERS.load(name).from_spec(spec, state_dir)
    return provider


class SecretReader:
    """Reads secrets for one reader in one environment.

    Args:
        state_dir: The state directory (audit trail, local store).
        providers: Where to look, in order.
        reader: Who reads, recorded in the audit trail (``stage:build``, ``serve:production``, ``cli``).
        environment: The reader's environment; ``None`` = shared scopes only.
        operator: An operator holding the master key (``vintage secrets get``): every scope is readable.
    """

    def __init__(
        self,
        state_dir: Path,
        providers: Sequence[Provider],
        *,
        reader: str,
        environment: str | None = None,
        operator: bool = False,
    ) -> None:
        self.state_dir = state_dir
        self.providers = list(providers)
        self.reader = reader
        self.environment = environment
        self.operator = operator
        self.values_read: list[str] = []  # what this reader handed out (to protect child processes)

    @classmethod
    def from_spec(
        cls,
        spec: SecretsSpec,
        state_dir: Path,
        *,
        reader: str,
        environment: str | None = None,
        operator: bool = False,
    ) -> SecretReader:
        """A reader over the providers configured in vintage.yaml (``secrets.providers``)."""
        providers = [open_provider(n, state_dir, spec) for n in spec.providers]
        return cls(state_dir, providers, reader=reader, environment=environment, operator=operator)

    def _audit(self, ref: SecretRef | str, outcome: str, provider: str = "", *, detail: str = "") -> None:
        audit.record(
            self.state_dir,
            "secret.read",
            str(ref),
            outcome,
            reader=self.reader,
            environment=self.environment,
            # for "error": provider and headline; for a denied name or variable: why
            detail=detail or (f"provider={provider}" if provider else ""),
        )

    def get(self, ref: SecretRef | str) -> str:
        """The value of one secret.

        Raises:
            ConfigError: ``ref`` is not a valid name (recorded as denied).
            SecretAccessError: the scope is bound to another environment, or a provider would read the
                secret of another environment (a name that breaks the naming rules).
            SecretError: no provider holds it, or a provider failed.
        """
        if isinstance(ref, str):
            text = ref
            try:
                ref = SecretRef.parse(text)
            except ConfigError as exc:
                self._audit(text.strip()[:200], "denied", detail=f"invalid name: {exc.headline[:200]}")
                raise
        bound = ref.scope.environment
        if bound is not None and bound != self.environment and not self.operator:
            self._audit(ref, "denied")
            who = (
                f"environment {self.environment!r}" if self.environment else "a stage without an environment"
            )
            raise SecretAccessError(
                f"{self.reader} ({who}) may not read scope {ref.scope}: it is bound to environment {bound!r}",
                hint="each environment reads only its own scopes (and shared ones); "
                f"put the secret in a scope of {self.environment or 'no environment'} instead",
            )
        for provider in self.providers:
            self._check_binding(provider, ref)
            try:
                value = provider.get(ref.scope, ref.key)
            except VintageError as exc:  # wrong master key, unreachable workspace, ...: recorded, then raised
                self._audit(ref, "error", f"{provider.name}: {exc.headline[:200]}")
                raise
            if value is not None:
                if len(value) < redact.MIN_SECRET_CHARS:
                    self._audit(ref, "refused-short", provider.name)
                    raise SecretError(
                        f"secret {ref} from the {provider.name} provider is shorter than "
                        f"{redact.MIN_SECRET_CHARS} characters, so it cannot be redacted safely",
                    )
                redact.register(value)
                if value not in self.values_read:
                    self.values_read.append(value)
                self._audit(ref, "ok", provider.name)
                return value
        self._audit(ref, "missing")
        looked = ", ".join(p.name for p in self.providers) or "no providers"
        raise SecretError(
            f"secret {ref} not found (looked in: {looked})",
            hint=f"put it with `vintage secrets put --scope {ref.scope} --key {ref.key}`",
        )

    def _check_binding(self, provider: Provider, ref: SecretRef) -> None:
        """Refuse when what ``provider`` would read for ``ref`` belongs to another environment."""
        binding = getattr(provider, "binding", None)  # providers whose names are not exact (env)
        if binding is None:
            return
        source = binding(ref.scope, ref.key)
        if source == ref.scope.environment:
            return
        from vintage.secrets.env import variable

        var = variable(ref.scope, ref.key)
        owner = f"environment {source!r}" if source else "a shared scope"
        self._audit(ref, "denied", detail=f"provider={provider.name}: {var} belongs to {owner}")
        raise SecretAccessError(
            f"{self.reader} may not read {ref} from the {provider.name} provider: its variable {var} "
            f"belongs to {owner}, not to scope {ref.scope}",
            hint="'_', '-' and '.' may not come twice in a row or end a name; " + RENAME_HINT,
        )

    def resolve(self, text: str) -> str:
        """``text`` with every ``${secret:scope/key}`` replaced by the secret's value."""
        if "${secret:" not in text:
            return text
        return REF_PATTERN.sub(lambda m: self.get(m.group(1)), text)

    def resolve_data(self, value: Any) -> Any:
        """:meth:`resolve` applied to every string inside nested dicts / lists."""
        if isinstance(value, str):
            return self.resolve(value)
        if isinstance(value, dict):
            return {k: self.resolve_data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.resolve_data(v) for v in value)
        return value


def has_refs(value: Any) -> bool:
    """True when any string inside ``value`` holds a ``${secret:...}`` reference."""
    if isinstance(value, str):
        return "${secret:" in value
    if isinstance(value, dict):
        return any(has_refs(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_refs(v) for v in value)
    return False
