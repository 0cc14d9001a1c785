#!/usr/bin/env bash
# Local Garage (S3-compatible object store) cluster on loopback, for blockreg's
# future S3 storage backend: bench/garage/README.md.
#
#   cluster.sh install                 build/locate the garage binary
#   cluster.sh up DIR [NODES=3]        start NODES nodes, layout, bucket, key; writes DIR/env
#   cluster.sh status DIR              garage status + health (through node 1)
#   cluster.sh stop-node DIR N         stop node N (SIGTERM by recorded PID)
#   cluster.sh start-node DIR N        start node N again and wait until it is back
#   cluster.sh down DIR                stop every node, wait for the processes to exit
#   cluster.sh garage DIR N ARGS...    run a garage CLI command against node N
#
# Environment: GARAGE_BIN (default ~/.cache/blockreg-garage/bin/garage),
# BUCKET (default blockreg), GARAGE_DB_ENGINE (lmdb|sqlite, default lmdb),
# GARAGE_REGION (default garage), GARAGE_CAPACITY (default 1G per node),
# GARAGE_LOG (RUST_LOG for the servers, default garage=info).
set -euo pipefail

GARAGE_VERSION=2.5.0
GARAGE_ROOT="${HOME}/.cache/blockreg-garage"
GARAGE_BIN="${GARAGE_BIN:-${GARAGE_ROOT}/bin/garage}"
BUCKET="${BUCKET:-blockreg}"
GARAGE_DB_ENGINE="${GARAGE_DB_ENGINE:-lmdb}"
GARAGE_REGION="${GARAGE_REGION:-garage}"
GARAGE_CAPACITY="${GARAGE_CAPACITY:-1G}"
GARAGE_LOG="${GARAGE_LOG:-garage=info}"

log() { printf '[garage %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- install

cmd_install() {
    if [[ -x "$GARAGE_BIN" ]]; then
        log "garage binary: $GARAGE_BIN ($("$GARAGE_BIN" --version 2>/dev/null || echo '?'))"
        return 0
    fi
    # Everything C is vendored (bundled-libs: libsodium, zstd, lmdb, sqlite), so a
    # C toolchain + make is all the build needs; pkg-config is only probed for.
    local missing=()
    for p in build-essential pkg-config; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing Debian build deps: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
    [[ "$GARAGE_BIN" == "$GARAGE_ROOT/bin/garage" ]] ||
        die "GARAGE_BIN=$GARAGE_BIN does not exist (unset it to build into $GARAGE_ROOT)"
    command -v cargo >/dev/null || die "cargo not found (rustup toolchain needed)"
    mkdir -p "$GARAGE_ROOT"
    log "building garage $GARAGE_VERSION (~7 min on 2 idle cores), log: $GARAGE_ROOT/build.log"
    # run from $GARAGE_ROOT so no project rust-toolchain.toml picks the toolchain
    (
        cd "$GARAGE_ROOT"
        cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
            --features bundled-libs,lmdb,sqlite \
            --root "$GARAGE_ROOT" --target-dir "$GARAGE_ROOT/target"
    ) >"$GARAGE_ROOT/build.log" 2>&1 || {
        tail -30 "$GARAGE_ROOT/build.log" >&2
        die "cargo install garage failed (see $GARAGE_ROOT/build.log)"
    }
    [[ -x "$GARAGE_BIN" ]] || die "build finished but $GARAGE_BIN is missing"
    log "garage binary: $GARAGE_BIN ($("$GARAGE_BIN" --version))"
}

need_bin() {
    [[ -x "$GARAGE_BIN" ]] || die "no garage binary at $GARAGE_BIN: run '$0 install' first"
}

# ---------------------------------------------------------------- helpers

# N distinct free TCP ports on 127.0.0.1 (all bound at once, then released).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# garage CLI against node N of cluster DIR
g() {
    local dir=$1 n=$2
    shift 2
    "$GARAGE_BIN" -c "$dir/node$n/garage.toml" "$@"
}

node_count() {
    local dir=$1 n=0
    while [[ -f "$dir/node$((n + 1))/garage.toml" ]]; do n=$((n + 1)); done
    echo "$n"
}

node_pid() {
    local f="$1/node$2/pid"
    [[ -f "$f" ]] && cat "$f"
}

is_running() {
    local pid
    pid="$(node_pid "$1" "$2")" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

# wait (up to $2 s) for a command to succeed; a check may set FATAL to give up at once
FATAL=""
retry() {
    local what=$1 secs=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [[ -z "$FATAL" ]] || die "$FATAL"
        ((SECONDS < deadline)) || die "timed out after ${secs}s waiting for: $what"
        sleep 0.5
    done
}

# JSON field from a `garage json-api` answer on stdin: jfield EXPR (python expression on `d`)
jfield() {
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

launch() {
    local dir=$1 n=$2
    local nd="$dir/node$n"
    if is_running "$dir" "$n"; then
        die "node $n already running (pid $(node_pid "$dir" "$n"))"
    fi
    # setsid: own session, so the servers survive the caller's process group;
    # a non-leader child calls setsid(2) and execs, so $! is garage's own PID.
    NO_COLOR=1 RUST_LOG="$GARAGE_LOG" setsid "$GARAGE_BIN" -c "$nd/garage.toml" server \
        </dev/null >>"$nd/garage.log" 2>&1 &
    echo $! >"$nd/pid"
    log "node $n started, pid $!"
}

node_responds() {
    local dir=$1 n=$2
    if ! is_running "$dir" "$n"; then
        FATAL="node $n exited: $(tail -1 "$dir/node$n/garage.log")"
        return 1
    fi
    # `node id` reads the key file offline; `status` needs the node's RPC
    g "$dir" "$n" status
}

# all N storage nodes up and every partition fully replicated, as seen by node $2
cluster_healthy() {
    local dir=$1 n=$2 want=$3 h
    h="$(g "$dir" "$n" json-api GetClusterHealth)" || return 1
    [[ "$(jfield 'd["status"]' <<<"$h")" == healthy ]] || return 1
    [[ "$(jfield 'd["storageNodesUp"]' <<<"$h")" == "$want" ]] || return 1
    [[ "$(jfield 'd["partitionsAllOk"] == d["partitions"]' <<<"$h")" == True ]]
}

# node $2 sees $3 nodes up
all_up() {
    local up
    up="$(g "$1" "$2" json-api GetClusterStatus | jfield 'sum(n["isUp"] for n in d["nodes"])')" || return 1
    [[ "$up" == "$3" ]]
}

# ListObjectsV2 on the bucket answers 200: s3_list_ok ENDPOINT REGION BUCKET KEY SECRET
s3_list_ok() {
    curl -sSf -o /dev/null --aws-sigv4 "aws:amz:$2:s3" --user "$4:$5" \
        -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" \
        "$1/$3?list-type=2&max-keys=1"
}

# ---------------------------------------------------------------- up

cmd_up() {
    local dir=${1:?usage: up DIR [NODES]} nodes=${2:-3}
    need_bin
    [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive integer"
    local rf=3
    ((nodes >= 3)) || rf=$nodes
    ((nodes != 2)) || log "warning: 2 nodes -> replication_factor 2 (quorum 2: no fault tolerance)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local i
    for ((i = 1; i <= $(node_count "$dir"); i++)); do
        if is_running "$dir" "$i"; then die "$dir already has a running node $i: '$0 down $dir' first"; fi
    done
    if [[ -e "$dir/node1" ]]; then
        log "removing old state in $dir"
        rm -rf "$dir"/node* "$dir/env"
    fi
    local t0=$SECONDS t0ns
    t0ns=$(date +%s%N)
    # on any failure below, stop the nodes this call started
    UP_DIR=$dir
    trap 'log "up failed: stopping its nodes"; cmd_down "$UP_DIR" || true' EXIT

    local secret admin_token
    secret="$(openssl rand -hex 32)"
    admin_token="$(openssl rand -hex 32)"
    local ports
    read -r -a ports <<<"$(free_ports $((nodes * 3)))"

    local s3_endpoints=()
    for ((i = 1; i <= nodes; i++)); do
        local nd="$dir/node$i"
        local rpc=${ports[$(((i - 1) * 3))]} s3=${ports[$(((i - 1) * 3 + 1))]} adm=${ports[$(((i - 1) * 3 + 2))]}
        mkdir -p "$nd/meta" "$nd/data"
        (
            umask 077
            cat >"$nd/garage.toml" <<EOF
# generated by bench/garage/cluster.sh: node $i of $nodes
metadata_dir = "$nd/meta"
data_dir = "$nd/data"
db_engine = "$GARAGE_DB_ENGINE"

replication_factor = $rf
consistency_mode = "consistent"

rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "$GARAGE_REGION"
api_bind_addr = "127.0.0.1:$s3"

[admin]
api_bind_addr = "127.0.0.1:$adm"
admin_token = "$admin_token"
EOF
        )
        printf 'rpc=%s\ns3=%s\nadmin=%s\n' "$rpc" "$s3" "$adm" >"$nd/ports"
        s3_endpoints+=("http://127.0.0.1:$s3")
        launch "$dir" "$i"
    done

    local ids=()
    for ((i = 1; i <= nodes; i++)); do
        retry "node $i RPC" 60 node_responds "$dir" "$i"
        ids+=("$(g "$dir" "$i" node id -q 2>/dev/null)")
    done
    log "node ids: ${ids[*]%%@*}"

    for ((i = 2; i <= nodes; i++)); do
        retry "node 1 connects to node $i" 30 g "$dir" 1 node connect "${ids[$((i - 1))]}"
    done
    retry "all $nodes nodes connected" 60 all_up "$dir" 1 "$nodes"

    for ((i = 1; i <= nodes; i++)); do
        g "$dir" 1 layout assign -t "node$i" -z dc1 -c "$GARAGE_CAPACITY" "${ids[$((i - 1))]%%@*}" >/dev/null
    done
    g "$dir" 1 layout apply --version 1 >/dev/null
    for ((i = 1; i <= nodes; i++)); do
        retry "cluster healthy (seen by node $i)" 120 cluster_healthy "$dir" "$i" "$nodes"
    done

    g "$dir" 1 bucket create "$BUCKET" >/dev/null
    local key key_id key_secret
    key="$(g "$dir" 1 json-api CreateKey "{\"name\":\"${BUCKET}-key\"}")"
    key_id="$(jfield 'd["accessKeyId"]' <<<"$key")"
    key_secret="$(jfield 'd["secretAccessKey"]' <<<"$key")"
    g "$dir" 1 bucket allow --read --write --owner "$BUCKET" --key "$key_id" >/dev/null

    (
        umask 077
        cat >"$dir/env" <<EOF
S3_ENDPOINT=${s3_endpoints[0]}
S3_ENDPOINTS="${s3_endpoints[*]}"
S3_REGION=$GARAGE_REGION
S3_BUCKET=$BUCKET
S3_ACCESS_KEY=$key_id
S3_SECRET_KEY=$key_secret
GARAGE_BIN=$GARAGE_BIN
GARAGE_NODES=$nodes
GARAGE_ADMIN_TOKEN=$admin_token
EOF
    )
    for ((i = 1; i <= nodes; i++)); do
        retry "bucket listable through node $i" 60 s3_list_ok "${s3_endpoints[$((i - 1))]}" \
            "$GARAGE_REGION" "$BUCKET" "$key_id" "$key_secret"
    done
    local t1ns
    t1ns=$(date +%s%N)
    g "$dir" 1 status >"$dir/status.txt" 2>&1 || true
    printf 'up_seconds=%s\n' "$(python3 -c "print(round(($t1ns-$t0ns)/1e9, 2))")" >>"$dir/env"
    trap - EXIT
    log "cluster up: $nodes node(s), rf=$rf, db=$GARAGE_DB_ENGINE, bucket=$BUCKET, S3 ${s3_endpoints[*]} ($((SECONDS - t0)) s)"
    log "env: $dir/env"
}

# ---------------------------------------------------------------- others

cmd_status() {
    local dir=${1:?usage: status DIR}
    need_bin
    g "$dir" 1 status
    g "$dir" 1 health
}

# send SIGTERM to node N (no wait); returns 1 if it was not running
signal_one() {
    local dir=$1 n=$2 pid
    pid="$(node_pid "$dir" "$n")" || { log "node $n: no pid file"; return 1; }
    if ! kill -0 "$pid" 2>/dev/null; then
        log "node $n (pid $pid) not running"
        rm -f "$dir/node$n/pid"
        return 1
    fi
    kill -TERM "$pid"
}

# wait (30 s, then SIGKILL) for node N to exit after signal_one
wait_one() {
    local dir=$1 n=$2 pid
    pid="$(node_pid "$dir" "$n")" || return 0
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "node $n (pid $pid) still alive after 30 s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$dir/node$n/pid"
    log "node $n (pid $pid) stopped"
}

stop_one() {
    if signal_one "$1" "$2"; then wait_one "$1" "$2"; fi
}

cmd_stop_node() {
    local dir=${1:?usage: stop-node DIR N} n=${2:?usage: stop-node DIR N}
    [[ -f "$dir/node$n/garage.toml" ]] || die "no node $n in $dir"
    stop_one "$dir" "$n"
}

cmd_start_node() {
    local dir=${1:?usage: start-node DIR N} n=${2:?usage: start-node DIR N}
    need_bin
    [[ -f "$dir/node$n/garage.toml" ]] || die "no node $n in $dir"
    dir="$(cd "$dir" && pwd)"
    launch "$dir" "$n"
    retry "node $n RPC" 60 node_responds "$dir" "$n"
    # The restarted node dials its peers itself (peer list kept in metadata_dir), but
    # a peer marks it up only once its *own* connection is back, and that retry is on
    # a backoff (measured: ~30 s). `node connect` from each running peer skips the wait.
    local nodes id j
    nodes="$(node_count "$dir")"
    id="$(g "$dir" "$n" node id -q 2>/dev/null)"
    for ((j = 1; j <= nodes; j++)); do
        if ((j != n)) && is_running "$dir" "$j"; then
            retry "node $j reconnects to node $n" 30 g "$dir" "$j" node connect "$id"
        fi
    done
    retry "cluster healthy again (seen by node $n)" 120 cluster_healthy "$dir" "$n" "$nodes"
    retry "cluster healthy again (seen by node 1)" 120 cluster_healthy "$dir" 1 "$nodes"
    log "node $n back, cluster healthy"
}

cmd_down() {
    local dir=${1:?usage: down DIR}
    local nodes i
    nodes="$(node_count "$dir")"
    ((nodes > 0)) || die "no cluster in $dir"
    local sent=()
    for ((i = 1; i <= nodes; i++)); do
        if signal_one "$dir" "$i"; then sent+=("$i"); fi
    done
    for i in "${sent[@]}"; do
        wait_one "$dir" "$i"
    done
}

cmd_garage() {
    local dir=${1:?usage: garage DIR N ARGS...} n=${2:?usage: garage DIR N ARGS...}
    shift 2
    need_bin
    g "$dir" "$n" "$@"
}

main() {
    local cmd=${1:-}
    [[ -n "$cmd" ]] || usage
    shift
    case "$cmd" in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    status) cmd_status "$@" ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    down) cmd_down "$@" ;;
    garage) cmd_garage "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
