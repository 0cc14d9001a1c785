# shellcheck shell=bash
# Shared helpers for the end-to-end tests (tests/e2e/e2e.sh), the
# interoperability checks (tests/e2e/interop.sh) and the comparison benchmark
# (bench/compare.sh).
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
E2E_OWN_WORK_DIR=0
E2E_EXEC_ROOT=""

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 2; }
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
    if [[ "$E2E_OWN_WORK_DIR" == 1 && -z "${KEEP_WORK:-}" ]]; then
        rm -rf "$WORK_DIR"
    elif [[ -n "${WORK_DIR:-}" ]]; then
        log "work dir kept: $WORK_DIR"
    fi
    exit "$rc"
}

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
    local want=(docker.io skopeo debootstrap docker-registry curl jq) missing=() p
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

# wait_http URL PID SECONDS: wait until URL answers any HTTP status; fail early
# if PID died.
wait_http() {
    local url="$1" pid="$2" secs="${3:-30}" i code
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null)"
        [[ "$code" != 000 && -n "$code" ]] && return 0
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- dockerd

# start_dockerd: an own Docker engine (vfs storage, no bridge, no iptables)
# with data root, exec root and socket of its own. Exports DOCKER_HOST.
start_dockerd() {
    local d="$WORK_DIR/docker" i
    mkdir -p "$d/root" "$d/config"
    # Unix socket paths are limited to 108 bytes; keep containerd's short.
    E2E_EXEC_ROOT="$(mktemp -d /tmp/bre.XXXXXX)"
    dockerd --storage-driver=vfs --iptables=false --ip6tables=false --bridge=none \
        --data-root="$d/root" --exec-root="$E2E_EXEC_ROOT" \
        --host="unix://$d/docker.sock" --pidfile="$d/docker.pid" \
        >"$LOG_DIR/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    E2E_PIDS+=("$DOCKERD_PID")
    export DOCKER_HOST="unix://$d/docker.sock"
    export DOCKER_CONFIG="$d/config"
    for ((i = 0; i < 600; i++)); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        docker version >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    show_log "$LOG_DIR/dockerd.log"
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
remove_local_images() {
    local ids
    ids="$(docker images -q | sort -u)"
    [[ -z "$ids" ]] && return 0
    # shellcheck disable=SC2086
    docker rmi -f $ids >>"$LOG_DIR/docker-rmi.log" 2>&1
}

# ---------------------------------------------------------------- registries

# start_blockreg DATA_DIR LOG [GUEST [SERVE_ARGS...]]: blockreg serve on a
# free loopback port; an empty GUEST serves the embedded guest, SERVE_ARGS are
# passed on (e.g. --no-delete). Sets BR_PID, BR_PORT, BR_URL, BR_HOST
# (host:port as docker names it).
start_blockreg() {
    local data="$1" logf="$2" guest="${3:-}" args
    shift $(($# < 3 ? $# : 3))
    [[ -x "$BLOCKREG" ]] || { log "no blockreg binary at $BLOCKREG"; return 1; }
    mkdir -p "$data"
    BR_PORT="$(free_port)"
    args=(serve --addr "127.0.0.1:$BR_PORT" --data "$data")
    [[ -n "$guest" ]] && args+=(--guest "$guest")
    args+=("$@")
    "$BLOCKREG" "${args[@]}" >"$logf" 2>&1 &
    BR_PID=$!
    E2E_PIDS+=("$BR_PID")
    BR_HOST="127.0.0.1:$BR_PORT"
    BR_URL="http://$BR_HOST"
    wait_http "$BR_URL/v2/" "$BR_PID" 60 || { show_log "$logf"; return 1; }
}

# start_registry2 ROOT_DIR LOG: CNCF distribution 2.8 (registry:2) with
# filesystem storage under ROOT_DIR. Sets R2_PID, R2_PORT, R2_URL, R2_HOST.
start_registry2() {
    local root="$1" logf="$2" conf
    mkdir -p "$root/storage"
    R2_PORT="$(free_port)"
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
    docker-registry serve "$conf" >"$logf" 2>&1 &
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
