#!/usr/bin/env bash
# Install what `vintage image build/push` and the container tests need: buildah (builds without a daemon),
# podman (runs the image), skopeo (push, inspect), mmdebstrap (the Debian base image), docker-registry (the
# test registry on 127.0.0.1), runc, docker.io (dockerd: the docker builder's tests start their own
# daemon), iptables and conntrack (the Kubernetes test cluster's dockerd and kube-proxy). Then a containers.conf drop-in for machines like this one: runc with cgroupfs (crun and the
# systemd cgroup manager fail on cgroups v1 hybrid) and low default ulimits (runc cannot raise them
# without CAP_SYS_RESOURCE).
# Idempotent and silent when everything is already in place. Called by `make test` (target system-deps);
# `make demo` does not need any of it.
set -euo pipefail

PACKAGES=(buildah podman skopeo mmdebstrap docker-registry runc docker.io iptables conntrack)
CONF_DIR=/etc/containers/containers.conf.d
CONF_FILE="${CONF_DIR}/50-vintage.conf"
CONF_TEXT='# Written by vintage (scripts/install-container-deps.sh).
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"'

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("${pkg}")
    fi
done

conf_ok() { [[ -f "${CONF_FILE}" ]] && [[ "$(cat "${CONF_FILE}")" == "${CONF_TEXT}" ]]; }

if [[ ${#missing[@]} -eq 0 ]] && conf_ok; then
    exit 0
fi

if [[ "$(id -u)" -ne 0 ]]; then
    echo "container tools missing (${missing[*]:-containers.conf}); run as root: bash scripts/install-container-deps.sh" >&2
    exit 1
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "Installing container tools (apt-get install -y ${missing[*]})..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! conf_ok; then
    mkdir -p "${CONF_DIR}"
    printf '%s\n' "${CONF_TEXT}" > "${CONF_FILE}.tmp"
    mv "${CONF_FILE}.tmp" "${CONF_FILE}"
    echo "Wrote ${CONF_FILE} (runc, cgroupfs, ulimits)"
fi
