#!/usr/bin/env bash
# Smoke test of a cluster made by `cluster.sh up DIR 3`, with real clients only:
#   (a) S3 put/get/list/delete with curl --aws-sigv4 through node 1, reads through 2 and 3
#   (b) node 3 stopped: put/get/list through nodes 1-2 still work; node 3 restarted
#   (c) registry:2 (Debian docker-registry) on the bucket via its s3 driver:
#       skopeo push of a hand-made OCI image, pull back, digests compared
# Prints PASS/FAIL/INFO lines, ends with "smoke: N passed, N failed", exits 1 on a failure.
#
#   bash bench/garage/smoke.sh DIR
#
# Environment: SMOKE_REGISTRY_REDIRECT=1 lets registry:2 redirect blob GETs to
# presigned Garage URLs (its default); 0 (default here) makes it proxy them.
set -euo pipefail

DIR=${1:?usage: smoke.sh DIR (a cluster made by cluster.sh up DIR 3)}
DIR="$(cd "$DIR" && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/lib-s3.sh
. "$HERE/../lib-s3.sh"
CLUSTER="$HERE/cluster.sh"
[[ -f "$DIR/env" ]] || { echo "no $DIR/env: run cluster.sh up $DIR first" >&2; exit 2; }
# shellcheck disable=SC1091
. "$DIR/env"
read -r -a EP <<<"$S3_ENDPOINTS"
((${#EP[@]} >= 3)) || { echo "smoke.sh needs a 3-node cluster (got ${#EP[@]})" >&2; exit 2; }
REDIRECT="${SMOKE_REGISTRY_REDIRECT:-0}"

WORK="$DIR/smoke"
rm -rf "$WORK"
mkdir -p "$WORK"
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
PASSED=0
FAILED=0
REG_PID=""
NODE3_STOPPED=0

pass() { PASSED=$((PASSED + 1)); echo "PASS $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $*"; }
info() { echo "INFO $*"; }
check() { # check NAME CMD...: PASS if CMD succeeds
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name"; fi
}

cleanup() {
    if [[ -n "$REG_PID" ]] && kill -0 "$REG_PID" 2>/dev/null; then
        kill -TERM "$REG_PID" 2>/dev/null || true
        wait "$REG_PID" 2>/dev/null || true
    fi
    if ((NODE3_STOPPED)); then
        bash "$CLUSTER" start-node "$DIR" 3 || true
    fi
}
trap cleanup EXIT

# ---------------------------------------------------------------- S3 via curl

# s3 METHOD URL [FILE_TO_UPLOAD] [curl args...]: body -> $WORK/body, headers ->
# $WORK/hdr, prints the HTTP status (000 when the connection failed).
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

obj_url() { echo "$1/${S3_BUCKET}/$2"; }

same_file() { cmp -s "$1" "$2"; }

# bucket_usage ENDPOINT [PREFIX]: "objects bytes" via ListObjectsV2 (paginated)
bucket_usage() {
    local ep=$1 prefix=${2:-} token="" q code
    local count=0 bytes=0 page
    while :; do
        # query parameters in sorted order, values URI-encoded (SigV4 canonical form)
        q="$(python3 -c 'import sys, urllib.parse as u
p = {"list-type": "2", "max-keys": "1000"}
if sys.argv[1]: p["prefix"] = sys.argv[1]
if sys.argv[2]: p["continuation-token"] = sys.argv[2]
print("&".join(k + "=" + u.quote(v, safe="-_.~") for k, v in sorted(p.items())))' "$prefix" "$token")"
        code="$(s3 GET "$ep/${S3_BUCKET}?$q")"
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

# URI-encode a query value the SigV4 way (curl signs the query as written, Garage
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

list_has_key() { # ENDPOINT KEY
    local code
    code="$(s3 GET "$1/${S3_BUCKET}?list-type=2&max-keys=1000&prefix=$(urienc "$2")")"
    [[ "$code" == 200 ]] && grep -q "<Key>$2</Key>" "$WORK/body"
}

t_start=$(date +%s%N)
echo "== smoke: $DIR (S3 ${EP[*]}, region $S3_REGION, bucket $S3_BUCKET)"

# ---------------------------------------------------------------- (a)
echo "== (a) S3 object round trip through node 1, reads through nodes 2 and 3"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$WORK/obj-a"
KEY_A="smoke/a-$(date +%s)-$$.bin"
code="$(s3 PUT "$(obj_url "${EP[0]}" "$KEY_A")" "$WORK/obj-a")"
if [[ "$code" == 200 ]]; then pass "put 3 MiB object via node 1 (HTTP $code)"; else fail "put via node 1 (HTTP $code: $(head -c 300 "$WORK/body" "$WORK/curl.err" 2>/dev/null | tr '\n' ' '))"; fi
etag_a="$(grep -i '^etag:' "$WORK/hdr" | tr -d '\r' | cut -d' ' -f2-)"
info "etag $etag_a (md5 $(md5sum "$WORK/obj-a" | cut -d' ' -f1))"
for n in 1 2 3; do
    code="$(s3 GET "$(obj_url "${EP[$((n - 1))]}" "$KEY_A")")"
    if [[ "$code" == 200 ]] && same_file "$WORK/body" "$WORK/obj-a"; then
        pass "get via node $n: same bytes"
    else
        fail "get via node $n (HTTP $code)"
    fi
done
code="$(s3 HEAD "$(obj_url "${EP[1]}" "$KEY_A")")"
len="$(grep -i '^content-length:' "$WORK/hdr" | tr -d '\r' | cut -d' ' -f2)"
if [[ "$code" == 200 && "$len" == "$(stat -c %s "$WORK/obj-a")" ]]; then pass "head via node 2: content-length $len"; else fail "head via node 2 (HTTP $code, length $len)"; fi
check "list via node 1 shows the key" list_has_key "${EP[0]}" "$KEY_A"
check "list via node 3 shows the key" list_has_key "${EP[2]}" "$KEY_A"

# conditional create (object_store PutMode::Create sends If-None-Match: *)
code="$(s3 PUT "$(obj_url "${EP[0]}" "$KEY_A")" "$WORK/obj-a" -H "If-None-Match: *")"
info "PUT with If-None-Match: * on an existing key -> HTTP $code (AWS answers 412)"
# multipart upload with tiny parts (AWS requires >= 5 MiB for all but the last)
KEY_M="smoke/mpu-$$.bin"
head -c 100000 /dev/urandom >"$WORK/part1"
head -c 50000 /dev/urandom >"$WORK/part2"
code="$(s3 POST "$(obj_url "${EP[0]}" "$KEY_M")?uploads=")"
upload_id="$(sed -n 's:.*<UploadId>\(.*\)</UploadId>.*:\1:p' "$WORK/body")"
if [[ "$code" == 200 && -n "$upload_id" ]]; then
    c1="$(s3 PUT "$(obj_url "${EP[0]}" "$KEY_M")?partNumber=1&uploadId=$upload_id" "$WORK/part1")"
    e1="$(grep -i '^etag:' "$WORK/hdr" | tr -d '\r' | cut -d' ' -f2-)"
    c2="$(s3 PUT "$(obj_url "${EP[1]}" "$KEY_M")?partNumber=2&uploadId=$upload_id" "$WORK/part2")"
    e2="$(grep -i '^etag:' "$WORK/hdr" | tr -d '\r' | cut -d' ' -f2-)"
    printf '<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>%s</ETag></Part><Part><PartNumber>2</PartNumber><ETag>%s</ETag></Part></CompleteMultipartUpload>' "$e1" "$e2" >"$WORK/complete.xml"
    c3="$(s3 POST "$(obj_url "${EP[2]}" "$KEY_M")?uploadId=$upload_id" "$WORK/complete.xml")"
    cat "$WORK/part1" "$WORK/part2" >"$WORK/mpu-all"
    c4="$(s3 GET "$(obj_url "${EP[0]}" "$KEY_M")")"
    if [[ "$c1 $c2 $c3 $c4" == "200 200 200 200" ]] && same_file "$WORK/body" "$WORK/mpu-all"; then
        pass "multipart upload, 2 parts of 100 kB + 50 kB across nodes 1-3, read back equal"
    else
        fail "multipart upload (create 200, parts $c1 $c2, complete $c3, get $c4)"
    fi
    s3 DELETE "$(obj_url "${EP[0]}" "$KEY_M")" >/dev/null
else
    fail "CreateMultipartUpload (HTTP $code)"
fi

code="$(s3 DELETE "$(obj_url "${EP[0]}" "$KEY_A")")"
if [[ "$code" == 204 ]]; then pass "delete via node 1 (HTTP $code)"; else fail "delete via node 1 (HTTP $code)"; fi
code="$(s3 GET "$(obj_url "${EP[1]}" "$KEY_A")")"
if [[ "$code" == 404 ]]; then pass "get after delete via node 2: HTTP 404"; else fail "get after delete via node 2 (HTTP $code)"; fi

# ---------------------------------------------------------------- (b)
echo "== (b) node 3 down: writes/reads through nodes 1-2 (rf 3, quorum 2)"
KEY_B="smoke/b-$$.bin"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$WORK/obj-b"
bash "$CLUSTER" stop-node "$DIR" 3
NODE3_STOPPED=1
health1() {
    "$GARAGE_BIN" -c "$DIR/node1/garage.toml" json-api GetClusterHealth 2>/dev/null | python3 -c 'import json,sys
d = json.load(sys.stdin)
print(d["status"], d["storageNodesUp"], "status=%s storageNodesUp=%d/%d partitionsQuorum=%d/%d partitionsAllOk=%d" % (
    d["status"], d["storageNodesUp"], d["storageNodes"], d["partitionsQuorum"], d["partitions"], d["partitionsAllOk"]))' || echo "? ? GetClusterHealth failed"
}
t0=$(date +%s%N)
for _ in $(seq 300); do
    read -r st up rest <<<"$(health1)"
    [[ "$up" != 2 ]] || break
    sleep 0.1
done
t1=$(date +%s%N)
if [[ "$st" == degraded && "$up" == 2 ]]; then
    pass "node 1 sees node 3 down after $(((t1 - t0) / 1000000)) ms: $rest"
else
    fail "node 1 health with node 3 stopped: $st $up $rest"
fi
code="$(s3 GET "$(obj_url "${EP[2]}" x)")"
if [[ "$code" == 000 ]]; then pass "node 3 S3 port refuses connections"; else fail "node 3 still answers (HTTP $code)"; fi
t0=$(date +%s%N)
code="$(s3 PUT "$(obj_url "${EP[0]}" "$KEY_B")" "$WORK/obj-b")"
t1=$(date +%s%N)
if [[ "$code" == 200 ]]; then pass "put 2 MiB via node 1 with node 3 down (HTTP $code, $(((t1 - t0) / 1000000)) ms)"; else fail "put via node 1 with node 3 down (HTTP $code)"; fi
code="$(s3 GET "$(obj_url "${EP[1]}" "$KEY_B")")"
if [[ "$code" == 200 ]] && same_file "$WORK/body" "$WORK/obj-b"; then pass "get via node 2 with node 3 down: same bytes"; else fail "get via node 2 with node 3 down (HTTP $code)"; fi
check "list via node 2 with node 3 down shows the key" list_has_key "${EP[1]}" "$KEY_B"
t0=$(date +%s%N)
if bash "$CLUSTER" start-node "$DIR" 3; then
    t1=$(date +%s%N)
    pass "node 3 restarted, cluster healthy again ($(((t1 - t0) / 1000000)) ms)"
else
    fail "cluster.sh start-node $DIR 3"
fi
NODE3_STOPPED=0
code="$(s3 GET "$(obj_url "${EP[2]}" "$KEY_B")")"
if [[ "$code" == 200 ]] && same_file "$WORK/body" "$WORK/obj-b"; then pass "get via node 3 of the object written while it was down"; else fail "get via node 3 after restart (HTTP $code)"; fi
s3 DELETE "$(obj_url "${EP[0]}" "$KEY_B")" >/dev/null

# ---------------------------------------------------------------- (c)
echo "== (c) registry:2 (docker-registry, s3 driver) on the bucket; skopeo push/pull"
registry2_s3_roundtrip garage
if usage="$(bucket_usage "${S3_ENDPOINT}" "${REG_ROOT#/}/")"; then
    read -r n b <<<"$usage"
    info "registry objects under s3://$S3_BUCKET$REG_ROOT/: $n objects, $b bytes"
    if ((n > 0)); then pass "registry data is in the bucket ($n objects, $b bytes)"; else fail "no registry objects in the bucket"; fi
else
    fail "ListObjectsV2 for the registry prefix"
fi
if usage="$(bucket_usage "${EP[1]}")"; then
    read -r n b <<<"$usage"
    info "whole bucket $S3_BUCKET (listed via node 2): $n objects, $b bytes"
fi
kill -TERM "$REG_PID" 2>/dev/null || true
wait "$REG_PID" 2>/dev/null || true
REG_PID=""

t_end=$(date +%s%N)
info "smoke took $(((t_end - t_start) / 1000000)) ms"
echo "smoke: $PASSED passed, $FAILED failed"
((FAILED == 0))
