#!/usr/bin/env bash
# Storage of blockreg vs registry:2 when the corpus's layers were compressed
# by other tools than docker 20.10's Go (issue 8): the bench corpus of
# bench/compare.sh (15 images), pushed with skopeo from OCI layouts whose
# layers were re-compressed by
#   go1.27.3  Go 1.27.3's compress/gzip, level 6 (gzip.DefaultCompression,
#             what docker, BuildKit, crane use) built by tests/e2e/go_gzip.py;
#             the layouts are cached under BENCH_CACHE/oci-go<version>/
#   pgzip     klauspost's pgzip, as `skopeo copy --dest-compress
#             --dest-compress-format gzip` writes it (podman, buildah, skopeo)
#   zstd      klauspost's zstd, as `skopeo copy --dest-compress
#             --dest-compress-format zstd` writes it (podman, BuildKit's
#             compression=zstd write the same encoder's streams)
# into a fresh store of each registry per variant, blockreg's conversions
# waited for; stored bytes are `du -sb` of the whole store directory
# (blockreg: DATA, cache included; registry:2: its storage root).
#
#   bash bench/encoders-corpus.sh                 # go1.27.3 and pgzip (~25 min on 2 cores, cold)
#   BENCH_VARIANTS=pgzip bash bench/encoders-corpus.sh
#   BENCH_VARIANTS=zstd BENCH_OUT=bench/results/encoders-corpus-zstd.md bash bench/encoders-corpus.sh
#   BENCH_QUICK=1 ...                             # only the Debian bases
#
# Writes bench/results/encoders-corpus.md. Kept apart from compare.sh (which
# measures docker push/pull times on docker's own gzip) so each runs in a
# reasonable time; both use the same corpus and OCI layouts.
set -uo pipefail
BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/e2e/lib.sh
source "$BENCH_DIR/../tests/e2e/lib.sh"
# shellcheck source=bench/lib-corpus.sh
source "$BENCH_DIR/lib-corpus.sh"
# shellcheck source=bench/lib-measure.sh
source "$BENCH_DIR/lib-measure.sh"

BENCH_VARIANTS="${BENCH_VARIANTS:-go1.27.3 pgzip}"
GO_VERSION=1.27.3
OUT="${BENCH_OUT:-$BENCH_DIR/results/encoders-corpus.md}"

bench_init
bench_corpus oci

store_du() { du -sb "$1" 2>/dev/null | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# go_layout IMG: IMG's OCI layout with Go-compressed layers (cached); prints its path.
go_layout() {
    local id d tmp
    id="$(basename "${OCI_DIR[$1]}")"
    d="$BENCH_CACHE/oci-go$GO_VERSION/$id"
    if [[ ! -f "$d/index.json" ]]; then
        tmp="$(mktemp -d "$BENCH_CACHE/oci-go$GO_VERSION.tmp.XXXXXX")"
        python3 "$BENCH_DIR/../tests/e2e/recompress_layout.py" "${OCI_DIR[$1]}" img "$tmp" \
            application/vnd.oci.image.layer.v1.tar+gzip "$GO_FILTER" 6 >/dev/null \
            2>>"$LOG_DIR/recompress.log" || { show_log "$LOG_DIR/recompress.log"; die "re-compressing $1 failed"; }
        mkdir -p "$(dirname "$d")"
        rm -rf "$d"
        mv "$tmp" "$d"
    fi
    echo "$d"
}

# zstd_layout IMG: IMG's OCI layout with zstd layers as skopeo writes them
# (cached). Pushing straight with --dest-compress-format zstd, skopeo would
# reuse gzip layers of the same content it knows on that registry.
zstd_layout() {
    local id d tmp
    id="$(basename "${OCI_DIR[$1]}")"
    d="$BENCH_CACHE/oci-zstd/$id"
    if [[ ! -f "$d/index.json" ]]; then
        tmp="$(mktemp -d "$BENCH_CACHE/oci-zstd.tmp.XXXXXX")"
        skopeo copy --quiet --dest-compress --dest-compress-format zstd "oci:${OCI_DIR[$1]}:img" "oci:$tmp:img" \
            >>"$LOG_DIR/recompress.log" 2>&1 || { show_log "$LOG_DIR/recompress.log"; die "zstd layout of $1 failed"; }
        mkdir -p "$(dirname "$d")"
        rm -rf "$d"
        mv "$tmp" "$d"
    fi
    echo "$d"
}

ROWS=()
for variant in $BENCH_VARIANTS; do
    case "$variant" in
        go*)
            GO_FILTER="$(python3 "$BENCH_DIR/../tests/e2e/go_gzip.py" "$GO_VERSION" "$BENCH_CACHE")" \
                || die "no Go $GO_VERSION gzip filter"
            log "re-compressing the corpus with Go $GO_VERSION (cached after the first run)"
            for img in "${BENCH_IMAGES[@]}"; do go_layout "$img" >/dev/null; done
            ;;
        pgzip) ;;
        zstd) for img in "${BENCH_IMAGES[@]}"; do zstd_layout "$img" >/dev/null; done ;;
        *) die "unknown variant $variant (go1.27.3, pgzip, zstd)" ;;
    esac
    d="$WORK_DIR/$variant"
    start_blockreg "$d/br" "$LOG_DIR/br-$variant.log" "${BENCH_GUEST:-}" || die "blockreg did not start"
    BRP="$BR_PID" BRH="$BR_HOST"
    start_registry2 "$d/r2" "$LOG_DIR/r2-$variant.log" || die "registry:2 did not start"
    R2P="$R2_PID" R2H="$R2_HOST"
    t0="$(now)"
    for img in "${BENCH_IMAGES[@]}"; do
        for host in "$BRH" "$R2H"; do
            case "$variant" in
                go*) args=(--preserve-digests "oci:$(go_layout "$img"):img") ;;
                pgzip) args=(--dest-compress --dest-compress-format gzip "oci:${OCI_DIR[$img]}:img") ;;
                zstd) args=(--preserve-digests "oci:$(zstd_layout "$img"):img") ;;
            esac
            skopeo copy --quiet --dest-tls-verify=false "${args[@]}" "docker://$host/$img" \
                >>"$LOG_DIR/skopeo-$variant.log" 2>&1 \
                || { show_log "$LOG_DIR/skopeo-$variant.log" 10; die "skopeo copy of $img ($variant) to $host failed"; }
        done
    done
    push_s="$(elapsed "$t0")"
    wait_s="$(wait_converted "$d/br")"
    br="$(store_du "$d/br")" r2="$(store_du "$d/r2/storage")"
    js="$(stats_json "$d/br")"
    rss="$(vm_hwm "$BRP")"
    ROWS+=("| $variant | $(mib "$br") | $(mib "$r2") | **$(div "$br" "$r2")** | $(jq -r '.gzip_blobs + (.zstd_blobs // 0)' <<<"$js") | $(jq -r .raw_blobs <<<"$js") ($(mib "$(jq -r .raw_bytes <<<"$js")")) | $(mib "$(jq -r .cache_bytes <<<"$js")") | $push_s | $wait_s | $(mib "$rss") |")
    log "$variant: blockreg $(mib "$br"), registry:2 $(mib "$r2"), ratio $(div "$br" "$r2")"
    stop_pid "$BRP"
    stop_pid "$R2P"
done

{
    echo "# Storage when other tools compressed the layers (issue 8)"
    echo
    echo "- command: \`bash bench/encoders-corpus.sh\` (BENCH_VARIANTS=\"$BENCH_VARIANTS\")"
    echo "- $(date -u +%Y-%m-%dT%H:%MZ), $BR_VERSION, ${#BENCH_IMAGES[@]} images: ${BENCH_IMAGES[*]}"
    echo "- each variant: fresh stores, every image pushed with skopeo to both registries, blockreg's conversions waited for;"
    echo "  stored = du -sb of the whole store directory (blockreg: DATA, cache included; registry:2: its storage root)"
    echo
    echo "| layers compressed by | blockreg stored | registry:2 stored | ours/registry:2 | blockreg blobs decoded | blobs as they came | cache | push, both (s) | conversion wait (s) | blockreg peak RSS (VmHWM) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} >"$OUT"
cat "$OUT"
log "written to $OUT; total $(elapsed "$T_START") s"
