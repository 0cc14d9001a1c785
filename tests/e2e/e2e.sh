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
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

E2E_TARGET="${E2E_TARGET:-blockreg}"
PASSED=0 FAILED=0 SKIPPED=0

pass() { echo "ok $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
skip() { echo "skip $1: $2"; SKIPPED=$((SKIPPED + 1)); }
summary() {
    local line="$PASSED passed, $FAILED failed"
    ((SKIPPED)) && line+=", $SKIPPED skipped"
    echo "$line"
}
# A setup step that cannot go on ends the run with a counted failure.
setup_failed() {
    fail "setup" "$1"
    summary
    exit 1
}
die() { setup_failed "$*"; }

is_blockreg() { [[ "$E2E_TARGET" == blockreg ]]; }
sha256_file() { sha256sum "$1" | cut -d' ' -f1; }

# http METHOD URL [curl args...]: raw request (no path normalisation); sets
# CODE, BODY (file) and HDRS (file).
REQ_N=0
http() {
    local method="$1" url="$2"
    shift 2
    REQ_N=$((REQ_N + 1))
    BODY="$WORK_DIR/http/$REQ_N.body"
    HDRS="$WORK_DIR/http/$REQ_N.hdrs"
    mkdir -p "$WORK_DIR/http"
    local m=(-X "$method")
    [[ "$method" == HEAD ]] && m=(-I)
    CODE="$(curl -s --path-as-is --max-time 30 "${m[@]}" -o "$BODY" -D "$HDRS" -w '%{http_code}' "$@" "$url")"
}
# header NAME: value of a response header of the last http call.
header() {
    awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$1")" '{
        sub(/\r$/, ""); i = index($0, ":")
        if (i && tolower(substr($0, 1, i - 1)) == n) { v = substr($0, i + 1); sub(/^[ \t]+/, "", v) }
    } END { print v }' "$HDRS"
}
# describe_last: one line describing the last request's response.
describe_last() { printf 'HTTP %s, body %s' "$CODE" "$(head -c 300 "$BODY" 2>/dev/null | tr '\n' ' ')"; }

# ------------------------------------------------------------------ setup

e2e_init
if is_blockreg && [[ ! -x "$BLOCKREG" ]]; then
    setup_failed "no blockreg binary at $BLOCKREG (cargo build --release -p host)"
fi
ensure_packages
T_START="$(now)"
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
if is_blockreg; then
    DATA="$WORK_DIR/br/data"
    mkdir -p "$WORK_DIR/br"
    if [[ -f "$GUEST_DEFAULT" ]]; then
        GUEST_FILE="$WORK_DIR/br/guest.wasm"
        cp "$GUEST_DEFAULT" "$GUEST_FILE"
    fi
    REG_LOG="$LOG_DIR/blockreg.log"
    start_blockreg "$DATA" "$REG_LOG" "$GUEST_FILE" || setup_failed "blockreg did not start ($BLOCKREG)"
    REG_PID="$BR_PID" REG_HOST="$BR_HOST" REG_URL="$BR_URL"
else
    DATA="$WORK_DIR/br/data"
    REG_LOG="$LOG_DIR/registry2.log"
    start_registry2 "$DATA" "$REG_LOG" || setup_failed "docker-registry did not start"
    REG_PID="$R2_PID" REG_HOST="$R2_HOST" REG_URL="$R2_URL"
fi
log "registry under test: $E2E_TARGET at $REG_URL (corpus ready after $T_CORPUS s)"

# stats_json: blockreg stats --json for the main data dir.
stats_json() { "$BLOCKREG" stats --data "$DATA" --json 2>>"$LOG_DIR/stats.log"; }

# ------------------------------------------------------------------ a. push, pull

T_A="$(now)"
STATS_V1="" STATS_V2=""
for img in "${CORPUS_IMAGES[@]}"; do
    ref="${REPO[$img]}"
    if [[ "$img" == "$IMG_V2" ]] && is_blockreg; then STATS_V1="$(stats_json)"; fi
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
is_blockreg && STATS_V2="$(stats_json)"

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

# ------------------------------------------------------------------ b. dedup stats

# blob_sizes IMAGE: "digest size" for the config and every layer.
blob_sizes() {
    jq -r '(.config, .layers[]) | select(.size | type == "number") | "\(.digest) \(.size)"' \
        "${MANIFEST_FILE[$1]}" 2>/dev/null
}
# stats_valid JSON: all eight figures are present and numbers.
stats_valid() {
    jq -e '[.blobs, .logical_bytes, .blocks, .block_bytes, .repositories, .manifests, .uploads, .ratio]
        | all(type == "number")' <<<"$1" >/dev/null 2>&1
}

if ! is_blockreg; then
    skip "stats_dedup" "blockreg only"
elif [[ -z "${MANIFEST_FILE[$IMG_V2]:-}" ]] || ! jq -e '.layers | length > 0' "${MANIFEST_FILE[$IMG_V2]}" >/dev/null 2>&1; then
    fail "stats_dedup" "nginx:v2 was not pushed or its manifest has no layers"
elif ! stats_valid "$STATS_V1" || ! stats_valid "$STATS_V2"; then
    fail "stats_json" "blockreg stats --json did not print the eight numeric fields: '${STATS_V2:0:300}' $(tail -n3 "$LOG_DIR/stats.log" 2>/dev/null | cut -c1-200)"
else
    pass "stats_json"
    # Blobs v2 adds on top of base + v1, and v2's whole size, from the manifests.
    declare -A SEEN
    while read -r d s; do SEEN[$d]=1; done < <(blob_sizes "$IMG_BASE"; blob_sizes "$IMG_V1")
    v2_total=0 v2_new=0 v2_new_n=0
    while read -r d s; do
        v2_total=$((v2_total + s))
        [[ -n "${SEEN[$d]:-}" ]] || { v2_new=$((v2_new + s)); v2_new_n=$((v2_new_n + 1)); }
    done < <(blob_sizes "$IMG_V2")
    v1_logical=0
    while read -r d s; do v1_logical=$((v1_logical + s)); done < <({ blob_sizes "$IMG_BASE"; blob_sizes "$IMG_V1"; } | sort -u)
    j1="$STATS_V1" j2="$STATS_V2"
    g() { jq -r ".$2" <<<"$1"; }
    bb_growth=$(($(g "$j2" block_bytes) - $(g "$j1" block_bytes)))
    lb_growth=$(($(g "$j2" logical_bytes) - $(g "$j1" logical_bytes)))
    blob_growth=$(($(g "$j2" blobs) - $(g "$j1" blobs)))
    log "  stats after base+v1: $j1"
    log "  stats after v2:      $j2"
    log "  v2: $v2_total bytes in total, $v2_new bytes in $v2_new_n new blobs; block_bytes grew $bb_growth"
    if ((bb_growth * 10 >= v2_total)); then
        fail "stats_shared_base_stored_once" "block_bytes grew $bb_growth pushing v2; v2 is $v2_total bytes (want < 10%)"
    elif ((bb_growth > v2_new + 65536)); then
        fail "stats_shared_base_stored_once" "block_bytes grew $bb_growth, more than v2's $v2_new new bytes + 64 KiB"
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
    ratio_ok="$(jq -r '(.ratio >= 1) and ((.ratio - .logical_bytes / .block_bytes) | fabs < 0.01)' <<<"$j2")"
    if [[ "$ratio_ok" == true ]]; then pass "stats_ratio"; else fail "stats_ratio" "ratio not >= 1 or not logical/block bytes: $j2"; fi
    if (($(g "$j2" repositories) >= 2 && $(g "$j2" manifests) >= 3 && $(g "$j2" uploads) == 0)); then
        pass "stats_counts"
    else
        fail "stats_counts" "want repositories >= 2, manifests >= 3, uploads == 0 after pushes: $j2"
    fi
    # The store on disk matches the figures: blocks/<2 hex>/<sha1>, whose
    # names are the SHA-1 of their content, and a recipe per blob.
    nblocks="$(find "$DATA/blocks" -type f 2>/dev/null | wc -l)"
    nbytes="$(find "$DATA/blocks" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')"
    badname="$(find "$DATA/blocks" -type f 2>/dev/null | grep -Ev '/blocks/([0-9a-f]{2})/\1[0-9a-f]{38}$' | head -n1)"
    badsum="$(find "$DATA/blocks" -type f 2>/dev/null | shuf -n 200 --random-source=<(yes) \
        | while read -r f; do [[ "$(sha1sum "$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || echo "$f"; done | head -n1)"
    norecipe=""
    while read -r d s; do
        [[ -f "$DATA/layers/$d/recipe.json" ]] || { norecipe="$d"; break; }
    done < <(blob_sizes "$IMG_V2")
    if [[ "$nblocks" != "$(g "$j2" blocks)" || "$nbytes" != "$(g "$j2" block_bytes)" ]]; then
        fail "store_layout" "on disk $nblocks blocks / $nbytes bytes, stats say $(g "$j2" blocks) / $(g "$j2" block_bytes)"
    elif [[ -n "$badname" ]]; then
        fail "store_layout" "block file not at blocks/<2 hex>/<40 hex>: $badname"
    elif [[ -n "$badsum" ]]; then
        fail "store_layout" "block file content does not hash to its name: $badsum"
    elif [[ -n "$norecipe" ]]; then
        fail "store_layout" "no layers/$norecipe/recipe.json"
    else
        pass "store_layout"
    fi
fi

# Block-level dedup, below the blob level: a new blob made of the base
# layer's bytes plus 8 KiB stores only the blocks past the shared prefix.
if is_blockreg && stats_valid "$STATS_V2" && [[ -n "${MANIFEST_FILE[$IMG_BASE]:-}" ]]; then
    base_layer="$(jq -r '.layers[0].digest' "${MANIFEST_FILE[$IMG_BASE]}")"
    f="$WORK_DIR/prefix-blob"
    curl -sf -o "$f" "$REG_URL/v2/e2e/debian/blobs/$base_layer" && head -c 8192 /dev/urandom >>"$f"
    d="sha256:$(sha256_file "$f")"
    s1="$(stats_json)"
    http POST "$REG_URL/v2/e2e/prefix/blobs/uploads/"
    loc="$(header Location)"
    [[ "$loc" == /* ]] && loc="$REG_URL$loc"
    sep='?'; [[ "$loc" == *\?* ]] && sep='&'
    http PUT "$loc${sep}digest=$d" -H 'Content-Type: application/octet-stream' --data-binary "@$f"
    put_code="$CODE"
    s2="$(stats_json)"
    got="$(curl -s "$REG_URL/v2/e2e/prefix/blobs/$d" | sha256sum | cut -d' ' -f1)"
    if [[ "$put_code" != 201 ]]; then
        fail "stats_block_dedup" "monolithic upload of $(stat -c %s "$f") bytes: $(describe_last)"
    elif [[ "sha256:$got" != "$d" ]]; then
        fail "stats_block_dedup" "the blob does not read back intact"
    elif ! stats_valid "$s2"; then
        fail "stats_block_dedup" "no valid stats after the upload"
    else
        growth=$(($(jq .block_bytes <<<"$s2") - $(jq .block_bytes <<<"$s1")))
        lgrowth=$(($(jq .logical_bytes <<<"$s2") - $(jq .logical_bytes <<<"$s1")))
        log "  prefix blob of $(stat -c %s "$f") bytes: logical_bytes +$lgrowth, block_bytes +$growth, ratio $(jq .ratio <<<"$s2")"
        if ((lgrowth != $(stat -c %s "$f"))); then
            fail "stats_block_dedup" "logical_bytes grew $lgrowth for a $(stat -c %s "$f")-byte blob"
        elif ((growth > 8192 + 2 * 4096)); then
            fail "stats_block_dedup" "block_bytes grew $growth for a blob that shares all but 8 KiB with a stored one"
        elif [[ "$(jq '.ratio > 1' <<<"$s2")" != true ]]; then
            fail "stats_block_dedup" "ratio not above 1 with a shared-prefix blob stored: $s2"
        else
            pass "stats_block_dedup"
        fi
    fi
    rm -f "$f"
fi

# ------------------------------------------------------------------ c. skopeo

T_C="$(now)"
SK="$WORK_DIR/skopeo"
mkdir -p "$SK"
skopeo_run() { skopeo --insecure-policy "$@" >>"$LOG_DIR/skopeo.log" 2>&1; }
STATS_PRE_SKOPEO=""
stats_valid "$STATS_V2" && STATS_PRE_SKOPEO="$(stats_json)"
if [[ -z "${MANIFEST_FILE[$IMG_V1]:-}" ]]; then
    fail "skopeo_roundtrip" "nginx:v1 was not pushed"
elif ! skopeo_run copy --src-tls-verify=false "docker://$REG_HOST/e2e/nginx:v1" "oci:$SK/oci:v1"; then
    show_log "$LOG_DIR/skopeo.log" 15
    fail "skopeo_roundtrip" "copy docker:// -> oci: failed"
elif ! skopeo_run copy --dest-tls-verify=false "oci:$SK/oci:v1" "docker://$REG_HOST/e2e/skopeo-copy:v1"; then
    show_log "$LOG_DIR/skopeo.log" 15
    fail "skopeo_roundtrip" "copy oci: -> docker:// (new repo) failed"
elif ! skopeo_run copy --src-tls-verify=false "docker://$REG_HOST/e2e/skopeo-copy:v1" "dir:$SK/dir"; then
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

    # The same blobs pushed again into another repository add no blocks.
    if is_blockreg; then
        s1="$STATS_PRE_SKOPEO" s2="$(stats_json)"
        if ! stats_valid "$s1" || ! stats_valid "$s2"; then
            fail "skopeo_copy_dedup" "no valid stats --json output"
        else
            growth=$(($(jq .block_bytes <<<"$s2") - $(jq .block_bytes <<<"$s1")))
            if ((growth <= 65536)); then
                pass "skopeo_copy_dedup"
            else
                fail "skopeo_copy_dedup" "block_bytes grew $growth copying v1 into a new repository"
            fi
        fi
    fi
fi
log "c. skopeo: $(elapsed "$T_C") s"

# ------------------------------------------------------------------ guest header

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

# ------------------------------------------------------------------ e. confinement

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

# ------------------------------------------------------------------ end

if ((FAILED)); then
    [[ -f "$REG_LOG" ]] && show_log "$REG_LOG" 30
    # WORK_DIR goes away at exit; keep the logs of a failed run.
    rm -rf "$CACHE_DIR/e2e-logs" && cp -r "$LOG_DIR" "$CACHE_DIR/e2e-logs" \
        && log "logs of this run: $CACHE_DIR/e2e-logs"
fi
log "total: $(elapsed "$T_START") s"
summary
((FAILED == 0))
