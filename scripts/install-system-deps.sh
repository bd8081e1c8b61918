#!/usr/bin/env bash
# Install the system packages the tests need: a PostgreSQL server (initdb, pg_ctl) for the integration
# tests, jq for the gh stand-in of the tests' CI executor (tests/support/ci_gh.py), chromium for the
# dashboard's browser tests (driven by Playwright, which never downloads a browser of its own). Idempotent
# and silent when everything is already installed. Called by the Makefile before tests.
set -euo pipefail

# Print the directory holding the PostgreSQL server binaries, or nothing if there is none.
find_pg_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if [[ -n "${dir}" && -x "${dir}/initdb" ]]; then
            printf '%s\n' "${dir}"
            return 0
        fi
    fi
    # Highest major version wins (version-sort the candidates).
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "${dir}" && -x "${dir}/initdb" ]]; then
        printf '%s\n' "${dir}"
        return 0
    fi
    return 1
}

# Print the system chromium's executable, or nothing if there is none.
find_chromium() {
    local name
    for name in /usr/lib/chromium/chromium chromium chromium-browser; do
        if command -v "${name}" >/dev/null 2>&1; then
            command -v "${name}"
            return 0
        fi
    done
    return 1
}

missing=()
find_pg_bindir >/dev/null || missing+=(postgresql)
command -v jq >/dev/null 2>&1 || missing+=(jq)
find_chromium >/dev/null || missing+=(chromium)
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "missing system packages; run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
fi

echo "Installing ${missing[*]} (apt-get install -y)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

if ! bindir="$(find_pg_bindir)"; then
    echo "apt-get installed postgresql but initdb is still not found" >&2
    exit 1
fi
command -v jq >/dev/null 2>&1 || { echo "apt-get installed jq but it is still not found" >&2; exit 1; }
find_chromium >/dev/null || { echo "apt-get installed chromium but it is still not found" >&2; exit 1; }
if [[ " ${missing[*]} " == *" postgresql "* ]]; then
    echo "PostgreSQL server binaries: ${bindir}"
fi
