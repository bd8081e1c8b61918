#!/usr/bin/env bash
# Re-resolve the hash-pinned locks after a change to pyproject.toml's dependencies (`make lock`):
#   requirements/lock.txt          everything: the core, every extra and the dev tools (`make test`)
#   requirements/core.txt          the core (`make demo`, `make install`)
#   requirements/extras/<x>.txt    what extra x adds to the core (`make install EXTRAS="x y"` installs
#                                  core.txt with extras/x.txt and extras/y.txt)
# The core and each extra are resolved under lock.txt as a constraint, so every file pins a package at the
# same version and hashes and any combination installs together (tests/unit/test_locks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
common=(--python-version 3.11 --python-platform x86_64-manylinux_2_28 --generate-hashes -q)
# An existing lock's pins are kept unless pyproject.toml needs another version (uv's preference for -o).
"$uv" pip compile pyproject.toml --extra dev "${common[@]}" -o requirements/lock.txt
"$uv" pip compile pyproject.toml -c requirements/lock.txt "${common[@]}" -o requirements/core.txt
mkdir -p requirements/extras
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for extra in $(python3 -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]; print(*[x for x in d if x not in ("all", "dev")])'); do
    "$uv" pip compile pyproject.toml --extra "$extra" -c requirements/lock.txt "${common[@]}" \
        --no-header -o "$tmp/$extra.txt"
    python3 scripts/lock_delta.py requirements/core.txt "$tmp/$extra.txt" "$extra" > "requirements/extras/$extra.txt"
done
