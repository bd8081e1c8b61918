#!/usr/bin/env bash
# Install the system packages the integration tests need: a PostgreSQL server (initdb, pg_ctl).
# Idempotent and silent when everything is already installed. Called by the Makefile before tests.
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

if find_pg_bindir >/dev/null; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "PostgreSQL server binaries (initdb) not found; run as root: apt-get update && apt-get install -y postgresql" >&2
    exit 1
fi

echo "Installing PostgreSQL server (apt-get install -y postgresql)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! bindir="$(find_pg_bindir)"; then
    echo "apt-get installed postgresql but initdb is still not found" >&2
    exit 1
fi
echo "PostgreSQL server binaries: ${bindir}"
