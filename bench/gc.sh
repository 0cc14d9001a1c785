#!/usr/bin/env bash
# Storage given back by garbage collection: blockreg (`blockreg gc`) and
# registry:2 (`registry garbage-collect`, CNCF distribution 2.8, Debian's
# docker-registry) side by side on the bench corpus, in one run:
#
#   bash bench/gc.sh                 # full corpus (15 images)
#   BENCH_QUICK=1 bash bench/gc.sh   # Debian bases + nginx pair only
#
# Environment (all optional): BENCH_QUICK, BENCH_GUEST, BENCH_CACHE,
# BENCH_STORAGE_DRIVER, BLOCKREG, WORK_DIR, KEEP_WORK as for compare.sh;
# BENCH_LAT_ROUNDS (5) rounds of the latency measurement (f).
#
# Steps (both registries unless said otherwise; stored bytes are `du -sb` of
# blockreg's whole data directory, its cache of recreated layers included,
# and of registry:2's storage root):
#   a. docker push of the corpus into fresh stores; blockreg's background
#      conversion waited for (`stats --json` pending = 0). Stored bytes: the
#      peak. The empty store (after start, before any push) is measured too.
#   b. DELETE of every manifest by digest through the API; one collection:
#      `blockreg gc --grace 0s --delete-untagged` while the server serves;
#      registry:2 stopped, `docker-registry garbage-collect --delete-untagged
#      config.yml`, started again. Stored bytes after, as % of the peak
#      (target <= 1 %), and what is left, folder by folder.
#   c. docker push of the corpus again: stored bytes vs the first time.
#   d. DELETE of every other image (b2, nginx v2, pyapp v2 v4, nodeapp v2
#      v4), one collection; stored bytes vs fresh stores that only ever
#      received the kept images (target: within 5 %).
#   e. docker pull of every kept image, cold (local images removed, servers
#      restarted, blockreg's cache removed), checked against the push (image
#      ID, layer diff IDs, repo digest); the deleted ones must answer 404;
#      `blockreg check --read-data` on the collected store.
#   f. Time and peak RSS (/usr/bin/time -v) of each collection above, and
#      request latency with and without collections running: per round, a
#      push and pull back of three fresh 3-layer images in a row
#      (bench/gc-stress.py latency, plain HTTP, ~12 MiB each, each deleted
#      after, so collections find garbage) and a `docker pull` of nginx:v1
#      (warm: its layers in blockreg's cache), each mode on a freshly
#      started server after an untimed warm-up and with no conversion
#      pending, the order rotating between rounds: (1) nothing else
#      running, (2) `blockreg gc --grace 60s --delete-untagged` back to
#      back, (3) the server's own background collection every second
#      (blockreg.gc, grace 121 s, request timeout 60 s). Medians of the
#      rounds; target: with / without <= 1.2.
# Prints one markdown table and writes bench/results/gc-latest.md
# (gc-quick.md with BENCH_QUICK=1; the committed full run: gc-full.md).
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH_CMD=""
for v in BENCH_QUICK BENCH_LAT_ROUNDS BENCH_GUEST BENCH_STORAGE_DRIVER BLOCKREG; do
    [[ -n "${!v:-}" ]] && BENCH_CMD+="$v=${!v} "
done
BENCH_CMD+="bash bench/gc.sh"

# shellcheck source=tests/e2e/lib.sh
source "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib-corpus.sh
source "$BENCH_DIR/lib-corpus.sh"
# shellcheck source=bench/lib-measure.sh
source "$BENCH_DIR/lib-measure.sh"

BENCH_RUNS=1
LAT_ROUNDS="${BENCH_LAT_ROUNDS:-5}"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
bench_init
bench_corpus no-oci
GUEST_ARGS=()
[[ -n "${BENCH_GUEST:-}" ]] && GUEST_ARGS=(--guest "$BENCH_GUEST")

# The images deleted in step d: every other one of each group.
DELETED=(bench/debian:b2 bench/nginx:v2 bench/pyapp:v2 bench/pyapp:v4 bench/nodeapp:v2 bench/nodeapp:v4)
KEPT=()
for img in "${BENCH_IMAGES[@]}"; do
    [[ " ${DELETED[*]} " == *" $img "* ]] || KEPT+=("$img")
done
HALF_DELETED=()
for img in "${BENCH_IMAGES[@]}"; do
    [[ " ${DELETED[*]} " == *" $img "* ]] && HALF_DELETED+=("$img")
done

declare -A PORT SRV_PID HOST
for n in br r2 brfresh r2fresh; do
    for ((i = 0; i < 10; i++)); do
        p="$(free_port)"
        [[ " ${PORT[*]} " == *" $p "* ]] || break
    done
    PORT[$n]="$p"
    HOST[$n]="127.0.0.1:$p"
done
D="$WORK_DIR/gc"
declare -A DATA=([br]="$D/br" [r2]="$D/r2" [brfresh]="$D/br-fresh" [r2fresh]="$D/r2-fresh")
mkdir -p "$D"

# start NAME [SERVE_ARGS...]: start blockreg (br*) or registry:2 (r2*) on
# its port and store. blockreg runs with --no-gc unless SERVE_ARGS say
# otherwise (its background collection would run during the pushes).
start() {
    local n="$1"
    shift
    if [[ "$n" == br* ]]; then
        local args=("$@")
        ((${#args[@]})) || args=(--no-gc)
        WANT_PORT="${PORT[$n]}" start_blockreg "${DATA[$n]}" "$LOG_DIR/$n.log" "${BENCH_GUEST:-}" "${args[@]}" \
            || die "blockreg ($n) did not start"
        SRV_PID[$n]="$BR_PID"
    else
        WANT_PORT="${PORT[$n]}" start_registry2 "${DATA[$n]}" "$LOG_DIR/$n.log" || die "registry:2 ($n) did not start"
        SRV_PID[$n]="$R2_PID"
    fi
}
stop() { stop_pid "${SRV_PID[$1]}"; SRV_PID[$1]=""; }
# stored NAME: du -sb of the store (blockreg: the data dir; registry:2: its
# storage root).
stored() {
    if [[ "$1" == br* ]]; then du -sb "${DATA[$1]}" | cut -f1; else du -sb "${DATA[$1]}/storage" | cut -f1; fi
}
mib() { awk -v b="$1" 'BEGIN { if (b < 1048576 && b > -1048576) printf "%.1f KiB", b / 1024; else printf "%.1f MiB", b / 1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f %%", 100 * a / b; else print "-" }'; }
fmt_s() { awk -v s="$1" 'BEGIN { printf "%.2f s", s }'; }

# push_set NAME IMAGES...: docker push each image to NAME; sets PUSH_TOTAL.
push_set() {
    local n="$1" img
    shift
    PUSH_TOTAL=0
    for img in "$@"; do
        push_timed "$n" "${HOST[$n]}" "$img"
        PUSH_TOTAL="$(add "$PUSH_TOTAL" "$PUSH_T")"
    done
}

# delete_set NAME IMAGES...: DELETE /v2/<repo>/manifests/<digest pushed>;
# every answer must be 202.
delete_set() {
    local n="$1" img repo code
    shift
    for img in "$@"; do
        repo="${img%:*}"
        code="$(curl -s -o "$LOG_DIR/delete.out" -w '%{http_code}' -X DELETE \
            "http://${HOST[$n]}/v2/$repo/manifests/${PUSHED_DIGEST[${HOST[$n]},$img]}")"
        [[ "$code" == 202 ]] || { cat "$LOG_DIR/delete.out" >&2; die "DELETE of $img on $n answered $code"; }
    done
}

# manifest_status NAME IMG: HTTP status of the pushed manifest by digest.
manifest_status() {
    curl -s -o /dev/null -w '%{http_code}' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' \
        "http://${HOST[$1]}/v2/${2%:*}/manifests/${PUSHED_DIGEST[${HOST[$1]},$2]}"
}

# timed_rss OUT CMD...: run CMD under /usr/bin/time -v, stdout to OUT; sets
# T_WALL (s), T_RSS (bytes), T_RC.
timed_rss() {
    local out="$1" tf="$WORK_DIR/time.txt"
    shift
    /usr/bin/time -v -o "$tf" "$@" >"$out" 2>>"$LOG_DIR/collections.log"
    T_RC=$?
    T_RSS="$(awk -F': ' '/Maximum resident set size/ { print $2 * 1024 }' "$tf")"
    T_WALL="$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tf")"
    cat "$tf" >>"$LOG_DIR/collections.log"
}

# collect_br NAME LABEL: one `blockreg gc --grace 0s --delete-untagged` of
# NAME's store while it serves. Sets GC_JSON and records time and RSS.
declare -A GC_T GC_RSS GC_JS
collect_br() {
    local n="$1" label="$2"
    echo "== blockreg gc ($label)" >>"$LOG_DIR/collections.log"
    timed_rss "$WORK_DIR/gc-$label.json" "$BLOCKREG" gc --data "${DATA[$n]}" --grace 0s --delete-untagged --json "${GUEST_ARGS[@]}"
    ((T_RC == 0)) || { show_log "$LOG_DIR/collections.log" 20; die "blockreg gc ($label) failed"; }
    GC_JSON="$(tail -n1 "$WORK_DIR/gc-$label.json")"
    GC_T[br,$label]="$T_WALL" GC_RSS[br,$label]="$T_RSS" GC_JS[$label]="$GC_JSON"
    log "blockreg gc ($label): $T_WALL s, $(mib "$T_RSS") peak; $(jq -c '{blobs_removed, manifests_removed, packs_removed, packs_repacked, duration_ms}' <<<"$GC_JSON")"
}

# collect_r2 NAME LABEL: registry:2 stopped, garbage-collect, started again.
collect_r2() {
    local n="$1" label="$2"
    stop "$n"
    echo "== registry garbage-collect ($label)" >>"$LOG_DIR/collections.log"
    timed_rss "$LOG_DIR/r2-gc-$label.log" docker-registry garbage-collect --delete-untagged "${DATA[$n]}/config.yml"
    ((T_RC == 0)) || { show_log "$LOG_DIR/r2-gc-$label.log" 20; die "registry garbage-collect ($label) failed"; }
    GC_T[r2,$label]="$T_WALL" GC_RSS[r2,$label]="$T_RSS"
    log "registry garbage-collect ($label): $T_WALL s, $(mib "$T_RSS") peak"
    start "$n"
}

# breakdown NAME: du -sb of each top-level folder (blocks split in index
# and packs) of a blockreg store, "folder size; ..."
breakdown() {
    local dir="${DATA[$1]}" out="" f s
    for f in blocks/index blocks/packs layers manifests cache uploads gc; do
        [[ -e "$dir/$f" ]] || continue
        s="$(du -sb "$dir/$f" | cut -f1)"
        out+="\`$f\` $(awk -v b="$s" 'BEGIN { printf "%.1f KiB", b / 1024 }'), "
    done
    s="$(find "$dir" -maxdepth 1 -type f -printf '%s\n' | awk '{ t += $1 } END { print t + 0 }')"
    out+="files at the top $s B; $(find "$dir" -type f | wc -l) files, $(find "$dir" -type d | wc -l) directories"
    echo "$out"
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 |"); }
NOTES=()

# ---------------------------------------------------------------- a. push
start br
start r2
SKEL_BR="$(stored br)" SKEL_R2="$(stored r2)"
log "a. docker push of ${#BENCH_IMAGES[@]} images to both"
push_set br "${BENCH_IMAGES[@]}"
PUSH_A_BR="$PUSH_TOTAL"
push_set r2 "${BENCH_IMAGES[@]}"
PUSH_A_R2="$PUSH_TOTAL"
W_A="$(wait_converted "${DATA[br]}")"
PEAK_BR="$(stored br)" PEAK_R2="$(stored r2)"
STATS_A="$(stats_json "${DATA[br]}")"
row "empty store: after start, before any push (du -sb)" "$(mib "$SKEL_BR")" "$(mib "$SKEL_R2")" "–"
row "a. \`docker push\` of the corpus, total (conversion wait after it: $(fmt_s "$W_A"))" "$(fmt_s "$PUSH_A_BR")" "$(fmt_s "$PUSH_A_R2")" "$(ratio "$PUSH_A_BR" "$PUSH_A_R2")"
row "**a. stored after the pushes: the peak** (du -sb)" "$(mib "$PEAK_BR")" "$(mib "$PEAK_R2")" "$(ratio "$PEAK_BR" "$PEAK_R2")"

# ---------------------------------------------------------------- b. delete all, collect
log "b. DELETE every manifest, one collection each"
delete_set br "${BENCH_IMAGES[@]}"
delete_set r2 "${BENCH_IMAGES[@]}"
collect_br br all
collect_r2 r2 all
EMPTY_BR="$(stored br)" EMPTY_R2="$(stored r2)"
BREAK_B="$(breakdown br)"
STATS_B="$(stats_json "${DATA[br]}")"
row "**b. stored after deleting every manifest + one collection**, % of the peak (target ≤ 1 %)" \
    "$(mib "$EMPTY_BR") = $(pct "$EMPTY_BR" "$PEAK_BR")" "$(mib "$EMPTY_R2") = $(pct "$EMPTY_R2" "$PEAK_R2")" "–"
row "b. the same less the empty store, % of the peak" \
    "$(mib "$((EMPTY_BR - SKEL_BR))") = $(pct "$((EMPTY_BR - SKEL_BR))" "$PEAK_BR")" \
    "$(mib "$((EMPTY_R2 - SKEL_R2))") = $(pct "$((EMPTY_R2 - SKEL_R2))" "$PEAK_R2")" "–"
row "b. collection: wall time (blockreg: server serving; registry:2: stopped)" "$(fmt_s "${GC_T[br,all]}")" "$(fmt_s "${GC_T[r2,all]}")" "$(ratio "${GC_T[br,all]}" "${GC_T[r2,all]}")"
row "b. collection: peak RSS of the collecting process" "$(mib "${GC_RSS[br,all]}")" "$(mib "${GC_RSS[r2,all]}")" "$(ratio "${GC_RSS[br,all]}" "${GC_RSS[r2,all]}")"
NOTES+=("b. blockreg's store after the collection, folder by folder: $BREAK_B.")
NOTES+=("b. \`blockreg gc --json\`: \`$(jq -c 'del(.started)' <<<"${GC_JS[all]}")\`")
NOTES+=("b. registry:2's collection: $(grep -c 'blob eligible for deletion' "$LOG_DIR/r2-gc-all.log") blobs eligible for deletion, $(grep -c 'manifest eligible for deletion' "$LOG_DIR/r2-gc-all.log") manifests (its log); what is left: $(find "${DATA[r2]}/storage" -type f | wc -l) files, $(find "${DATA[r2]}/storage" -type d | wc -l) directories.")

# ---------------------------------------------------------------- c. push again
log "c. docker push of the corpus again"
push_set br "${BENCH_IMAGES[@]}"
PUSH_C_BR="$PUSH_TOTAL"
push_set r2 "${BENCH_IMAGES[@]}"
PUSH_C_R2="$PUSH_TOTAL"
W_C="$(wait_converted "${DATA[br]}")"
AGAIN_BR="$(stored br)" AGAIN_R2="$(stored r2)"
row "c. \`docker push\` of the corpus again, total (conversion wait: $(fmt_s "$W_C"))" "$(fmt_s "$PUSH_C_BR")" "$(fmt_s "$PUSH_C_R2")" "$(ratio "$PUSH_C_BR" "$PUSH_C_R2")"
row "**c. stored after pushing again**; vs the first time (a)" \
    "$(mib "$AGAIN_BR") = $(ratio "$AGAIN_BR" "$PEAK_BR")× a" "$(mib "$AGAIN_R2") = $(ratio "$AGAIN_R2" "$PEAK_R2")× a" "$(ratio "$AGAIN_BR" "$AGAIN_R2")"
NOTES+=("c. stored bytes, a → c: blockreg $PEAK_BR → $AGAIN_BR B ($((AGAIN_BR - PEAK_BR)) B), registry:2 $PEAK_R2 → $AGAIN_R2 B ($((AGAIN_R2 - PEAK_R2)) B).")

# ---------------------------------------------------------------- d. delete half, collect, fresh stores
log "d. DELETE ${HALF_DELETED[*]}; one collection each; fresh stores with ${KEPT[*]}"
delete_set br "${HALF_DELETED[@]}"
delete_set r2 "${HALF_DELETED[@]}"
collect_br br half
collect_r2 r2 half
HALF_BR="$(stored br)" HALF_R2="$(stored r2)"
BREAK_D="$(breakdown br)"
STATS_D="$(stats_json "${DATA[br]}")"
start brfresh
start r2fresh
push_set brfresh "${KEPT[@]}"
push_set r2fresh "${KEPT[@]}"
wait_converted "${DATA[brfresh]}" >/dev/null
FRESH_BR="$(stored brfresh)" FRESH_R2="$(stored r2fresh)"
BREAK_F="$(breakdown brfresh)"
STATS_F="$(stats_json "${DATA[brfresh]}")"
stop brfresh
stop r2fresh
row "d. stored after deleting ${#HALF_DELETED[@]} of ${#BENCH_IMAGES[@]} images + one collection" "$(mib "$HALF_BR")" "$(mib "$HALF_R2")" "$(ratio "$HALF_BR" "$HALF_R2")"
row "d. a fresh store that only received the ${#KEPT[@]} kept images" "$(mib "$FRESH_BR")" "$(mib "$FRESH_R2")" "$(ratio "$FRESH_BR" "$FRESH_R2")"
row "**d. collected / fresh** (target ≤ 1.05)" "$(ratio "$HALF_BR" "$FRESH_BR")" "$(ratio "$HALF_R2" "$FRESH_R2")" "–"
row "d. collection: wall time" "$(fmt_s "${GC_T[br,half]}")" "$(fmt_s "${GC_T[r2,half]}")" "$(ratio "${GC_T[br,half]}" "${GC_T[r2,half]}")"
row "d. collection: peak RSS of the collecting process" "$(mib "${GC_RSS[br,half]}")" "$(mib "${GC_RSS[r2,half]}")" "$(ratio "${GC_RSS[br,half]}" "${GC_RSS[r2,half]}")"
# A rewritten pack is retired, not removed, until a collection a grace
# period later (a pull may still read it): a second collection shows it.
if [[ "$(jq -r '.packs_repacked // 0' <<<"${GC_JS[half]}")" != 0 ]]; then
    collect_br br half2
    HALF2_BR="$(stored br)"
    row "d. after a second collection (packs retired by the first removed)" "$(mib "$HALF2_BR") = $(ratio "$HALF2_BR" "$FRESH_BR")× fresh" "–" "–"
    NOTES+=("d. second \`blockreg gc --json\`: \`$(jq -c 'del(.started)' <<<"${GC_JS[half2]}")\`")
fi
NOTES+=("d. \`blockreg gc --json\`: \`$(jq -c 'del(.started)' <<<"${GC_JS[half]}")\`")
NOTES+=("d. collected store, folder by folder: $BREAK_D.")
NOTES+=("d. fresh store, folder by folder: $BREAK_F.")
NOTES+=("d. \`blockreg stats\`, collected vs fresh: $(jq -c '{stored_bytes, block_bytes, blocks, packs, blobs, manifests}' <<<"$STATS_D") vs $(jq -c '{stored_bytes, block_bytes, blocks, packs, blobs, manifests}' <<<"$STATS_F").")

# ---------------------------------------------------------------- e. pulls after collection
log "e. cold pulls of ${KEPT[*]}"
gone=0
for n in br r2; do
    for img in "${HALF_DELETED[@]}"; do
        c="$(manifest_status "$n" "$img")"
        [[ "$c" == 404 ]] || { log "deleted $img answers $c on $n"; gone=$((gone + 1)); }
    done
done
remove_local_images
stop br
stop r2
rm -rf "${DATA[br]}/cache"
start br
start r2
# pull_kept NAME: docker pull of every kept image from NAME, each checked
# against the push (a failure is counted, not fatal: it is the finding).
# Sets PULL_TOTAL, PULL_FAILED.
pull_kept() {
    local n="$1" img t0
    PULL_TOTAL=0 PULL_FAILED=0
    remove_local_images
    for img in "${KEPT[@]}"; do
        t0="$(now)"
        if docker pull "${HOST[$n]}/$img" >>"$LOG_DIR/pull-$n.log" 2>&1; then
            PULL_TOTAL="$(add "$PULL_TOTAL" "$(elapsed "$t0")")"
            (verify_pull "$img" "${HOST[$n]}") || PULL_FAILED=$((PULL_FAILED + 1))
        else
            log "docker pull of $img from $n failed"
            PULL_FAILED=$((PULL_FAILED + 1))
        fi
    done
}
pull_kept br
PULL_BR="$PULL_TOTAL" PULL_FAILED_BR="$PULL_FAILED"
pull_kept r2
PULL_R2="$PULL_TOTAL" PULL_FAILED_R2="$PULL_FAILED"
row "e. \`docker pull\` of the ${#KEPT[@]} kept images, cold, total; pulls failed or not identical to the push (image ID, layers, repo digest)" \
    "$(fmt_s "$PULL_BR"); $PULL_FAILED_BR failed" "$(fmt_s "$PULL_R2"); $PULL_FAILED_R2 failed" "$(ratio "$PULL_BR" "$PULL_R2")"
row "e. manifests of deleted images still answering (want 0)" "$gone (both registries)" "" "–"
echo "== blockreg check --read-data" >>"$LOG_DIR/collections.log"
t0="$(now)"
"$BLOCKREG" check --data "${DATA[br]}" --read-data --json "${GUEST_ARGS[@]}" >"$WORK_DIR/check.json" 2>>"$LOG_DIR/collections.log"
CHECK_RC=$?
CHECK_T="$(elapsed "$t0")"
row "e. \`blockreg check --read-data\` of the collected store (server serving)" \
    "exit $CHECK_RC, $(jq -r '"\(.blobs) blobs (\(.bad_blobs) bad), \(.manifests) manifests (\(.bad_manifests) bad), \(.blocks) blocks (\(.bad_blocks) bad), \(.unindexed_packs) packs unindexed"' "$WORK_DIR/check.json" 2>/dev/null), $(fmt_s "$CHECK_T")" "–" "–"

# ---------------------------------------------------------------- f. latency with and without collections
log "f. latency: $LAT_ROUNDS rounds of (nothing | blockreg gc loop | background collection)"
remove_local_images
cat >"$WORK_DIR/bg-gc.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  delete:
    enabled: true
blockreg:
  request_timeout_secs: 60
  gc:
    enabled: true
    interval: 1s
    grace: 121s
    delete_untagged: true
EOF
declare -A LAT
lat_one() { # MODE SEED: one push+pull (python) and one docker pull, appended to LAT[MODE,*]
    local mode="$1" seed="$2" js t0 t
    js="$(python3 "$BENCH_DIR/gc-stress.py" latency --url "http://${HOST[br]}" --repo latency/img \
        --iterations 3 --seed "$seed" 2>>"$LOG_DIR/latency.log")" || die "latency push/pull ($mode) failed"
    LAT[$mode,http]+="$(jq -r '.total | add * 100 | round / 100' <<<"$js") "
    t0="$(now)"
    docker pull "${HOST[br]}/bench/nginx:v1" >>"$LOG_DIR/latency.log" 2>&1 || die "docker pull ($mode) failed"
    t="$(elapsed "$t0")"
    verify_pull bench/nginx:v1 "${HOST[br]}"
    docker rmi "${HOST[br]}/bench/nginx:v1" >>"$LOG_DIR/latency.log" 2>&1
    LAT[$mode,pull]+="$t "
}
med() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'; }
LOOP_STOP="$WORK_DIR/gc-loop.stop"
LOOP_RUNS="$WORK_DIR/gc-loop.json"
: >"$LOOP_RUNS"
docker pull "${HOST[br]}/bench/nginx:v1" >>"$LOG_DIR/latency.log" 2>&1 && docker rmi "${HOST[br]}/bench/nginx:v1" >>"$LOG_DIR/latency.log" 2>&1
MODES=(none loop background)
for ((r = 1; r <= LAT_ROUNDS; r++)); do
    # Each mode on a freshly started server (in its configuration), after
    # one untimed push and pull and once the conversion is done; the order
    # of the modes rotates between rounds.
    k=$(((r - 1) % 3))
    for mode in "${MODES[@]:k}" "${MODES[@]:0:k}"; do
        stop br
        if [[ "$mode" == background ]]; then start br --config "$WORK_DIR/bg-gc.yml"; else start br; fi
        python3 "$BENCH_DIR/gc-stress.py" latency --url "http://${HOST[br]}" --repo latency/warm \
            --iterations 1 --seed $((1000 + 3 * r + k)) >>"$LOG_DIR/latency.log" 2>&1 || die "warm-up push/pull failed"
        wait_converted "${DATA[br]}" >/dev/null
        if [[ "$mode" == loop ]]; then
            rm -f "$LOOP_STOP"
            (
                while [[ ! -e "$LOOP_STOP" ]]; do
                    "$BLOCKREG" gc --data "${DATA[br]}" --grace 60s --delete-untagged --json "${GUEST_ARGS[@]}" \
                        >>"$LOOP_RUNS" 2>>"$LOG_DIR/gc-loop.log"
                done
            ) &
            LOOP_PID=$!
            E2E_PIDS+=("$LOOP_PID")
        fi
        sleep 1
        case "$mode" in none) seed=$((3 * r)) ;; loop) seed=$((3 * r + 1)) ;; *) seed=$((3 * r + 2)) ;; esac
        lat_one "$mode" "$seed"
        if [[ "$mode" == loop ]]; then
            touch "$LOOP_STOP"
            wait "$LOOP_PID"
            E2E_PIDS=("${E2E_PIDS[@]/$LOOP_PID/}")
        fi
    done
done
stop br
start br
BG_RUNS="$(grep -c 'collected: removed' "$LOG_DIR/br.log")"
LOOP_N="$(grep -c . "$LOOP_RUNS")"
LOOP_MED="$(jq -r '.duration_ms' "$LOOP_RUNS" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f", v[int((NR + 1) / 2)] / 1000; else print "-" }')"
for m in http pull; do
    a="$(med "${LAT[none,$m]}")" b="$(med "${LAT[loop,$m]}")" c="$(med "${LAT[background,$m]}")"
    case "$m" in
        http) what="push + pull back of 3 fresh 3-layer images (~12 MiB each, plain HTTP)" ;;
        pull) what="\`docker pull\` of nginx:v1 (warm: layers cached)" ;;
    esac
    row "**f. $what, median of $LAT_ROUNDS: alone → with \`blockreg gc\` in a loop → with the server's collection every 1 s** (target ≤ 1.2)" \
        "$(fmt_s "$a") → $(fmt_s "$b") ($(ratio "$b" "$a")×) → $(fmt_s "$c") ($(ratio "$c" "$a")×)" "–" "–"
    NOTES+=("f. $what, every round (s): alone ${LAT[none,$m]}; gc loop ${LAT[loop,$m]}; background ${LAT[background,$m]}.")
done
NOTES+=("f. the \`blockreg gc\` loop completed $LOOP_N collections (median $LOOP_MED s inside the guest; each run also loads and compiles the guest); the server's background collection completed $BG_RUNS during the measured rounds (its log).")

# ---------------------------------------------------------------- report
stop br
stop r2
T_TOTAL="$(elapsed "$T_START")"
quick=latest
[[ "${BENCH_QUICK:-}" == 1 ]] && quick=quick
report="$WORK_DIR/gc-$quick.md"
{
    echo "# Garbage collection: storage given back, blockreg vs registry:2"
    echo
    echo "Command: \`$BENCH_CMD\`"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), ${BR_VERSION:-blockreg}${BENCH_GUEST:+, guest $BENCH_GUEST}," \
        "$(docker-registry --version 2>/dev/null | awk '{ print "registry:2 " $NF }'), docker $(docker version -f '{{.Server.Version}}' 2>/dev/null)," \
        "${#BENCH_IMAGES[@]} images ($( [[ "${BENCH_QUICK:-}" == 1 ]] && echo 'quick: ')${BENCH_IMAGES[*]}), dockerd storage $DOCKERD_DRIVER," \
        "$(nproc) cores, load average $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end." \
        "Corpus ready in ${T_CORPUS} s, whole run ${T_TOTAL} s."
    echo
    echo "Stored bytes are \`du -sb\` of blockreg's whole data directory (block packs, index, recipes, manifests," \
        "and its cache of recreated layers: empty here except in e and f) and of registry:2's storage root." \
        "Collections: \`blockreg gc --grace 0s --delete-untagged\` while the server serves;" \
        "registry:2 stopped, \`docker-registry garbage-collect --delete-untagged config.yml\`, started again." \
        "Deleted in d: ${HALF_DELETED[*]}."
    echo
    echo "| metric | blockreg | registry:2 | ours/registry:2 |"
    echo "|---|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
    echo
    printf -- '- %s\n' "${NOTES[@]}"
} >"$report"
echo
cat "$report"
mkdir -p "$BENCH_DIR/results"
cp "$report" "$BENCH_DIR/results/gc-$quick.md"
log "written to $BENCH_DIR/results/gc-$quick.md"
