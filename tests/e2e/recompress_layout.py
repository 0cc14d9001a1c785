#!/usr/bin/env python3
"""Copies one image of an OCI layout into a new layout with every layer
compressed by a command (stdin: the plain tar, stdout: the compressed
layer), to push images whose layers a given tool wrote.

    python3 tests/e2e/recompress_layout.py SRC_LAYOUT REF DST_LAYOUT MEDIA_TYPE CMD...

SRC_LAYOUT's image REF (its `org.opencontainers.image.ref.name`) may have
plain or gzip layers (each is decompressed first); the new layout
holds the same config, the recompressed layers with MEDIA_TYPE (e.g.
`application/vnd.oci.image.layer.v1.tar+gzip`) and a new manifest, under the
same REF. Prints the new manifest's digest. Standard library only.
"""

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def blob_path(layout, digest):
    return os.path.join(layout, "blobs", *digest.split(":", 1))


def put_blob(layout, path):
    """Moves the file at `path` into `layout`'s blobs; returns (digest, size)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            h.update(piece)
    digest = "sha256:" + h.hexdigest()
    os.makedirs(os.path.dirname(blob_path(layout, digest)), exist_ok=True)
    shutil.move(path, blob_path(layout, digest))
    return digest, os.path.getsize(blob_path(layout, digest))


def put_bytes(layout, data):
    fd, tmp = tempfile.mkstemp(dir=layout)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return put_blob(layout, tmp)


def main():
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    src, ref, dst, media_type, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
    with open(os.path.join(src, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref)
    with open(blob_path(src, desc["digest"])) as f:
        manifest = json.load(f)
    os.makedirs(os.path.join(dst, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(dst, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    cfg = manifest["config"]
    shutil.copyfile(blob_path(src, cfg["digest"]), blob_path(dst, cfg["digest"]))
    layers = []
    for layer in manifest["layers"]:
        fd, out = tempfile.mkstemp(dir=dst)
        with open(blob_path(src, layer["digest"]), "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
        opener = gzip.open if gzipped else open
        with opener(blob_path(src, layer["digest"]), "rb") as plain, os.fdopen(fd, "wb") as o:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=o)
            shutil.copyfileobj(plain, proc.stdin, 1 << 20)
            proc.stdin.close()
            if proc.wait() != 0:
                sys.exit(f"{cmd} failed with {proc.returncode}")
        digest, size = put_blob(dst, out)
        layers.append({"mediaType": media_type, "digest": digest, "size": size})
    new = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers}
    mdigest, msize = put_bytes(dst, json.dumps(new, separators=(",", ":")).encode())
    with open(os.path.join(dst, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": OCI_MANIFEST, "digest": mdigest, "size": msize,
            "annotations": {"org.opencontainers.image.ref.name": ref}}]}, f)
    print(mdigest)


if __name__ == "__main__":
    main()
