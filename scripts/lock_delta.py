"""Print the entries of a lock (core + one extra) that the core lock does not have: what the extra adds.

Usage: python3 scripts/lock_delta.py requirements/core.txt FULL_LOCK EXTRA  (called by scripts/lock.sh)
"""

import sys
from pathlib import Path


def entries(path: str) -> dict[str, list[str]]:
    """A ``uv pip compile --generate-hashes`` file as {pinned line: its lines (hashes, via comments)}."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in Path(path).read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            current = out.setdefault(line.split(" ")[0], [])
        elif current is None:
            continue  # the header
        current.append(line)
    return out


def main() -> None:
    core, full, extra = sys.argv[1:4]
    have = entries(core)
    added = {pin: lines for pin, lines in entries(full).items() if pin not in have}
    out = [
        f"# What the {extra} extra adds to requirements/core.txt (scripts/lock.sh writes this file;",
        f"# install both: make install EXTRAS={extra}). Versions and hashes as in requirements/lock.txt.",
    ]
    out += [line for lines in added.values() for line in lines]
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
