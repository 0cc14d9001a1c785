#!/usr/bin/env bash
# Side-by-side comparison of blockreg and registry:2 (CNCF distribution 2.8,
# filesystem storage) with the real docker client, on loopback.
#
#   bash bench/compare.sh            # BENCH_RUNS=3 for the median of 3 runs
#
# For each registry, with the same freshly loaded images each time: docker
# push of the Debian base, nginx-v1 and nginx-v2 (which share every layer but
# one small one), wall time each; the store's size (du -sb) after the
# pushes; then every local image removed and each pulled back, wall time
# each. Prints one table: ours, registry:2, and ours/registry:2.
#
# Same inputs as tests/e2e/e2e.sh (BLOCKREG, GUEST_DEFAULT, CACHE_DIR,
# WORK_DIR); the images come from the corpus cache that e2e.sh builds.
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/e2e/lib.sh"

BENCH_RUNS="${BENCH_RUNS:-1}"

e2e_init
ensure_packages
start_dockerd
ensure_corpus
[[ -x "$BLOCKREG" ]] || die "no blockreg binary at $BLOCKREG (cargo build --release -p host)"

declare -A REF=(["$IMG_BASE"]="e2e/debian:$E2E_SUITE" ["$IMG_V1"]="e2e/nginx:v1" ["$IMG_V2"]="e2e/nginx:v2")
# RESULT[run,registry,metric] = value
declare -A RESULT
METRICS=()

record() {
    local key="$2,$3"
    RESULT["$1,$key"]="$4"
    [[ " ${METRICS[*]} " == *" $3 "* ]] || METRICS+=("$3")
}

# bench_one RUN NAME HOST STORE_DIR: push, measure the store, pull.
bench_one() {
    local run="$1" name="$2" host="$3" store="$4" img t0 t total=0 ref
    remove_local_images
    reload_corpus || die "docker load failed"
    for img in "${CORPUS_IMAGES[@]}"; do
        ref="${REF[$img]}"
        docker tag "$img" "$host/$ref"
        t0="$(now)"
        docker push "$host/$ref" >>"$LOG_DIR/bench-push-$name.log" 2>&1 \
            || { show_log "$LOG_DIR/bench-push-$name.log" 10; die "push $ref to $name failed"; }
        t="$(elapsed "$t0")"
        record "$run" "$name" "push_${ref##*/}_s" "$t"
        total="$(awk -v a="$total" -v b="$t" 'BEGIN { printf "%.2f", a + b }')"
    done
    record "$run" "$name" "push_total_s" "$total"
    record "$run" "$name" "store_du_bytes" "$(du -sb "$store" | cut -f1)"
    if [[ "$name" == blockreg ]]; then
        local js
        js="$("$BLOCKREG" stats --data "$store" --json 2>>"$LOG_DIR/bench-stats.log")"
        record "$run" "$name" "logical_bytes" "$(jq -r .logical_bytes <<<"$js")"
        record "$run" "$name" "stored_blob_bytes" "$(jq -r .block_bytes <<<"$js")"
    else
        # registry:2 keeps each blob whole in .../blobs/sha256/xx/<hex>/data.
        local sum
        sum="$(find "$store" -path '*/blobs/sha256/*' -name data -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')"
        record "$run" "$name" "logical_bytes" "$sum"
        record "$run" "$name" "stored_blob_bytes" "$sum"
    fi
    remove_local_images
    total=0
    for img in "${CORPUS_IMAGES[@]}"; do
        ref="${REF[$img]}"
        t0="$(now)"
        docker pull "$host/$ref" >>"$LOG_DIR/bench-pull-$name.log" 2>&1 \
            || { show_log "$LOG_DIR/bench-pull-$name.log" 10; die "pull $ref from $name failed"; }
        t="$(elapsed "$t0")"
        record "$run" "$name" "pull_${ref##*/}_s" "$t"
        total="$(awk -v a="$total" -v b="$t" 'BEGIN { printf "%.2f", a + b }')"
    done
    record "$run" "$name" "pull_total_s" "$total"
    remove_local_images
}

guest_args=()
[[ -f "$GUEST_DEFAULT" ]] && guest_args=("$GUEST_DEFAULT")
for ((run = 1; run <= BENCH_RUNS; run++)); do
    # Fresh, empty stores for every run; the order alternates between runs.
    d="$WORK_DIR/run$run"
    start_blockreg "$d/blockreg" "$LOG_DIR/blockreg-$run.log" "${guest_args[@]}" || die "blockreg did not start"
    start_registry2 "$d/registry2" "$LOG_DIR/registry2-$run.log" || die "docker-registry did not start"
    if ((run % 2)); then order=(blockreg registry2); else order=(registry2 blockreg); fi
    for name in "${order[@]}"; do
        log "run $run/$BENCH_RUNS: $name"
        if [[ "$name" == blockreg ]]; then
            bench_one "$run" blockreg "$BR_HOST" "$d/blockreg"
        else
            bench_one "$run" registry2 "$R2_HOST" "$d/registry2/storage"
        fi
    done
    stop_pid "$BR_PID"
    stop_pid "$R2_PID"
done

# median RUN-VALUES...: the median of the values (lower middle for even counts).
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
value() {
    local vals=() r
    for ((r = 1; r <= BENCH_RUNS; r++)); do vals+=("${RESULT["$r,$1,$2"]}"); done
    median "${vals[@]}"
}
label() {
    case "$1" in
        push_total_s) echo "push all three (s)" ;;
        pull_total_s) echo "pull all three (s)" ;;
        push_*_s) local r="${1#push_}"; echo "push ${r%_s} (s)" ;;
        pull_*_s) local r="${1#pull_}"; echo "pull ${r%_s} (s)" ;;
        store_du_bytes) echo "store on disk (du -sb)" ;;
        logical_bytes) echo "blob bytes (logical)" ;;
        stored_blob_bytes) echo "blob data stored" ;;
        *) echo "$1" ;;
    esac
}
human() {
    case "$1" in
        *_bytes) awk -v b="$2" 'BEGIN { printf "%.1f MiB", b / 1048576 }' ;;
        *) echo "$2" ;;
    esac
}

echo
printf 'blockreg vs registry:2, %s run(s)%s; times in seconds (wall, docker CLI)\n' \
    "$BENCH_RUNS" "$( ((BENCH_RUNS > 1)) && echo ', median')"
printf '%-26s %14s %14s %10s\n' metric blockreg registry:2 ours/r2
for m in "${METRICS[@]}"; do
    ours="$(value blockreg "$m")" theirs="$(value registry2 "$m")"
    ratio="$(awk -v a="$ours" -v b="$theirs" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    printf '%-26s %14s %14s %10s\n' "$(label "$m")" "$(human "$m" "$ours")" "$(human "$m" "$theirs")" "$ratio"
done
echo "blob bytes: sum of the stored blobs' sizes; blob data stored: unique blocks (blockreg) or blob files (registry:2)"
