"""The hash-pinned locks agree: the core, each extra and the full lock pin every package at the same version
and hashes, the core leaves the heavy extras out, and every extra of pyproject.toml has its file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQ = REPO / "requirements"


def _entries(path: Path) -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (version, hashes) of a ``uv pip compile --generate-hashes`` file."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            name, _, version = line.split(" ")[0].partition("==")
            assert version, f"{path.name}: {line!r} is not pinned"
            out[name] = (version, frozenset())
        elif (found := re.match(r"\s+--hash=(sha256:[0-9a-f]{64})", line)) and name:
            out[name] = (out[name][0], out[name][1] | {found.group(1)})
    assert all(hashes for _, hashes in out.values()), f"{path.name}: an entry has no hash"
    return out


def _extras() -> dict[str, list[str]]:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {k: v for k, v in declared.items() if k not in ("all", "dev")}


def test_core_and_every_extra_pin_what_the_full_lock_pins() -> None:
    full = _entries(REQ / "lock.txt")
    core = _entries(REQ / "core.txt")
    assert core and set(core) <= set(full)
    for name, entry in core.items():
        assert entry == full[name], f"core.txt pins {name} differently from lock.txt"
    for extra in _extras():
        added = _entries(REQ / "extras" / f"{extra}.txt")
        assert not set(added) & set(core), f"extras/{extra}.txt repeats core packages"
        for name, entry in added.items():
            assert entry == full.get(name), f"extras/{extra}.txt pins {name} differently from lock.txt"


def test_every_extra_has_a_lock_and_no_lock_lacks_an_extra() -> None:
    files = {p.stem for p in (REQ / "extras").glob("*.txt")}
    assert files == set(_extras())


def test_each_extra_lock_holds_its_declared_packages() -> None:
    core = _entries(REQ / "core.txt")
    for extra, requirements in _extras().items():
        added = _entries(REQ / "extras" / f"{extra}.txt")
        for requirement in requirements:
            name = re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower()
            assert name in added or name in core, f"{extra}: {name} is in neither its lock nor the core"


def test_the_core_leaves_the_heavy_parts_out() -> None:
    core = _entries(REQ / "core.txt")
    for heavy in ("pyspark", "pyarrow", "kubernetes", "mlflow", "flask", "psycopg2-binary", "pytest", "mypy"):
        assert heavy not in core, f"{heavy} is in the core lock"
    for needed in ("mlflow-skinny", "scikit-learn", "sqlalchemy", "alembic", "uvicorn", "cryptography"):
        assert needed in core


def test_the_makefile_installs_the_uv_the_containers_extra_pins() -> None:
    pinned = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert pinned is not None
    assert _extras()["containers"] == [f"uv=={pinned.group(1)}"]
    assert _entries(REQ / "lock.txt")["uv"][0] == pinned.group(1)
