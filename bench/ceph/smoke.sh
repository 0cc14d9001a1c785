#!/usr/bin/env bash
# Smoke test of a Ceph RGW cluster made by `cluster.sh up DIR`, with real clients only:
#   (a) S3 put/get/head/list/multipart/delete with curl --aws-sigv4
#   (b) semantics that matter for many writers, measured and printed as INFO lines:
#       conditional PUT (If-None-Match: *, If-Match), a race of conditional creates,
#       list-after-put / get-after-overwrite / list-after-delete consistency, and a
#       DELETE while a large GET is streaming
#   (c) registry:2 (Debian docker-registry) on the bucket via its s3 driver:
#       skopeo push of a hand-made OCI image, pull back, digests compared
# Prints PASS/FAIL/INFO lines, ends with "smoke: N passed, N failed", exits 1 on a failure.
#
#   bash bench/ceph/smoke.sh DIR
#
# Environment: SMOKE_REGISTRY_REDIRECT=1 lets registry:2 redirect blob GETs to
# presigned RGW URLs (its default); 0 (default here) makes it proxy them.
# SMOKE_ROUNDS (default 100): put-then-list rounds of the consistency check.
#
# Section (c) is bench/lib-s3.sh's, shared with bench/garage/smoke.sh. Still
# copied from it, differing in their endpoints: s3(), obj_url(), bucket_usage(),
# urienc(), list_has_key().
set -euo pipefail
# shellcheck source=bench/lib-s3.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/../lib-s3.sh"

DIR=${1:?usage: smoke.sh DIR (a cluster made by cluster.sh up DIR)}
DIR="$(cd "$DIR" && pwd)"
[[ -f "$DIR/env" ]] || { echo "no $DIR/env: run cluster.sh up $DIR first" >&2; exit 2; }
# shellcheck disable=SC1091
. "$DIR/env"
REDIRECT="${SMOKE_REGISTRY_REDIRECT:-0}"
ROUNDS="${SMOKE_ROUNDS:-100}"

WORK="$DIR/smoke"
rm -rf "$WORK"
mkdir -p "$WORK"
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
PASSED=0
FAILED=0
REG_PID=""
BG_PIDS=()

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
info() { echo "INFO $*"; }
check() { # check NAME CMD...: PASS if CMD succeeds
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

cleanup() {
    local p
    for p in "${BG_PIDS[@]}" "$REG_PID"; do
        if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---------------------------------------------------------------- S3 via curl

# s3 METHOD URL [FILE_TO_UPLOAD] [curl args...]: body -> $WORK/body, headers ->
# $WORK/hdr, prints the HTTP status (000 when the connection failed).
# RGW answers 403 SignatureDoesNotMatch when x-amz-content-sha256 is missing, and
# curl 7.88 does not add it: always send it.
s3() {
    local method=$1 url=$2 file=${3:-} sha=$EMPTY_SHA
    shift 2
    (($# == 0)) || shift
    local up=()
    if [[ -n "$file" ]]; then
        sha="$(sha256sum "$file" | cut -d' ' -f1)"
        up=(--data-binary "@$file" -H "Content-Type: application/octet-stream")
    fi
    local verb=(-X "$method")
    [[ "$method" != HEAD ]] || verb=(-I)
    curl -sS -o "$WORK/body" -D "$WORK/hdr" -w '%{http_code}' "${verb[@]}" \
        --aws-sigv4 "aws:amz:${S3_REGION}:s3" --user "${S3_ACCESS_KEY}:${S3_SECRET_KEY}" \
        -H "x-amz-content-sha256: $sha" "${up[@]}" "$@" "$url" 2>"$WORK/curl.err" || true
}

obj_url() { echo "${S3_ENDPOINT}/${S3_BUCKET}/$1"; }

same_file() { cmp -s "$1" "$2"; }

hdr() { grep -i "^$1:" "$WORK/hdr" | tr -d '\r' | cut -d' ' -f2- | tail -1; }

errcode() { sed -n 's:.*<Code>\(.*\)</Code>.*:\1:p' "${1:-$WORK/body}" 2>/dev/null | head -1; }

# bucket_usage [PREFIX]: "objects bytes" via ListObjectsV2 (paginated)
bucket_usage() {
    local prefix=${1:-} token="" q code
    local count=0 bytes=0 page
    while :; do
        # query parameters in sorted order, values URI-encoded (SigV4 canonical form)
        q="$(python3 -c 'import sys, urllib.parse as u
p = {"list-type": "2", "max-keys": "1000"}
if sys.argv[1]: p["prefix"] = sys.argv[1]
if sys.argv[2]: p["continuation-token"] = sys.argv[2]
print("&".join(k + "=" + u.quote(v, safe="-_.~") for k, v in sorted(p.items())))' "$prefix" "$token")"
        code="$(s3 GET "${S3_ENDPOINT}/${S3_BUCKET}?$q")"
        [[ "$code" == 200 ]] || { echo "ListObjectsV2 HTTP $code" >&2; return 1; }
        page="$(python3 - "$WORK/body" <<'EOF'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = {"s": root.tag.split("}")[0].strip("{")} if root.tag.startswith("{") else {}
def f(e, name):
    return e.find(("s:" if ns else "") + name, ns)
objs = root.findall(("s:" if ns else "") + "Contents", ns)
size = sum(int(f(o, "Size").text) for o in objs)
trunc = f(root, "IsTruncated")
tok = f(root, "NextContinuationToken")
print(len(objs), size, (trunc is not None and trunc.text == "true") and tok.text or "")
EOF
)"
        read -r c b token <<<"$page"
        count=$((count + c))
        bytes=$((bytes + b))
        [[ -n "$token" ]] || break
    done
    echo "$count $bytes"
}

# URI-encode a query value the SigV4 way (curl signs the query as written, RGW
# re-encodes it: a raw '/' in prefix=... gives 403 SignatureDoesNotMatch)
urienc() {
    local s=$1 out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in
        [A-Za-z0-9._~-]) out+=$c ;;
        *) printf -v c '%%%02X' "'$c" && out+=$c ;;
        esac
    done
    echo "$out"
}

list_has_key() { # KEY [PREFIX]
    local code prefix=${2:-$1}
    code="$(s3 GET "${S3_ENDPOINT}/${S3_BUCKET}?list-type=2&max-keys=1000&prefix=$(urienc "$prefix")")"
    [[ "$code" == 200 ]] && grep -q "<Key>$1</Key>" "$WORK/body"
}

# multipart upload KEY PARTFILE... [-- extra curl args for Complete]: prints
# "create parts... complete" HTTP codes; the Complete answer is kept in
# $WORK/complete.body
mpu() {
    local key=$1
    shift
    local parts=() extra=()
    while (($#)); do
        if [[ "$1" == -- ]]; then shift; extra=("$@"); break; fi
        parts+=("$1")
        shift
    done
    local code upload_id rcs=() etags=() i
    code="$(s3 POST "$(obj_url "$key")?uploads=")"
    rcs+=("$code")
    upload_id="$(sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p' "$WORK/body")"
    [[ "$code" == 200 && -n "$upload_id" ]] || { echo "${rcs[*]}"; return; }
    for i in "${!parts[@]}"; do
        rcs+=("$(s3 PUT "$(obj_url "$key")?partNumber=$((i + 1))&uploadId=$(urienc "$upload_id")" "${parts[$i]}")")
        etags+=("$(hdr etag)")
    done
    {
        printf '<CompleteMultipartUpload>'
        for i in "${!etags[@]}"; do
            printf '<Part><PartNumber>%d</PartNumber><ETag>%s</ETag></Part>' $((i + 1)) "${etags[$i]}"
        done
        printf '</CompleteMultipartUpload>'
    } >"$WORK/complete.xml"
    rcs+=("$(s3 POST "$(obj_url "$key")?uploadId=$(urienc "$upload_id")" "$WORK/complete.xml" "${extra[@]}")")
    cp "$WORK/body" "$WORK/complete.body"
    # leave nothing behind when Complete failed (parts would stay in the bucket)
    [[ "${rcs[-1]}" == 200 ]] || s3 DELETE "$(obj_url "$key")?uploadId=$(urienc "$upload_id")" "" >/dev/null
    echo "${rcs[*]}"
}

t_start=$(date +%s%N)
echo "== smoke: $DIR (S3 $S3_ENDPOINT, region $S3_REGION, bucket $S3_BUCKET, osd ${CEPH_OSD_BACKEND:-?})"
P="smoke/$$"

# ---------------------------------------------------------------- (a)
echo "== (a) S3 object round trip"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$WORK/obj-a"
KEY_A="$P/a-$(date +%s).bin"
t0=$(now_ms)
code="$(s3 PUT "$(obj_url "$KEY_A")" "$WORK/obj-a")"
t1=$(now_ms)
if [[ "$code" == 200 ]]; then pass "put 3 MiB object (HTTP $code, $((t1 - t0)) ms)"; else fail "put (HTTP $code: $(head -c 300 "$WORK/body" "$WORK/curl.err" 2>/dev/null | tr '\n' ' '))"; fi
etag_a="$(hdr etag)"
md5_a="$(md5sum "$WORK/obj-a" | cut -d' ' -f1)"
if [[ "$etag_a" == "\"$md5_a\"" ]]; then pass "etag is the quoted MD5 of the body ($etag_a)"; else fail "etag $etag_a, md5 $md5_a"; fi
t0=$(now_ms)
code="$(s3 GET "$(obj_url "$KEY_A")")"
t1=$(now_ms)
if [[ "$code" == 200 ]] && same_file "$WORK/body" "$WORK/obj-a"; then pass "get: same bytes ($((t1 - t0)) ms)"; else fail "get (HTTP $code)"; fi
code="$(s3 HEAD "$(obj_url "$KEY_A")")"
len="$(hdr content-length)"
if [[ "$code" == 200 && "$len" == "$(stat -c %s "$WORK/obj-a")" ]]; then pass "head: content-length $len"; else fail "head (HTTP $code, length $len)"; fi
check "ListObjectsV2 with prefix $P/ shows the key" list_has_key "$KEY_A" "$P/"
code="$(s3 GET "$(obj_url "$KEY_A")" "" -H "Range: bytes=100-199")"
if [[ "$code" == 206 ]] && cmp -s "$WORK/body" <(tail -c +101 "$WORK/obj-a" | head -c 100); then pass "range GET: 206, right 100 bytes"; else fail "range GET (HTTP $code)"; fi

# multipart: AWS rules, all parts but the last >= 5 MiB
KEY_M="$P/mpu.bin"
head -c $((5 * 1024 * 1024)) /dev/urandom >"$WORK/part1"
head -c $((5 * 1024 * 1024 + 7)) /dev/urandom >"$WORK/part2"
head -c 1000000 /dev/urandom >"$WORK/part3"
cat "$WORK/part1" "$WORK/part2" "$WORK/part3" >"$WORK/mpu-all"
t0=$(now_ms)
codes="$(mpu "$KEY_M" "$WORK/part1" "$WORK/part2" "$WORK/part3")"
t1=$(now_ms)
etag_m="$(sed -n 's:.*<ETag>\(.*\)</ETag>.*:\1:p' "$WORK/complete.body" | sed 's/&quot;/"/g')"
code="$(s3 GET "$(obj_url "$KEY_M")")"
if [[ "$codes $code" == "200 200 200 200 200 200" ]] && same_file "$WORK/body" "$WORK/mpu-all"; then
    pass "multipart upload 5 MiB + 5 MiB + 1 MB, read back equal ($((t1 - t0)) ms)"
else
    fail "multipart upload (create, parts, complete: $codes; get $code)"
fi
s3 HEAD "$(obj_url "$KEY_M")" >/dev/null
info "multipart: ETag in the CompleteMultipartUploadResult XML '${etag_m}', ETag header of HEAD afterwards $(hdr etag) (AWS: both \"<md5 of part md5s>-3\")"
s3 DELETE "$(obj_url "$KEY_M")" >/dev/null
# tiny parts: AWS rejects them at Complete with 400 EntityTooSmall
head -c 100000 /dev/urandom >"$WORK/tiny1"
head -c 50000 /dev/urandom >"$WORK/tiny2"
codes="$(mpu "$P/mpu-tiny.bin" "$WORK/tiny1" "$WORK/tiny2")"
info "multipart with parts of 100 kB + 50 kB: create/parts/complete HTTP $codes $(errcode "$WORK/complete.body") (AWS: 400 EntityTooSmall)"
s3 DELETE "$(obj_url "$P/mpu-tiny.bin")" >/dev/null

code="$(s3 DELETE "$(obj_url "$KEY_A")")"
if [[ "$code" == 204 ]]; then pass "delete (HTTP $code)"; else fail "delete (HTTP $code)"; fi
code="$(s3 GET "$(obj_url "$KEY_A")")"
if [[ "$code" == 404 ]]; then pass "get after delete: HTTP 404 $(errcode)"; else fail "get after delete (HTTP $code)"; fi
code="$(s3 DELETE "$(obj_url "$KEY_A")")"
info "delete of a missing key -> HTTP $code (AWS: 204)"

# ---------------------------------------------------------------- (b)
echo "== (b) semantics for many writers (measured; INFO unless clearly broken)"
KEY_C="$P/cond.bin"
head -c 200000 /dev/urandom >"$WORK/c1"
head -c 200000 /dev/urandom >"$WORK/c2"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c1" -H "If-None-Match: *")"
info "PUT If-None-Match: * on a NEW key -> HTTP $code (AWS: 200)"
etag_c="$(hdr etag)"
unq=${etag_c//\"/}
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c2" -H "If-None-Match: *")"
info "PUT If-None-Match: * on an EXISTING key -> HTTP $code $(errcode) (AWS: 412 = conditional create honoured; 200 = ignored)"
s3 GET "$(obj_url "$KEY_C")" >/dev/null
if same_file "$WORK/body" "$WORK/c1"; then cond_kept=1; else cond_kept=0; fi
info "after that PUT the object still holds the first body: $( ((cond_kept)) && echo yes || echo 'no (overwritten)')"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c2" -H 'If-Match: "0123456789abcdef0123456789abcdef"')"
info "PUT If-Match: <wrong etag> -> HTTP $code $(errcode) (AWS: 412)"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c2" -H "If-Match: $etag_c")"
info "PUT If-Match: <right etag, quoted as sent by S3: $etag_c> -> HTTP $code $(errcode) (AWS: 200)"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c2" -H "If-Match: $unq")"
info "PUT If-Match: <right etag, unquoted: $unq> -> HTTP $code $(errcode) (AWS: 200)"
etag_c2="$(hdr etag)"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c1" -H "If-None-Match: ${etag_c2//\"/}")"
info "PUT If-None-Match: <current etag, unquoted> -> HTTP $code $(errcode) (AWS: 412 or 501)"
code="$(s3 PUT "$(obj_url "$KEY_C")" "$WORK/c2" -H "If-None-Match: $etag_c2")"
info "PUT If-None-Match: <current etag, quoted> -> HTTP $code $(errcode) (AWS: 412 or 501)"
code="$(s3 PUT "$(obj_url "$P/never-there.bin")" "$WORK/c1" -H "If-Match: $unq")"
info "PUT If-Match on a MISSING key -> HTTP $code $(errcode) (AWS: 404 NoSuchKey)"
codes="$(mpu "$KEY_C" "$WORK/c1" -- -H "If-None-Match: *")"
s3 GET "$(obj_url "$KEY_C")" >/dev/null
if same_file "$WORK/body" "$WORK/c1"; then over="overwritten"; else over="kept"; fi
info "CompleteMultipartUpload with If-None-Match: * on an existing key -> create/part/complete HTTP $codes $(errcode "$WORK/complete.body") (AWS: 412); existing object $over"
s3 HEAD "$(obj_url "$KEY_C")" >/dev/null
cur="$(hdr etag)"
code="$(s3 GET "$(obj_url "$KEY_C")" "" -H "If-None-Match: $cur")"
info "GET If-None-Match: <current etag> -> HTTP $code (AWS: 304)"
code="$(s3 GET "$(obj_url "$KEY_C")" "" -H 'If-Match: "0123456789abcdef0123456789abcdef"')"
info "GET If-Match: <wrong etag> -> HTTP $code (AWS: 412)"
code="$(s3 DELETE "$(obj_url "$KEY_C")" "" -H 'If-Match: "0123456789abcdef0123456789abcdef"')"
if [[ "$(s3 HEAD "$(obj_url "$KEY_C")")" == 200 ]]; then over="still there"; else over="deleted"; fi
info "DELETE If-Match: <wrong etag> -> HTTP $code $(errcode), object $over (AWS since 2024: 412)"
s3 DELETE "$(obj_url "$KEY_C")" >/dev/null

# race: 8 writers create the same fresh key at once with If-None-Match: *
KEY_R="$P/race.bin"
RACE=8
for ((i = 1; i <= RACE; i++)); do head -c 300000 /dev/urandom >"$WORK/race$i"; done
for ((i = 1; i <= RACE; i++)); do
    curl -sS -o /dev/null -w '%{http_code}' -X PUT --aws-sigv4 "aws:amz:${S3_REGION}:s3" \
        --user "${S3_ACCESS_KEY}:${S3_SECRET_KEY}" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
        -H "If-None-Match: *" --data-binary "@$WORK/race$i" "$(obj_url "$KEY_R")" >"$WORK/race$i.code" 2>/dev/null &
    BG_PIDS+=($!)
done
wait "${BG_PIDS[@]}" 2>/dev/null || true
BG_PIDS=()
winners=()
for ((i = 1; i <= RACE; i++)); do [[ "$(cat "$WORK/race$i.code")" != 200 ]] || winners+=("$i"); done
race_codes="$(cat "$WORK"/race*.code | fold -w3 | sort | uniq -c | awk '{printf "%s x%s ", $2, $1}')"
s3 GET "$(obj_url "$KEY_R")" >/dev/null
stored="none"
for ((i = 1; i <= RACE; i++)); do same_file "$WORK/body" "$WORK/race$i" && stored=$i; done
info "race: $RACE parallel PUT If-None-Match: * on one fresh key -> ${race_codes}; winners: ${winners[*]:-none}; stored body is writer $stored"
if ((${#winners[@]} == 1)) && [[ "$stored" == "${winners[0]}" ]]; then
    pass "conditional create is exclusive: exactly one of $RACE racing writers got 200 and its body is stored"
elif ((${#winners[@]} == RACE)); then
    info "conditional create not honoured: all $RACE writers got 200 (last writer wins)"
else
    fail "conditional-create race: ${#winners[@]} winners (${winners[*]:-}), stored body $stored"
fi
s3 DELETE "$(obj_url "$KEY_R")" >/dev/null

# consistency: each round PUTs a new key and LISTs right after; then overwrite+GET,
# DELETE+LIST
echo "$$ round" >"$WORK/small"
ok_list=0 ok_get=0 ok_del=0
t0=$(now_ms)
for ((i = 0; i < ROUNDS; i++)); do
    k="$P/cons/k$i"
    s3 PUT "$(obj_url "$k")" "$WORK/small" >/dev/null
    list_has_key "$k" "$P/cons/" && ok_list=$((ok_list + 1))
done
t1=$(now_ms)
for ((i = 0; i < ROUNDS; i++)); do
    echo "overwrite $i $RANDOM" >"$WORK/small2"
    k="$P/cons/k$i"
    s3 PUT "$(obj_url "$k")" "$WORK/small2" >/dev/null
    [[ "$(s3 GET "$(obj_url "$k")")" == 200 ]] && same_file "$WORK/body" "$WORK/small2" && ok_get=$((ok_get + 1))
done
for ((i = 0; i < ROUNDS; i++)); do
    k="$P/cons/k$i"
    s3 DELETE "$(obj_url "$k")" >/dev/null
    list_has_key "$k" "$P/cons/" || ok_del=$((ok_del + 1))
done
info "consistency: list-after-put $ok_list/$ROUNDS, get-after-overwrite $ok_get/$ROUNDS, list-after-delete $ok_del/$ROUNDS (put+list round $(((t1 - t0) / ROUNDS)) ms)"
if ((ok_list == ROUNDS && ok_get == ROUNDS && ok_del == ROUNDS)); then
    pass "read-after-write and list-after-write/delete consistent in all $ROUNDS rounds"
else
    fail "consistency: list-after-put $ok_list, get-after-overwrite $ok_get, list-after-delete $ok_del of $ROUNDS"
fi

# DELETE while a large GET is streaming: RGW keeps the tail RADOS objects until GC
# (rgw_gc_obj_min_wait), so a reader that already has the manifest should finish.
KEY_D="$P/stream.bin"
head -c $((64 * 1024 * 1024)) /dev/urandom >"$WORK/big"
code="$(s3 PUT "$(obj_url "$KEY_D")" "$WORK/big")"
[[ "$code" == 200 ]] || fail "put 64 MiB for the delete-during-get test (HTTP $code)"
curl -sS -o "$WORK/big-back" -w '%{http_code} %{size_download}' --limit-rate 16M \
    --aws-sigv4 "aws:amz:${S3_REGION}:s3" --user "${S3_ACCESS_KEY}:${S3_SECRET_KEY}" \
    -H "x-amz-content-sha256: $EMPTY_SHA" "$(obj_url "$KEY_D")" >"$WORK/big.code" 2>"$WORK/big.err" &
GET_PID=$!
BG_PIDS+=("$GET_PID")
sleep 1
t0=$(now_ms)
dcode="$(s3 DELETE "$(obj_url "$KEY_D")")"
t1=$(now_ms)
gcode404="$(s3 HEAD "$(obj_url "$KEY_D")")"
wait "$GET_PID" && grc=0 || grc=$?
BG_PIDS=()
read -r gcode gsize <"$WORK/big.code" || true
if same_file "$WORK/big-back" "$WORK/big"; then same=yes; else same=no; fi
info "DELETE 1 s into a 64 MiB GET streaming at 16 MB/s: delete HTTP $dcode ($((t1 - t0)) ms), HEAD right after $gcode404; the GET finished with curl rc $grc, HTTP ${gcode:-?}, ${gsize:-?} bytes, identical to the object: $same (rgw_gc_obj_min_wait=${CEPH_RGW_GC_MIN_WAIT:-7200} s)"
if [[ "$dcode" == 204 && "$gcode404" == 404 ]]; then pass "object gone for new readers while the old GET streams (delete 204, HEAD 404)"; else fail "delete during GET: delete $dcode, HEAD $gcode404"; fi
rm -f "$WORK/big" "$WORK/big-back"

# ---------------------------------------------------------------- (c)
echo "== (c) registry:2 (docker-registry, s3 driver) on the bucket; skopeo push/pull"
registry2_s3_roundtrip ceph
if usage="$(bucket_usage "${REG_ROOT#/}/")"; then
    read -r n b <<<"$usage"
    info "registry objects under s3://$S3_BUCKET$REG_ROOT/: $n objects, $b bytes"
    if ((n > 0)); then pass "registry data is in the bucket ($n objects, $b bytes)"; else fail "no registry objects in the bucket"; fi
else
    fail "ListObjectsV2 for the registry prefix"
fi
if usage="$(bucket_usage)"; then
    read -r n b <<<"$usage"
    info "whole bucket $S3_BUCKET: $n objects, $b bytes"
fi
kill -TERM "$REG_PID" 2>/dev/null || true
wait "$REG_PID" 2>/dev/null || true
REG_PID=""

# daemon memory after the run (PIDs recorded by cluster.sh)
rss=()
for k in mon osd rgw; do
    if [[ -f "$DIR/run/$k.pid.started" ]]; then
        pid="$(cat "$DIR/run/$k.pid.started")"
        rss+=("$k=$(awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status" 2>/dev/null || echo '?')MiB")
    fi
done
info "daemon RSS after smoke: ${rss[*]}"
t_end=$(date +%s%N)
info "smoke took $(((t_end - t_start) / 1000000)) ms"
echo "smoke: $PASSED passed, $FAILED failed"
((FAILED == 0))
