#!/usr/bin/env bash
# End-to-end tests: the real docker and skopeo clients against the real
# blockreg binary, on loopback, with an own Docker engine.
#
#   bash tests/e2e/e2e.sh
#
# Each check prints "ok NAME" or "FAIL NAME: reason" and the run goes on; the
# last line is "N passed, N failed[, N skipped]" and the exit code is nonzero
# when anything failed. Logs go to WORK_DIR/logs (printed on failure).
#
# E2E_TARGET=registry2 runs the client-side checks (push/pull, skopeo,
# confinement, error bodies) against CNCF distribution instead, as a
# self-test of this script; blockreg-only checks are then skipped.
#
# E2E_ONLY="h i j" (letters of the section headings below, separated by
# spaces or commas) runs the setup and only those sections, each other
# section printing one "skip section_X" line; b, c, d, e, f, g and l use what
# a pushed, so naming any of them runs a too. Unset: every section.
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ------------------------------------------------------------------ setup

checks_init "${E2E_TARGET:-blockreg}"
T_START="$(now)"

E2E_SECTIONS=(a b g c e f d h i j l)
# want_section X: whether section X runs (E2E_ONLY).
want_section() {
    [[ -z "${E2E_ONLY:-}" ]] && return 0
    local only=" ${E2E_ONLY//,/ } " s
    if [[ "$1" == a ]]; then
        for s in b c d e f g l; do [[ "$only" == *" $s "* ]] && return 0; done
    fi
    [[ "$only" == *" $1 "* ]]
}
for s in "${E2E_SECTIONS[@]}"; do want_section "$s" || skip "section_$s" "not in E2E_ONLY=$E2E_ONLY"; done

# Section i reaches a TLS registry as registry.blockreg.test:PORT, a name
# that resolves nowhere, through this CONNECT proxy: the engine gets it as
# its HTTPS_PROXY (registries on 127.0.0.1 stay direct).
TLS_NAME=registry.blockreg.test
PROXY_PORT=""
if is_blockreg && want_section i; then
    if start_port_helper "$LOG_DIR/connect-proxy.log" "$WORK_DIR/proxy.port" \
        python3 "$E2E_LIB_DIR/connect_proxy.py" --allow "$TLS_NAME" --port-file "$WORK_DIR/proxy.port"; then
        PROXY_PORT="$HELPER_PORT"
        DOCKERD_HTTPS_PROXY="http://127.0.0.1:$PROXY_PORT"
    else
        log "the CONNECT proxy did not start; section i will fail"
    fi
fi
start_dockerd
ensure_corpus
T_CORPUS="$(elapsed "$T_START")"

declare -A REPO=(["$IMG_BASE"]="e2e/debian:$E2E_SUITE" ["$IMG_V1"]="e2e/nginx:v1" ["$IMG_V2"]="e2e/nginx:v2")
declare -A ID LAYERS PUSHED
for img in "${CORPUS_IMAGES[@]}"; do
    ID[$img]="$(image_id "$img")"
    LAYERS[$img]="$(image_layers "$img")"
done

GUEST_FILE=""
DATA="$WORK_DIR/br/data"
mkdir -p "$WORK_DIR/br"
if is_blockreg && [[ -f "$GUEST_DEFAULT" ]]; then
    GUEST_FILE="$WORK_DIR/br/guest.wasm"
    cp "$GUEST_DEFAULT" "$GUEST_FILE"
fi
start_target "$DATA" "$GUEST_FILE"
log "registry under test: $TARGET at $REG_URL (corpus ready after $T_CORPUS s)"

# stats_json [DATA_DIR]: blockreg stats --json (default: the main data dir).
stats_json() { "$BLOCKREG" stats --data "${1:-$DATA}" --json 2>>"$LOG_DIR/stats.log"; }

# wait_converted [DATA_DIR] [LABEL]: poll stats every 0.3 s, up to 10 min,
# until no blob awaits background conversion (.pending == 0). Logs how long
# it took; sets WC_STATS (the last stats) and WC_SECS. Returns 1 on timeout.
# A no-op against registry:2.
WAIT_LOG=()
wait_converted() {
    local dir="${1:-$DATA}" label="${2:-conversion}" t0 s pending end=$((SECONDS + 600))
    WC_STATS="" WC_SECS=0
    is_blockreg || return 0
    t0="$(now)"
    while :; do
        s="$(stats_json "$dir")"
        pending="$(jq -r '.pending' <<<"$s" 2>/dev/null)"
        if [[ "$pending" == 0 ]]; then
            WC_STATS="$s" WC_SECS="$(elapsed "$t0")"
            WAIT_LOG+=("$label ${WC_SECS}s")
            log "  waited $WC_SECS s for conversion ($label): $(jq -c '{blobs, pending, failed, stored_bytes, logical_bytes, ratio}' <<<"$s")"
            return 0
        fi
        if ((SECONDS >= end)); then
            WC_STATS="$s" WC_SECS="$(elapsed "$t0")"
            log "  conversion ($label) not done after $WC_SECS s: ${s:0:300}"
            return 1
        fi
        sleep 0.3
    done
}

# ------------------------------------------------------------------ a. push, pull

if want_section a; then  # E2E_ONLY (the section's body is not indented)
T_A="$(now)"
STATS_V1="" STATS_V2=""
for img in "${CORPUS_IMAGES[@]}"; do
    ref="${REPO[$img]}"
    if [[ "$img" == "$IMG_V2" ]] && is_blockreg; then
        wait_converted "$DATA" "base+v1" || fail "conversion_base_v1" "blobs still pending 10 min after pushing base and v1"
        STATS_V1="$WC_STATS"
    fi
    t0="$(now)"
    digest="$(push_image "$img" "$REG_HOST" "$ref" "$LOG_DIR/push-${ref//[:\/]/_}.log")"
    if [[ "$digest" == sha256:* ]]; then
        PUSHED[$img]="$digest"
        pass "push_$ref"
        log "  pushed $ref in $(elapsed "$t0") s"
    else
        show_log "$LOG_DIR/push-${ref//[:\/]/_}.log" 15
        fail "push_$ref" "docker push failed or reported no digest"
    fi
done
if is_blockreg; then
    wait_converted "$DATA" "v2" || fail "conversion_v2" "blobs still pending 10 min after pushing v2"
    STATS_V2="$WC_STATS"
fi

# Per-manifest facts used by later checks: blob digests and sizes.
declare -A MANIFEST_FILE
for img in "${CORPUS_IMAGES[@]}"; do
    ref="${REPO[$img]}"
    name="${ref%:*}" tag="${ref##*:}"
    name_check="manifest_$ref"
    [[ -n "${PUSHED[$img]:-}" ]] || { fail "$name_check" "not pushed"; continue; }
    http GET "$REG_URL/v2/$name/manifests/$tag" \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json'
    mf="$WORK_DIR/manifest-${ref//[:\/]/_}.json"
    cp "$BODY" "$mf" 2>/dev/null || : >"$mf"
    MANIFEST_FILE[$img]="$mf"
    got_layers="$(jq -r '.layers[].digest' "$mf" 2>/dev/null | wc -l)"
    want_layers="$(wc -l <<<"${LAYERS[$img]}")"
    if [[ "$CODE" != 200 ]]; then
        fail "$name_check" "GET manifest: $(describe_last)"
    elif [[ "$(header Docker-Content-Digest)" != "${PUSHED[$img]}" ]]; then
        fail "$name_check" "Docker-Content-Digest '$(header Docker-Content-Digest)' != pushed ${PUSHED[$img]}"
    elif [[ "sha256:$(sha256_file "$mf")" != "${PUSHED[$img]}" ]]; then
        fail "$name_check" "sha256 of manifest body != pushed digest ${PUSHED[$img]}"
    elif [[ "$(jq -r .config.digest "$mf")" != "${ID[$img]}" ]]; then
        fail "$name_check" "config digest $(jq -r .config.digest "$mf") != image ID ${ID[$img]}"
    elif [[ "$got_layers" != "$want_layers" ]]; then
        fail "$name_check" "$got_layers layers in manifest, image has $want_layers"
    else
        pass "$name_check"
    fi
done

# Every layer blob served back is byte-exact: its sha256 is its digest, its
# size the manifest's, and its gunzipped sha256 the image's diff ID.
declare -A BLOB_OK
for img in "${CORPUS_IMAGES[@]}"; do
    ref="${REPO[$img]}"
    mf="${MANIFEST_FILE[$img]:-}"
    [[ -s "$mf" ]] || { fail "blobs_$ref" "no manifest"; continue; }
    mapfile -t diffids <<<"${LAYERS[$img]}"
    mapfile -t lines < <(jq -r '.layers[] | "\(.digest) \(.size)"' "$mf" 2>/dev/null)
    bad=""
    ((${#lines[@]} > 0 && ${#lines[@]} == ${#diffids[@]})) \
        || bad="manifest lists ${#lines[@]} layers, the image has ${#diffids[@]}"
    for i in "${!lines[@]}"; do
        [[ -z "$bad" ]] || break
        read -r d size <<<"${lines[i]}"
        [[ -n "${BLOB_OK[$d]:-}" ]] && continue
        f="$WORK_DIR/blob.tmp"
        code="$(curl -s -o "$f" -w '%{http_code}' "$REG_URL/v2/${ref%:*}/blobs/$d")"
        if [[ "$code" != 200 ]]; then bad="GET blob $d: HTTP $code"; break; fi
        [[ "sha256:$(sha256_file "$f")" == "$d" ]] || { bad="blob $d: content sha256 is sha256:$(sha256_file "$f")"; break; }
        [[ "$(stat -c %s "$f")" == "$size" ]] || { bad="blob $d: $(stat -c %s "$f") bytes, manifest says $size"; break; }
        [[ "sha256:$(gunzip -c "$f" | sha256sum | cut -d' ' -f1)" == "${diffids[i]}" ]] \
            || { bad="blob $d: uncompressed digest != diff ID ${diffids[i]}"; break; }
        BLOB_OK[$d]=1
    done
    rm -f "$WORK_DIR/blob.tmp"
    if [[ -z "$bad" ]]; then pass "blobs_$ref"; else fail "blobs_$ref" "$bad"; fi
done

# Remove every local image, then pull each back: same image ID, same layers.
remove_local_images
left="$(docker images -q | wc -l)"
if ((left == 0)); then pass "rmi_all"; else fail "rmi_all" "$left local images left after docker rmi"; fi
for img in "${CORPUS_IMAGES[@]}"; do
    ref="${REPO[$img]}"
    check="pull_$ref"
    [[ -n "${PUSHED[$img]:-}" ]] || { fail "$check" "not pushed"; continue; }
    t0="$(now)"
    plog="$LOG_DIR/pull-${ref//[:\/]/_}.log"
    if ! docker pull "$REG_HOST/$ref" >"$plog" 2>&1; then
        show_log "$plog" 15
        fail "$check" "docker pull failed"
        continue
    fi
    log "  pulled $ref in $(elapsed "$t0") s"
    got_id="$(image_id "$REG_HOST/$ref")"
    got_layers="$(image_layers "$REG_HOST/$ref")"
    repodigests="$(docker image inspect -f '{{join .RepoDigests " "}}' "$REG_HOST/$ref")"
    if [[ "$got_id" != "${ID[$img]}" ]]; then
        fail "$check" "image ID $got_id != pushed ${ID[$img]}"
    elif [[ "$got_layers" != "${LAYERS[$img]}" ]]; then
        fail "$check" "RootFS.Layers differ from the pushed image"
    elif [[ " $repodigests " != *" $REG_HOST/${ref%:*}@${PUSHED[$img]} "* ]]; then
        fail "$check" "RepoDigests '$repodigests' lacks the pushed digest ${PUSHED[$img]}"
    else
        pass "$check"
    fi
done
log "a. push/pull: $(elapsed "$T_A") s"
fi  # a

# ------------------------------------------------------------------ b. dedup stats

# blob_sizes IMAGE: "digest size" for the config and every layer.
blob_sizes() {
    jq -r '(.config, .layers[]) | select(.size | type == "number") | "\(.digest) \(.size)"' \
        "${MANIFEST_FILE[$1]}" 2>/dev/null
}
# stats_valid JSON: every figure of blockreg stats --json is present and a number.
STATS_FIELDS=(blobs logical_bytes blocks block_bytes packs stored_bytes cache_bytes pending failed
    repositories manifests uploads ratio)
stats_valid() {
    local f filter="["
    for f in "${STATS_FIELDS[@]}"; do filter+=".$f,"; done
    filter="${filter%,}] | all(type == \"number\")"
    jq -e "$filter" <<<"$1" >/dev/null 2>&1
}
# g JSON FIELD: one figure of a stats object.
g() { jq -r ".$2" <<<"$1"; }
# recipe_bytes DIGEST...: total size of the blobs' recipe.json files.
recipe_bytes() {
    local d n=0
    for d in "$@"; do
        [[ -f "$DATA/layers/$d/recipe.json" ]] && n=$((n + $(stat -c %s "$DATA/layers/$d/recipe.json")))
    done
    echo "$n"
}
# fallback_reason DIGEST [LOG]: why the converter stored a gzip blob raw, from
# the server log ("converted D as raw (WHY): ...").
fallback_reason() {
    local line
    # The reason may span two lines (preflate appends " at FILE:LINE").
    line="$(sed 's/\x1b\[[0-9;]*m//g' "${2:-$REG_LOG}" | grep -F -A1 "converted $1 as" | tail -n2 \
        | awk 'NR == 1 || /^ at / { printf "%s", $0 }')"
    [[ -n "$line" ]] || line="$(sed 's/\x1b\[[0-9;]*m//g' "${2:-$REG_LOG}" | grep -F "$1" | grep -i 'convert' | tail -n1)"
    line="${line#*blockreg::convert: }"
    echo "${line:-no conversion line for $1 in the server log}" | cut -c1-500
}
if want_section b; then  # E2E_ONLY (the section's body is not indented)
if ! is_blockreg; then
    skip "stats_dedup" "blockreg only"
elif [[ -z "${MANIFEST_FILE[$IMG_V2]:-}" ]] || ! jq -e '.layers | length > 0' "${MANIFEST_FILE[$IMG_V2]}" >/dev/null 2>&1; then
    fail "stats_dedup" "nginx:v2 was not pushed or its manifest has no layers"
elif ! stats_valid "$STATS_V1" || ! stats_valid "$STATS_V2"; then
    fail "stats_json" "blockreg stats --json did not print the ${#STATS_FIELDS[@]} numeric fields (${STATS_FIELDS[*]}): '${STATS_V2:0:300}' $(tail -n3 "$LOG_DIR/stats.log" 2>/dev/null | cut -c1-200)"
else
    pass "stats_json"
    # Blobs v2 adds on top of base + v1, and v2's whole size, from the manifests.
    declare -A SEEN
    while read -r d s; do SEEN[$d]=1; done < <(blob_sizes "$IMG_BASE"; blob_sizes "$IMG_V1")
    v2_total=0 v2_new=0 v2_new_n=0 v2_new_digests=()
    while read -r d s; do
        v2_total=$((v2_total + s))
        [[ -n "${SEEN[$d]:-}" ]] || { v2_new=$((v2_new + s)); v2_new_n=$((v2_new_n + 1)); v2_new_digests+=("$d"); }
    done < <(blob_sizes "$IMG_V2")
    v1_logical=0
    while read -r d s; do v1_logical=$((v1_logical + s)); done < <({ blob_sizes "$IMG_BASE"; blob_sizes "$IMG_V1"; } | sort -u)
    j1="$STATS_V1" j2="$STATS_V2"
    sb_growth=$(($(g "$j2" stored_bytes) - $(g "$j1" stored_bytes)))
    lb_growth=$(($(g "$j2" logical_bytes) - $(g "$j1" logical_bytes)))
    blob_growth=$(($(g "$j2" blobs) - $(g "$j1" blobs)))
    v2_recipes="$(recipe_bytes "${v2_new_digests[@]}")"
    log "  stats after base+v1: $j1"
    log "  stats after v2:      $j2"
    log "  v2: $v2_total bytes in total, $v2_new bytes in $v2_new_n new blobs (recipes $v2_recipes bytes); stored_bytes grew $sb_growth"
    if ((sb_growth * 10 >= v2_total)); then
        fail "stats_shared_base_stored_once" "stored_bytes grew $sb_growth pushing v2; v2 is $v2_total bytes (want < 10%)"
    elif ((sb_growth > v2_new + 65536 + v2_recipes)); then
        fail "stats_shared_base_stored_once" "stored_bytes grew $sb_growth, more than v2's $v2_new new bytes + 64 KiB + $v2_recipes bytes of new recipes"
    else
        pass "stats_shared_base_stored_once"
    fi
    if ((lb_growth < v2_new || lb_growth > v2_new + 65536)); then
        fail "stats_logical_bytes" "logical_bytes grew $lb_growth pushing v2; its new blobs are $v2_new bytes"
    elif (($(g "$j1" logical_bytes) < v1_logical)); then
        fail "stats_logical_bytes" "logical_bytes $(g "$j1" logical_bytes) after base+v1 < their blobs' $v1_logical bytes"
    elif ((blob_growth != v2_new_n)); then
        fail "stats_logical_bytes" "blobs grew by $blob_growth pushing v2; it has $v2_new_n new blobs"
    else
        pass "stats_logical_bytes"
    fi
    # ratio = stored / logical: below 1 once layers share content; the e2e
    # corpus shares little beyond whole layers, so only "not above 1.05".
    log "  ratio after v2: $(g "$j2" ratio) (stored_bytes $(g "$j2" stored_bytes), logical_bytes $(g "$j2" logical_bytes), block_bytes $(g "$j2" block_bytes))"
    ratio_ok="$(jq -r '(.logical_bytes > 0) and (.ratio < 1.05) and ((.ratio - .stored_bytes / .logical_bytes) | fabs < 0.01)' <<<"$j2")"
    if [[ "$ratio_ok" == true ]]; then pass "stats_ratio"; else fail "stats_ratio" "ratio not stored/logical bytes or not < 1.05: $j2"; fi
    if (($(g "$j2" repositories) >= 2 && $(g "$j2" manifests) >= 3 && $(g "$j2" uploads) == 0)); then
        pass "stats_counts"
    else
        fail "stats_counts" "want repositories >= 2, manifests >= 3, uploads == 0 after pushes: $j2"
    fi
    if (($(g "$j2" pending) == 0 && $(g "$j2" failed) == 0 && $(g "$j2" packs) >= 1)); then
        pass "stats_conversion_done"
    else
        fail "stats_conversion_done" "want pending 0, failed 0, packs >= 1 after wait_converted: $j2"
    fi

    # The store on disk: blocks in packs/<16 hex>.pack, an index of 56-byte
    # records in index/<3 hex>, a version-2 recipe and no original per
    # converted blob, no leftovers, no whole copy of a layer outside packs
    # (cache/ holds recreated blobs on purpose and is checked separately).
    j3="$(stats_json)"
    packs_n="$(find "$DATA/blocks/packs" -maxdepth 1 -type f -name '*.pack' 2>/dev/null | wc -l)"
    badpack="$(find "$DATA/blocks/packs" -maxdepth 1 -type f -name '*.pack' 2>/dev/null \
        | grep -Ev '/[0-9a-f]{16}\.pack$' | head -n1)"
    badshard="$(find "$DATA/blocks/index" -type f 2>/dev/null | grep -Ev '/index/[0-9a-f]{3}$' | head -n1)"
    badsize="$(find "$DATA/blocks/index" -type f -printf '%s %p\n' 2>/dev/null | awk '$1 % 56 { print; exit }')"
    index_bytes="$(find "$DATA/blocks/index" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
    pack_bytes="$(find "$DATA/blocks/packs" -maxdepth 1 -type f -name '*.pack' -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
    layer_bytes="$(find "$DATA/layers" -mindepth 2 -maxdepth 2 -type f \( -name recipe.json -o -name original \) -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
    loose="$(find "$DATA/blocks" -mindepth 2 -maxdepth 2 -path "$DATA/blocks/??/*" 2>/dev/null | head -n1)"
    tmps="$(find "$DATA/blocks" -name '.tmp-*' 2>/dev/null | head -n1)"
    badrecipe=""
    while read -r d s; do
        r="$DATA/layers/$d/recipe.json"
        if [[ ! -f "$r" ]]; then badrecipe="no layers/$d/recipe.json"; break; fi
        # Format 2, or 3 when the content holds runs of a repeated block.
        case "$(jq -r .version "$r" 2>/dev/null)" in
            2 | 3) ;;
            *) badrecipe="layers/$d/recipe.json is not version 2 or 3"; break ;;
        esac
        if [[ -e "$DATA/layers/$d/original" ]]; then badrecipe="layers/$d/original still there after conversion"; break; fi
    done < <(blob_sizes "$IMG_V2")
    largest="$(for img in "${CORPUS_IMAGES[@]}"; do jq -r '.layers[].size' "${MANIFEST_FILE[$img]}"; done | sort -n | tail -n1)"
    copy="$(find "$DATA" -path "$DATA/blocks/packs" -prune -o -path "$DATA/cache" -prune -o -type f -size "${largest}c" -print 2>/dev/null | head -n1)"
    badcache="$(find "$DATA/cache" -maxdepth 1 -type f ! -name '.tmp-*' 2>/dev/null \
        | while read -r f; do [[ "sha256:$(sha256_file "$f")" == "$(basename "$f")" ]] || echo "$f"; done | head -n1)"
    log "  on disk: $packs_n packs ($pack_bytes bytes), index $index_bytes bytes, recipes+originals $layer_bytes bytes; largest layer $largest bytes; cache $(g "$j3" cache_bytes) bytes"
    if ((packs_n == 0)); then
        fail "store_layout" "no blocks/packs/*.pack"
    elif [[ -n "$badpack" ]]; then
        fail "store_layout" "pack not named <16 hex>.pack: $badpack"
    elif [[ -n "$badshard" ]]; then
        fail "store_layout" "index shard not named blocks/index/<3 hex>: $badshard"
    elif [[ -n "$badsize" ]]; then
        fail "store_layout" "index shard size not a multiple of 56: $badsize"
    elif [[ -n "$loose" ]]; then
        fail "store_layout" "loose block file (format 1) left: $loose"
    elif [[ -n "$tmps" ]]; then
        fail "store_layout" "temporary file left under blocks/: $tmps"
    elif [[ -n "$badrecipe" ]]; then
        fail "store_layout" "$badrecipe"
    elif [[ -n "$copy" ]]; then
        fail "store_layout" "a file of exactly the largest layer's size ($largest bytes) outside packs: $copy"
    elif [[ -n "$badcache" ]]; then
        fail "store_layout" "cache entry whose content does not hash to its name: $badcache"
    elif ((packs_n != $(g "$j3" packs) || index_bytes != 56 * $(g "$j3" blocks))); then
        fail "store_layout" "on disk $packs_n packs / $((index_bytes / 56)) index records, stats say $(g "$j3" packs) / $(g "$j3" blocks)"
    elif ((pack_bytes + index_bytes + layer_bytes != $(g "$j3" stored_bytes))); then
        fail "store_layout" "packs + index + recipes + originals = $((pack_bytes + index_bytes + layer_bytes)) bytes on disk, stats say stored_bytes $(g "$j3" stored_bytes)"
    else
        pass "store_layout"
    fi
    # docker's gzip (Go's compress/gzip) must be recreatable: every layer of
    # the base is stored as its tar, not as raw blocks, and recreated by the
    # replica of docker 20.10's encoder (core/src/goflate126), with no
    # corrections.
    badenc=""
    for d in $(jq -r '.layers[].digest' "${MANIFEST_FILE[$IMG_BASE]}"); do
        enc="$(jq -r .encoding "$DATA/layers/$d/recipe.json" 2>/dev/null)"
        [[ "$enc" == gzip ]] || { badenc="base layer $d has encoding '$enc': $(fallback_reason "$d")"; break; }
        rep="$(jq -r '[.layout[] | select(has("replica")) | .replica[0]] | first // "none"' "$DATA/layers/$d/recipe.json" 2>/dev/null)"
        [[ "$rep" == go1.26-flate ]] || { badenc="base layer $d is recreated by replica '$rep', want go1.26-flate (docker 20.10's Go encoder)"; break; }
        # A layer of several MiB keeps checkpoints (one per ~1 MiB of
        # output): its stretches are recreated at once, on every core.
        size="$(jq -r --arg d "$d" '.layers[] | select(.digest == $d) | .size' "${MANIFEST_FILE[$IMG_BASE]}")"
        cps="$(jq -r '[.layout[] | select(has("replica")) | (.replica[3] // []) | length] | add // 0' "$DATA/layers/$d/recipe.json" 2>/dev/null)"
        if ((size > 4194304 && cps < size / 2097152)); then
            badenc="base layer $d ($size bytes) keeps $cps replica checkpoints, want one per ~1 MiB of output"
            break
        fi
    done
    encs="$(for img in "${CORPUS_IMAGES[@]}"; do jq -r '.layers[].digest' "${MANIFEST_FILE[$img]}"; done | sort -u \
        | while read -r d; do jq -r .encoding "$DATA/layers/$d/recipe.json" 2>/dev/null; done | sort | uniq -c | tr -s ' \n' ' ')"
    log "  layer encodings (base, v1, v2):$encs"
    if [[ -z "$badenc" ]]; then pass "store_gzip_recreated"; else fail "store_gzip_recreated" "$badenc"; fi
fi

# Block-level dedup, below the blob level: a new blob made of the base
# layer's bytes plus 8 KiB: a gzip stream followed by trailing garbage, stored
# as the same tar blocks plus a literal.
if is_blockreg && stats_valid "$STATS_V2" && [[ -n "${MANIFEST_FILE[$IMG_BASE]:-}" ]]; then
    base_layer="$(jq -r '.layers[0].digest' "${MANIFEST_FILE[$IMG_BASE]}")"
    f="$WORK_DIR/prefix-blob"
    curl -sf -o "$f" "$REG_URL/v2/e2e/debian/blobs/$base_layer" && head -c 8192 /dev/urandom >>"$f"
    fsize="$(stat -c %s "$f")"
    d="sha256:$(sha256_file "$f")"
    wait_converted "$DATA" "before prefix blob"
    s1="$WC_STATS"
    upload_blob "$REG_URL" e2e/prefix "$f"
    put_code="$CODE" put_desc="$(describe_last)"
    got1="$(curl -s "$REG_URL/v2/e2e/prefix/blobs/$d" | sha256sum | cut -d' ' -f1)"
    wait_converted "$DATA" "prefix blob"
    wc_rc=$? s2="$WC_STATS"
    got2="$(curl -s "$REG_URL/v2/e2e/prefix/blobs/$d" | sha256sum | cut -d' ' -f1)"
    if [[ "$put_code" != 201 ]]; then
        fail "stats_block_dedup" "monolithic upload of $fsize bytes: $put_desc"
    elif [[ "sha256:$got1" != "$d" ]]; then
        fail "stats_block_dedup" "the blob does not read back intact right after the push"
    elif ((wc_rc != 0)) || ! stats_valid "$s2"; then
        fail "stats_block_dedup" "no conversion within 10 min / no valid stats: ${s2:0:300}"
    elif [[ "sha256:$got2" != "$d" ]]; then
        fail "stats_block_dedup" "the blob does not read back intact after its conversion"
    else
        growth=$(($(g "$s2" stored_bytes) - $(g "$s1" stored_bytes)))
        lgrowth=$(($(g "$s2" logical_bytes) - $(g "$s1" logical_bytes)))
        enc="$(jq -r .encoding "$DATA/layers/$d/recipe.json" 2>/dev/null)"
        log "  prefix blob of $fsize bytes ($enc): logical_bytes +$lgrowth, stored_bytes +$growth (recipe $(recipe_bytes "$d") bytes), ratio $(g "$s2" ratio)"
        if ((lgrowth != fsize)); then
            fail "stats_block_dedup" "logical_bytes grew $lgrowth for a $fsize-byte blob"
        elif ((growth * 10 >= fsize)); then
            fail "stats_block_dedup" "stored_bytes grew $growth for a $fsize-byte blob that shares all but 8 KiB with a stored one (want < 10%; encoding '$enc': $(fallback_reason "$d"))"
        elif [[ -e "$DATA/layers/$d/original" || ! -f "$DATA/layers/$d/recipe.json" ]]; then
            fail "stats_block_dedup" "layers/$d: original still there or no recipe after conversion"
        else
            pass "stats_block_dedup"
        fi
    fi
    rm -f "$f"
fi

# A base image rebuilt later from the same packages: same files, every mtime
# moved. Only tar headers (and gzip corrections) are new.
if is_blockreg && stats_valid "$STATS_V2"; then
    t0="$(now)"
    check=rebuilt_base_stores_almost_nothing
    rebuilt_tar="$WORK_DIR/rebuilt-rootfs.tar"
    rebuilt_ref="e2e/debian:rebuilt"
    # Same members in the same order, mtimes + 30 days (PAX times dropped).
    python3 - "$ROOTFS_TAR" "$rebuilt_tar" $((30 * 86400)) >"$LOG_DIR/rebuilt-tar.log" 2>&1 <<'EOF'
import sys, tarfile
src, dst, delta = sys.argv[1], sys.argv[2], int(sys.argv[3])
with tarfile.open(src) as i, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as o:
    for m in i:
        m.mtime = int(m.mtime) + delta
        for k in ("mtime", "atime", "ctime"):
            m.pax_headers.pop(k, None)
        o.addfile(m, i.extractfile(m) if m.isreg() else None)
EOF
    tar_rc=$?
    docker rmi -f "$rebuilt_ref" "$REG_HOST/$rebuilt_ref" >/dev/null 2>&1
    if ((tar_rc != 0)); then
        show_log "$LOG_DIR/rebuilt-tar.log" 10
        fail "$check" "rewriting the rootfs tar with later mtimes failed"
    elif ! docker import --change 'CMD ["/bin/bash"]' "$rebuilt_tar" "$rebuilt_ref" >"$LOG_DIR/docker-import-rebuilt.log" 2>&1; then
        show_log "$LOG_DIR/docker-import-rebuilt.log" 10
        fail "$check" "docker import of the rebuilt rootfs failed"
    else
        rm -f "$rebuilt_tar"
        rebuilt_id="$(image_id "$rebuilt_ref")"
        rebuilt_layers="$(image_layers "$rebuilt_ref")"
        wait_converted "$DATA" "before rebuilt base"
        s1="$WC_STATS"
        rdigest="$(push_image "$rebuilt_ref" "$REG_HOST" "$rebuilt_ref" "$LOG_DIR/push-rebuilt.log")"
        rmf="$WORK_DIR/manifest-rebuilt.json"
        manifest_json "$REG_URL" e2e/debian rebuilt >"$rmf" 2>/dev/null
        wait_converted "$DATA" "rebuilt base"
        wc_rc=$? s2="$WC_STATS"
        rlayer="$(jq -r '.layers[0].digest' "$rmf" 2>/dev/null)"
        rlayer_size="$(jq -r '[.layers[].size] | add' "$rmf" 2>/dev/null)"
        rblobs_size="$(jq -r '[.config.size, .layers[].size] | add' "$rmf" 2>/dev/null)"
        if [[ "$rdigest" != sha256:* ]]; then
            show_log "$LOG_DIR/push-rebuilt.log" 15
            fail "$check" "docker push of $rebuilt_ref failed"
        elif [[ "$rlayer" != sha256:* ]] || ((rlayer_size <= 0)); then
            fail "$check" "no layer in the pushed manifest: $(head -c 300 "$rmf")"
        elif [[ "$rlayer" == "$(jq -r '.layers[0].digest' "${MANIFEST_FILE[$IMG_BASE]:-/dev/null}" 2>/dev/null)" ]]; then
            fail "$check" "the rebuilt layer has the same digest as the base's: the mtimes did not change"
        elif ((wc_rc != 0)) || ! stats_valid "$s2"; then
            fail "$check" "no conversion within 10 min / no valid stats: ${s2:0:300}"
        else
            growth=$(($(g "$s2" stored_bytes) - $(g "$s1" stored_bytes)))
            lgrowth=$(($(g "$s2" logical_bytes) - $(g "$s1" logical_bytes)))
            enc="$(jq -r .encoding "$DATA/layers/$rlayer/recipe.json" 2>/dev/null)"
            log "  rebuilt base: layer $rlayer_size bytes ($enc), logical_bytes +$lgrowth, stored_bytes +$growth ($(awk -v a="$growth" -v b="$rlayer_size" 'BEGIN { printf "%.2f", 100 * a / b }')% of the layer; recipe $(recipe_bytes "$rlayer") bytes), ratio $(g "$s2" ratio)"
            # Pull it back: the same image.
            docker rmi -f "$rebuilt_ref" "$REG_HOST/$rebuilt_ref" >/dev/null 2>&1
            pulled_id=""
            if docker pull "$REG_HOST/$rebuilt_ref" >"$LOG_DIR/pull-rebuilt.log" 2>&1; then
                pulled_id="$(image_id "$REG_HOST/$rebuilt_ref")"
            fi
            if ((lgrowth != rblobs_size || lgrowth < rlayer_size)); then
                fail "$check" "logical_bytes grew $lgrowth; the rebuilt image's new blobs are $rblobs_size bytes (layer $rlayer_size)"
            elif ((growth * 10 >= rlayer_size)); then
                fail "$check" "stored_bytes grew $growth for a rebuilt base whose layer is $rlayer_size bytes (want < 10%; encoding '$enc': $(fallback_reason "$rlayer"))"
            else
                pass "$check"
            fi
            if [[ -z "$pulled_id" ]]; then
                show_log "$LOG_DIR/pull-rebuilt.log" 15
                fail "pull_$rebuilt_ref" "docker pull $REG_HOST/$rebuilt_ref failed"
            elif [[ "$pulled_id" != "$rebuilt_id" ]]; then
                fail "pull_$rebuilt_ref" "pulled image ID $pulled_id != imported $rebuilt_id"
            elif [[ "$(image_layers "$REG_HOST/$rebuilt_ref")" != "$rebuilt_layers" ]]; then
                fail "pull_$rebuilt_ref" "pulled RootFS.Layers differ from the imported image's"
            else
                pass "pull_$rebuilt_ref"
            fi
        fi
    fi
    rm -f "$rebuilt_tar"
    log "  rebuilt base: $(elapsed "$t0") s"
fi
fi  # b

# ------------------------------------------------------------------ g. crash during conversion

# A second server on a fresh data dir: push the base layer, kill -9 it while
# that blob is being converted (a .tmp-*.pack exists), restart: the blob is
# served from its original at once, then converted, and served from blocks.
# drop_pid PID: forget a PID we already reaped (so cleanup never signals it).
drop_pid() {
    local kept=() p
    for p in "${E2E_PIDS[@]}"; do [[ "$p" == "$1" ]] || kept+=("$p"); done
    E2E_PIDS=("${kept[@]}")
}
if want_section g; then  # E2E_ONLY (the section's body is not indented)
T_G="$(now)"
check=kill9_during_conversion_loses_nothing
k9_layer="$(jq -r '.layers[0].digest' "${MANIFEST_FILE[$IMG_BASE]:-/dev/null}" 2>/dev/null)"
if ! is_blockreg; then
    skip "$check" "blockreg only"
elif [[ "$k9_layer" != sha256:* ]]; then
    fail "$check" "the base image was not pushed"
else
    K9_DATA="$WORK_DIR/k9/data" K9_LOG="$LOG_DIR/blockreg-k9.log" K9_LOG2="$LOG_DIR/blockreg-k9-restart.log"
    K9_GUEST=""
    [[ -f "$GUEST_DEFAULT" ]] && K9_GUEST="$GUEST_DEFAULT"
    k9_file="$WORK_DIR/k9-layer"
    bad="" k9_pid=""
    curl -sf -o "$k9_file" "$REG_URL/v2/e2e/debian/blobs/$k9_layer" \
        && [[ "sha256:$(sha256_file "$k9_file")" == "$k9_layer" ]] || bad="GET $k9_layer from the main registry failed"
    k9_size="$(stat -c %s "$k9_file" 2>/dev/null || echo 0)"
    if [[ -z "$bad" ]]; then
        if start_blockreg "$K9_DATA" "$K9_LOG" "$K9_GUEST"; then k9_pid="$BR_PID"; else bad="second blockreg did not start"; fi
    fi
    if [[ -z "$bad" ]] && ! upload_blob "$BR_URL" k9 "$k9_file"; then
        bad="upload of the $k9_size-byte base layer: $(describe_last)"
    fi
    # Wait for the conversion to be under way: its pack is still a .tmp-.
    seen_tmp=""
    if [[ -z "$bad" ]]; then
        t0="$(now)"
        for ((i = 0; i < 1200; i++)); do
            seen_tmp="$(find "$K9_DATA/blocks/packs" -maxdepth 1 -name '.tmp-*.pack' 2>/dev/null | head -n1)"
            [[ -n "$seen_tmp" ]] && break
            [[ -f "$K9_DATA/layers/$k9_layer/recipe.json" ]] && break
            sleep 0.05
        done
        if [[ -n "$seen_tmp" ]]; then
            sleep 0.5   # let it write into the pack for a moment
            kill -9 "$k9_pid"
            wait "$k9_pid" 2>/dev/null
            drop_pid "$k9_pid"
            k9_pid=""
            log "  kill -9 of the second server $(elapsed "$t0") s after the push, with $(basename "$seen_tmp") at $(stat -c %s "$seen_tmp" 2>/dev/null || echo '?') bytes"
        elif [[ -f "$K9_DATA/layers/$k9_layer/recipe.json" ]]; then
            bad="the conversion finished before a .tmp-*.pack was seen; nothing to interrupt"
        else
            bad="no .tmp-*.pack under blocks/packs within 60 s of the push (conversion never started?)"
        fi
    fi
    if [[ -z "$bad" ]]; then
        if [[ ! -f "$K9_DATA/layers/$k9_layer/original" ]]; then
            bad="layers/$k9_layer/original is gone after kill -9 mid-conversion"
        elif [[ -f "$K9_DATA/layers/$k9_layer/recipe.json" ]]; then
            bad="a recipe was committed although the conversion was killed (kill came too late)"
        elif [[ "$(sha256_file "$K9_DATA/layers/$k9_layer/original")" != "${k9_layer#sha256:}" ]]; then
            bad="layers/$k9_layer/original does not hash to its digest after kill -9"
        elif ! start_blockreg "$K9_DATA" "$K9_LOG2" "$K9_GUEST"; then
            bad="second blockreg did not restart on the same data dir"
        else
            k9_pid="$BR_PID"
            got="$(curl -s --max-time 120 "$BR_URL/v2/k9/blobs/$k9_layer" | sha256sum | cut -d' ' -f1)"
            from_original=no
            [[ -f "$K9_DATA/layers/$k9_layer/original" ]] && from_original=yes
            if [[ "sha256:$got" != "$k9_layer" ]]; then
                bad="GET right after the restart: content sha256:$got != $k9_layer"
            elif ! wait_converted "$K9_DATA" "after kill -9 and restart"; then
                bad="still pending 10 min after the restart: ${WC_STATS:0:300}"
            elif (($(g "$WC_STATS" failed) != 0 || $(g "$WC_STATS" blobs) != 1 || $(g "$WC_STATS" logical_bytes) != k9_size)); then
                bad="after conversion want 1 blob of $k9_size bytes, failed 0: $WC_STATS"
            else
                got="$(curl -s --max-time 120 "$BR_URL/v2/k9/blobs/$k9_layer" | sha256sum | cut -d' ' -f1)"
                tmps="$(find "$K9_DATA/blocks/packs" -name '.tmp-*' 2>/dev/null | head -n1)"
                if [[ "sha256:$got" != "$k9_layer" ]]; then
                    bad="GET after the conversion: content sha256:$got != $k9_layer"
                elif [[ ! -f "$K9_DATA/layers/$k9_layer/recipe.json" ]]; then
                    bad="no recipe.json after the conversion"
                elif [[ -e "$K9_DATA/layers/$k9_layer/original" ]]; then
                    bad="original still there after the conversion"
                elif [[ -n "$tmps" ]]; then
                    bad="temporary pack left after the conversion: $tmps"
                fi
                log "  after restart: first GET served while original present: $from_original; converted as $(jq -r .encoding "$K9_DATA/layers/$k9_layer/recipe.json" 2>/dev/null) in $WC_SECS s"
            fi
        fi
    fi
    if [[ -z "$bad" ]]; then
        pass "$check"
    else
        fail "$check" "$bad"
        show_log "$K9_LOG" 10
        show_log "$K9_LOG2" 10
    fi
    [[ -n "$k9_pid" ]] && stop_pid "$k9_pid"
    rm -f "$k9_file"
    log "g. crash during conversion: $(elapsed "$T_G") s"
fi
fi  # g

# ------------------------------------------------------------------ c. skopeo

if want_section c; then  # E2E_ONLY (the section's body is not indented)
T_C="$(now)"
SK="$WORK_DIR/skopeo"
mkdir -p "$SK"
STATS_PRE_SKOPEO=""
if stats_valid "$STATS_V2" && wait_converted "$DATA" "before skopeo"; then STATS_PRE_SKOPEO="$WC_STATS"; fi
if [[ -z "${MANIFEST_FILE[$IMG_V1]:-}" ]]; then
    fail "skopeo_roundtrip" "nginx:v1 was not pushed"
elif ! skopeo_q copy --src-tls-verify=false "docker://$REG_HOST/e2e/nginx:v1" "oci:$SK/oci:v1"; then
    show_log "$LOG_DIR/skopeo.log" 15
    fail "skopeo_roundtrip" "copy docker:// -> oci: failed"
elif ! skopeo_q copy --dest-tls-verify=false "oci:$SK/oci:v1" "docker://$REG_HOST/e2e/skopeo-copy:v1"; then
    show_log "$LOG_DIR/skopeo.log" 15
    fail "skopeo_roundtrip" "copy oci: -> docker:// (new repo) failed"
elif ! skopeo_q copy --src-tls-verify=false "docker://$REG_HOST/e2e/skopeo-copy:v1" "dir:$SK/dir"; then
    show_log "$LOG_DIR/skopeo.log" 15
    fail "skopeo_roundtrip" "copy docker:// -> dir: failed"
else
    # The OCI manifest skopeo wrote is what the registry serves and what
    # came back, byte for byte. Its layers are the docker-pushed layers (the
    # config is rewritten by skopeo's docker -> OCI conversion).
    oci_digest="$(jq -r '.manifests[0].digest' "$SK/oci/index.json")"
    oci_mf="$SK/oci/blobs/sha256/${oci_digest#sha256:}"
    want_layers="$(jq -r '.layers[].digest' "${MANIFEST_FILE[$IMG_V1]}")"
    http GET "$REG_URL/v2/e2e/skopeo-copy/manifests/v1" -H 'Accept: application/vnd.oci.image.manifest.v1+json'
    bad=""
    [[ "$(jq -r '.layers[].digest' "$oci_mf")" == "$want_layers" ]] \
        || bad="OCI layout layers differ from the docker-pushed manifest's"
    [[ -z "$bad" && "$CODE" != 200 ]] && bad="GET e2e/skopeo-copy:v1: $(describe_last)"
    [[ -z "$bad" && "$(header Docker-Content-Digest)" != "$oci_digest" ]] \
        && bad="registry digest '$(header Docker-Content-Digest)' != OCI layout's $oci_digest"
    [[ -z "$bad" && "$(header Content-Type)" != application/vnd.oci.image.manifest.v1+json ]] \
        && bad="Content-Type '$(header Content-Type)' for an OCI manifest"
    [[ -z "$bad" && "sha256:$(sha256_file "$BODY")" != "$oci_digest" ]] \
        && bad="served manifest bytes do not hash to $oci_digest"
    [[ -z "$bad" && "sha256:$(sha256_file "$SK/dir/manifest.json")" != "$oci_digest" ]] \
        && bad="dir:/manifest.json sha256 != $oci_digest"
    if [[ -z "$bad" ]]; then
        for d in $(jq -r '.config.digest, .layers[].digest' "$SK/dir/manifest.json"); do
            f="$SK/dir/${d#sha256:}"
            [[ -f "$f" && "sha256:$(sha256_file "$f")" == "$d" ]] || { bad="dir: blob $d missing or corrupt"; break; }
            cmp -s "$f" "$SK/oci/blobs/sha256/${d#sha256:}" || { bad="dir: blob $d differs from the OCI layout's"; break; }
        done
    fi
    if [[ -z "$bad" ]]; then pass "skopeo_roundtrip"; else fail "skopeo_roundtrip" "$bad"; fi

    # The same blobs pushed again into another repository add no blocks:
    # only skopeo's rewritten (OCI) config and the recipes of new blobs.
    if is_blockreg; then
        wait_converted "$DATA" "skopeo copy"
        s1="$STATS_PRE_SKOPEO" s2="$WC_STATS"
        if ! stats_valid "$s1" || ! stats_valid "$s2"; then
            fail "skopeo_copy_dedup" "no valid stats --json output (or conversion not done): ${s2:0:300}"
        else
            growth=$(($(g "$s2" stored_bytes) - $(g "$s1" stored_bytes)))
            bgrowth=$(($(g "$s2" block_bytes) - $(g "$s1" block_bytes)))
            log "  skopeo copy into e2e/skopeo-copy: stored_bytes +$growth, block_bytes +$bgrowth, blobs +$(($(g "$s2" blobs) - $(g "$s1" blobs)))"
            if ((growth <= 65536 && bgrowth <= 65536)); then
                pass "skopeo_copy_dedup"
            else
                fail "skopeo_copy_dedup" "stored_bytes grew $growth, block_bytes $bgrowth copying v1 into a new repository (want <= 64 KiB)"
            fi
        fi
    fi
fi
log "c. skopeo: $(elapsed "$T_C") s"
fi  # c

# ------------------------------------------------------------------ guest header

if want_section f; then  # E2E_ONLY (the section's body is not indented)
if is_blockreg; then
    bad=""
    for req in "GET /v2/" "GET /v2/e2e/nginx/manifests/no-such-tag" "HEAD /v2/e2e/nginx/manifests/v1"; do
        http "${req% *}" "$REG_URL${req#* }"
        [[ "$(header Blockreg-Guest)" == blockreg-guest/0.1.0 ]] \
            || { bad="$req: Blockreg-Guest '$(header Blockreg-Guest)', want blockreg-guest/0.1.0"; break; }
    done
    if [[ -z "$bad" ]]; then pass "guest_header"; else fail "guest_header" "$bad"; fi
else
    skip "guest_header" "blockreg only"
fi
fi  # f: the guest header

# ------------------------------------------------------------------ e. confinement

if want_section e; then  # E2E_ONLY (the section's body is not indented)
T_E="$(now)"
CONF_ROOT="$(dirname "$DATA")"          # WORK_DIR/br: the data dir's parent
SECRET="e2e-sentinel-$RANDOM$RANDOM"
echo "$SECRET" >"$CONF_ROOT/sentinel"
mkdir -p "$CONF_ROOT/e2eoutside/manifests"
echo "$SECRET" >"$CONF_ROOT/e2eoutside/manifests/latest"
snapshot() {
    find "$CONF_ROOT" -path "$DATA" -prune -o -printf '%p %s %T@\n' | sort
    find / -maxdepth 2 -name '*e2eevil*' 2>/dev/null
    find "$(dirname "$WORK_DIR")" -maxdepth 4 -path "$DATA" -prune -o -name '*e2eevil*' -print 2>/dev/null
}
snapshot >"$WORK_DIR/confine.before"
long_name="$(printf 'a%.0s' {1..5000})"
deep_name="$(printf 'a/%.0s' {1..300})a"
a_blob="$(jq -r '.layers[-1].digest' "${MANIFEST_FILE[$IMG_V1]:-/dev/null}" 2>/dev/null)"
[[ "$a_blob" == sha256:* ]] || a_blob="sha256:$(printf '0%.0s' {1..64})"
any_digest="sha256:$(printf 'hello' | sha256sum | cut -d' ' -f1)"
mf_body="${MANIFEST_FILE[$IMG_V1]:-/dev/null}"
MT="Content-Type:application/vnd.docker.distribution.manifest.v2+json"
# "METHOD PATH [curl args]": each must get a 4xx, never 2xx or 5xx.
traversals=(
    "GET /v2/../sentinel/manifests/latest"
    "GET /v2/../e2eoutside/manifests/latest"
    "GET /v2/e2e/../../e2eoutside/manifests/latest"
    "GET /v2/e2e/../../../../e2eoutside/manifests/latest"
    "GET /v2/%2e%2e/e2eoutside/manifests/latest"
    "GET /v2/%2e%2e/%2e%2e/e2eoutside/manifests/latest"
    "GET /v2/e2e%2F..%2F..%2Fe2eoutside/manifests/latest"
    "GET /v2/e2e%2f%2e%2e%2f%2e%2e%2fe2eoutside/manifests/latest"
    "GET /v2/e2e/nginx/manifests/..%2F..%2F..%2F..%2Fsentinel"
    "GET /v2/e2e/nginx/manifests/../../../../sentinel"
    "GET /v2/e2e/nginx/manifests/%2e%2e%2f%2e%2e%2f%2e%2e%2fsentinel"
    "GET /v2/./e2e/nginx/manifests/v1"
    "GET /v2//etc/passwd/manifests/latest"
    "GET /v2/%2Fetc%2Fpasswd/manifests/latest"
    "GET /v2/%2F$CONF_ROOT/e2eoutside/manifests/latest"
    "GET /v2/e2e/nginx/manifests/%2Fetc%2Fpasswd"
    "GET /v2/..\\..\\e2eoutside/manifests/latest"
    "GET /v2/..%5C..%5Ce2eoutside/manifests/latest"
    "GET /v2/e2e/nginx/manifests/..%5C..%5C..%5Csentinel"
    "GET /v2/e2e%00/manifests/latest"
    "GET /v2/e2e/nginx/manifests/v1%00"
    "GET /v2/e2e/nginx/blobs/sha256:..%2F..%2F..%2Fsentinel"
    "GET /v2/e2e/nginx/blobs/sha256:../../../../sentinel"
    "GET /v2/e2e/nginx/blobs/../../../../sentinel"
    "GET /v2/e2e/nginx/blobs/$a_blob%2F..%2F..%2F..%2F..%2Fsentinel"
    "GET /v2/e2e/nginx/blobs/$a_blob/../../../../../sentinel"
    "GET /v2/../../e2eoutside/tags/list"
    "GET /v2/%2e%2e/e2eoutside/tags/list"
    "GET /v2/$long_name/manifests/latest"
    "GET /v2/$deep_name/manifests/latest"
    "GET /v2/e2e/nginx/manifests/$long_name"
    "GET /v2/e2e/nginx/blobs/sha256:$long_name"
    "PUT /v2/e2eevil/../../e2eevil/manifests/latest -H $MT --data-binary @$mf_body"
    "PUT /v2/%2e%2e/%2e%2e/e2eevil/manifests/latest -H $MT --data-binary @$mf_body"
    "PUT /v2/e2e/nginx/manifests/..%2F..%2F..%2Fe2eevil -H $MT --data-binary @$mf_body"
    "PUT /v2/e2e/nginx/manifests/$long_name -H $MT --data-binary @$mf_body"
    "PUT /v2/$long_name/manifests/latest -H $MT --data-binary @$mf_body"
    "POST /v2/../../e2eevil/blobs/uploads/"
    "POST /v2/e2eevil%2F..%2F..%2F..%2Fe2eevil/blobs/uploads/"
    "POST /v2/$long_name/blobs/uploads/"
    "PATCH /v2/e2e/nginx/blobs/uploads/..%2F..%2F..%2Fe2eevil --data-binary hello"
    "PATCH /v2/e2e/nginx/blobs/uploads/../../../../e2eevil --data-binary hello"
    "PUT /v2/e2e/nginx/blobs/uploads/..%2F..%2F..%2Fe2eevil?digest=$any_digest --data-binary hello"
    "PUT /v2/e2e/nginx/blobs/uploads/../../../../e2eevil?digest=$any_digest --data-binary hello"
    "DELETE /v2/e2e/nginx/manifests/..%2F..%2F..%2F..%2Fsentinel"
    "DELETE /v2/../e2eoutside/manifests/latest"
    "DELETE /v2/e2e/nginx/blobs/sha256:..%2F..%2F..%2F..%2Fsentinel"
)
bad=() leaks=()
for t in "${traversals[@]}"; do
    read -r -a parts <<<"$t"
    http "${parts[0]}" "$REG_URL${parts[1]}" "${parts[@]:2}"
    shown="${parts[0]} ${parts[1]:0:90}"
    if [[ "$CODE" == 4?? ]]; then :
    # Go's ServeMux answers dot segments with a redirect to the cleaned path.
    elif [[ "$CODE" == 301 ]] && ! is_blockreg; then :
    else bad+=("$shown -> $(describe_last)"); fi
    if grep -qF "$SECRET" "$BODY" "$HDRS" 2>/dev/null; then leaks+=("$shown"); fi
done
# A real upload session finished with a digest that names a path.
http POST "$REG_URL/v2/e2e/evil/blobs/uploads/"
loc="$(header Location)"
[[ "$loc" == /* ]] && loc="$REG_URL$loc"
if [[ "$CODE" == 202 && -n "$loc" ]]; then
    sep='?'; [[ "$loc" == *\?* ]] && sep='&'
    for d in "sha256:..%2F..%2F..%2F..%2Fe2eevil" "sha256:../../../../e2eevil" "..%2F..%2Fe2eevil"; do
        http PUT "$loc${sep}digest=$d" --data-binary hello
        [[ "$CODE" == 4?? ]] || bad+=("PUT upload ?digest=$d -> $(describe_last)")
    done
else
    bad+=("POST /v2/e2e/evil/blobs/uploads/ -> $(describe_last) (want 202 + Location)")
fi
# A cross-repository mount from a traversal name must not succeed.
http POST "$REG_URL/v2/e2e/evil/blobs/uploads/?mount=$a_blob&from=..%2F..%2Fe2e%2Fnginx"
[[ "$CODE" == 202 || "$CODE" == 4?? ]] || bad+=("POST mount from=../../e2e/nginx -> $(describe_last)")
snapshot >"$WORK_DIR/confine.after"
if ((${#bad[@]})); then
    fail "confinement_status" "${#bad[@]} of ${#traversals[@]}+ requests not 4xx; first: ${bad[0]}"
    printf '%s\n' "${bad[@]}" >"$LOG_DIR/confinement.txt"
    printf '    %s\n' "${bad[@]:1:9}" | cut -c1-200 >&2
else
    pass "confinement_status"
fi
if ((${#leaks[@]})); then
    fail "confinement_no_read" "sentinel content served by: ${leaks[*]}"
else
    pass "confinement_no_read"
fi
if diff -q "$WORK_DIR/confine.before" "$WORK_DIR/confine.after" >/dev/null; then
    pass "confinement_no_write"
else
    fail "confinement_no_write" "files outside the data dir changed: $(diff "$WORK_DIR/confine.before" "$WORK_DIR/confine.after" | grep '^[<>]' | head -n3 | tr '\n' ' ')"
fi
if [[ -n "$REG_PID" ]] && kill -0 "$REG_PID" 2>/dev/null; then pass "confinement_server_alive"; else fail "confinement_server_alive" "registry exited"; fi
log "e. confinement: $(elapsed "$T_E") s"
fi  # e

# ------------------------------------------------------------------ f. error bodies

SPEC_CODES=" BLOB_UNKNOWN BLOB_UPLOAD_INVALID BLOB_UPLOAD_UNKNOWN DIGEST_INVALID MANIFEST_BLOB_UNKNOWN MANIFEST_INVALID MANIFEST_UNKNOWN NAME_INVALID NAME_UNKNOWN SIZE_INVALID UNAUTHORIZED DENIED UNSUPPORTED TOOMANYREQUESTS "
# distribution 2.8 also uses these; accepted only in the registry2 self-test.
is_blockreg || SPEC_CODES+="TAG_INVALID MANIFEST_UNVERIFIED UNKNOWN RANGE_INVALID PAGINATION_NUMBER_INVALID "
# error_check NAME WANT_STATUS WANT_CODE(or -) METHOD PATH [curl args]
error_check() {
    local name="$1" want_status="$2" want_code="$3" method="$4" path="$5" code1
    shift 5
    http "$method" "$REG_URL$path" "$@"
    code1="$(jq -r '.errors[0].code' "$BODY" 2>/dev/null)"
    if [[ "$CODE" != "$want_status" ]]; then
        fail "$name" "$method $path: want HTTP $want_status; $(describe_last)"
    elif ! jq -e '.errors | type == "array" and length > 0' "$BODY" >/dev/null 2>&1; then
        fail "$name" "$method $path: body is not JSON with a non-empty errors array: $(describe_last)"
    elif [[ "$SPEC_CODES" != *" $code1 "* ]]; then
        fail "$name" "$method $path: errors[0].code '$code1' is not a distribution-spec code"
    elif [[ "$want_code" != - && "$code1" != "$want_code" ]]; then
        fail "$name" "$method $path: errors[0].code '$code1', want $want_code"
    elif is_blockreg && [[ "$(header Blockreg-Guest)" != blockreg-guest/* ]]; then
        fail "$name" "$method $path: no Blockreg-Guest header on the error"
    elif [[ "$(header Content-Type)" != application/json* ]]; then
        fail "$name" "$method $path: Content-Type '$(header Content-Type)'"
    else
        pass "$name"
    fi
}
if want_section f; then  # E2E_ONLY (the section's body is not indented)
zero="sha256:$(printf '0%.0s' {1..64})"
error_check error_manifest_unknown 404 MANIFEST_UNKNOWN GET /v2/e2e/nginx/manifests/no-such-tag
error_check error_blob_unknown 404 BLOB_UNKNOWN GET "/v2/e2e/nginx/blobs/$zero"
error_check error_name_unknown 404 NAME_UNKNOWN GET /v2/e2e/no-such-repo/tags/list
error_check error_manifest_invalid 400 MANIFEST_INVALID PUT /v2/e2e/bad/manifests/x -H "$MT" --data-binary 'not json'
# An upload finished with a digest that does not match its content.
http POST "$REG_URL/v2/e2e/bad/blobs/uploads/"
loc="$(header Location)"
[[ "$loc" == /* ]] && loc="$REG_URL$loc"
sep='?'; [[ "$loc" == *\?* ]] && sep='&'
if [[ "$CODE" == 202 && -n "$loc" ]]; then
    error_check error_digest_invalid 400 DIGEST_INVALID PUT "${loc#"$REG_URL"}${sep}digest=$zero" --data-binary hello
else
    fail error_digest_invalid "POST /v2/e2e/bad/blobs/uploads/: want 202 + Location; $(describe_last)"
fi
# Missing blob referenced by a manifest.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[]}' \
    "$zero" >"$WORK_DIR/mf-missing.json"
error_check error_manifest_blob_unknown 400 MANIFEST_BLOB_UNKNOWN PUT /v2/e2e/bad/manifests/x \
    -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "@$WORK_DIR/mf-missing.json"
fi  # f

# ------------------------------------------------------------------ d. hot swap

# load_loop ID OUT: sequential requests (GET /v2/, HEAD of a pushed blob) until
# WORK_DIR/load.stop appears, at most LOAD_MAX rounds or LOAD_SECS seconds.
# Writes "status guest-header" per request.
LOAD_MAX=600 LOAD_SECS=90
load_loop() {
    local out="$2" i end=$((SECONDS + LOAD_SECS))
    for ((i = 0; i < LOAD_MAX && SECONDS < end; i++)); do
        [[ -e "$WORK_DIR/load.stop" ]] && break
        curl -s -o /dev/null --max-time 10 -w '%{http_code} %header{blockreg-guest}\n' "$REG_URL/v2/" >>"$out"
        curl -s -o /dev/null --max-time 10 -I -w '%{http_code} %header{blockreg-guest}\n' \
            "$REG_URL/v2/e2e/nginx/blobs/$HOT_BLOB" >>"$out"
    done
}
# guest_now: the Blockreg-Guest header of a fresh GET /v2/.
guest_now() { curl -s -o /dev/null --max-time 10 -w '%header{blockreg-guest}' "$REG_URL/v2/"; }
# wait_guest WANT SECONDS: wait until guest_now says WANT.
wait_guest() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ "$(guest_now)" == "$1" ]] && return 0
        sleep 0.1
    done
    return 1
}
refusals() { grep -c 'guest reload refused' "$REG_LOG"; }
# wait_refusals N SECONDS: wait until the log has more than N refusal lines.
wait_refusals() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (($(refusals) > $1)) && return 0
        sleep 0.1
    done
    return 1
}
# swap_in FILE: atomic replace of the guest file (copy to temp, rename).
swap_in() {
    cp "$1" "$GUEST_FILE.tmp" && mv -f "$GUEST_FILE.tmp" "$GUEST_FILE"
}
# run_load LOOPS: start LOOPS load loops in the background; sets LOAD_PIDS.
run_load() {
    local n
    rm -f "$WORK_DIR/load.stop" "$WORK_DIR"/load.*.out
    LOAD_PIDS=()
    for ((n = 0; n < $1; n++)); do
        : >"$WORK_DIR/load.$n.out"
        load_loop "$n" "$WORK_DIR/load.$n.out" &
        LOAD_PIDS+=($!)
        E2E_PIDS+=($!)
    done
}
stop_load() {
    local p
    touch "$WORK_DIR/load.stop"
    for p in "${LOAD_PIDS[@]}"; do wait "$p"; done
    local kept=() q
    for q in "${E2E_PIDS[@]}"; do [[ " ${LOAD_PIDS[*]} " == *" $q "* ]] || kept+=("$q"); done
    E2E_PIDS=("${kept[@]}")
}

if want_section d; then  # E2E_ONLY (the section's body is not indented)
T_D="$(now)"
ALT=blockreg-guest/0.1.0+alt DEF=blockreg-guest/0.1.0
HOT_BLOB="$(jq -r '.config.digest' "${MANIFEST_FILE[$IMG_V1]:-/dev/null}" 2>/dev/null)"
if ! is_blockreg; then
    skip "hotswap" "blockreg only"
elif [[ -z "$GUEST_FILE" || ! -f "$GUEST_ALT" ]]; then
    fail "hotswap" "guest files missing: GUEST_DEFAULT=$GUEST_DEFAULT GUEST_ALT=$GUEST_ALT"
elif [[ "$HOT_BLOB" != sha256:* ]]; then
    fail "hotswap" "no pushed blob to request"
elif [[ "$(guest_now)" != "$DEF" ]]; then
    fail "hotswap" "serving '$(guest_now)' before the swap, want $DEF"
else
    # 1. Swap to the alt build under load from 3 parallel request loops.
    run_load 3
    sleep 1
    t0="$(now)"
    swap_in "$GUEST_ALT"
    if wait_guest "$ALT" 60; then swapped=1; else swapped=0; fi
    swap_s="$(elapsed "$t0")"
    sleep 1
    stop_load
    cat "$WORK_DIR"/load.*.out >"$WORK_DIR/load.all"
    total="$(wc -l <"$WORK_DIR/load.all")"
    failed="$(grep -vc '^200 ' "$WORK_DIR/load.all")"
    n_def="$(grep -c " $DEF\$" "$WORK_DIR/load.all")"
    n_alt="$(grep -c " $ALT\$" "$WORK_DIR/load.all")"
    log "  hot swap: $total requests, $failed failed, $n_def served by default, $n_alt by alt; alt seen ${swap_s}s after the rename"
    if ((failed == 0 && total > 0)); then
        pass "hotswap_no_failed_requests"
    else
        fail "hotswap_no_failed_requests" "$failed of $total requests failed during the swap; first: $(grep -v '^200 ' "$WORK_DIR/load.all" | head -n1)"
    fi
    # Each loop sees the default build, then the alt build, and never back.
    flipflop=""
    for f in "$WORK_DIR"/load.*.out; do
        seq="$(awk '{ print $2 }' "$f" | uniq | tr '\n' ' ')"
        [[ "$seq" == "$DEF $ALT " ]] || flipflop="$(basename "$f"): $seq"
    done
    if ((swapped == 0)); then
        fail "hotswap_header_switches" "still '$(guest_now)' 60 s after replacing the guest file"; show_log "$REG_LOG" 20
    elif [[ -n "$flipflop" ]]; then
        fail "hotswap_header_switches" "loop did not go default -> alt exactly once: $flipflop"
    else
        pass "hotswap_header_switches"
    fi

    # 2. Broken files are refused; the alt build keeps serving.
    size="$(stat -c %s "$GUEST_DEFAULT")"
    head -c $((size / 2)) "$GUEST_ALT" >"$WORK_DIR/truncated.wasm"
    head -c "$size" /dev/urandom >"$WORK_DIR/garbage.wasm"
    for bad in truncated garbage; do
        before="$(refusals)"
        run_load 2
        swap_in "$WORK_DIR/$bad.wasm"
        if wait_refusals "$before" 15; then refused=1; else refused=0; fi
        sleep 1
        stop_load
        cat "$WORK_DIR"/load.*.out >"$WORK_DIR/load.all"
        total="$(wc -l <"$WORK_DIR/load.all")"
        notok="$(grep -vc "^200 $ALT\$" "$WORK_DIR/load.all")"
        if ((refused)); then
            pass "hotswap_${bad}_refused"
        else
            fail "hotswap_${bad}_refused" "no 'guest reload refused' in the log 15 s after installing a $bad guest"
            show_log "$REG_LOG" 20
        fi
        if ((notok == 0 && total > 0)) && [[ "$(guest_now)" == "$ALT" ]]; then
            pass "hotswap_${bad}_keeps_serving"
        else
            fail "hotswap_${bad}_keeps_serving" "$notok of $total requests not '200 $ALT'; first: $(grep -v "^200 $ALT\$" "$WORK_DIR/load.all" | head -n1); now '$(guest_now)'"
        fi
    done

    # 3. SIGHUP reloads. With the garbage still installed, a SIGHUP makes
    # another (refused) attempt, visible as one more refusal line.
    sleep 1.5
    quiet="$(refusals)"
    sleep 2
    if (($(refusals) != quiet)); then
        fail "hotswap_refusal_logged_once" "the same bad file is refused again and again: $quiet -> $(refusals) lines in 2 s"
    else
        pass "hotswap_refusal_logged_once"
        kill -HUP "$REG_PID"
        if wait_refusals "$quiet" 5; then
            pass "hotswap_sighup_retries"
        else
            fail "hotswap_sighup_retries" "no new 'guest reload refused' within 5 s of SIGHUP with a garbage guest installed"
        fi
    fi
    # Put the default build in place without changing what the poller can
    # see (same inode, size and mtime as the garbage it already refused), so
    # only a SIGHUP can load it. This one write is in place on purpose; a
    # poll that catches it half-written refuses it, and the final state then
    # looks unchanged. If the poller notices anyway, the swap back is still
    # checked.
    touch -r "$GUEST_FILE" "$WORK_DIR/mtime.ref"
    cat "$GUEST_DEFAULT" >"$GUEST_FILE"
    touch -r "$WORK_DIR/mtime.ref" "$GUEST_FILE"
    sleep 2
    if [[ "$(guest_now)" == "$DEF" ]]; then
        pass "hotswap_swap_back"
        log "  (the poller noticed the in-place rewrite; SIGHUP was not needed)"
    else
        kill -HUP "$REG_PID"
        if wait_guest "$DEF" 10; then
            pass "hotswap_sighup_reloads"
        else
            fail "hotswap_sighup_reloads" "still '$(guest_now)' 10 s after SIGHUP with the default build installed"
        fi
    fi
    http HEAD "$REG_URL/v2/e2e/nginx/blobs/$HOT_BLOB"
    if [[ "$CODE" == 200 ]] && kill -0 "$REG_PID" 2>/dev/null; then
        pass "hotswap_store_intact"
    else
        fail "hotswap_store_intact" "HEAD pushed blob after the swaps: $(describe_last)"
    fi
fi
is_blockreg && log "d. hot swap: $(elapsed "$T_D") s"
fi  # d

# ------------------------------------------------------------------ h. docker login (htpasswd)

# A third server with auth.htpasswd (entries made by `htpasswd -B`) and
# rules: alice is admin, bob may pull everywhere, anonymous callers may pull
# public/**. Plain HTTP to 127.0.0.1, which docker lets carry Basic
# credentials. docker login refuses a wrong password and accepts the right
# one; alice pushes, bob pulls and is denied a push (403), an anonymous
# client reads public/ and nothing else, and cannot push.
# ensure_base_image: IMG_BASE present locally (a's rmi_all removed it, i
# removes every local image): pulled back from the main registry when a
# pushed it, else loaded from the cached corpus. 1 when neither works.
ensure_base_image() {
    docker image inspect "$IMG_BASE" >/dev/null 2>&1 && return 0
    if [[ -n "${PUSHED[$IMG_BASE]:-}" ]] \
        && docker pull "$REG_HOST/${REPO[$IMG_BASE]}" >>"$LOG_DIR/restore-base.log" 2>&1 \
        && docker tag "$REG_HOST/${REPO[$IMG_BASE]}" "$IMG_BASE"; then
        return 0
    fi
    reload_corpus
    docker image inspect "$IMG_BASE" >/dev/null 2>&1 || { show_log "$LOG_DIR/restore-base.log" 10; return 1; }
}

if want_section h; then  # E2E_ONLY (the section's body is not indented)
T_H="$(now)"
if ! is_blockreg; then
    skip "login_htpasswd" "blockreg only"
elif ! ensure_base_image; then
    fail "login_htpasswd" "the base image is not local and could neither be pulled back nor loaded"
else
    AU_DIR="$WORK_DIR/auth" AU_LOG="$LOG_DIR/blockreg-auth.log"
    mkdir -p "$AU_DIR/docker"
    htpasswd -Bbn alice alice-pw >"$AU_DIR/htpasswd" && htpasswd -Bbn bob bob-pw >>"$AU_DIR/htpasswd"
    cat >"$AU_DIR/config.yml" <<YAML
version: 0.1
storage:
  delete:
    enabled: true
auth:
  htpasswd:
    realm: blockreg-e2e
    path: $AU_DIR/htpasswd
blockreg:
  access:
    admins: [alice]
    repositories:
      "**":
        default: [pull]
      "public/**":
        default: [pull]
        anonymous: [pull]
YAML
    au_pid=""
    # An own credential store: the other checks' client stays anonymous.
    au_docker() { DOCKER_CONFIG="$AU_DIR/docker" docker "$@"; }
    if ! start_blockreg "$AU_DIR/data" "$AU_LOG" "" --config "$AU_DIR/config.yml"; then
        fail "login_htpasswd" "blockreg with auth.htpasswd did not start"
    else
        au_pid="$BR_PID" AU_HOST="$BR_HOST"
        if echo wrong | au_docker login -u alice --password-stdin "$AU_HOST" >"$LOG_DIR/login-wrong.log" 2>&1; then
            fail "login_wrong_password_refused" "docker login with a wrong password succeeded"
        else
            pass "login_wrong_password_refused"
        fi
        if echo alice-pw | au_docker login -u alice --password-stdin "$AU_HOST" >"$LOG_DIR/login-alice.log" 2>&1; then
            pass "login_htpasswd"
        else
            show_log "$LOG_DIR/login-alice.log" 10
            fail "login_htpasswd" "docker login as alice failed"
        fi
        au_ok=yes
        for ref in e2e/debian:auth public/debian:auth; do
            plog="$LOG_DIR/push-auth-${ref//[:\/]/_}.log"
            au_docker tag "$IMG_BASE" "$AU_HOST/$ref" \
                && au_docker push "$AU_HOST/$ref" >"$plog" 2>&1 \
                || { au_ok=""; show_log "$plog" 10; }
        done
        if [[ -n "$au_ok" ]]; then pass "login_push_as_admin"; else fail "login_push_as_admin" "docker push as alice failed"; fi
        au_docker logout "$AU_HOST" >/dev/null 2>&1
        echo bob-pw | au_docker login -u bob --password-stdin "$AU_HOST" >"$LOG_DIR/login-bob.log" 2>&1
        au_docker rmi -f "$AU_HOST/e2e/debian:auth" "$AU_HOST/public/debian:auth" >/dev/null 2>&1
        if au_docker pull "$AU_HOST/e2e/debian:auth" >"$LOG_DIR/pull-auth-bob.log" 2>&1 \
            && [[ "$(image_id "$AU_HOST/e2e/debian:auth")" == "${ID[$IMG_BASE]}" ]]; then
            pass "login_pull_only_user_pulls"
        else
            show_log "$LOG_DIR/pull-auth-bob.log" 10
            fail "login_pull_only_user_pulls" "docker pull as bob failed or gave another image"
        fi
        au_docker tag "$IMG_BASE" "$AU_HOST/e2e/bobs:x"
        if au_docker push "$AU_HOST/e2e/bobs:x" >"$LOG_DIR/push-auth-bob.log" 2>&1; then
            fail "login_pull_only_user_cannot_push" "docker push as bob succeeded"
        elif grep -qi denied "$LOG_DIR/push-auth-bob.log"; then
            pass "login_pull_only_user_cannot_push"
        else
            show_log "$LOG_DIR/push-auth-bob.log" 10
            fail "login_pull_only_user_cannot_push" "refused, but not with 403 denied"
        fi
        au_docker logout "$AU_HOST" >/dev/null 2>&1
        au_docker rmi -f "$AU_HOST/e2e/debian:auth" "$AU_HOST/e2e/bobs:x" >/dev/null 2>&1
        # Without credentials: docker sends none only after /v2/ answers 200,
        # which would let docker login accept any password, so anonymous
        # pulls are for plain HTTP clients (README).
        mt='Accept: application/vnd.docker.distribution.manifest.v2+json'
        anon_public="$(curl -s -o /dev/null -w '%{http_code}' -H "$mt" "http://$AU_HOST/v2/public/debian/manifests/auth")"
        anon_private="$(curl -s -o /dev/null -w '%{http_code}' -H "$mt" "http://$AU_HOST/v2/e2e/debian/manifests/auth")"
        if [[ "$anon_public" == 200 && "$anon_private" == 401 ]]; then
            pass "login_anonymous_pull_where_allowed"
        else
            fail "login_anonymous_pull_where_allowed" "anonymous GET of manifests: public/ $anon_public (want 200), e2e/ $anon_private (want 401)"
        fi
        au_docker tag "$IMG_BASE" "$AU_HOST/public/anon:x"
        if au_docker push "$AU_HOST/public/anon:x" >"$LOG_DIR/push-auth-anon.log" 2>&1; then
            fail "login_anonymous_push_refused" "anonymous docker push succeeded"
        else
            pass "login_anonymous_push_refused"
        fi
        au_docker rmi -f "$AU_HOST/public/debian:auth" "$AU_HOST/public/anon:x" >/dev/null 2>&1
        [[ -n "$au_pid" ]] && stop_pid "$au_pid"
    fi
    log "h. docker login: $(elapsed "$T_H") s"
fi
fi  # h

# ------------------------------------------------------------------ i. docker over TLS, docker login (htpasswd)

# A fourth server with http.tls (a certificate for registry.blockreg.test
# signed by a CA made here), auth.htpasswd and h's rules (alice admin, bob
# pulls, anonymous pulls public/**). docker reaches it as
# registry.blockreg.test:PORT, a name that resolves nowhere, so docker does
# not count it as an insecure (loopback) registry: it verifies the
# certificate and never falls back to plain HTTP. The engine's HTTPS_PROXY
# (the CONNECT proxy of the setup) tunnels that name to 127.0.0.1. The CA
# is put into /etc/docker/certs.d/registry.blockreg.test:PORT/ only after
# the first check, and that directory is removed at the end (and at exit).
if want_section i; then  # E2E_ONLY (the section's body is not indented)
T_I="$(now)"
if ! is_blockreg; then
    skip "tls_login" "blockreg only"
elif [[ -z "$PROXY_PORT" ]]; then
    fail "tls_login" "the CONNECT proxy did not start (see $LOG_DIR/connect-proxy.log)"
elif ! ensure_base_image; then
    fail "tls_login" "the base image is not local and could neither be pulled back nor loaded"
else
    TL_DIR="$WORK_DIR/tls" TL_LOG="$LOG_DIR/blockreg-tls.log" TL_SSL_LOG="$LOG_DIR/openssl-tls.log"
    mkdir -p "$TL_DIR/docker"
    TL_PORT="$(free_port)"
    TL_HOST="$TLS_NAME:$TL_PORT"
    TL_CERTS_D="/etc/docker/certs.d/$TL_HOST"
    tl_pid=""
    # An own credential store, as in h.
    tl_docker() { DOCKER_CONFIG="$TL_DIR/docker" docker "$@"; }
    # curl trusting the test CA, with the name pinned to 127.0.0.1.
    tl_curl() { curl -s --max-time 60 --cacert "$TL_DIR/ca.crt" --resolve "$TL_HOST:127.0.0.1" "$@"; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$TLS_NAME" >"$TL_DIR/server.ext"
    htpasswd -Bbn alice alice-pw >"$TL_DIR/htpasswd" && htpasswd -Bbn bob bob-pw >>"$TL_DIR/htpasswd"
    cat >"$TL_DIR/config.yml" <<YAML
version: 0.1
storage:
  delete:
    enabled: true
http:
  tls:
    certificate: $TL_DIR/server.crt
    key: $TL_DIR/server.key
auth:
  htpasswd:
    realm: blockreg-e2e-tls
    path: $TL_DIR/htpasswd
blockreg:
  access:
    admins: [alice]
    repositories:
      "**":
        default: [pull]
      "public/**":
        default: [pull]
        anonymous: [pull]
YAML
    if ! { openssl req -x509 "${ec[@]}" -days 2 -keyout "$TL_DIR/ca.key" -out "$TL_DIR/ca.crt" \
            -subj "/CN=blockreg e2e test CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        && openssl req "${ec[@]}" -keyout "$TL_DIR/server.key" -out "$TL_DIR/server.csr" -subj "/CN=$TLS_NAME" \
        && openssl x509 -req -in "$TL_DIR/server.csr" -CA "$TL_DIR/ca.crt" -CAkey "$TL_DIR/ca.key" \
            -set_serial "0x$(openssl rand -hex 8)" -days 2 -sha256 -extfile "$TL_DIR/server.ext" \
            -out "$TL_DIR/server.crt"; } >"$TL_SSL_LOG" 2>&1; then
        show_log "$TL_SSL_LOG" 10
        fail "tls_login" "openssl could not make the test CA and server certificate"
    elif ! BR_SCHEME=https WANT_PORT="$TL_PORT" start_blockreg "$TL_DIR/data" "$TL_LOG" "" --config "$TL_DIR/config.yml"; then
        fail "tls_login" "blockreg with http.tls and auth.htpasswd did not start"
    else
        tl_pid="$BR_PID"
        # 1. The CA is not installed yet: docker must refuse the certificate.
        if echo alice-pw | tl_docker login -u alice --password-stdin "$TL_HOST" >"$LOG_DIR/tls-login-noca.log" 2>&1; then
            fail "tls_unknown_ca_refused" "docker login succeeded without the CA: docker did not verify the certificate"
        elif grep -qiE 'x509|certificate' "$LOG_DIR/tls-login-noca.log"; then
            pass "tls_unknown_ca_refused"
        else
            show_log "$LOG_DIR/tls-login-noca.log" 5
            fail "tls_unknown_ca_refused" "docker login failed, but not with a certificate error"
        fi
        if grep -qF "CONNECT $TL_HOST -> 127.0.0.1:$TL_PORT" "$LOG_DIR/connect-proxy.log"; then
            pass "tls_docker_uses_the_name_through_the_proxy"
        else
            show_log "$LOG_DIR/connect-proxy.log" 5
            fail "tls_docker_uses_the_name_through_the_proxy" "no CONNECT $TL_HOST in the proxy's log"
        fi
        # 2. With the CA where docker looks for it (read per request; no restart).
        [[ -d /etc/docker/certs.d ]] || at_exit_rmdir /etc/docker/certs.d
        at_exit_remove "$TL_CERTS_D"
        mkdir -p "$TL_CERTS_D" && cp "$TL_DIR/ca.crt" "$TL_CERTS_D/ca.crt"
        if echo wrong | tl_docker login -u alice --password-stdin "$TL_HOST" >"$LOG_DIR/tls-login-wrong.log" 2>&1; then
            fail "tls_wrong_password_refused" "docker login with a wrong password succeeded"
        elif grep -qiE 'x509|certificate' "$LOG_DIR/tls-login-wrong.log"; then
            show_log "$LOG_DIR/tls-login-wrong.log" 5
            fail "tls_wrong_password_refused" "refused, but for the certificate (the CA in $TL_CERTS_D was not used)"
        elif grep -qi unauthorized "$LOG_DIR/tls-login-wrong.log"; then
            pass "tls_wrong_password_refused"
        else
            show_log "$LOG_DIR/tls-login-wrong.log" 5
            fail "tls_wrong_password_refused" "refused, but not as unauthorized"
        fi
        if echo alice-pw | tl_docker login -u alice --password-stdin "$TL_HOST" >"$LOG_DIR/tls-login-alice.log" 2>&1; then
            pass "tls_login"
        else
            show_log "$LOG_DIR/tls-login-alice.log" 5
            fail "tls_login" "docker login as alice failed with the CA installed"
        fi
        # 3. alice pushes; every local image goes (so no layer is left to
        # reuse), and the pull fetches every layer back over TLS.
        tl_ok=yes
        for ref in e2e/debian:tls public/debian:tls; do
            plog="$LOG_DIR/push-tls-${ref//[:\/]/_}.log"
            if ! { tl_docker tag "$IMG_BASE" "$TL_HOST/$ref" && tl_docker push "$TL_HOST/$ref" >"$plog" 2>&1; }; then
                tl_ok=""
                show_log "$plog" 10
            fi
        done
        if [[ -z "$tl_ok" ]]; then
            fail "tls_push_pull" "docker push as alice failed"
        else
            remove_local_images
            t0="$(now)"
            if docker image inspect "${ID[$IMG_BASE]}" >/dev/null 2>&1; then
                fail "tls_push_pull" "the base image could not be removed locally before the pull"
            elif ! tl_docker pull "$TL_HOST/e2e/debian:tls" >"$LOG_DIR/pull-tls.log" 2>&1; then
                show_log "$LOG_DIR/pull-tls.log" 10
                fail "tls_push_pull" "docker pull as alice failed"
            elif [[ "$(image_id "$TL_HOST/e2e/debian:tls")" != "${ID[$IMG_BASE]}" ]]; then
                fail "tls_push_pull" "pulled image ID $(image_id "$TL_HOST/e2e/debian:tls") != pushed ${ID[$IMG_BASE]}"
            elif ! grep -q 'Pull complete' "$LOG_DIR/pull-tls.log"; then
                fail "tls_push_pull" "the pull downloaded no layer ('Pull complete' missing): the layers were still local"
            else
                pass "tls_push_pull"
                log "  pulled the base back over TLS in $(elapsed "$t0") s"
            fi
            docker tag "$TL_HOST/e2e/debian:tls" "$IMG_BASE" >/dev/null 2>&1
        fi
        # 4. bob pulls, and his push is refused with 403 DENIED.
        tl_docker logout "$TL_HOST" >/dev/null 2>&1
        echo bob-pw | tl_docker login -u bob --password-stdin "$TL_HOST" >"$LOG_DIR/tls-login-bob.log" 2>&1
        if tl_docker pull "$TL_HOST/e2e/debian:tls" >"$LOG_DIR/pull-tls-bob.log" 2>&1 \
            && [[ "$(image_id "$TL_HOST/e2e/debian:tls")" == "${ID[$IMG_BASE]}" ]]; then
            pass "tls_pull_only_user_pulls"
        else
            show_log "$LOG_DIR/pull-tls-bob.log" 10
            fail "tls_pull_only_user_pulls" "docker pull as bob failed or gave another image"
        fi
        ensure_base_image
        tl_docker tag "$IMG_BASE" "$TL_HOST/e2e/bobs:x"
        t0="$(now)"
        if tl_docker push "$TL_HOST/e2e/bobs:x" >"$LOG_DIR/push-tls-bob.log" 2>&1; then
            fail "tls_pull_only_user_cannot_push" "docker push as bob succeeded"
        elif grep -qi denied "$LOG_DIR/push-tls-bob.log"; then
            pass "tls_pull_only_user_cannot_push"
        else
            show_log "$LOG_DIR/push-tls-bob.log" 10
            fail "tls_pull_only_user_cannot_push" "refused, but not with 403 denied"
        fi
        log "  bob's refused push took $(elapsed "$t0") s"
        tl_docker logout "$TL_HOST" >/dev/null 2>&1
        # 5. An anonymous HTTPS client (curl, trusting the CA) reads public/
        # and nothing else.
        mt='Accept: application/vnd.docker.distribution.manifest.v2+json'
        anon_public="$(tl_curl -o /dev/null -w '%{http_code}' -H "$mt" "https://$TL_HOST/v2/public/debian/manifests/tls")"
        anon_private="$(tl_curl -o /dev/null -w '%{http_code}' -H "$mt" "https://$TL_HOST/v2/e2e/debian/manifests/tls")"
        if [[ "$anon_public" == 200 && "$anon_private" == 401 ]]; then
            pass "tls_anonymous_pull_where_allowed"
        else
            fail "tls_anonymous_pull_where_allowed" "anonymous GET of manifests over TLS: public/ $anon_public (want 200), e2e/ $anon_private (want 401)"
        fi
        # 6. ALPN: h2 when the client offers it, HTTP/1.1 otherwise.
        h2="$(tl_curl --http2 -v -u alice:alice-pw -o /dev/null -w '%{http_version} %{http_code}' "https://$TL_HOST/v2/" 2>"$LOG_DIR/tls-curl-h2.log")"
        h1="$(tl_curl --http1.1 -u alice:alice-pw -o /dev/null -w '%{http_version} %{http_code}' "https://$TL_HOST/v2/")"
        if [[ "$h2" == "2 200" && "$h1" == "1.1 200" ]] && grep -q 'ALPN.*accepted.*h2' "$LOG_DIR/tls-curl-h2.log"; then
            pass "tls_alpn_h2"
        else
            fail "tls_alpn_h2" "curl --http2: '$h2' (want '2 200', $(grep -m1 'ALPN.*accepted' "$LOG_DIR/tls-curl-h2.log" | tr -d '\r')); --http1.1: '$h1' (want '1.1 200')"
        fi
        # 7. Plain HTTP on the TLS port is not served.
        plain="$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' -u alice:alice-pw "http://127.0.0.1:$TL_PORT/v2/")"
        if [[ "$plain" == 2?? || "$plain" == 401 ]]; then
            fail "tls_plain_http_not_served" "plain HTTP to the TLS port answered $plain"
        else
            pass "tls_plain_http_not_served"
        fi
        tl_docker rmi -f "$TL_HOST/e2e/debian:tls" "$TL_HOST/public/debian:tls" "$TL_HOST/e2e/bobs:x" >/dev/null 2>&1
    fi
    [[ -n "$tl_pid" ]] && stop_pid "$tl_pid"
    rm -rf "$TL_CERTS_D"
    log "i. docker over TLS: $(elapsed "$T_I") s"
fi
fi  # i

# ------------------------------------------------------------------ j. token authentication

# A fifth server with auth.token, and tests/e2e/token_server.py as the
# token server (registry:2's token protocol; ES256 tokens made with a key
# whose self-signed certificate is the rootcertbundle). The server grants
# carol pull and push on e2e/**, and dave pull only. Plain HTTP on
# 127.0.0.1. docker login, push and pull as carol; dave pulls and his push
# is refused. Then curl with tokens the server would never issue
# (token_server.py mint): expired, not yet valid, signed by another key,
# unsigned, for another audience or issuer are refused with 401 and
# error="invalid_token"; a valid token without the push scope is answered
# on a push endpoint with 401 and error="insufficient_scope" naming the
# scope to ask for (docker/distribution's token spec and registry:2).
if want_section j; then  # E2E_ONLY (the section's body is not indented)
T_J="$(now)"
if ! is_blockreg; then
    skip "token_login" "blockreg only"
elif ! ensure_base_image; then
    fail "token_login" "the base image is not local and could neither be pulled back nor loaded"
else
    TK_DIR="$WORK_DIR/token" TK_LOG="$LOG_DIR/blockreg-token.log" TK_SRV_LOG="$LOG_DIR/token-server.log"
    TK_SERVICE=blockreg-e2e TK_ISSUER=e2e-token-issuer
    mkdir -p "$TK_DIR/docker"
    tk_pid="" tks_pid=""
    tk_docker() { DOCKER_CONFIG="$TK_DIR/docker" docker "$@"; }
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2)
    if ! { openssl req -x509 "${ec[@]}" -keyout "$TK_DIR/token.key" -out "$TK_DIR/token.crt" \
            -subj "/CN=blockreg e2e token issuer" \
        && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$TK_DIR/forger.key"; } \
        >"$LOG_DIR/openssl-token.log" 2>&1; then
        show_log "$LOG_DIR/openssl-token.log" 10
        fail "token_login" "openssl could not make the token server's key and certificate"
    elif ! start_port_helper "$TK_SRV_LOG" "$TK_DIR/port" python3 "$E2E_LIB_DIR/token_server.py" serve \
        --key "$TK_DIR/token.key" --cert "$TK_DIR/token.crt" --issuer "$TK_ISSUER" --service "$TK_SERVICE" \
        --user 'carol:carol-pw:e2e/**=pull+push' --user 'dave:dave-pw:e2e/**=pull' --port-file "$TK_DIR/port"; then
        fail "token_login" "the token server did not start"
    else
        tks_pid="$HELPER_PID"
        TK_REALM="http://127.0.0.1:$HELPER_PORT/token"
        cat >"$TK_DIR/config.yml" <<YAML
version: 0.1
storage:
  delete:
    enabled: true
auth:
  token:
    realm: $TK_REALM
    service: $TK_SERVICE
    issuer: $TK_ISSUER
    rootcertbundle: $TK_DIR/token.crt
YAML
    fi
    if [[ -z "$tks_pid" ]]; then
        :
    elif ! start_blockreg "$TK_DIR/data" "$TK_LOG" "" --config "$TK_DIR/config.yml"; then
        fail "token_login" "blockreg with auth.token did not start"
    else
        tk_pid="$BR_PID" TK_HOST="$BR_HOST" TK_URL="$BR_URL"
        # 1. The challenge of a repository endpoint names realm, service and scope.
        http GET "$TK_URL/v2/e2e/debian/manifests/token"
        chal_want="Bearer realm=\"$TK_REALM\",service=\"$TK_SERVICE\",scope=\"repository:e2e/debian:pull\""
        if [[ "$CODE" == 401 && "$(header WWW-Authenticate)" == "$chal_want" ]]; then
            pass "token_challenge"
        else
            fail "token_challenge" "want 401 with WWW-Authenticate '$chal_want'; got $CODE '$(header WWW-Authenticate)'"
        fi
        # 2. docker login goes to the token server: wrong password refused.
        if echo wrong | tk_docker login -u carol --password-stdin "$TK_HOST" >"$LOG_DIR/token-login-wrong.log" 2>&1; then
            fail "token_wrong_password_refused" "docker login with a wrong password succeeded"
        else
            pass "token_wrong_password_refused"
        fi
        if echo carol-pw | tk_docker login -u carol --password-stdin "$TK_HOST" >"$LOG_DIR/token-login-carol.log" 2>&1; then
            pass "token_login"
        else
            show_log "$LOG_DIR/token-login-carol.log" 5
            show_log "$TK_SRV_LOG" 5
            fail "token_login" "docker login as carol failed"
        fi
        # 3. carol pushes, removes the tag and pulls it back.
        plog="$LOG_DIR/push-token-carol.log"
        if ! { tk_docker tag "$IMG_BASE" "$TK_HOST/e2e/debian:token" \
            && tk_docker push "$TK_HOST/e2e/debian:token" >"$plog" 2>&1; }; then
            show_log "$plog" 10
            fail "token_push_pull" "docker push as carol failed"
        elif ! { tk_docker rmi "$TK_HOST/e2e/debian:token" >/dev/null 2>&1 \
            && tk_docker pull "$TK_HOST/e2e/debian:token" >"$LOG_DIR/pull-token-carol.log" 2>&1; }; then
            show_log "$LOG_DIR/pull-token-carol.log" 10
            fail "token_push_pull" "docker pull as carol failed"
        elif [[ "$(image_id "$TK_HOST/e2e/debian:token")" != "${ID[$IMG_BASE]}" ]]; then
            fail "token_push_pull" "pulled image ID $(image_id "$TK_HOST/e2e/debian:token") != pushed ${ID[$IMG_BASE]}"
        else
            pass "token_push_pull"
        fi
        # 4. dave pulls; his push is refused: the token server grants him
        # pull only, the registry answers the upload 401 with
        # error="insufficient_scope", which docker reports as "denied"
        # (distribution's client maps insufficient_scope to DENIED).
        tk_docker logout "$TK_HOST" >/dev/null 2>&1
        echo dave-pw | tk_docker login -u dave --password-stdin "$TK_HOST" >"$LOG_DIR/token-login-dave.log" 2>&1
        tk_docker rmi "$TK_HOST/e2e/debian:token" >/dev/null 2>&1
        if tk_docker pull "$TK_HOST/e2e/debian:token" >"$LOG_DIR/pull-token-dave.log" 2>&1 \
            && [[ "$(image_id "$TK_HOST/e2e/debian:token")" == "${ID[$IMG_BASE]}" ]]; then
            pass "token_pull_only_user_pulls"
        else
            show_log "$LOG_DIR/pull-token-dave.log" 10
            fail "token_pull_only_user_pulls" "docker pull as dave failed or gave another image"
        fi
        tk_docker tag "$IMG_BASE" "$TK_HOST/e2e/daves:x"
        t0="$(now)"
        if tk_docker push "$TK_HOST/e2e/daves:x" >"$LOG_DIR/push-token-dave.log" 2>&1; then
            fail "token_pull_only_user_cannot_push" "docker push as dave succeeded"
        elif grep -qi 'denied' "$LOG_DIR/push-token-dave.log"; then
            pass "token_pull_only_user_cannot_push"
        else
            show_log "$LOG_DIR/push-token-dave.log" 10
            fail "token_pull_only_user_cannot_push" "refused, but not as denied (insufficient_scope)"
        fi
        log "  dave's refused push took $(elapsed "$t0") s"
        tk_docker logout "$TK_HOST" >/dev/null 2>&1
        tk_docker rmi -f "$TK_HOST/e2e/debian:token" "$TK_HOST/e2e/daves:x" >/dev/null 2>&1

        # 5. Tokens straight to the registry with curl.
        # mint_token [ARGS...]: a token from token_server.py mint, by default
        # valid: the server's key, issuer and audience, sub carol, pull on
        # e2e/debian, for 5 minutes.
        mint_token() {
            python3 "$E2E_LIB_DIR/token_server.py" mint --key "$TK_DIR/token.key" --cert "$TK_DIR/token.crt" \
                --iss "$TK_ISSUER" --aud "$TK_SERVICE" --sub carol "$@" 2>>"$LOG_DIR/token-mint.log"
        }
        # refusals_logged: the registry's "bearer token refused" lines so far.
        refusals_logged() { sed 's/\x1b\[[0-9;]*m//g' "$TK_LOG" | grep 'bearer token refused'; }
        mt='Accept: application/vnd.docker.distribution.manifest.v2+json'
        mf_path=/v2/e2e/debian/manifests/token
        tk_get() { http GET "$TK_URL$mf_path" -H "$mt" -H "Authorization: Bearer $1"; }
        # invalid_token NAME REASON TOKEN: a GET of the manifest with TOKEN is
        # answered 401 UNAUTHORIZED with the challenge and error="invalid_token",
        # and the registry logs REASON as why it refused the token.
        invalid_token() {
            local name="$1" reason="$2" before chal
            before="$(refusals_logged | wc -l)"
            tk_get "$3"
            chal="$(header WWW-Authenticate)"
            sleep 0.2
            local why
            why="$(refusals_logged | tail -n +"$((before + 1))" | head -n1)"
            why="${why#*bearer token refused: }"
            if [[ "$CODE" != 401 ]]; then
                fail "$name" "want 401; $(describe_last)"
            elif [[ "$chal" != "Bearer realm=\"$TK_REALM\",service=\"$TK_SERVICE\""*'error="invalid_token"'* ]]; then
                fail "$name" "WWW-Authenticate '$chal' lacks the challenge or error=\"invalid_token\""
            elif [[ "$(jq -r '.errors[0].code' "$BODY" 2>/dev/null)" != UNAUTHORIZED ]]; then
                fail "$name" "body errors[0].code is not UNAUTHORIZED: $(describe_last)"
            elif [[ "$why" != *"$reason"* ]]; then
                fail "$name" "refused, but the registry logged '${why:-nothing}', want '$reason'"
            else
                pass "$name"
            fi
        }
        good="$(curl -s -u carol:carol-pw "$TK_REALM?service=$TK_SERVICE&scope=repository:e2e/debian:pull" | jq -r .token 2>/dev/null)"
        tk_get "$good"
        if [[ "$CODE" == 200 ]]; then pass "token_from_server_accepted"; else fail "token_from_server_accepted" "$(describe_last)"; fi
        tk_get "$(mint_token --access repository:e2e/debian:pull)"
        if [[ "$CODE" == 200 ]]; then pass "token_minted_valid_accepted"; else fail "token_minted_valid_accepted" "$(describe_last)"; fi
        tk_get "$(mint_token --access repository:e2e/debian:pull --exp-in -20)"
        if [[ "$CODE" == 200 ]]; then
            pass "token_expired_within_leeway_accepted"
        else
            fail "token_expired_within_leeway_accepted" "a token expired 20 s ago (registry:2 allows 60 s of skew): $(describe_last)"
        fi
        invalid_token token_expired_refused "token expired" "$(mint_token --access repository:e2e/debian:pull --exp-in -3600)"
        invalid_token token_not_yet_valid_refused "not valid yet" "$(mint_token --access repository:e2e/debian:pull --nbf-in 3600)"
        # Signed by another key; the header still carries the real certificate.
        invalid_token token_forged_refused "signature not made by a key of the root certificate bundle" \
            "$(mint_token --access repository:e2e/debian:pull --key "$TK_DIR/forger.key")"
        invalid_token token_unsigned_refused "unsupported signing algorithm" "$(mint_token --access repository:e2e/debian:pull --alg none)"
        invalid_token token_wrong_audience_refused "audience" "$(mint_token --access repository:e2e/debian:pull --aud another-registry)"
        invalid_token token_wrong_issuer_refused "issuer" "$(mint_token --access repository:e2e/debian:pull --iss another-issuer)"
        invalid_token token_garbage_refused "malformed" "not-a-jwt"
        # A valid token without the push scope, on a push endpoint: 401 with
        # error="insufficient_scope" and the scope a push needs (pull,push).
        chal_want="Bearer realm=\"$TK_REALM\",service=\"$TK_SERVICE\",scope=\"repository:e2e/debian:pull,push\",error=\"insufficient_scope\""
        http POST "$TK_URL/v2/e2e/debian/blobs/uploads/" -H "Authorization: Bearer $(mint_token --access repository:e2e/debian:pull)"
        if [[ "$CODE" == 401 && "$(header WWW-Authenticate)" == "$chal_want" && "$(jq -r '.errors[0].code' "$BODY" 2>/dev/null)" == UNAUTHORIZED ]]; then
            pass "token_without_push_scope_refused"
        else
            fail "token_without_push_scope_refused" "want 401 UNAUTHORIZED with WWW-Authenticate '$chal_want'; got '$(header WWW-Authenticate)', $(describe_last)"
        fi
        # A token for another repository does not open this one.
        chal_want="Bearer realm=\"$TK_REALM\",service=\"$TK_SERVICE\",scope=\"repository:e2e/debian:pull\",error=\"insufficient_scope\""
        tk_get "$(mint_token --access repository:e2e/other:pull,push)"
        if [[ "$CODE" == 401 && "$(header WWW-Authenticate)" == "$chal_want" ]]; then
            pass "token_for_another_repository_refused"
        else
            fail "token_for_another_repository_refused" "want 401 with WWW-Authenticate '$chal_want'; got '$(header WWW-Authenticate)', $(describe_last)"
        fi
        # The same push endpoint with pull and push granted opens a session.
        http POST "$TK_URL/v2/e2e/debian/blobs/uploads/" -H "Authorization: Bearer $(mint_token --access repository:e2e/debian:pull,push)"
        if [[ "$CODE" == 202 ]]; then pass "token_with_push_scope_accepted"; else fail "token_with_push_scope_accepted" "$(describe_last)"; fi
    fi
    [[ -n "$tk_pid" ]] && stop_pid "$tk_pid"
    [[ -n "$tks_pid" ]] && stop_pid "$tks_pid"
    log "j. token authentication: $(elapsed "$T_J") s"
fi
fi  # j

# ------------------------------------------------------------------ l. garbage collection

# While the server serves the main store: delete nginx:v2's manifest, run
# `blockreg gc --grace 0s` as a separate process. v2's own blobs (its top
# layer and config) are gone (404), the shared ones stay; nginx:v1 and the
# base pull cold with their pushed image IDs; stored bytes fell; v2 pushes
# again and pulls back. Then a collection with the default grace runs
# while docker pushes: the push and its pull succeed. Section k checks the
# store with --read-data afterwards.
if is_blockreg && want_section l && [[ -n "${PUSHED[$IMG_V2]:-}" && -n "${MANIFEST_FILE[$IMG_V2]:-}" ]]; then
T_L="$(now)"
v2_ref="${REPO[$IMG_V2]}" v1_ref="${REPO[$IMG_V1]}" base_ref="${REPO[$IMG_BASE]}"
v2_repo="${v2_ref%:*}"
# v2's blobs that neither v1 nor the base name.
shared="$(for img in "$IMG_V1" "$IMG_BASE"; do jq -r '.config.digest, .layers[].digest' "${MANIFEST_FILE[$img]}"; done | sort -u)"
own=()
for d in $(jq -r '.config.digest, .layers[].digest' "${MANIFEST_FILE[$IMG_V2]}"); do
    grep -qx "$d" <<<"$shared" || own+=("$d")
done
docker pull "$REG_HOST/$v2_ref" >"$LOG_DIR/gc-pull-v2.log" 2>&1 || true
wait_converted "$DATA" "before gc" || true
before="$(stats_json "$DATA" | jq -r .stored_bytes)"
http DELETE "$REG_URL/v2/$v2_repo/manifests/${PUSHED[$IMG_V2]}"
if [[ "$CODE" == 202 ]]; then pass "gc_delete_v2"; else fail "gc_delete_v2" "DELETE manifest: $(describe_last)"; fi
if "$BLOCKREG" gc --data "$DATA" --grace 0s --json >"$LOG_DIR/gc.json" 2>"$LOG_DIR/gc.log"; then
    pass "gc_runs_while_serving"
else
    show_log "$LOG_DIR/gc.log" 20
    fail "gc_runs_while_serving" "blockreg gc failed"
fi
removed="$(jq -r .blobs_removed "$LOG_DIR/gc.json" 2>/dev/null)"
gone=0
for d in "${own[@]}"; do
    code="$(curl -s -o /dev/null -w '%{http_code}' "$REG_URL/v2/$v2_repo/blobs/$d")"
    [[ "$code" == 404 ]] && gone=$((gone + 1))
done
if ((${#own[@]} >= 2 && gone == ${#own[@]})) && [[ "$removed" =~ ^[0-9]+$ ]] && ((removed >= ${#own[@]})); then
    pass "gc_removes_the_deleted_images_own_blobs"
else
    fail "gc_removes_the_deleted_images_own_blobs" "${#own[@]} own blobs, $gone answer 404, collection says $removed removed"
fi
after="$(stats_json "$DATA" | jq -r .stored_bytes)"
if [[ "$before" =~ ^[0-9]+$ && "$after" =~ ^[0-9]+$ ]] && ((after < before)); then
    pass "gc_stored_bytes_fall"
else
    fail "gc_stored_bytes_fall" "stored bytes $before before, $after after"
fi
bad=""
for img in "$IMG_V1" "$IMG_BASE"; do
    ref="${REPO[$img]}"
    docker rmi -f "$REG_HOST/$ref" >/dev/null 2>&1
    if ! docker pull "$REG_HOST/$ref" >"$LOG_DIR/gc-pull.log" 2>&1; then
        show_log "$LOG_DIR/gc-pull.log" 10
        bad="docker pull $ref failed"
    elif [[ "$(image_id "$REG_HOST/$ref")" != "${ID[$img]}" ]]; then
        bad="$ref pulled with image ID $(image_id "$REG_HOST/$ref"), pushed ${ID[$img]}"
    fi
done
if [[ -z "$bad" ]]; then pass "gc_kept_images_pull"; else fail "gc_kept_images_pull" "$bad"; fi
# Pushed again while collections with the default grace run back to back.
rm -f "$LOG_DIR/gc-stop"
(
    while [[ ! -e "$LOG_DIR/gc-stop" ]]; do
        "$BLOCKREG" gc --data "$DATA" --json >>"$LOG_DIR/gc-loop.json" 2>>"$LOG_DIR/gc-loop.log" || echo "gc failed" >>"$LOG_DIR/gc-loop.log"
    done
) &
GC_LOOP=$!
if docker push "$REG_HOST/$v2_ref" >"$LOG_DIR/gc-push-v2.log" 2>&1; then
    docker rmi -f "$REG_HOST/$v2_ref" >/dev/null 2>&1
    if docker pull "$REG_HOST/$v2_ref" >"$LOG_DIR/gc-pull-v2.log" 2>&1 \
        && [[ "$(image_id "$REG_HOST/$v2_ref")" == "${ID[$IMG_V2]}" ]]; then
        pass "gc_push_during_collections"
    else
        show_log "$LOG_DIR/gc-pull-v2.log" 10
        fail "gc_push_during_collections" "v2 pushed again but does not pull back with its image ID"
    fi
else
    show_log "$LOG_DIR/gc-push-v2.log" 15
    fail "gc_push_during_collections" "docker push of $v2_ref failed while collections ran"
fi
touch "$LOG_DIR/gc-stop"
wait "$GC_LOOP" 2>/dev/null
# Collections back to back kept conversion waiting: let it finish before
# section k checks the store.
wait_converted "$DATA" "after the collections" || true
if grep -q "gc failed" "$LOG_DIR/gc-loop.log" 2>/dev/null; then
    show_log "$LOG_DIR/gc-loop.log" 10
    fail "gc_loop_clean" "a collection failed while docker pushed"
else
    pass "gc_loop_clean"
fi
log "l. garbage collection: $(elapsed "$T_L") s ($(wc -l <"$LOG_DIR/gc-loop.json" 2>/dev/null || echo 0) collections during the push; first freed $removed blobs, stored bytes $before -> $after)"
fi  # l

# ------------------------------------------------------------------ k. integrity check

# `blockreg check --read-data` on the main store after everything above
# (docker and skopeo pushes, conversion, a crash, hot swaps), while the
# server still serves it: every block, manifest and blob verifies.
if is_blockreg && [[ -d "$DATA" ]]; then
    T_K="$(now)"
    if "$BLOCKREG" check --data "$DATA" --read-data >"$LOG_DIR/check.log" 2>&1; then
        pass "store_check_read_data_clean"
    else
        show_log "$LOG_DIR/check.log" 20
        fail "store_check_read_data_clean" "blockreg check --read-data found damage or failed"
    fi
    log "k. integrity check: $(elapsed "$T_K") s ($(grep -E '^(blobs|manifests|blocks) ' "$LOG_DIR/check.log" | tr -s ' ' | paste -sd ';'))"
fi

# ------------------------------------------------------------------ end

if ((FAILED)); then
    [[ -f "$REG_LOG" ]] && show_log "$REG_LOG" 30
    # WORK_DIR goes away at exit; keep the logs of a failed run.
    rm -rf "$CACHE_DIR/e2e-logs" && cp -r "$LOG_DIR" "$CACHE_DIR/e2e-logs" \
        && log "logs of this run: $CACHE_DIR/e2e-logs"
fi
((${#WAIT_LOG[@]})) && log "conversion waits: ${WAIT_LOG[*]}"
log "total: $(elapsed "$T_START") s"
summary
((FAILED == 0))
