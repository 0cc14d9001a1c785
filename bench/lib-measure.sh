# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here for the sourcing scripts
# Measurement helpers shared by the side-by-side benchmarks (bench/compare.sh,
# bench/tls-auth.sh): setup (dockerd, corpus, a private copy of the blockreg
# binary), timed docker push and pull with checks of what was pulled, waiting
# for blockreg's background conversion, recording results per run and
# printing medians and ratios as markdown table rows.
#
# Source tests/e2e/lib.sh and bench/lib-corpus.sh first. The caller sets
# BENCH_RUNS; the helpers fill and read the globals below.

BENCH_RUNS="${BENCH_RUNS:-1}"
STATS_ARGS=()
[[ -n "${BENCH_GUEST:-}" ]] && STATS_ARGS=(--guest "$BENCH_GUEST")

# RESULT[run,registry,metric] = value; METRICS in first-recorded order;
# LABEL[metric], KIND[metric] (bytes, s, x, text).
declare -A RESULT LABEL KIND
METRICS=()
# What was loaded (image ID, layer diff IDs) and what each push reported
# (PUSHED_DIGEST[host,image]), to check every pull against.
declare -A WANT_ID WANT_LAYERS PUSHED_DIGEST

# ---------------------------------------------------------------- setup

# bench_init: T_START, WORK_DIR/LOG_DIR and the exit trap (e2e_init), the
# Debian packages.
bench_init() {
    T_START="$(now)"
    e2e_init
    ensure_packages
}

# bench_corpus oci|no-oci: start dockerd (overlay2 when the kernel allows it:
# builds, loads and pulls of this corpus with vfs copy every layer's whole
# tree), load or build the corpus (and its OCI layouts with oci), take a
# private copy of the blockreg binary, remember what each image is. Sets
# T_CORPUS, BLOCKREG, BR_VERSION, WANT_ID, WANT_LAYERS.
bench_corpus() {
    local t0 img i
    # shellcheck disable=SC2086
    start_dockerd ${BENCH_STORAGE_DRIVER:-overlay2 vfs}
    t0="$(now)"
    ensure_bench_corpus
    [[ "$1" == oci ]] && ensure_oci_layouts
    T_CORPUS="$(elapsed "$t0")"
    log "corpus ready in $T_CORPUS s: ${BENCH_IMAGES[*]}"

    # The binary may be being rebuilt by someone else: wait for it, then run a
    # private copy so a rebuild during the run cannot mix two versions.
    for ((i = 0; i < 120; i++)); do
        [[ -x "$BLOCKREG" ]] && "$BLOCKREG" --version >/dev/null 2>&1 && break
        ((i == 0)) && log "waiting for $BLOCKREG"
        sleep 5
    done
    cp "$BLOCKREG" "$WORK_DIR/blockreg" || die "no blockreg binary at $BLOCKREG (cargo build --release -p host)"
    BLOCKREG="$WORK_DIR/blockreg"
    BR_VERSION="$("$BLOCKREG" --version 2>/dev/null)"

    for img in "${BENCH_IMAGES[@]}"; do
        WANT_ID["$img"]="$(image_id "$img")"
        WANT_LAYERS["$img"]="$(image_layers "$img" | tr '\n' ' ')"
    done
}

# ---------------------------------------------------------------- recording

record() { # RUN NAME METRIC LABEL KIND VALUE
    RESULT["$1,$2,$3"]="$6"
    if [[ -z "${LABEL[$3]:-}" ]]; then
        METRICS+=("$3")
        LABEL["$3"]="$4"
        KIND["$3"]="$5"
    fi
}
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a + b }'; }
short() { local r="${1#bench/}"; echo "$r"; }

# ---------------------------------------------------------------- blockreg

# stats_json DATA: blockreg's figures of the store (server may be running).
stats_json() { "$BLOCKREG" stats --data "$1" --json "${STATS_ARGS[@]}" 2>>"$LOG_DIR/bench-stats.log"; }

# wait_converted DATA: poll until blockreg reports no pending conversions
# (every 0.5 s, up to 30 min). Prints the seconds waited; "n/a" when the
# binary does not report "pending" (nothing to wait for).
wait_converted() {
    local t0 js p i
    t0="$(now)"
    for ((i = 0; i < 3600; i++)); do
        js="$(stats_json "$1")" || { log "blockreg stats failed"; show_log "$LOG_DIR/bench-stats.log" 5; }
        p="$(jq -r 'if has("pending") then .pending else "absent" end' <<<"$js" 2>/dev/null)"
        if [[ "$p" == absent ]]; then echo n/a; return 0; fi
        if [[ "$p" == 0 ]]; then elapsed "$t0"; return 0; fi
        sleep 0.5
    done
    log "blockreg still has $p pending conversions after 30 min"
    elapsed "$t0"
}

# ---------------------------------------------------------------- push, pull

# push_timed NAME HOST IMG: docker push of IMG as HOST/IMG (to registry NAME,
# for the logs and messages); sets PUSH_T (wall seconds) and
# PUSHED_DIGEST[HOST,IMG] (the digest docker reports). A failure ends the run.
push_timed() {
    local name="$1" host="$2" img="$3" t0
    docker tag "$img" "$host/$img"
    t0="$(now)"
    docker push "$host/$img" >"$LOG_DIR/push-one.log" 2>&1 \
        || { show_log "$LOG_DIR/push-one.log" 10; die "docker push of $img to $name failed"; }
    PUSH_T="$(elapsed "$t0")"
    cat "$LOG_DIR/push-one.log" >>"$LOG_DIR/push-$name.log"
    PUSHED_DIGEST["$host,$img"]="$(sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' "$LOG_DIR/push-one.log" | tail -n1)"
    [[ -n "${PUSHED_DIGEST[$host,$img]}" ]] || die "no digest in docker push output for $img ($name)"
}

# verify_pull IMG HOST: the pulled image is the pushed one.
verify_pull() {
    local img="$1" host="$2" ref="$2/${1}" repo id layers digests
    repo="${ref%:*}"
    id="$(image_id "$ref")" || die "pulled $ref is missing"
    [[ "$id" == "${WANT_ID[$img]}" ]] || die "pulled $ref has ID $id, pushed ${WANT_ID[$img]}"
    layers="$(image_layers "$ref" | tr '\n' ' ')"
    [[ "$layers" == "${WANT_LAYERS[$img]}" ]] || die "pulled $ref has other layers than pushed: $layers vs ${WANT_LAYERS[$img]}"
    digests="$(docker image inspect -f '{{range .RepoDigests}}{{println .}}{{end}}' "$ref")"
    grep -qxF "$repo@${PUSHED_DIGEST[$host,$img]}" <<<"$digests" \
        || die "pulled $ref has repo digests [$(tr '\n' ' ' <<<"$digests")], pushed ${PUSHED_DIGEST[$host,$img]}"
}

# pull_all RUN NAME HOST PHASE: remove local images, pull every image, check.
# Records pull_PHASE_IMG and pull_PHASE_total.
pull_all() {
    local run="$1" name="$2" host="$3" phase="$4" img t0 t total=0
    remove_local_images
    for img in "${BENCH_IMAGES[@]}"; do
        t0="$(now)"
        docker pull "$host/$img" >>"$LOG_DIR/pull-$name.log" 2>&1 \
            || { show_log "$LOG_DIR/pull-$name.log" 10; die "$phase pull of $img from $name failed"; }
        t="$(elapsed "$t0")"
        verify_pull "$img" "$host"
        record "$run" "$name" "pull_${phase}_$img" "pull $phase $(short "$img") (s)" s "$t"
        total="$(add "$total" "$t")"
    done
    record "$run" "$name" "pull_${phase}_total" "**pull $phase, total (s)**" s "$total"
}

# ---------------------------------------------------------------- report

# value NAME METRIC: the median over the runs (lower middle for even counts);
# empty when not recorded; a non-numeric value is passed through.
value() {
    local vals=() r v
    for ((r = 1; r <= BENCH_RUNS; r++)); do
        v="${RESULT["$r,$1,$2"]:-}"
        [[ -n "$v" ]] && vals+=("$v")
    done
    ((${#vals[@]})) || return 0
    [[ "${vals[0]}" =~ ^[0-9.eE+-]+$ ]] || { echo "${vals[0]}"; return 0; }
    printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}
human() { # KIND VALUE
    [[ -n "$2" ]] || { echo "-"; return; }
    [[ "$2" =~ ^[0-9.eE+-]+$ ]] || { echo "$2"; return; }
    case "$1" in
        bytes) awk -v b="$2" 'BEGIN { printf "%.1f MiB", b / 1048576 }' ;;
        s | x) awk -v b="$2" 'BEGIN { printf "%.2f", b }' ;;
        *) echo "$2" ;;
    esac
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'
}

# table_row METRIC NAME_A NAME_B: "| label | A | B | A/B |" of the medians.
table_row() {
    local a b
    a="$(value "$2" "$1")" b="$(value "$3" "$1")"
    printf '| %s | %s | %s | %s |\n' "${LABEL[$1]}" "$(human "${KIND[$1]}" "$a")" \
        "$(human "${KIND[$1]}" "$b")" "$(ratio "$a" "$b")"
}
