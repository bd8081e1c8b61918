"""GitHub Actions expressions (``${{ ... }}`` and ``if:``), the part :mod:`support.ci_executor` runs.

Supported: the contexts ``github.<prop>``, ``secrets.NAME``, ``vars.NAME``, ``env.NAME``,
``steps.<id>.outputs.<name>``, ``needs.<job>.outputs.<name>`` and ``needs.<job>.result``; the literals
``true``/``false``; the status functions ``always()``, ``success()``, ``failure()``, ``cancelled()``; the
operators ``!``, ``&&``, ``||`` and parentheses. Anything else (comparisons, string literals, other
functions, the ``inputs``/``matrix``/``runner``/... contexts) raises :class:`WorkflowError`: a test must
never pass because an expression was quietly misread.

Like GitHub, a missing property of a known context (an unset secret, variable, output) is the empty
string; unlike GitHub, each such lookup is also recorded in :attr:`Contexts.warnings` so a test can see it.
A named-value GitHub does not know (``foo.bar``) is an error, as GitHub rejects the workflow for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
_TOKEN = re.compile(r"\s*(?:(&&|\|\||!|\(|\))|([A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*))")
STATUS_FUNCTIONS = ("always", "success", "failure", "cancelled")
_UNSUPPORTED_CONTEXTS = ("inputs", "matrix", "strategy", "runner", "job", "jobs")
Value = str | bool


class WorkflowError(Exception):
    """The workflow is malformed or uses something the executor cannot run faithfully."""


@dataclass
class Contexts:
    """What an expression can read. ``status`` is None where GitHub allows no status function."""

    github: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    vars: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    steps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    needs: Mapping[str, tuple[str, Mapping[str, str]]] = field(default_factory=dict)  # job -> result, outputs
    status: Mapping[str, bool] | None = None
    warnings: list[str] = field(default_factory=list)


# The parse tree: ("name", "a.b"), ("call", "success"), ("not", node), ("and"|"or", left, right).
Node = tuple[object, ...]


def parse(text: str) -> Node:
    """The tree of one expression (without ``${{ }}``).

    Raises:
        WorkflowError: for syntax this module does not support.
    """
    tokens: list[str] = []
    pos, text = 0, text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise WorkflowError(f"unsupported expression syntax at {text[pos:]!r} in {text!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    parser = _Parser(tokens, text)
    node = parser.disjunction()
    if parser.pos != len(tokens):
        raise WorkflowError(f"unsupported expression syntax in {text!r}")
    return node


class _Parser:
    def __init__(self, tokens: list[str], text: str) -> None:
        self.tokens, self.text, self.pos = tokens, text, 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise WorkflowError(f"unsupported expression syntax in {self.text!r}")
        self.pos += 1
        return token

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self._peek() == "||":
            self._take()
            node = ("or", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.unary()
        while self._peek() == "&&":
            self._take()
            node = ("and", node, self.unary())
        return node

    def unary(self) -> Node:
        if self._peek() == "!":
            self._take()
            return ("not", self.unary())
        if self._peek() == "(":
            self._take()
            node = self.disjunction()
            self._take(")")
            return node
        name = self._take()
        if name in ("&&", "||", ")"):
            raise WorkflowError(f"unsupported expression syntax in {self.text!r}")
        if self._peek() == "(":
            self._take()
            self._take(")")
            if name not in STATUS_FUNCTIONS:
                raise WorkflowError(f"unsupported function {name}() in {self.text!r}")
            return ("call", name)
        _check_name(name, self.text)
        return ("name", name)


def _check_name(name: str, text: str) -> None:
    head, *rest = name.split(".")
    if name in ("true", "false"):
        return
    if head in _UNSUPPORTED_CONTEXTS:
        raise WorkflowError(f"unsupported context {head!r} in {text!r}")
    shapes = {"github": 1, "secrets": 1, "vars": 1, "env": 1, "steps": 3, "needs": (2, 3)}
    if head not in shapes:
        raise WorkflowError(f"Unrecognized named-value: {head!r} in {text!r}")
    want = shapes[head]
    if len(rest) not in (want if isinstance(want, tuple) else (want,)):
        raise WorkflowError(f"unsupported property path {name!r} in {text!r}")
    if head == "steps" and rest[1] != "outputs":
        raise WorkflowError(f"unsupported property path {name!r} (only steps.<id>.outputs.<name>)")
    if head == "needs" and rest[1:] not in (["result"],) and (len(rest) != 3 or rest[1] != "outputs"):
        raise WorkflowError(f"unsupported property path {name!r} (needs.<job>.outputs.<name> or .result)")


def uses_status(node: Node) -> bool:
    """Whether ``node`` calls a status function (else GitHub adds ``success() &&``)."""
    if node[0] == "call":
        return True
    return any(uses_status(child) for child in node[1:] if isinstance(child, tuple))


def evaluate(node: Node, ctx: Contexts) -> Value:
    """The value of a parsed expression."""
    kind = node[0]
    if kind == "call":
        if ctx.status is None:
            raise WorkflowError(f"status function {node[1]}() is only allowed in if:")
        return ctx.status[str(node[1])]
    if kind == "not":
        return not _truthy(evaluate(node[1], ctx))  # type: ignore[arg-type]
    if kind == "and":
        left = evaluate(node[1], ctx)  # type: ignore[arg-type]
        return evaluate(node[2], ctx) if _truthy(left) else left  # type: ignore[arg-type]
    if kind == "or":
        left = evaluate(node[1], ctx)  # type: ignore[arg-type]
        return left if _truthy(left) else evaluate(node[2], ctx)  # type: ignore[arg-type]
    return _lookup(str(node[1]), ctx)


def _lookup(name: str, ctx: Contexts) -> Value:
    if name in ("true", "false"):
        return name == "true"
    head, *rest = name.split(".")
    found: str | None
    if head == "steps":
        found = ctx.steps.get(rest[0], {}).get(rest[2])
    elif head == "needs":
        result, outputs = ctx.needs.get(rest[0], ("", {}))
        if rest[0] not in ctx.needs:
            raise WorkflowError(f"{name}: job {rest[0]!r} is not in this job's needs")
        found = result if rest[1] == "result" else outputs.get(rest[2])
    else:
        found = getattr(ctx, head).get(rest[0])
    if found is None:
        what = "secret" if head == "secrets" else "value"
        ctx.warnings.append(f"{name}: {what} not set, read as the empty string (as GitHub does)")
        return ""
    return found


def _truthy(value: Value) -> bool:
    return value if isinstance(value, bool) else value != ""


def _text(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def substitute(text: str, ctx: Contexts) -> str:
    """``text`` with every ``${{ expr }}`` replaced by its value (as GitHub does before running a step)."""
    return EXPR.sub(lambda m: _text(evaluate(parse(m.group(1)), ctx)), text)


def condition(text: str | bool, ctx: Contexts) -> bool:
    """The value of an ``if:``: a bare or ``${{ }}``-wrapped expression, ``success() &&`` implied."""
    if isinstance(text, bool):
        return text and bool(ctx.status and ctx.status["success"])
    body = text.strip()
    whole = EXPR.fullmatch(body)
    if whole:
        body = whole.group(1)
    elif "${{" in body:
        raise WorkflowError(f"unsupported if: {text!r} (an expression inside text)")
    node = parse(body)
    if not uses_status(node):
        node = ("and", ("call", "success"), node)
    return _truthy(evaluate(node, ctx))


def check(text: str) -> None:
    """Raise :class:`WorkflowError` if any ``${{ }}`` in ``text`` is unsupported (load-time check)."""
    for match in EXPR.finditer(text):
        parse(match.group(1))
