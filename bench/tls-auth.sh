#!/usr/bin/env bash
# What TLS and htpasswd authentication cost: docker push and pull of the bench
# corpus, in one run, side by side, from three registries on loopback:
#
#   plain      blockreg, plain HTTP, no authentication
#   tls        blockreg over TLS (rustls) with htpasswd (bcrypt) logins
#   registry2  registry:2 (CNCF distribution 2.8, Debian's docker-registry)
#              with the same config.yml and the same certificate as `tls`
#
# One command (the issue's targets: tls <= 1.05x plain, tls <= 1.0x registry2):
#
#   bash bench/tls-auth.sh
#
# Environment (all optional):
#   BENCH_RUNS=N          repeat the measurements N times, report medians (1)
#   BENCH_QUICK=1         only the Debian bases and the nginx pair
#   BENCH_TLS_KEY         the certificate's key: rsa:2048 (default), rsa:4096,
#                         ec (P-256)
#   BENCH_BCRYPT_COST     htpasswd -C (5, htpasswd's default)
#   BENCH_GUEST, BENCH_CACHE, BENCH_STORAGE_DRIVER, BLOCKREG, WORK_DIR,
#   KEEP_WORK             as for bench/compare.sh
#
# How docker reaches the registries. Docker treats localhost and 127.0.0.0/8
# as insecure (no certificate check, fallback to plain HTTP), so the TLS
# registries are named registry.blockreg.test:PORT, a name nothing resolves,
# and this script's own dockerd gets HTTPS_PROXY and HTTP_PROXY pointing at
# tests/e2e/connect_proxy.py on 127.0.0.1, which sends *.blockreg.test:PORT to
# 127.0.0.1:PORT and refuses every other host. Docker verifies the registry's
# certificate against /etc/docker/certs.d/registry.blockreg.test:PORT/ca.crt
# (installed for the two TLS ports, removed at exit) and logs in with
# `docker login` (Basic credentials on every request). The plain registry is
# named plain.blockreg.test:PORT, listed in dockerd's --insecure-registry, and
# reached through the same proxy (absolute-form HTTP requests, forwarded
# byte for byte like the tunnels), so all three pay the same proxy hop and
# tls/plain measures TLS + authentication, not the proxy. Docker's registry
# client opens a new connection per request (keep-alive off), so every
# request of the TLS runs is a TLS handshake through a fresh CONNECT; the
# proxy's connection counts are in the report.
#
# The same config.yml serves `tls` and `registry2` (http.tls.certificate/key,
# auth.htpasswd, log level, storage.delete); each server gets its own port
# and store from REGISTRY_HTTP_ADDR and
# REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY, which both read. `plain` reads
# the same file without http.tls and auth.
#
# What is measured, per run (the order of the three rotates between runs):
#   1. docker login to the two TLS registries (wall time).
#   2. docker push of every corpus image to fresh stores, image by image to
#      each registry in turn; after each push to a blockreg, its background
#      conversion is waited for (its own row, not part of the push time), so
#      no push competes with a conversion.
#   3. docker pull of every image: cold (local images removed, servers
#      restarted, blockreg's DATA/cache removed), then warm (local images
#      removed, servers kept). Every pulled image's ID, layer diff IDs and
#      repo digest must equal what was pushed.
#   4. Peak RSS of the servers (VmHWM) and the CPU time they used (user +
#      system, from /proc/PID/stat), after the pushes and after the pulls.
# Writes bench/results/tls-auth.md (tls-auth-quick.md with BENCH_QUICK=1):
# the command, the machine, and two tables: tls vs plain, tls vs registry2.
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The command as given, for the report (before the libraries set defaults).
BENCH_CMD=""
for v in BENCH_QUICK BENCH_RUNS BENCH_TLS_KEY BENCH_BCRYPT_COST BENCH_GUEST BENCH_STORAGE_DRIVER BLOCKREG; do
    [[ -n "${!v:-}" ]] && BENCH_CMD+="$v=${!v} "
done
BENCH_CMD+="bash bench/tls-auth.sh"

# shellcheck source=tests/e2e/lib.sh
source "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib-corpus.sh
source "$BENCH_DIR/lib-corpus.sh"
# shellcheck source=bench/lib-measure.sh
source "$BENCH_DIR/lib-measure.sh"

TLS_NAME=registry.blockreg.test
PLAIN_NAME=plain.blockreg.test
BENCH_USER=bench
BENCH_PASSWORD="bench-$RANDOM$RANDOM"
BENCH_TLS_KEY="${BENCH_TLS_KEY:-rsa:2048}"
BENCH_BCRYPT_COST="${BENCH_BCRYPT_COST:-5}"
NAMES=(plain tls registry2)
declare -A DESC=([plain]="blockreg, plain HTTP" [tls]="blockreg, TLS + htpasswd" [registry2]="registry:2, TLS + htpasswd")
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

bench_init

# ---------------------------------------------------------------- certs.d
# Docker reads the CA of a registry from /etc/docker/certs.d/HOST:PORT/;
# the directories made here are removed at exit (before e2e_cleanup).
CERTS_D_MADE=()
tls_cleanup() {
    local rc=$? d
    for d in "${CERTS_D_MADE[@]}"; do rm -rf "$d"; done
    (exit "$rc")
    e2e_cleanup
}
trap tls_cleanup EXIT

declare -A PORT HOST SRV_PID
for n in plain tls registry2 proxy; do
    for ((i = 0; i < 10; i++)); do
        p="$(free_port)"
        [[ " ${PORT[*]} " == *" $p "* ]] || break
    done
    PORT[$n]="$p"
done
HOST[plain]="$PLAIN_NAME:${PORT[plain]}"
HOST[tls]="$TLS_NAME:${PORT[tls]}"
HOST[registry2]="$TLS_NAME:${PORT[registry2]}"

# ---------------------------------------------------------------- TLS, htpasswd, config
# Everything here lies outside the servers' data directories (blockreg
# refuses a key or htpasswd file the guest could read).
TLS_DIR="$WORK_DIR/tls"
mkdir -p "$TLS_DIR"
case "$BENCH_TLS_KEY" in
    rsa:*) key_args=(-newkey "$BENCH_TLS_KEY") ;;
    ec) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
    *) die "BENCH_TLS_KEY: rsa:BITS or ec, not $BENCH_TLS_KEY" ;;
esac
openssl req -x509 "${key_args[@]}" -sha256 -days 7 -nodes \
    -keyout "$TLS_DIR/tls.key" -out "$TLS_DIR/tls.crt" -subj "/CN=$TLS_NAME" \
    -addext "subjectAltName=DNS:$TLS_NAME,IP:127.0.0.1" >"$LOG_DIR/openssl.log" 2>&1 \
    || { show_log "$LOG_DIR/openssl.log"; die "openssl req failed"; }
htpasswd -Bbn -C "$BENCH_BCRYPT_COST" "$BENCH_USER" "$BENCH_PASSWORD" >"$TLS_DIR/htpasswd" 2>"$LOG_DIR/htpasswd.log" \
    || { show_log "$LOG_DIR/htpasswd.log"; die "htpasswd failed"; }
for n in tls registry2; do
    d="/etc/docker/certs.d/${HOST[$n]}"
    [[ -e "$d" ]] && die "$d exists already (another run on the same port?)"
    mkdir -p "$d"
    CERTS_D_MADE+=("$d")
    cp "$TLS_DIR/tls.crt" "$d/ca.crt"
done

# tls_config [plain]: registry:2's config.yml; plain leaves out http.tls and
# auth. http.addr and the root directory are overridden per server.
tls_config() {
    cat <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK_DIR/unused-store
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
EOF
    [[ "${1:-}" == plain ]] && return 0
    cat <<EOF
  tls:
    certificate: $TLS_DIR/tls.crt
    key: $TLS_DIR/tls.key
auth:
  htpasswd:
    realm: blockreg-bench
    path: $TLS_DIR/htpasswd
EOF
}
tls_config >"$TLS_DIR/config.yml"
tls_config plain >"$TLS_DIR/plain.yml"

# ---------------------------------------------------------------- proxy, dockerd
python3 "$BENCH_DIR/../tests/e2e/connect_proxy.py" --allow "$TLS_NAME" --allow "$PLAIN_NAME" \
    --port "${PORT[proxy]}" --port-file "$WORK_DIR/proxy.port" >>"$LOG_DIR/proxy.log" 2>&1 &
PROXY_PID=$!
E2E_PIDS+=("$PROXY_PID")
for ((i = 0; i < 100; i++)); do
    [[ -s "$WORK_DIR/proxy.port" ]] && break
    kill -0 "$PROXY_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -s "$WORK_DIR/proxy.port" ]] || { show_log "$LOG_DIR/proxy.log"; die "connect_proxy.py did not start"; }

# start_dockerd (tests/e2e/lib.sh) runs `dockerd ARGS... &` and records its
# PID; this function stands in for the binary there, adding the proxy to its
# environment and the plain registry to its insecure ones. exec keeps the
# PID start_dockerd records that of dockerd itself.
dockerd() {
    exec env HTTPS_PROXY="http://127.0.0.1:${PORT[proxy]}" HTTP_PROXY="http://127.0.0.1:${PORT[proxy]}" \
        NO_PROXY=127.0.0.1,localhost dockerd --insecure-registry "${HOST[plain]}" "$@"
}
bench_corpus no-oci

# ---------------------------------------------------------------- servers

# start_reg NAME DATA: start registry NAME (plain, tls, registry2) on its
# port with its store in DATA, wait until /v2/ answers. Sets SRV_PID[NAME].
start_reg() {
    local name="$1" data="$2" logf="$LOG_DIR/$1.log" scheme=https cmd
    mkdir -p "$data"
    case "$name" in
        plain) cmd=("$BLOCKREG" serve --config "$TLS_DIR/plain.yml") scheme=http ;;
        tls) cmd=("$BLOCKREG" serve --config "$TLS_DIR/config.yml") ;;
        registry2) cmd=(docker-registry serve "$TLS_DIR/config.yml") ;;
    esac
    [[ "$name" != registry2 && -n "${BENCH_GUEST:-}" ]] && cmd+=(--guest "$BENCH_GUEST")
    REGISTRY_HTTP_ADDR="127.0.0.1:${PORT[$name]}" REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY="$data" \
        "${cmd[@]}" >>"$logf" 2>&1 &
    SRV_PID[$name]=$!
    E2E_PIDS+=("${SRV_PID[$name]}")
    CURL_CA_BUNDLE="$TLS_DIR/tls.crt" wait_http "$scheme://127.0.0.1:${PORT[$name]}/v2/" "${SRV_PID[$name]}" 60 \
        || { show_log "$logf"; die "$name did not start"; }
}
is_blockreg_name() { [[ "$1" != registry2 ]]; }
# cpu_secs PID: user + system CPU seconds PID has used (less sensitive to
# the machine's other load than wall time).
cpu_secs() {
    awk -v t="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# ---------------------------------------------------------------- runs

RUN_ORDERS=""

for ((run = 1; run <= BENCH_RUNS; run++)); do
    d="$WORK_DIR/run$run"
    k=$(((run - 1) % 3))
    order=("${NAMES[@]:k}" "${NAMES[@]:0:k}")
    RUN_ORDERS+="run $run: ${order[*]} ; "
    ((run > 1)) && { remove_local_images; reload_bench_corpus || die "docker load failed"; }
    for name in "${NAMES[@]}"; do start_reg "$name" "$d/$name"; done

    # ---- 1. docker login (TLS registries; plain needs none)
    for name in "${order[@]}"; do
        [[ "$name" == plain ]] && continue
        t0="$(now)"
        docker login --username "$BENCH_USER" --password-stdin "${HOST[$name]}" <<<"$BENCH_PASSWORD" \
            >>"$LOG_DIR/login.log" 2>&1 || { show_log "$LOG_DIR/login.log" 10; die "docker login to $name failed"; }
        record "$run" "$name" login "docker login (s)" s "$(elapsed "$t0")"
    done

    # ---- 2. docker push, blockreg's conversion waited for after each push
    log "run $run/$BENCH_RUNS: docker push of ${#BENCH_IMAGES[@]} images (${order[*]})"
    declare -A TOT=([plain]=0 [tls]=0 [registry2]=0) WAITED=([plain]=0 [tls]=0)
    for img in "${BENCH_IMAGES[@]}"; do
        for name in "${order[@]}"; do
            push_timed "$name" "${HOST[$name]}" "$img"
            record "$run" "$name" "push_docker_$img" "push docker $(short "$img") (s)" s "$PUSH_T"
            TOT[$name]="$(add "${TOT[$name]}" "$PUSH_T")"
            if is_blockreg_name "$name"; then
                w="$(wait_converted "$d/$name")"
                if [[ "$w" != n/a && "${WAITED[$name]}" != n/a ]]; then WAITED[$name]="$(add "${WAITED[$name]}" "$w")"; else WAITED[$name]=n/a; fi
            fi
        done
    done
    for name in "${NAMES[@]}"; do
        record "$run" "$name" push_docker_total "**push docker, total (s)**" s "${TOT[$name]}"
        is_blockreg_name "$name" && record "$run" "$name" wait_total "conversion wait after the pushes, total (s)" s "${WAITED[$name]}"
        record "$run" "$name" rss_push "peak RSS after the pushes (VmHWM)" bytes "$(vm_hwm "${SRV_PID[$name]}")"
        record "$run" "$name" cpu_push "server CPU time, start + pushes (+ blockreg's conversions) (s)" s "$(cpu_secs "${SRV_PID[$name]}")"
    done

    # ---- 3. pulls: cold (restarted servers, blockreg cache removed), warm
    log "run $run/$BENCH_RUNS: cold pulls"
    remove_local_images
    for name in "${NAMES[@]}"; do stop_pid "${SRV_PID[$name]}"; done
    rm -rf "$d/plain/cache" "$d/tls/cache"
    for name in "${NAMES[@]}"; do start_reg "$name" "$d/$name"; done
    for name in "${order[@]}"; do pull_all "$run" "$name" "${HOST[$name]}" cold; done
    log "run $run/$BENCH_RUNS: warm pulls"
    for name in "${order[@]}"; do pull_all "$run" "$name" "${HOST[$name]}" warm; done
    for name in "${NAMES[@]}"; do
        all="$(add "$(add "${TOT[$name]}" "${RESULT[$run,$name,pull_cold_total]}")" "${RESULT[$run,$name,pull_warm_total]}")"
        record "$run" "$name" all_total "**push + cold pull + warm pull (s)**" s "$all"
        record "$run" "$name" rss_pull "peak RSS after the pulls (VmHWM)" bytes "$(vm_hwm "${SRV_PID[$name]}")"
        record "$run" "$name" cpu_pull "server CPU time, restart + cold and warm pulls (s)" s "$(cpu_secs "${SRV_PID[$name]}")"
    done
    remove_local_images
    for name in "${NAMES[@]}"; do stop_pid "${SRV_PID[$name]}"; done
    [[ -z "${KEEP_WORK:-}" ]] && rm -rf "$d"
done

# ---------------------------------------------------------------- report

# What went through the proxy (all runs): connections per target.
kill -USR1 "$PROXY_PID" 2>/dev/null
sleep 0.5
proxy_line() { # NAME: "N connections (CONNECT), M (HTTP)"
    local host="${HOST[$1]}" c h
    c="$(grep -F "CONNECT $host:" "$LOG_DIR/proxy.log" | tail -n1 | sed -n 's/.*: \([0-9]*\) connections.*/\1/p')"
    h="$(grep -F "HTTP $host:" "$LOG_DIR/proxy.log" | tail -n1 | sed -n 's/.*: \([0-9]*\) connections.*/\1/p')"
    echo "${c:-0} tunnelled (CONNECT), ${h:-0} plain HTTP"
}
section_of() {
    case "$1" in
        login) echo 1 ;; push_docker_*) echo 2 ;; pull_cold_*) echo 3 ;; pull_warm_*) echo 4 ;;
        all_total) echo 5 ;; wait_*) echo 6 ;; cpu_*) echo 7 ;; rss_*) echo 8 ;; *) echo 9 ;;
    esac
}
table() { # NAME_A NAME_B
    echo "| metric | ${DESC[$1]} | ${DESC[$2]} | ratio |"
    echo "|---|---:|---:|---:|"
    local sec m
    for sec in 1 2 3 4 5 6 7 8 9; do
        for m in "${METRICS[@]}"; do
            [[ "$(section_of "$m")" == "$sec" ]] && table_row "$m" "$1" "$2"
        done
    done
}
# verdict A B METRIC TARGET: "ratio (target: <= T, met|not met)".
verdict() {
    local r
    r="$(ratio "$(value "$1" "$3")" "$(value "$2" "$3")")"
    awk -v r="$r" -v t="$4" 'BEGIN { if (r == "-") print "-"; else printf "%s (%s)", r, (r + 0 <= t + 0 ? "met" : "NOT met") }'
}

# per_run NAME METRIC: the value of every run, "a / b / c".
per_run() {
    local r out=""
    for ((r = 1; r <= BENCH_RUNS; r++)); do out+="${RESULT["$r,$1,$2"]:--} / "; done
    echo "${out% / }"
}

T_TOTAL="$(elapsed "$T_START")"
quick=""
[[ "${BENCH_QUICK:-}" == 1 ]] && quick=-quick
report="$WORK_DIR/tls-auth$quick.md"
{
    echo "# TLS + htpasswd authentication: blockreg plain vs TLS, and vs registry:2"
    echo
    echo "Command: \`$BENCH_CMD\`"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), ${BR_VERSION:-blockreg}${BENCH_GUEST:+, guest $BENCH_GUEST}," \
        "$(docker-registry --version 2>/dev/null | awk '{ print "registry:2 " $NF }'), docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)," \
        "$BENCH_RUNS run(s)$( ((BENCH_RUNS > 1)) && echo ', median'), ${#BENCH_IMAGES[@]} images" \
        "($([[ -n "$quick" ]] && echo 'quick: ')${BENCH_IMAGES[*]}), dockerd storage $DOCKERD_DRIVER." \
        "Corpus ready in ${T_CORPUS} s, whole run ${T_TOTAL} s."
    echo
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1))," \
        "$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)," \
        "$(. /etc/os-release && echo "$PRETTY_NAME"); load average at start $LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "TLS: a self-signed certificate ($BENCH_TLS_KEY, SHA-256) for $TLS_NAME, verified by docker from"
    echo "/etc/docker/certs.d; htpasswd bcrypt cost $BENCH_BCRYPT_COST; the same config.yml for blockreg and registry:2."
    echo "Docker reaches all three registries through tests/e2e/connect_proxy.py (one hop on loopback, the same for all);"
    echo "connections it carried: plain $(proxy_line plain); tls $(proxy_line tls); registry2 $(proxy_line registry2)."
    echo "Times are wall seconds; every pull is checked against the push (image ID, layers, repo digest)."
    echo
    echo "## Summary"
    echo
    echo "| phase | TLS+auth / plain (target ≤ 1.05) | ours / registry:2, both TLS+auth (target ≤ 1.0) |"
    echo "|---|---:|---:|"
    for m in push_docker_total pull_cold_total pull_warm_total all_total; do
        printf '| %s | %s | %s |\n' "${LABEL[$m]}" "$(verdict tls plain "$m" 1.05)" "$(verdict tls registry2 "$m" 1.0)"
    done
    if ((BENCH_RUNS > 1)); then
        echo
        echo "Per run (the medians above are of these; the order of the three in each run: ${RUN_ORDERS% ; }):"
        echo
        echo "| phase | ${DESC[plain]} | ${DESC[tls]} | ${DESC[registry2]} |"
        echo "|---|---:|---:|---:|"
        for m in push_docker_total pull_cold_total pull_warm_total all_total; do
            printf '| %s | %s | %s | %s |\n' "${LABEL[$m]}" "$(per_run plain "$m")" "$(per_run tls "$m")" "$(per_run registry2 "$m")"
        done
    fi
    echo
    echo "## blockreg: TLS + htpasswd vs plain HTTP (ratio: TLS+auth / plain)"
    echo
    table tls plain
    echo
    echo "## TLS + htpasswd: blockreg vs registry:2, same config.yml and certificate (ratio: ours / registry:2)"
    echo
    table tls registry2
} >"$report"
echo
cat "$report"
mkdir -p "$BENCH_DIR/results"
cp "$report" "$BENCH_DIR/results/tls-auth$quick.md"
log "written to $BENCH_DIR/results/tls-auth$quick.md"
