#!/usr/bin/env bash
# Shared by bench/garage/smoke.sh and bench/ceph/smoke.sh (sourced, not run):
# the registry:2 round trip through an S3 engine.

# registry2_s3_roundtrip LABEL: starts Debian's docker-registry (registry:2)
# with its s3 driver on the bucket of the sourced DIR/env (S3_ENDPOINT,
# S3_REGION, S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY) under a fresh root
# directory, pushes a hand-made OCI image (a small text layer and a 12 MiB
# random one, over the 5 MiB chunk size, so the driver uploads in parts)
# with skopeo, pulls it back and compares digests and bytes. Uses the
# caller's WORK, REDIRECT, pass, fail and info; leaves REG_PID (the
# registry, still running: the caller lists the bucket, then stops it) and
# REG_ROOT set. LABEL goes into the small layer's text.
registry2_s3_roundtrip() {
    local label=$1
if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null; then
    echo "installing docker-registry skopeo" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo >/dev/null
fi
REG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
REG_ROOT="/registry-smoke-$$"
redirect_disable=true
((REDIRECT)) && redirect_disable=false
(
    umask 077
    cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  s3:
    region: ${S3_REGION}
    regionendpoint: ${S3_ENDPOINT}
    bucket: ${S3_BUCKET}
    rootdirectory: ${REG_ROOT}
    accesskey: ${S3_ACCESS_KEY}
    secretkey: ${S3_SECRET_KEY}
    forcepathstyle: true
    secure: false
    v4auth: true
    chunksize: 5242880
  delete:
    enabled: true
  redirect:
    disable: ${redirect_disable}
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:${REG_PORT}
EOF
)
# AWS_CA_BUNDLE (set in some sandboxes) makes aws-sdk-go in registry 2.8 panic:
# "LoadCustomCABundleError: ... HTTPClient's transport unsupported type"
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$REG_PORT/v2/" && break
    kill -0 "$REG_PID" 2>/dev/null || break
    sleep 0.1
done
if curl -sf -o /dev/null "http://127.0.0.1:$REG_PORT/v2/"; then
    pass "docker-registry $(docker-registry --version | awk '{print $3}') up on 127.0.0.1:$REG_PORT, storage s3 -> $S3_ENDPOINT/$S3_BUCKET$REG_ROOT (redirect $((REDIRECT)))"
else
    fail "docker-registry did not start: $(tail -5 "$WORK/registry.log")"
fi

# tiny OCI image layout by hand: a small text layer + a 12 MiB random layer
# (larger than the 5 MiB chunksize, so the s3 driver uses a multipart upload)
python3 - "$WORK/img" "$label" <<'EOF'
import gzip, hashlib, io, json, os, sys, tarfile, time
root = sys.argv[1]
blobs = os.path.join(root, "blobs", "sha256")
os.makedirs(blobs)
def put(data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}
def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mtime, ti.mode = len(data), 1700000000, 0o644
            t.addfile(ti, io.BytesIO(data))
    raw = raw.getvalue()
    gz = gzip.compress(raw, mtime=0)
    desc = put(gz)
    desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    return desc, "sha256:" + hashlib.sha256(raw).hexdigest()
l1, d1 = layer([("etc/smoke.txt", ("blockreg %s smoke %f\n" % (sys.argv[2], time.time())).encode())])
l2, d2 = layer([("data/random.bin", os.urandom(12 * 1024 * 1024))])
cfg = json.dumps({"architecture": "amd64", "os": "linux",
                  "config": {"Cmd": ["/bin/true"]},
                  "rootfs": {"type": "layers", "diff_ids": [d1, d2]}}).encode()
c = put(cfg)
c["mediaType"] = "application/vnd.oci.image.config.v1+json"
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": c, "layers": [l1, l2]}).encode()
m = put(man)
m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
m["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
with open(os.path.join(root, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [m]}, f)
with open(os.path.join(root, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
EOF
man_digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$WORK/img/index.json")"
img_bytes="$(find "$WORK/img/blobs" -type f -printf '%s\n' | awk '{s += $1} END {print s}')"
REF="127.0.0.1:$REG_PORT/smoke/img:v1"
t0=$(date +%s%N)
if skopeo --insecure-policy copy -q --preserve-digests --dest-tls-verify=false "oci:$WORK/img:v1" "docker://$REF" >"$WORK/push.log" 2>&1; then
    t1=$(date +%s%N)
    pass "skopeo push oci:img:v1 -> $REF ($img_bytes bytes of blobs, $(((t1 - t0) / 1000000)) ms)"
else
    fail "skopeo push: $(tail -3 "$WORK/push.log")"
fi
remote_digest="sha256:$( (skopeo inspect --raw --tls-verify=false "docker://$REF" 2>/dev/null || true) | sha256sum | cut -d' ' -f1)"
if [[ "$remote_digest" == "$man_digest" ]]; then pass "registry serves the manifest with the pushed digest $man_digest"; else fail "manifest digest: pushed $man_digest, served $remote_digest"; fi
t0=$(date +%s%N)
if skopeo --insecure-policy copy -q --preserve-digests --src-tls-verify=false "docker://$REF" "oci:$WORK/img-back:v1" >"$WORK/pull.log" 2>&1; then
    t1=$(date +%s%N)
    pass "skopeo pull $REF -> oci:img-back:v1 ($(((t1 - t0) / 1000000)) ms)"
else
    fail "skopeo pull: $(tail -3 "$WORK/pull.log")"
fi
back_digest="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' "$WORK/img-back/index.json" 2>/dev/null || echo none)"
if [[ "$back_digest" == "$man_digest" ]]; then pass "pulled manifest digest equals pushed ($back_digest)"; else fail "pulled manifest digest $back_digest != $man_digest"; fi
blobs_ok() {
    diff -r "$WORK/img/blobs" "$WORK/img-back/blobs" >/dev/null 2>&1 || return 1
    local f
    for f in "$WORK/img-back/blobs/sha256"/*; do
        [[ "$(sha256sum "$f" | cut -d' ' -f1)" == "$(basename "$f")" ]] || return 1
    done
}
if blobs_ok; then
    pass "every pulled blob is byte-identical to the pushed one and matches its digest ($(find "$WORK/img-back/blobs/sha256" -type f | wc -l) blobs)"
else
    fail "pulled blobs differ from the pushed ones"
fi
}
