# shellcheck shell=bash
# Shared helpers for the end-to-end tests (tests/e2e/e2e.sh), the
# interoperability checks (tests/e2e/interop.sh) and the comparison benchmark
# (bench/compare.sh): processes (dockerd, blockreg, registry:2), the image
# corpus, and, for the two scripts of checks, counting checks and raw HTTP.
#
# Everything these helpers start (dockerd, blockreg, registry:2) runs on
# loopback only, keeps its state under WORK_DIR, is recorded by PID and is
# stopped by that PID when the sourcing script exits. Nothing is ever stopped
# by name: other dockerd or registry processes on the machine are left alone.
#
# Inputs (environment, with defaults):
#   BLOCKREG       the host binary              (target/release/blockreg)
#   GUEST_DEFAULT  default guest component      (target/guests/guest-default.wasm)
#   GUEST_ALT      alt-build guest component    (target/guests/guest-alt.wasm)
#   CACHE_DIR      survives between runs and clones (~/.cache/blockreg-e2e)
#   WORK_DIR       scratch, removed at exit when we created it (mktemp -d)
#   KEEP_WORK=1    keep WORK_DIR at exit (for debugging)

E2E_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$E2E_LIB_DIR/../.." && pwd)"

BLOCKREG="${BLOCKREG:-$REPO_ROOT/target/release/blockreg}"
GUEST_DEFAULT="${GUEST_DEFAULT:-$REPO_ROOT/target/guests/guest-default.wasm}"
GUEST_ALT="${GUEST_ALT:-$REPO_ROOT/target/guests/guest-alt.wasm}"
CACHE_DIR="${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/blockreg-e2e}"

# The Debian release the corpus is built from, and the local image names.
E2E_SUITE=bookworm
IMG_BASE="e2e/debian:$E2E_SUITE"
IMG_V1="e2e/nginx:v1"
IMG_V2="e2e/nginx:v2"
CORPUS_IMAGES=("$IMG_BASE" "$IMG_V1" "$IMG_V2")

# PIDs of the processes this script started, stopped in reverse order at exit.
E2E_PIDS=()
# Paths outside WORK_DIR to remove at exit (at_exit_remove), and directories
# to remove at exit only if they are empty then (at_exit_rmdir).
E2E_RM_AT_EXIT=()
E2E_RMDIR_AT_EXIT=()
E2E_OWN_WORK_DIR=0
E2E_EXEC_ROOT=""

# Set by checks_init: the sourcing script counts checks (see "checks").
E2E_CHECKS=0

log() { printf '%s\n' "$*" >&2; }
# die MSG: end the run; in a script of checks, as a failed setup step.
die() {
    ((E2E_CHECKS)) && setup_failed "$*"
    log "error: $*"
    exit 2
}
now() { date +%s.%N; }
# elapsed START -> seconds since START with two decimals.
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# e2e_init: create WORK_DIR and LOG_DIR and install the exit trap.
e2e_init() {
    if [[ -z "${WORK_DIR:-}" ]]; then
        WORK_DIR="$(mktemp -d /tmp/blockreg-e2e.XXXXXX)"
        E2E_OWN_WORK_DIR=1
    fi
    mkdir -p "$WORK_DIR" "$CACHE_DIR"
    WORK_DIR="$(cd "$WORK_DIR" && pwd)"
    LOG_DIR="$WORK_DIR/logs"
    mkdir -p "$LOG_DIR"
    trap e2e_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# stop_pid PID: SIGTERM, wait up to 20 s, then SIGKILL. Only for our own PIDs.
stop_pid() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 200; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    local kept=() p
    for p in "${E2E_PIDS[@]}"; do [[ "$p" == "$pid" ]] || kept+=("$p"); done
    E2E_PIDS=("${kept[@]}")
    return 0
}

# unmount_under DIR: lazily unmount every mount point below DIR (deepest first).
unmount_under() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r \
        | while read -r m; do umount -l "$m" 2>/dev/null; done
}

e2e_cleanup() {
    local rc=$? i
    for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${E2E_PIDS[i]}"
    done
    # dockerd leaves its netns mount behind in the exec root.
    if [[ -n "$E2E_EXEC_ROOT" ]]; then
        unmount_under "$E2E_EXEC_ROOT"
        rm -rf "$E2E_EXEC_ROOT"
    fi
    [[ -n "${WORK_DIR:-}" ]] && unmount_under "$WORK_DIR"
    for ((i = ${#E2E_RM_AT_EXIT[@]} - 1; i >= 0; i--)); do
        rm -rf -- "${E2E_RM_AT_EXIT[i]}"
    done
    for ((i = ${#E2E_RMDIR_AT_EXIT[@]} - 1; i >= 0; i--)); do
        rmdir -- "${E2E_RMDIR_AT_EXIT[i]}" 2>/dev/null
    done
    if [[ "$E2E_OWN_WORK_DIR" == 1 && -z "${KEEP_WORK:-}" ]]; then
        rm -rf "$WORK_DIR"
    elif [[ -n "${WORK_DIR:-}" ]]; then
        log "work dir kept: $WORK_DIR"
    fi
    exit "$rc"
}

# at_exit_remove PATH: rm -rf PATH when the script exits (files the tests
# put outside WORK_DIR, e.g. a CA under /etc/docker/certs.d).
at_exit_remove() { E2E_RM_AT_EXIT+=("$1"); }
# at_exit_rmdir DIR: rmdir DIR at exit if it is empty then (a directory the
# tests created that may have been shared meanwhile).
at_exit_rmdir() { E2E_RMDIR_AT_EXIT+=("$1"); }

# show_log FILE [LINES]: print the tail of a log, for failure reports.
show_log() {
    local f="$1" n="${2:-40}"
    [[ -f "$f" ]] || return 0
    log "---- last $n lines of $f (cut to 300 columns)"
    tail -n "$n" "$f" | cut -c1-300 >&2
    log "----"
}

# ---------------------------------------------------------------- packages

# ensure_packages: install the Debian packages the tests use, only if missing.
ensure_packages() {
    local want=(docker.io skopeo debootstrap docker-registry curl jq prometheus apache2-utils openssl python3 python3-pip)
    local missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    log "installing: ${missing[*]}"
    apt-get update -q >"${LOG_DIR:-/tmp}/apt-update.log" 2>&1 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        >"${LOG_DIR:-/tmp}/apt-install.log" 2>&1 \
        || { show_log "${LOG_DIR:-/tmp}/apt-install.log"; die "apt-get install failed"; }
}

# The Debian CLI matches the Debian daemon; /usr/local/bin may hold another.
DOCKER_BIN=/usr/bin/docker
docker() { "$DOCKER_BIN" "$@"; }

# ---------------------------------------------------------------- network

# free_port: print a TCP port that is free on 127.0.0.1 right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http URL PID SECONDS [CURL_ARGS...]: wait until URL answers any HTTP
# status; fail early if PID died.
wait_http() {
    local url="$1" pid="$2" secs="${3:-30}" i code
    shift $(($# < 3 ? $# : 3))
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null)"
        [[ "$code" != 000 && -n "$code" ]] && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- dockerd

# start_dockerd [DRIVER...]: an own Docker engine (no bridge, no iptables)
# with data root, exec root and socket of its own, using the first storage
# driver that starts (default vfs; the benchmark tries overlay2 first).
# Exports DOCKER_HOST and DOCKER_CONFIG; sets DOCKERD_PID and DOCKERD_DRIVER.
# With DOCKERD_HTTPS_PROXY set (http://127.0.0.1:PORT), the engine reaches
# HTTPS registries through that proxy (HTTPS_PROXY in its environment);
# loopback addresses and localhost stay direct (NO_PROXY; Go never proxies
# them anyway), so registries on 127.0.0.1 are unaffected.
start_dockerd() {
    local drivers=("${@:-vfs}") drv d i envs=()
    if [[ -n "${DOCKERD_HTTPS_PROXY:-}" ]]; then
        envs=("HTTPS_PROXY=$DOCKERD_HTTPS_PROXY" "https_proxy=$DOCKERD_HTTPS_PROXY"
            "NO_PROXY=127.0.0.1,localhost,::1" "no_proxy=127.0.0.1,localhost,::1")
    fi
    # Unix socket paths are limited to 108 bytes; keep containerd's short.
    [[ -n "$E2E_EXEC_ROOT" ]] || E2E_EXEC_ROOT="$(mktemp -d /tmp/bre.XXXXXX)"
    for drv in "${drivers[@]}"; do
        d="$WORK_DIR/docker-$drv"
        mkdir -p "$d/root" "$d/config" "$E2E_EXEC_ROOT/$drv"
        env "${envs[@]}" dockerd --storage-driver="$drv" --iptables=false --ip6tables=false --bridge=none \
            --data-root="$d/root" --exec-root="$E2E_EXEC_ROOT/$drv" \
            --host="unix://$d/docker.sock" --pidfile="$d/docker.pid" \
            >"$LOG_DIR/dockerd-$drv.log" 2>&1 &
        DOCKERD_PID=$!
        E2E_PIDS+=("$DOCKERD_PID")
        export DOCKER_HOST="unix://$d/docker.sock"
        export DOCKER_CONFIG="$d/config"
        for ((i = 0; i < 600; i++)); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            if docker version >/dev/null 2>&1; then
                DOCKERD_DRIVER="$drv"
                log "dockerd ($drv) on $DOCKER_HOST"
                return 0
            fi
            sleep 0.1
        done
        show_log "$LOG_DIR/dockerd-$drv.log" 10
        stop_pid "$DOCKERD_PID"
        log "dockerd with $drv did not start"
    done
    die "dockerd did not start"
}

# ---------------------------------------------------------------- corpus

# debian_mirror: the Debian mirror this machine's apt uses (first source that
# serves the suite), else deb.debian.org.
debian_mirror() {
    local f m
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f "$f" ]] || continue
        # deb822 stanzas are separated by blank lines.
        m="$(awk -v suite="$E2E_SUITE" '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; ok = 0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uris = u[1] }
                    if ($i ~ /^Suites:/) { n = split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok = 1 }
                    if ($i ~ /^Enabled:[ \t]*no/) ok = 0
                }
                if (ok && uris != "") { print uris; exit }
            }' "$f")"
        [[ -n "$m" ]] && { echo "$m"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$f" ]] || continue
        m="$(awk -v suite="$E2E_SUITE" '
            $1 == "deb" {
                i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                if ($(i + 1) == suite) { print $i; exit }
            }' "$f")"
        [[ -n "$m" ]] && { echo "$m"; return; }
    done
    echo "http://deb.debian.org/debian"
}

# ensure_rootfs: a debootstrap --variant=minbase root filesystem as a tarball
# in CACHE_DIR (built once; later runs reuse it). Sets ROOTFS_TAR.
ensure_rootfs() {
    local arch mirror dir tmp
    arch="$(dpkg --print-architecture)"
    ROOTFS_TAR="$CACHE_DIR/rootfs/debian-$E2E_SUITE-minbase-$arch.tar"
    [[ -s "$ROOTFS_TAR" ]] && return 0
    mirror="$(debian_mirror)"
    log "debootstrap $E2E_SUITE from $mirror (cached afterwards in $ROOTFS_TAR)"
    mkdir -p "$CACHE_DIR/rootfs"
    dir="$WORK_DIR/rootfs"
    rm -rf "$dir"
    debootstrap --variant=minbase "$E2E_SUITE" "$dir" "$mirror" >"$LOG_DIR/debootstrap.log" 2>&1 \
        || { show_log "$LOG_DIR/debootstrap.log"; die "debootstrap failed"; }
    # The downloaded .debs are not part of a base image.
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/debootstrap
    tmp="$(mktemp "$CACHE_DIR/rootfs/.tmp.XXXXXX")"
    tar --numeric-owner --xattrs -C "$dir" -cf "$tmp" . || die "tar of rootfs failed"
    mv "$tmp" "$ROOTFS_TAR"
    rm -rf "$dir"
}

# corpus_context DIR VERSION: the docker build context for nginx-VERSION. The
# two versions differ only in /var/www/html/index.html.
corpus_context() {
    local dir="$1" version="$2"
    mkdir -p "$dir"
    cat >"$dir/Dockerfile" <<EOF
FROM $IMG_BASE
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx \\
 && rm -rf /var/lib/apt/lists/*
EXPOSE 80
CMD ["nginx", "-g", "daemon off;"]
COPY index.html /var/www/html/index.html
EOF
    printf '<!doctype html>\n<title>blockreg e2e</title>\n<p>nginx %s</p>\n' "$version" >"$dir/index.html"
}

# corpus_cache_path: set CORPUS_TAR to where the corpus of the current rootfs
# and build recipe is cached (a docker save archive; it may not exist yet).
# Needs no dockerd, so a script that only reads the archive (skopeo's
# docker-archive: transport) can skip the engine when the cache is warm.
corpus_cache_path() {
    local key
    ensure_rootfs
    corpus_context "$WORK_DIR/ctx/v1" v1
    corpus_context "$WORK_DIR/ctx/v2" v2
    # Rebuild when the rootfs or the build recipe changes.
    [[ -s "$ROOTFS_TAR.sha256" && "$ROOTFS_TAR.sha256" -nt "$ROOTFS_TAR" ]] \
        || sha256sum "$ROOTFS_TAR" | cut -d' ' -f1 >"$ROOTFS_TAR.sha256"
    key="$( { cat "$ROOTFS_TAR.sha256"; cat "$WORK_DIR"/ctx/v*/*; } | sha256sum | cut -c1-16)"
    CORPUS_TAR="$CACHE_DIR/corpus/corpus-$key.tar"
}

# ensure_corpus: load (or build once, then cache with docker save) the three
# test images: IMG_BASE (the debootstrap rootfs), IMG_V1 and IMG_V2 (nginx on
# top of it, sharing every layer but the last). Needs a running dockerd.
ensure_corpus() {
    local tar tmp t0
    corpus_cache_path
    tar="$CORPUS_TAR"
    t0="$(now)"
    if [[ -s "$tar" ]]; then
        docker load -i "$tar" >"$LOG_DIR/docker-load.log" 2>&1 \
            || { show_log "$LOG_DIR/docker-load.log"; die "docker load failed"; }
        log "corpus loaded from cache in $(elapsed "$t0") s"
        return 0
    fi
    log "building corpus (first run; cached afterwards in $tar)"
    docker import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$IMG_BASE" >"$LOG_DIR/docker-import.log" 2>&1 \
        || { show_log "$LOG_DIR/docker-import.log"; die "docker import failed"; }
    local v
    for v in v1 v2; do
        DOCKER_BUILDKIT=0 docker build --network host -t "e2e/nginx:$v" "$WORK_DIR/ctx/$v" \
            >"$LOG_DIR/docker-build-$v.log" 2>&1 \
            || { show_log "$LOG_DIR/docker-build-$v.log"; die "docker build $v failed"; }
    done
    mkdir -p "$CACHE_DIR/corpus"
    rm -f "$CACHE_DIR"/corpus/corpus-*.tar
    tmp="$(mktemp "$CACHE_DIR/corpus/.tmp.XXXXXX")"
    docker save -o "$tmp" "${CORPUS_IMAGES[@]}" || die "docker save failed"
    mv "$tmp" "$tar"
    log "corpus built in $(elapsed "$t0") s"
}

# reload_corpus: load the cached corpus again (after remove_local_images).
reload_corpus() {
    docker load -i "$CORPUS_TAR" >>"$LOG_DIR/docker-load.log" 2>&1
}

# image_id IMAGE: docker's image ID (the config digest).
image_id() { docker image inspect -f '{{.Id}}' "$1"; }
# image_layers IMAGE: RootFS.Layers (uncompressed diff IDs), one per line.
image_layers() { docker image inspect -f '{{range .RootFS.Layers}}{{println .}}{{end}}' "$1" | sed '/^$/d'; }

# remove_local_images: remove every local image (all tags), so that a pull
# must fetch every layer from the registry again.
# Intermediate images count too: a corpus just built (first run, before it
# is cached) leaves the parents of its build steps, and an image with child
# images cannot be removed until they are, hence a few rounds.
remove_local_images() {
    local ids round
    for round in 1 2 3 4; do
        ids="$(docker images -aq | sort -u)"
        [[ -z "$ids" ]] && return 0
        # shellcheck disable=SC2086
        docker rmi -f $ids >>"$LOG_DIR/docker-rmi.log" 2>&1 || true
    done
}

# ---------------------------------------------------------------- registries

# Both registries below listen on a free loopback port, or on WANT_PORT when
# the call sets it (`WANT_PORT=N start_...`: a restart on the same port keeps
# image references valid), and append to their LOG.

# start_blockreg DATA_DIR LOG [GUEST [SERVE_ARGS...]]: blockreg serve; an
# empty GUEST serves the embedded guest, SERVE_ARGS are passed on (e.g.
# --no-delete). Sets BR_PID, BR_PORT, BR_URL, BR_HOST (host:port as docker
# names it). `BR_SCHEME=https start_blockreg ...` for a server whose config
# turns on TLS (BR_URL is then https://; readiness is checked with curl -k).
start_blockreg() {
    local data="$1" logf="$2" guest="${3:-}" args
    shift $(($# < 3 ? $# : 3))
    [[ -x "$BLOCKREG" ]] || { log "no blockreg binary at $BLOCKREG"; return 1; }
    mkdir -p "$data"
    BR_PORT="${WANT_PORT:-$(free_port)}"
    args=(serve --addr "127.0.0.1:$BR_PORT" --data "$data")
    [[ -n "$guest" ]] && args+=(--guest "$guest")
    args+=("$@")
    "$BLOCKREG" "${args[@]}" >>"$logf" 2>&1 &
    BR_PID=$!
    E2E_PIDS+=("$BR_PID")
    BR_HOST="127.0.0.1:$BR_PORT"
    BR_URL="${BR_SCHEME:-http}://$BR_HOST"
    wait_http "$BR_URL/v2/" "$BR_PID" 60 -k || { show_log "$logf"; return 1; }
}

# start_port_helper LOG PORT_FILE CMD...: start CMD (a helper that binds a free
# port on 127.0.0.1 and writes it to PORT_FILE, e.g. tests/e2e/*.py with
# --port-file) in the background, appending to LOG; wait up to 10 s for the
# port. Sets HELPER_PID and HELPER_PORT.
start_port_helper() {
    local logf="$1" pfile="$2" i
    shift 2
    rm -f "$pfile"
    "$@" >>"$logf" 2>&1 &
    HELPER_PID=$!
    E2E_PIDS+=("$HELPER_PID")
    HELPER_PORT=""
    for ((i = 0; i < 100; i++)); do
        # shellcheck disable=SC2034  # for the caller
        [[ -s "$pfile" ]] && { HELPER_PORT="$(cat "$pfile")"; return 0; }
        kill -0 "$HELPER_PID" 2>/dev/null || break
        sleep 0.1
    done
    show_log "$logf" 10
    return 1
}

# start_registry2 ROOT_DIR LOG: CNCF distribution 2.8 (registry:2) with
# filesystem storage in ROOT_DIR/storage. Sets R2_PID, R2_PORT, R2_URL,
# R2_HOST.
start_registry2() {
    local root="$1" logf="$2" conf
    mkdir -p "$root/storage"
    R2_PORT="${WANT_PORT:-$(free_port)}"
    conf="$root/config.yml"
    cat >"$conf" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $root/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$R2_PORT
EOF
    docker-registry serve "$conf" >>"$logf" 2>&1 &
    R2_PID=$!
    E2E_PIDS+=("$R2_PID")
    R2_HOST="127.0.0.1:$R2_PORT"
    R2_URL="http://$R2_HOST"
    wait_http "$R2_URL/v2/" "$R2_PID" 30 || { show_log "$logf"; return 1; }
}

# push_image LOCAL_IMAGE REGISTRY_HOST REPO:TAG LOG: tag and docker push; prints
# the manifest digest docker reports.
push_image() {
    local src="$1" host="$2" ref="$3" logf="$4"
    docker tag "$src" "$host/$ref" || return 1
    docker push "$host/$ref" >"$logf" 2>&1 || return 1
    sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$logf" | tail -n1
}

# manifest_json URL REPO REF: the manifest as stored (docker v2 or OCI types).
manifest_json() {
    curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "$1/v2/$2/manifests/$3"
}

# ---------------------------------------------------------------- checks
#
# For the scripts of checks (e2e.sh, interop.sh): each check prints
# "ok NAME", "FAIL NAME: reason" or "skip NAME: reason" and the run goes on;
# summary prints "N passed, N failed[, N skipped]", the line
# tests/run-all.sh adds up.

# checks_init TARGET: start a script of checks against TARGET (blockreg, or
# registry2 for CNCF distribution as a self-test of the script): e2e_init,
# counters at zero, the blockreg binary present, the packages installed.
checks_init() {
    TARGET="$1"
    PASSED=0 FAILED=0 SKIPPED=0
    E2E_CHECKS=1
    e2e_init
    if is_blockreg && [[ ! -x "$BLOCKREG" ]]; then
        setup_failed "no blockreg binary at $BLOCKREG (cargo build --release -p host)"
    fi
    ensure_packages
}

pass() { echo "ok $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
skip() { echo "skip $1: $2"; SKIPPED=$((SKIPPED + 1)); }
summary() {
    local line="$PASSED passed, $FAILED failed"
    ((SKIPPED)) && line+=", $SKIPPED skipped"
    echo "$line"
}
# setup_failed MSG: a setup step that cannot go on ends the run with a
# counted failure.
setup_failed() {
    fail "setup" "$1"
    summary
    exit 1
}
is_blockreg() { [[ "$TARGET" == blockreg ]]; }
sha256_file() { sha256sum "$1" | cut -d' ' -f1; }
skopeo_q() { skopeo --insecure-policy "$@" >>"$LOG_DIR/skopeo.log" 2>&1; }

# start_target DATA [GUEST]: the registry under test, with its store in
# DATA: blockreg (serving GUEST, or its embedded guest when empty) or
# registry:2. Sets REG_PID, REG_HOST, REG_URL and REG_LOG; a registry that
# does not start ends the run.
start_target() {
    local data="$1" guest="${2:-}"
    if is_blockreg; then
        REG_LOG="$LOG_DIR/blockreg.log"
        start_blockreg "$data" "$REG_LOG" "$guest" || setup_failed "blockreg did not start ($BLOCKREG)"
        REG_PID="$BR_PID" REG_HOST="$BR_HOST" REG_URL="$BR_URL"
    else
        REG_LOG="$LOG_DIR/registry2.log"
        start_registry2 "$data" "$REG_LOG" || setup_failed "docker-registry did not start"
        REG_PID="$R2_PID" REG_HOST="$R2_HOST" REG_URL="$R2_URL"
    fi
}

# http METHOD URL [curl args...]: one raw request (no path normalisation);
# sets CODE, BODY (file), HDRS (file) and LAST_REQ (for failure messages).
REQ_N=0
http() {
    local method="$1" url="$2"
    shift 2
    REQ_N=$((REQ_N + 1))
    BODY="$WORK_DIR/http/$REQ_N.body"
    HDRS="$WORK_DIR/http/$REQ_N.hdrs"
    LAST_REQ="$method ${url#"${REG_URL:-}"}"
    mkdir -p "$WORK_DIR/http"
    local m=(-X "$method")
    [[ "$method" == HEAD ]] && m=(-I)
    CODE="$(curl -s --path-as-is --max-time 60 "${m[@]}" -o "$BODY" -D "$HDRS" -w '%{http_code}' "$@" "$url")"
}
# header NAME: value of a response header of the last http call.
header() {
    awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$1")" '{
        sub(/\r$/, ""); i = index($0, ":")
        if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v) }
    } END { print v }' "$HDRS"
}
# describe_last: the last request and its response, on one line.
describe_last() {
    printf '%s -> HTTP %s, body %s' "$LAST_REQ" "$CODE" "$(head -c 300 "$BODY" 2>/dev/null | tr '\n' ' ')"
}

# upload_blob BASE_URL REPO FILE: POST a session, PUT FILE with ?digest=;
# 0 when the registry answered 201 (CODE is the last status).
upload_blob() {
    local base="$1" repo="$2" file="$3" loc sep
    http POST "$base/v2/$repo/blobs/uploads/"
    loc="$(header Location)"
    [[ "$CODE" == 202 && -n "$loc" ]] || return 1
    [[ "$loc" == /* ]] && loc="$base$loc"
    sep='?'; [[ "$loc" == *\?* ]] && sep='&'
    http PUT "$loc${sep}digest=sha256:$(sha256_file "$file")" \
        -H 'Content-Type: application/octet-stream' --data-binary "@$file"
    [[ "$CODE" == 201 ]]
}
