#!/usr/bin/env bash
# Side-by-side benchmark of blockreg and registry:2 (CNCF distribution 2.8,
# filesystem storage) on a realistic corpus, on loopback. One command:
#
#   bash bench/compare.sh
#
# Environment (all optional):
#   BENCH_RUNS=N          repeat the measurements N times, report medians (1)
#   BENCH_QUICK=1         only the Debian bases and the nginx pair
#   BENCH_GUEST=FILE.wasm serve (and ask stats) with --guest FILE.wasm, e.g.
#                         the second guest build with FastCDC
#   BENCH_CACHE=DIR       corpus cache (~/.cache/blockreg-bench)
#   BENCH_STORAGE_DRIVER  dockerd storage driver (overlay2, else vfs)
#   BLOCKREG, WORK_DIR, KEEP_WORK as for tests/e2e (tests/e2e/lib.sh)
#
# The corpus (bench/lib-corpus.sh; built once, first run ~10-20 min on two
# cores, then cached as docker save archives, so a rerun only loads it):
# three debootstraps of Debian bookworm minbase (bench/debian:b1..b3), an
# nginx v1/v2 pair on b1, five versions of a pip app (python venv of numpy,
# pandas, sqlalchemy, flask, requests) on b2 and five of an npm app
# (node_modules of typescript, webpack, eslint, babel, express...) on b3; each
# app version bumps one or two dependencies and edits a few source files.
#
# What is measured, per registry, pushing the images in a fixed order
# (debian b1 b2 b3, nginx v1 v2, pyapp v1..v5, nodeapp v1..v5):
#   1. docker push of every image into a fresh store of each registry (wall
#      time per image); after each push, the stores' size (du -sb), once
#      blockreg has finished converting the new blobs in the background
#      (`blockreg stats --json` "pending" reaches 0; that wait is reported as
#      its own row and is not part of the push time).
#   2. skopeo copy of every image from an OCI layout with uncompressed layers
#      (exported once, cached) into a second fresh store of each registry,
#      with --preserve-digests so nothing is recompressed: the registries' own
#      cost without docker's gzip. Wall time per image, final store size.
#   3. docker pull of every image from the stores of step 1: cold (local
#      images removed, both servers restarted, blockreg's DATA/cache removed),
#      then warm (local images removed again, servers kept running). Each
#      pulled image's ID, layer diff IDs and repo digest must equal what was
#      pushed, or the run fails.
#   4. Peak RSS (VmHWM) of the servers: push phases and pull phase.
# Prints one markdown table (ours, registry:2, ours/registry:2) and writes it
# to bench/results/latest.md. Logs stay in WORK_DIR/logs with KEEP_WORK=1.
# The measuring helpers (setup, push_timed, pull_all, medians, table rows)
# are in bench/lib-measure.sh, shared with bench/tls-auth.sh.
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/e2e/lib.sh
source "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib-corpus.sh
source "$BENCH_DIR/lib-corpus.sh"
# shellcheck source=bench/lib-measure.sh
source "$BENCH_DIR/lib-measure.sh"

bench_init
bench_corpus oci

# record_stats RUN PREFIX LABEL DATA: blockreg stats fields as rows.
record_stats() {
    local js f v
    js="$(stats_json "$4")" || return 0
    for f in logical_bytes unique_bytes stored_bytes block_bytes cache_bytes blobs blocks packs ratio pending failed; do
        v="$(jq -r --arg f "$f" 'if has($f) then .[$f] else empty end' <<<"$js")"
        [[ -n "$v" ]] || continue
        case "$f" in
            *_bytes) record "$1" blockreg "$2_$f" "$3: $f" bytes "$v" ;;
            ratio) record "$1" blockreg "$2_$f" "$3: $f" x "$v" ;;
            *) record "$1" blockreg "$2_$f" "$3: $f" text "$v" ;;
        esac
    done
}

store_du() { du -sb "$1" 2>/dev/null | cut -f1; }

for ((run = 1; run <= BENCH_RUNS; run++)); do
    d="$WORK_DIR/run$run"
    if ((run % 2)); then order=(blockreg registry2); else order=(registry2 blockreg); fi
    declare -A HOST=()
    for k in br1 r2a br2 r2b; do HOST[$k]="127.0.0.1:$(free_port)"; done
    ((run > 1)) && { remove_local_images; reload_bench_corpus || die "docker load failed"; }

    # ---- 1. docker push, store size after each push
    log "run $run/$BENCH_RUNS: docker push of ${#BENCH_IMAGES[@]} images"
    WANT_PORT="${HOST[br1]#*:}" start_blockreg "$d/br-docker" "$LOG_DIR/br-docker-$run.log" "${BENCH_GUEST:-}" || die "blockreg did not start"
    BR1_PID="$BR_PID"
    WANT_PORT="${HOST[r2a]#*:}" start_registry2 "$d/r2-docker" "$LOG_DIR/r2-docker-$run.log" || die "registry:2 did not start"
    R2A_PID="$R2_PID"
    declare -A NAMEHOST=([blockreg]="${HOST[br1]}" [registry2]="${HOST[r2a]}")
    tot_br=0 tot_r2=0 tot_wait=0
    for img in "${BENCH_IMAGES[@]}"; do
        for name in "${order[@]}"; do
            push_timed "$name" "${NAMEHOST[$name]}" "$img"
            t="$PUSH_T"
            record "$run" "$name" "push_docker_$img" "push docker $(short "$img") (s)" s "$t"
            if [[ "$name" == blockreg ]]; then tot_br="$(add "$tot_br" "$t")"; else tot_r2="$(add "$tot_r2" "$t")"; fi
        done
        w="$(wait_converted "$d/br-docker")"
        record "$run" blockreg "wait_docker_$img" "conversion wait after $(short "$img") (s)" s "$w"
        [[ "$w" != n/a ]] && tot_wait="$(add "$tot_wait" "$w")" || tot_wait=n/a
        record "$run" blockreg "stored_docker_$img" "stored after docker push $(short "$img") (du -sb)" bytes "$(store_du "$d/br-docker")"
        record "$run" registry2 "stored_docker_$img" "stored after docker push $(short "$img") (du -sb)" bytes "$(store_du "$d/r2-docker/storage")"
    done
    record "$run" blockreg push_docker_total "**push docker, total (s)**" s "$tot_br"
    record "$run" registry2 push_docker_total "**push docker, total (s)**" s "$tot_r2"
    record "$run" blockreg wait_docker_total "**conversion wait, total (s)**" s "$tot_wait"
    if [[ -d "$d/br-docker/cache" ]]; then
        record "$run" blockreg stored_docker_nocache "stored after all docker pushes, without DATA/cache (du -sb)" bytes \
            "$(du -sb --exclude=./cache "$d/br-docker" | cut -f1)"
    fi
    record_stats "$run" statsdocker "blockreg stats after docker pushes" "$d/br-docker"
    record "$run" blockreg rss_docker "peak RSS, docker push phase (VmHWM)" bytes "$(vm_hwm "$BR1_PID")"
    record "$run" registry2 rss_docker "peak RSS, docker push phase (VmHWM)" bytes "$(vm_hwm "$R2A_PID")"

    # ---- 2. skopeo copy from OCI layouts (uncompressed) into fresh stores
    log "run $run/$BENCH_RUNS: skopeo copy of ${#BENCH_IMAGES[@]} images"
    WANT_PORT="${HOST[br2]#*:}" start_blockreg "$d/br-skopeo" "$LOG_DIR/br-skopeo-$run.log" "${BENCH_GUEST:-}" || die "blockreg did not start"
    BR2_PID="$BR_PID"
    WANT_PORT="${HOST[r2b]#*:}" start_registry2 "$d/r2-skopeo" "$LOG_DIR/r2-skopeo-$run.log" || die "registry:2 did not start"
    R2B_PID="$R2_PID"
    declare -A NAMEHOST=([blockreg]="${HOST[br2]}" [registry2]="${HOST[r2b]}")
    tot_br=0 tot_r2=0 tot_wait=0
    for img in "${BENCH_IMAGES[@]}"; do
        for name in "${order[@]}"; do
            host="${NAMEHOST[$name]}"
            t0="$(now)"
            skopeo copy --quiet --preserve-digests --dest-tls-verify=false \
                "oci:${OCI_DIR[$img]}:img" "docker://$host/$img" >>"$LOG_DIR/skopeo-$name.log" 2>&1 \
                || { show_log "$LOG_DIR/skopeo-$name.log" 10; die "skopeo copy of $img to $name failed"; }
            t="$(elapsed "$t0")"
            record "$run" "$name" "push_skopeo_$img" "push skopeo $(short "$img") (s)" s "$t"
            if [[ "$name" == blockreg ]]; then tot_br="$(add "$tot_br" "$t")"; else tot_r2="$(add "$tot_r2" "$t")"; fi
        done
        w="$(wait_converted "$d/br-skopeo")"
        [[ "$w" != n/a ]] && tot_wait="$(add "$tot_wait" "$w")" || tot_wait=n/a
    done
    record "$run" blockreg push_skopeo_total "**push skopeo, total (s)**" s "$tot_br"
    record "$run" registry2 push_skopeo_total "**push skopeo, total (s)**" s "$tot_r2"
    record "$run" blockreg wait_skopeo_total "**conversion wait after skopeo pushes, total (s)**" s "$tot_wait"
    record "$run" blockreg stored_skopeo "**stored after all skopeo pushes (du -sb)**" bytes "$(store_du "$d/br-skopeo")"
    record "$run" registry2 stored_skopeo "**stored after all skopeo pushes (du -sb)**" bytes "$(store_du "$d/r2-skopeo/storage")"
    record_stats "$run" statsskopeo "blockreg stats after skopeo pushes" "$d/br-skopeo"
    record "$run" blockreg rss_skopeo "peak RSS, skopeo push phase (VmHWM)" bytes "$(vm_hwm "$BR2_PID")"
    record "$run" registry2 rss_skopeo "peak RSS, skopeo push phase (VmHWM)" bytes "$(vm_hwm "$R2B_PID")"
    stop_pid "$BR2_PID"
    stop_pid "$R2B_PID"

    # ---- 3. pulls: cold (restarted servers, blockreg cache removed), warm
    log "run $run/$BENCH_RUNS: cold pulls"
    remove_local_images
    stop_pid "$BR1_PID"
    stop_pid "$R2A_PID"
    rm -rf "$d/br-docker/cache"
    WANT_PORT="${HOST[br1]#*:}" start_blockreg "$d/br-docker" "$LOG_DIR/br-docker-$run.log" "${BENCH_GUEST:-}" || die "blockreg did not restart"
    BR1_PID="$BR_PID"
    WANT_PORT="${HOST[r2a]#*:}" start_registry2 "$d/r2-docker" "$LOG_DIR/r2-docker-$run.log" || die "registry:2 did not restart"
    R2A_PID="$R2_PID"
    declare -A NAMEHOST=([blockreg]="${HOST[br1]}" [registry2]="${HOST[r2a]}")
    for name in "${order[@]}"; do pull_all "$run" "$name" "${NAMEHOST[$name]}" cold; done
    log "run $run/$BENCH_RUNS: warm pulls"
    for name in "${order[@]}"; do pull_all "$run" "$name" "${NAMEHOST[$name]}" warm; done
    record "$run" blockreg stored_after_pulls "stored after the pulls, with DATA/cache (du -sb)" bytes "$(store_du "$d/br-docker")"
    record "$run" registry2 stored_after_pulls "stored after the pulls, with DATA/cache (du -sb)" bytes "$(store_du "$d/r2-docker/storage")"
    record "$run" blockreg rss_pull "**peak RSS, pull phase (VmHWM, at the end)**" bytes "$(vm_hwm "$BR1_PID")"
    record "$run" registry2 rss_pull "**peak RSS, pull phase (VmHWM, at the end)**" bytes "$(vm_hwm "$R2A_PID")"
    remove_local_images
    stop_pid "$BR1_PID"
    stop_pid "$R2A_PID"
    # The stores of this run are not needed any more.
    [[ -z "${KEEP_WORK:-}" ]] && rm -rf "$d"
done

# ---------------------------------------------------------------- report

section_of() {
    case "$1" in
        stored_*) echo 1 ;; push_docker_*) echo 2 ;; wait_*) echo 3 ;; push_skopeo_*) echo 4 ;;
        pull_cold_*) echo 5 ;; pull_warm_*) echo 6 ;; stats*) echo 7 ;; rss_*) echo 8 ;; *) echo 9 ;;
    esac
}

T_TOTAL="$(elapsed "$T_START")"
report="$WORK_DIR/latest.md"
{
    echo "# blockreg vs registry:2"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), ${BR_VERSION:-blockreg}${BENCH_GUEST:+, guest $BENCH_GUEST}," \
        "$BENCH_RUNS run(s)$( ((BENCH_RUNS > 1)) && echo ', median'), ${#BENCH_IMAGES[@]} images" \
        "($( [[ "${BENCH_QUICK:-}" == 1 ]] && echo quick: )${BENCH_IMAGES[*]}), dockerd storage $DOCKERD_DRIVER," \
        "$(nproc) cores. Corpus ready in ${T_CORPUS} s, whole run ${T_TOTAL} s."
    echo "Times are wall seconds on loopback; sizes du -sb of the store directory (blockreg: the whole"
    echo "DATA dir; registry:2: its storage root), measured after blockreg's background conversion finished."
    echo
    echo "| metric | blockreg | registry:2 | ours/registry:2 |"
    echo "|---|---:|---:|---:|"
    for sec in 1 2 3 4 5 6 7 8 9; do
        for m in "${METRICS[@]}"; do
            [[ "$(section_of "$m")" == "$sec" ]] || continue
            table_row "$m" blockreg registry2
        done
    done
} >"$report"
echo
cat "$report"
mkdir -p "$BENCH_DIR/results"
cp "$report" "$BENCH_DIR/results/latest.md"
log "written to $BENCH_DIR/results/latest.md"
