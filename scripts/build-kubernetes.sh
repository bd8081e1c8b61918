#!/usr/bin/env bash
# Build the Kubernetes binaries the test cluster needs, once per machine, from Debian's `kubernetes` source
# package (bookworm: 1.20, vendored, built with Debian's Go): kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, and the static `pause` binary of the pod infrastructure image.
#
# Cache: ${VINTAGE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vintage}/kubernetes/<debian version>/
#   bin/        the binaries (complete only once `stamp` exists; a build killed half-way is redone)
#   stamp       written last: the upstream version and the sha256 of every binary
#   go-build/   the Go build cache (a redone build reuses what was compiled)
#   download/   the source package (.dsc, .orig, .debian), so a redone build downloads nothing
#   build.log   the output of the last build
#
# Prints the bin directory on stdout (BIN=$(scripts/build-kubernetes.sh)); progress goes to stderr, nothing
# when the cache is complete. Installs its build dependencies with apt (root needed only then) and adds a
# deb-src line for bookworm from the machine's own Debian mirror if none is there. Contacts nothing but the
# package mirror. A cold build takes several minutes on 2 cores (docs/development.md).
set -euo pipefail

SUITE=bookworm
SOURCE_PACKAGE=kubernetes
PACKAGES=(golang-go dpkg-dev rsync jq etcd-server socat gcc libc6-dev make)
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
DEBSRC_FILE=/etc/apt/sources.list.d/vintage-${SUITE}-src.list

CACHE_ROOT="${VINTAGE_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME}/.cache}/vintage}/kubernetes"

say() { printf 'build-kubernetes: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

need_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "$1; run it once as root: sudo bash scripts/build-kubernetes.sh"
    fi
}

# The apt sources of this machine as "type uri suite signed-by" lines, from both the one-line format
# (*.list) and the deb822 format (*.sources).
apt_sources() {
    local files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    local f
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [[ -f "${f}" ]] && files+=("${f}")
    done
    [[ ${#files[@]} -eq 0 ]] && return 0
    for f in "${files[@]}"; do
        if [[ "${f}" == *.sources ]]; then
            awk '
                function flush(   nt, nu, ns, i, j, k, t, u, s) {
                    nt = split(types, t, " "); nu = split(uris, u, " "); ns = split(suites, s, " ")
                    if (enabled != "no")
                        for (i = 1; i <= nt; i++) for (j = 1; j <= nu; j++) for (k = 1; k <= ns; k++)
                            print t[i], u[j], s[k], (signed == "" ? "-" : signed)
                    types = uris = suites = signed = enabled = ""
                }
                /^[[:space:]]*#/ { next }
                /^[[:space:]]*$/ { flush(); next }
                {
                    key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[[:space:]]+/, "")
                    if (key == "types") types = $0
                    else if (key == "uris") uris = $0
                    else if (key == "suites") suites = $0
                    else if (key == "signed-by") signed = $0
                    else if (key == "enabled") enabled = tolower($0)
                }
                END { flush() }
            ' "${f}"
        else
            awk '
                /^[[:space:]]*#/ || NF < 3 { next }
                {
                    type = $1; signed = "-"; i = 2
                    if ($2 ~ /^\[/) {
                        while (i <= NF) {
                            if ($i ~ /^\[?signed-by=/) { signed = $i; sub(/^\[?signed-by=/, "", signed); sub(/\]$/, "", signed) }
                            if ($i ~ /\]$/) { i++; break }
                            i++
                        }
                    }
                    if (i + 1 <= NF) print type, $i, $(i + 1), signed
                }
            ' "${f}"
        fi
    done
}

have_debsrc() { apt_sources | awk -v s="${SUITE}" '$1 == "deb-src" && $3 == s { found = 1 } END { exit !found }'; }

add_debsrc() {
    local line uri signed
    line="$(apt_sources | awk -v s="${SUITE}" '$1 == "deb" && $3 == s { print; exit }')"
    [[ -n "${line}" ]] || die "no 'deb ... ${SUITE}' line in the apt sources to take the Debian mirror from; add a deb-src line for ${SUITE} yourself"
    read -r _ uri _ signed <<<"${line}"
    need_root "no deb-src line for ${SUITE} in the apt sources"
    if [[ "${signed}" == "-" ]]; then
        printf 'deb-src %s %s main\n' "${uri}" "${SUITE}" >"${DEBSRC_FILE}.tmp"
    else
        printf 'deb-src [signed-by=%s] %s %s main\n' "${signed}" "${uri}" "${SUITE}" >"${DEBSRC_FILE}.tmp"
    fi
    mv "${DEBSRC_FILE}.tmp" "${DEBSRC_FILE}"
    say "added ${DEBSRC_FILE} (deb-src ${uri} ${SUITE} main)"
}

# The newest version of the source package the apt lists know, or nothing.
source_version() {
    apt-cache showsrc --only-source "${SOURCE_PACKAGE}" 2>/dev/null |
        awk '/^Version:/ { print $2 }' | sort -V | tail -n 1
}

# 1:1.20.5+really1.20.2-1.1 -> 1.20.2
upstream_version() {
    local v="${1#*:}"
    v="${v%-*}"
    [[ "${v}" == *+really* ]] && v="${v##*+really}"
    v="${v%%[+~]*}"
    printf '%s\n' "${v}"
}

# Is the cache for this version complete? The stamp is written only after every binary is in place; each
# binary it names must still be there. (`cd DIR/bin && sha256sum -c <(grep -v '^#' ../stamp)` checks contents.)
cache_complete() {
    local dir="$1" sum name
    [[ -f "${dir}/stamp" ]] || return 1
    while read -r sum name; do
        [[ "${sum}" == "#"* ]] && continue
        [[ -n "${name}" && -x "${dir}/bin/${name}" && -s "${dir}/bin/${name}" ]] || return 1
    done <"${dir}/stamp"
}

# --- dependencies -------------------------------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("${pkg}")
    fi
done
updated=no
if ! have_debsrc; then
    add_debsrc
    need_root "apt lists to update"
    say "apt-get update"
    apt-get update -qq >&2
    updated=yes
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    need_root "build dependencies missing (${missing[*]})"
    if [[ "${updated}" == no ]]; then
        say "apt-get update"
        apt-get update -qq >&2
        updated=yes
    fi
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
version="$(source_version)"
if [[ -z "${version}" && "${updated}" == no ]]; then
    need_root "the apt lists know no source package '${SOURCE_PACKAGE}'"
    say "apt-get update"
    apt-get update -qq >&2
    version="$(source_version)"
fi
[[ -n "${version}" ]] || die "apt knows no source package '${SOURCE_PACKAGE}' (is a deb-src line for ${SUITE} enabled?)"

upstream="$(upstream_version "${version}")"
dir="${CACHE_ROOT}/${version}"

# --- the fast path ------------------------------------------------------------------------------------------
if cache_complete "${dir}"; then
    printf '%s\n' "${dir}/bin"
    exit 0
fi

mkdir -p "${dir}"
exec 9>"${dir}/lock"
if ! flock -n 9; then
    say "another build of ${version} is running; waiting for it"
    flock 9
fi
if cache_complete "${dir}"; then
    printf '%s\n' "${dir}/bin"
    exit 0
fi

# --- the build ----------------------------------------------------------------------------------------------
start=${SECONDS}
log="${dir}/build.log"
: >"${log}"
rm -rf "${dir:?}/stamp" "${dir:?}/bin" "${dir:?}/bin.tmp" "${dir:?}/src"
trap 'say "build failed; last lines of ${log}:"; tail -n 30 "${log}" >&2' ERR

mkdir -p "${dir}/download"
if ! compgen -G "${dir}/download/${SOURCE_PACKAGE}_*.dsc" >/dev/null; then
    say "downloading the source package ${SOURCE_PACKAGE} ${version}"
    (cd "${dir}/download" &&
        apt-get source -qq --download-only -o APT::Sandbox::User=root "${SOURCE_PACKAGE}=${version}") >>"${log}" 2>&1
fi
dsc="$(compgen -G "${dir}/download/${SOURCE_PACKAGE}_*.dsc" | head -n 1)"
say "unpacking ${dsc##*/}"
dpkg-source --no-copy -x "${dsc}" "${dir}/src" >>"${log}" 2>&1

# GOPATH mode, as debian/rules builds it: the tree seen as $GOPATH/src/k8s.io/kubernetes.
gopath="${dir}/src/.go"
mkdir -p "${gopath}/src/k8s.io"
ln -s "${dir}/src" "${gopath}/src/k8s.io/kubernetes"
# hack/lib/golang.sh sets GOCACHE to _output/local/go/cache inside the tree: point that at the cache dir.
mkdir -p "${dir}/go-build" "${dir}/src/_output/local/go"
ln -s "${dir}/go-build" "${dir}/src/_output/local/go/cache"
what=()
for b in "${BINARIES[@]}"; do what+=("cmd/${b}"); done
say "building ${BINARIES[*]} v${upstream} (several minutes on 2 cores; log: ${log})"
(
    cd "${gopath}/src/k8s.io/kubernetes"
    export GOPATH="${gopath}" GO111MODULE=off GOFLAGS="" GOPROXY=off CGO_ENABLED=0
    export KUBE_GIT_VERSION="v${upstream}" KUBE_GIT_TREE_STATE=clean
    minor="${upstream#*.}"
    export KUBE_GIT_MAJOR="${upstream%%.*}" KUBE_GIT_MINOR="${minor%%.*}"
    make WHAT="${what[*]}"
) >>"${log}" 2>&1

say "building pause (static)"
mkdir -p "${dir}/bin.tmp"
gcc -static -O2 -DVERSION="v${upstream}" -o "${dir}/bin.tmp/pause" "${dir}/src/build/pause/linux/pause.c" >>"${log}" 2>&1
for b in "${BINARIES[@]}"; do
    cp "${dir}/src/_output/bin/${b}" "${dir}/bin.tmp/${b}"
done
mv "${dir}/bin.tmp" "${dir}/bin"
{
    printf '# kubernetes %s (Debian source %s); sha256 of each binary\n' "v${upstream}" "${version}"
    (cd "${dir}/bin" && sha256sum -- "${BINARIES[@]}" pause)
} >"${dir}/stamp.tmp"
sync "${dir}/bin" "${dir}/stamp.tmp" 2>/dev/null || sync
mv "${dir}/stamp.tmp" "${dir}/stamp"
trap - ERR
rm -rf "${dir:?}/src"
say "done in $((SECONDS - start)) s: ${dir}/bin"
printf '%s\n' "${dir}/bin"
