#!/usr/bin/env bash
# Local single-host Ceph cluster (one mon, one OSD, one RADOS Gateway) on loopback,
# for blockreg's future S3 storage backend: bench/ceph/README.md.
#
#   cluster.sh install          apt-get install the Debian 12 ceph packages when missing
#   cluster.sh up DIR           mon + OSD + radosgw, S3 user, bucket; writes DIR/env
#   cluster.sh status DIR       ceph -s, pools, daemons (PID, RSS), S3 check
#   cluster.sh down DIR         stop the daemons started by `up` (recorded PIDs), wait
#   cluster.sh ceph DIR ARGS... run `ceph` against the cluster in DIR
#   cluster.sh admin DIR ARGS.. run `radosgw-admin` against the cluster in DIR
#
# Everything (ceph.conf, keyring, mon/osd data, logs, admin sockets, PID files) lives
# under DIR; nothing in /etc/ceph or /var/lib/ceph is read or written, so several
# clusters can run side by side. Daemons run as the calling user.
#
# Environment: BUCKET (default blockreg), CEPH_OSD_BACKEND (memstore|bluestore,
# default memstore), CEPH_OSD_SIZE (memstore capacity / bluestore block file size,
# default 4G), CEPH_REGION (default us-east-1: RGW accepts any region in the SigV4
# scope), CEPH_RGW_THREADS (default 64), CEPH_DEBUG (debug level for mon/osd/rgw
# logs, default 0/1 i.e. quiet file log), CEPH_RGW_GC_MIN_WAIT (rgw_gc_obj_min_wait
# seconds, default Ceph's 7200).
set -euo pipefail

BUCKET="${BUCKET:-blockreg}"
CEPH_OSD_BACKEND="${CEPH_OSD_BACKEND:-memstore}"
CEPH_OSD_SIZE="${CEPH_OSD_SIZE:-4G}"
CEPH_REGION="${CEPH_REGION:-us-east-1}"
CEPH_RGW_THREADS="${CEPH_RGW_THREADS:-64}"
CEPH_DEBUG="${CEPH_DEBUG:-0/1}"
CEPH_RGW_GC_MIN_WAIT="${CEPH_RGW_GC_MIN_WAIT:-7200}"
# Minimal package set (--no-install-recommends): no mgr, mds, ceph-fuse, dashboard.
PACKAGES=(ceph-common ceph-mon ceph-osd radosgw)
MON_ID=a
OSD_ID=0
RGW_NAME=client.rgw.gw
S3_USER=blockreg
# order matters for `down`: gateway first (it is a client of the others), then the
# OSD (it asks the mon to mark it down on SIGTERM), the mon last.
DAEMONS=(rgw osd mon)

log() { printf '[ceph %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# ---------------------------------------------------------------- install

cmd_install() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]} (--no-install-recommends, ~60 packages, ~15 s)"
        apt-get update -qq
        # The packages' postinst only enables systemd units; with no systemd running
        # nothing is started, and `up` never uses the units anyway.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    need_bins
    log "ceph: $(ceph-mon --version | awk '{print $3, $5}')"
}

need_bins() {
    local b
    for b in ceph ceph-mon ceph-osd radosgw radosgw-admin ceph-authtool monmaptool; do
        command -v "$b" >/dev/null || die "$b not found: run '$0 install' first"
    done
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

# ceph / radosgw-admin against cluster DIR (client.admin). --connect-timeout keeps a
# call against a dead mon from hanging for the default 5 minutes.
c() {
    local dir=$1
    shift
    timeout 60 ceph -c "$dir/ceph.conf" --connect-timeout 15 "$@"
}
rgwadmin() {
    local dir=$1
    shift
    timeout 120 radosgw-admin -c "$dir/ceph.conf" "$@"
}

daemon_pid() {
    local f="$1/run/$2.pid.started"
    [[ -f "$f" ]] && cat "$f"
}

is_running() {
    local pid
    pid="$(daemon_pid "$1" "$2")" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

rss_mib() { # PID -> resident set size in MiB
    awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo '?'
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
        sleep 0.3
    done
}

# launch DIR KIND LOGFILE CMD...: start a daemon in the foreground (-f) in its own
# session and record its PID in DIR/run/KIND.pid.started (our record: `down` signals
# exactly that PID; Ceph's own pid_file is written too, but only once it is running).
launch() {
    local dir=$1 kind=$2 logf=$3
    shift 3
    if is_running "$dir" "$kind"; then
        die "$kind already running (pid $(daemon_pid "$dir" "$kind"))"
    fi
    # setsid: own session, so the daemons survive the caller's process group; a
    # non-leader child calls setsid(2) and execs, so $! is the daemon's own PID.
    setsid "$@" </dev/null >>"$logf" 2>&1 &
    echo $! >"$dir/run/$kind.pid.started"
    log "$kind started, pid $!"
}

alive_or_fatal() { # DIR KIND LOG: sets FATAL when the daemon died
    if ! is_running "$1" "$2"; then
        FATAL="$2 exited: $(tail -3 "$3" | tr '\n' ' ')"
        return 1
    fi
}

mon_ready() {
    alive_or_fatal "$1" mon "$1/log/mon.$MON_ID.out" || return 1
    c "$1" mon stat
}

osd_up() {
    alive_or_fatal "$1" osd "$1/log/osd.$OSD_ID.out" || return 1
    local j
    j="$(c "$1" osd stat -f json)" || return 1
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(0 if d["num_up_osds"]==1 and d["num_in_osds"]==1 else 1)' "$j"
}

# anonymous GET / answers (RGW listens only once its store is initialised)
rgw_http_ok() {
    alive_or_fatal "$1" rgw "$1/log/rgw.out" || return 1
    curl -sf -o /dev/null --max-time 5 "$2/"
}

EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# signed S3 request; prints the HTTP status: s3req METHOD URL REGION KEY SECRET
s3req() {
    curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -X "$1" \
        --aws-sigv4 "aws:amz:$3:s3" --user "$4:$5" \
        -H "x-amz-content-sha256: $EMPTY_SHA" "$2" 2>/dev/null || true
}

s3_list_ok() { # ENDPOINT REGION BUCKET KEY SECRET
    [[ "$(s3req GET "$1/$3?list-type=2&max-keys=1" "$2" "$4" "$5")" == 200 ]]
}

# ---------------------------------------------------------------- up

write_conf() {
    local dir=$1 fsid=$2 mon2=$3 mon1=$4 rgw=$5
    local osd_conf
    case "$CEPH_OSD_BACKEND" in
    memstore)
        # RAM-backed object store (part of ceph-osd, "for testing"): no mkfs cost,
        # no disk I/O. Capacity is a cap, not a preallocation: RSS grows with data.
        osd_conf="osd_objectstore = memstore
memstore_device_bytes = $(numfmt --from=iec "$CEPH_OSD_SIZE")"
        ;;
    bluestore)
        # BlueStore on a sparse file, created by mkfs as osd_data/block (no
        # bluestore_block_path: mkfs makes osd_data/block a symlink to that path, and
        # pointing it at osd_data/block itself gives ELOOP). Autotuning is off and the
        # cache small: the default osd_memory_target is 4 GiB.
        osd_conf="osd_objectstore = bluestore
bluestore_block_size = $(numfmt --from=iec "$CEPH_OSD_SIZE")
bluestore_block_create = true
bluestore_block_db_create = false
bluestore_block_wal_create = false
bluestore_fsck_on_mount = false
bluestore_cache_autotune = false
bluestore_cache_size = 134217728
osd_memory_target = 939524096"
        ;;
    *) die "CEPH_OSD_BACKEND must be memstore or bluestore" ;;
    esac
    local d=$CEPH_DEBUG
    (
        umask 077
        cat >"$dir/ceph.conf" <<EOF
# generated by bench/ceph/cluster.sh: one mon, one OSD ($CEPH_OSD_BACKEND), one radosgw
[global]
fsid = $fsid
mon_host = [v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
ms_bind_ipv4 = true
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false

# every path under DIR: nothing in /etc/ceph, /var/lib/ceph, /var/run/ceph, /var/log/ceph
keyring = $dir/keyring
run_dir = $dir/run
admin_socket = $dir/run/\$name.asok
pid_file = $dir/run/\$name.pid
log_file = $dir/log/\$name.log
crash_dir = $dir/crash
mon_data = $dir/mon.\$id
osd_data = $dir/osd.\$id
rgw_data = $dir/rgw.\$id
mgr_data = $dir/mgr.\$id
mon_cluster_log_file = $dir/log/cluster.log
mon_cluster_log_file_level = info

# single copy, tiny pools: one OSD, no replication, no mgr (so no pg autoscaler)
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_warn_on_insecure_global_id_reclaim_allowed = false
# the shared disk may be fuller than Ceph's 30 % warning; 5 % would stop the mon
mon_data_avail_warn = 2
mon_data_avail_crit = 1
# Paxos batches map changes for 1 s by default; RGW creates ~7 pools at start
paxos_propose_interval = 0.05

# quiet: file logs at level 0, in-memory ring at 1, short ring
log_to_stderr = false
err_to_stderr = true
log_max_recent = 500
debug_ms = 0/0
debug_mon = $d
debug_paxos = $d
debug_auth = $d
debug_monc = $d
debug_osd = $d
debug_bluestore = $d
debug_bluefs = $d
debug_rocksdb = $d
debug_filestore = $d
debug_memstore = $d
debug_rgw = $d
debug_rados = $d
debug_objecter = $d

[client]
# CLI tools (ceph, radosgw-admin) run concurrently: one admin socket per process
admin_socket = $dir/run/\$name.\$pid.asok

[osd]
$osd_conf
osd_crush_update_on_start = true
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1

[$RGW_NAME]
rgw_frontends = beast endpoint=127.0.0.1:$rgw
rgw_thread_pool_size = $CEPH_RGW_THREADS
# path-style only (no rgw_dns_name); a single zone, so no multisite sync thread
rgw_dns_name =
rgw_run_sync_thread = false
rgw_enable_usage_log = false
rgw_gc_obj_min_wait = $CEPH_RGW_GC_MIN_WAIT
log_file = $dir/log/rgw.log
EOF
    )
}

cmd_up() {
    local dir=${1:?usage: up DIR}
    need_bins
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    local k
    for k in "${DAEMONS[@]}"; do
        if is_running "$dir" "$k"; then die "$dir already has a running $k: '$0 down $dir' first"; fi
    done
    if [[ -e "$dir/ceph.conf" ]]; then
        log "removing old state in $dir"
        rm -rf "$dir"/{ceph.conf,keyring,monmap,env,run,log,crash,mon.*,osd.*,rgw.*,status.txt,smoke}
    fi
    mkdir -p "$dir"/{run,log,crash}
    local t0ns
    t0ns=$(date +%s%N)
    # on any failure below, stop the daemons this call started
    UP_DIR=$dir
    trap 'log "up failed: stopping its daemons"; cmd_down "$UP_DIR" || true' EXIT

    local mon2 mon1 rgw
    read -r mon2 mon1 rgw <<<"$(free_ports 3)"
    local fsid osd_uuid
    fsid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    osd_uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    write_conf "$dir" "$fsid" "$mon2" "$mon1" "$rgw"
    printf 'mon_v2=%s\nmon_v1=%s\nrgw=%s\n' "$mon2" "$mon1" "$rgw" >"$dir/ports"

    # One keyring for every entity. `ceph-mon --mkfs` imports all of its keys (with
    # their caps) into the auth database, so no `ceph auth add` round trips later.
    local kr=$dir/keyring
    (
        umask 077
        ceph-authtool --create-keyring "$kr" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    )
    ceph-authtool "$kr" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool "$kr" --gen-key -n "osd.$OSD_ID" \
        --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
    # RGW creates its pools itself: it needs mon rw
    ceph-authtool "$kr" --gen-key -n "$RGW_NAME" \
        --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null

    # mon
    monmaptool --create --fsid "$fsid" \
        --addv "$MON_ID" "[v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]" "$dir/monmap" >/dev/null
    ceph-mon -c "$dir/ceph.conf" -i "$MON_ID" --mkfs --monmap "$dir/monmap" --keyring "$kr" \
        >"$dir/log/mon.mkfs.out" 2>&1 || die "ceph-mon --mkfs: $(tail -3 "$dir/log/mon.mkfs.out")"
    launch "$dir" mon "$dir/log/mon.$MON_ID.out" ceph-mon -f -c "$dir/ceph.conf" -i "$MON_ID"
    retry "mon answers" 60 mon_ready "$dir"

    # OSD: register id + uuid in the OSD map, mkfs, start; it adds itself to the
    # CRUSH map (host = this hostname, root default) on start.
    local got
    got="$(c "$dir" osd new "$osd_uuid" "$OSD_ID")"
    [[ "$got" == "$OSD_ID" ]] || die "ceph osd new returned '$got'"
    mkdir -p "$dir/osd.$OSD_ID"
    ceph-osd -c "$dir/ceph.conf" -i "$OSD_ID" --mkfs --osd-uuid "$osd_uuid" \
        >"$dir/log/osd.mkfs.out" 2>&1 || die "ceph-osd --mkfs: $(tail -3 "$dir/log/osd.mkfs.out")"
    launch "$dir" osd "$dir/log/osd.$OSD_ID.out" ceph-osd -f -c "$dir/ceph.conf" -i "$OSD_ID"
    retry "osd.$OSD_ID up and in" 120 osd_up "$dir"

    # RGW: on first start it creates the realm-less default zone/zonegroup and its
    # pools, and waits for their PGs; it listens only after that.
    local ep="http://127.0.0.1:$rgw"
    launch "$dir" rgw "$dir/log/rgw.out" radosgw -f -c "$dir/ceph.conf" -n "$RGW_NAME"
    retry "radosgw answers on $ep" 180 rgw_http_ok "$dir" "$ep"

    # S3 user with our own key pair (20-char access key, 40-char secret like AWS)
    local key_id key_secret
    key_id="$(python3 -c 'import secrets,string; a=string.ascii_uppercase+string.digits; print("".join(secrets.choice(a) for _ in range(20)))')"
    key_secret="$(python3 -c 'import secrets,string; a=string.ascii_letters+string.digits; print("".join(secrets.choice(a) for _ in range(40)))')"
    rgwadmin "$dir" user create --uid="$S3_USER" --display-name="blockreg bench" \
        --access-key="$key_id" --secret-key="$key_secret" >"$dir/log/user-create.json" 2>"$dir/log/user-create.err" ||
        die "radosgw-admin user create: $(tail -3 "$dir/log/user-create.err")"
    chmod 600 "$dir/log/user-create.json"

    # bucket, through S3 itself (PUT /bucket); 200, or 409 if it already exists
    local code
    code="$(s3req PUT "$ep/$BUCKET" "$CEPH_REGION" "$key_id" "$key_secret")"
    [[ "$code" == 200 ]] || die "CreateBucket $BUCKET: HTTP $code"
    (
        umask 077
        cat >"$dir/env" <<EOF
S3_ENDPOINT=$ep
S3_ENDPOINTS="$ep"
S3_REGION=$CEPH_REGION
S3_BUCKET=$BUCKET
S3_ACCESS_KEY=$key_id
S3_SECRET_KEY=$key_secret
CEPH_CONF=$dir/ceph.conf
CEPH_FSID=$fsid
CEPH_MON_HOST="[v2:127.0.0.1:$mon2,v1:127.0.0.1:$mon1]"
CEPH_OSD_BACKEND=$CEPH_OSD_BACKEND
CEPH_RGW_USER=$S3_USER
CEPH_RGW_GC_MIN_WAIT=$CEPH_RGW_GC_MIN_WAIT
EOF
    )
    retry "bucket listable" 60 s3_list_ok "$ep" "$CEPH_REGION" "$BUCKET" "$key_id" "$key_secret"
    local t1ns
    t1ns=$(date +%s%N)
    printf 'up_seconds=%s\n' "$(python3 -c "print(round(($t1ns-$t0ns)/1e9, 2))")" >>"$dir/env"
    c "$dir" -s >"$dir/status.txt" 2>&1 || true
    trap - EXIT
    log "cluster up in $(grep ^up_seconds "$dir/env" | cut -d= -f2) s: $CEPH_OSD_BACKEND OSD, bucket $BUCKET, S3 $ep (region $CEPH_REGION)"
    log "RSS MiB: $(daemon_rss "$dir")"
    log "env: $dir/env"
}

daemon_rss() {
    local k pid out=()
    for k in mon osd rgw; do
        if pid="$(daemon_pid "$1" "$k")" && kill -0 "$pid" 2>/dev/null; then
            out+=("$k=$(rss_mib "$pid")")
        fi
    done
    echo "${out[*]}"
}

# ---------------------------------------------------------------- others

cmd_status() {
    local dir=${1:?usage: status DIR}
    [[ -f "$dir/ceph.conf" ]] || die "no cluster in $dir"
    dir="$(cd "$dir" && pwd)"
    local k pid
    for k in mon osd rgw; do
        if pid="$(daemon_pid "$dir" "$k")" && kill -0 "$pid" 2>/dev/null; then
            echo "$k: pid $pid, RSS $(rss_mib "$pid") MiB"
        else
            echo "$k: not running"
        fi
    done
    if is_running "$dir" mon; then
        c "$dir" -s || true
        c "$dir" osd pool ls detail || true
        # no mgr, so `ceph df` / `rados df` / the data section of `ceph -s` are empty:
        # ask RGW's own accounting instead
        rgwadmin "$dir" bucket stats --bucket "$BUCKET" 2>/dev/null | python3 -c 'import json,sys
d = json.load(sys.stdin)
u = d.get("usage", {}).get("rgw.main", {})
print("bucket %s: %d objects, %d bytes (RGW bucket stats)" % (d["bucket"], u.get("num_objects", 0), u.get("size", 0)))' || true
        echo "RGW GC queue (deleted tails not yet removed): $(rgwadmin "$dir" gc list --include-all 2>/dev/null | grep -c '"tag"' || true) entries"
    fi
    if [[ -f "$dir/env" ]]; then
        # shellcheck disable=SC1091
        (
            . "$dir/env"
            echo "S3 $S3_ENDPOINT ListObjectsV2 $S3_BUCKET: HTTP $(s3req GET "$S3_ENDPOINT/$S3_BUCKET?list-type=2&max-keys=1" "$S3_REGION" "$S3_ACCESS_KEY" "$S3_SECRET_KEY")"
        )
    fi
}

# SIGTERM to daemon KIND (no wait); returns 1 if it was not running
signal_one() {
    local dir=$1 k=$2 pid
    pid="$(daemon_pid "$dir" "$k")" || return 1
    if ! kill -0 "$pid" 2>/dev/null; then
        log "$k (pid $pid) not running"
        rm -f "$dir/run/$k.pid.started"
        return 1
    fi
    kill -TERM "$pid"
}

# wait (30 s, then SIGKILL) for daemon KIND to exit after signal_one
wait_one() {
    local dir=$1 k=$2 pid i
    pid="$(daemon_pid "$dir" "$k")" || return 0
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$k (pid $pid) still alive after 30 s, SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$dir/run/$k.pid.started"
    log "$k (pid $pid) stopped"
}

cmd_down() {
    local dir=${1:?usage: down DIR} k
    [[ -f "$dir/ceph.conf" ]] || die "no cluster in $dir"
    # one after the other, in DAEMONS order: the OSD's clean shutdown needs the mon
    for k in "${DAEMONS[@]}"; do
        if signal_one "$dir" "$k"; then wait_one "$dir" "$k"; fi
    done
}

cmd_ceph() {
    local dir=${1:?usage: ceph DIR ARGS...}
    shift
    c "$dir" "$@"
}

cmd_admin() {
    local dir=${1:?usage: admin DIR ARGS...}
    shift
    rgwadmin "$dir" "$@"
}

main() {
    local cmd=${1:-}
    [[ -n "$cmd" ]] || usage
    shift
    case "$cmd" in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    status) cmd_status "$@" ;;
    down) cmd_down "$@" ;;
    ceph) cmd_ceph "$@" ;;
    admin) cmd_admin "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"
