#!/usr/bin/env python3
"""Cost of one garbage collection on a large synthetic store, and what it
does to request latency while it runs.

    python3 bench/gc-scale.py                       # 10 M blocks, 100 k blobs
    python3 bench/gc-scale.py --blobs 10000         # a tenth, for a quick look

Standard library only; no root, no docker. It writes a store in blockreg's
data format (data/FORMAT.md) directly — packs of stored frames, the 4,096
index shards, format-2 recipes, manifests, tags and links — because pushing
10 M blocks through the API would take hours and tens of GB. Blocks are 64
bytes (the collection's work depends on the number of blocks, blobs, frames
and manifests, not on block size), their SHA-1s are random (the collection
never reads block bytes), and every blob's stamp is old, so the grace
period does not protect any.

Half of the images are deleted (their tags and manifests never written),
alternating, so half the blobs are garbage and every pack is half dead: the
collection removes blob folders, drops half the index records and rewrites
every pack, its most expensive path.

Then, for each `--io-percent` value (default 100 and 50: no pacing, and
the default pacing), on a fresh copy of the store with `blockreg serve`
on it, it measures small pushes (blob upload + manifest) and pulls
(manifest + blob GET) for a while without a collection and while
`blockreg gc --io-percent P` runs on the same directory, and reports the
ratio of median and p95 latencies. registry:2 has no online collection
to compare with (its garbage-collect needs the registry stopped or
read-only), so the baseline is blockreg itself without a collection.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_LEN = 56
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def varint(v):
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def build_store(data, blobs, blocks_per_blob, block_len, blobs_per_pack, layers_per_image, seed):
    """Writes the synthetic store; returns what it holds."""
    rng = random.Random(seed)
    for d in ("blocks/packs", "blocks/index", "cache", "layers", "manifests", "uploads"):
        os.makedirs(os.path.join(data, d), exist_ok=True)
    shards = [bytearray() for _ in range(4096)]
    digests = []
    frame_len = blocks_per_blob * block_len
    frame = bytes(frame_len)
    pack_id = None
    pack_file = None
    offset = 0
    for i in range(blobs):
        if i % blobs_per_pack == 0:
            if pack_file:
                pack_file.close()
            pack_id = rng.getrandbits(64)
            pack_file = open(os.path.join(data, "blocks/packs", f"{pack_id:016x}.pack"), "wb")
            offset = 0
        pack_file.write(frame)
        content = bytearray()
        for b in range(blocks_per_blob):
            sha1 = rng.getrandbits(160).to_bytes(20, "big")
            if b == 0:
                content += b"\x00" + varint(0) + varint(0)
            else:
                content += b"\x01"
            content += varint(block_len) + sha1
            rec = bytearray(RECORD_LEN)
            rec[0:20] = sha1
            rec[20:28] = pack_id.to_bytes(8, "little")
            rec[28:36] = offset.to_bytes(8, "little")
            rec[36:40] = frame_len.to_bytes(4, "little")
            rec[40:44] = frame_len.to_bytes(4, "little")
            rec[44] = 0
            rec[48:52] = (b * block_len).to_bytes(4, "little")
            rec[52:56] = block_len.to_bytes(4, "little")
            shards[(sha1[0] << 4) | (sha1[1] >> 4)] += rec
        digest = "sha256:" + hashlib.sha256(f"blob {seed} {i}".encode()).hexdigest()
        recipe = {
            "version": 2,
            "digest": digest,
            "size": frame_len,
            "chunker": "tar-4096",
            "encoding": "raw",
            "frames": [[f"{pack_id:016x}", offset, frame_len, frame_len, 0]],
            "content": base64.b64encode(bytes(content)).decode(),
            "layout": [{"copy": frame_len}],
        }
        layer = os.path.join(data, "layers", digest)
        os.makedirs(layer)
        with open(os.path.join(layer, "recipe.json"), "w") as f:
            json.dump(recipe, f)
        with open(os.path.join(layer, "touched"), "w") as f:
            f.write("1000")
        digests.append(digest)
        offset += frame_len
    if pack_file:
        pack_file.close()
    for s, records in enumerate(shards):
        recs = [bytes(records[i:i + RECORD_LEN]) for i in range(0, len(records), RECORD_LEN)]
        recs.sort(key=lambda r: r[:20])
        with open(os.path.join(data, "blocks/index", f"{s:03x}"), "wb") as f:
            f.write(b"".join(recs))
    # Images of `layers_per_image` blobs (the first is the config), one per
    # repository tag; every other image is "deleted" (never written), so
    # half the blobs are garbage and every pack is half dead.
    images = kept = 0
    for start in range(0, blobs - layers_per_image + 1, layers_per_image):
        images += 1
        if images % 2 == 0:
            continue
        kept += 1
        repo = f"scale/r{images % 1000:03d}"
        group = digests[start:start + layers_per_image]
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": group[0], "size": frame_len},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": frame_len} for d in group[1:]],
        }).encode()
        mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        base = os.path.join(data, "manifests", repo)
        for sub in ("_manifests", "_tags", "_blobs"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        with open(os.path.join(base, "_manifests", mdigest), "wb") as f:
            f.write(OCI_MANIFEST.encode() + b"\n" + manifest)
        with open(os.path.join(base, "_tags", f"i{images}"), "w") as f:
            f.write(mdigest)
        for d in group:
            open(os.path.join(base, "_blobs", d), "w").close()
    return {"blobs": blobs, "blocks": blobs * blocks_per_blob, "images": images, "kept_images": kept}


def du(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def run_gc(blockreg, data, grace="0s", io_percent=100):
    """One `blockreg gc` under /usr/bin/time -v: (report, seconds, peak RSS KiB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t0 = time.monotonic()
        out = subprocess.run(
            ["/usr/bin/time", "-v", "-o", tf.name, blockreg, "gc", "--data", data, "--grace", grace,
             "--io-percent", str(io_percent), "--json"],
            capture_output=True, text=True)
        secs = time.monotonic() - t0
        rss = 0
        for line in open(tf.name):
            if "Maximum resident set size" in line:
                rss = int(line.split(":")[1])
    if out.returncode != 0:
        raise SystemExit(f"blockreg gc failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout), secs, rss


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """Small pushes and pulls over one keep-alive connection."""

    def __init__(self, port, seed):
        self.port = port
        self.rng = random.Random(seed)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def req(self, method, path, body=None, headers=None):
        self.conn.request(method, path, body=body, headers=headers or {})
        r = self.conn.getresponse()
        data = r.read()
        return r.status, r.getheader("Location"), data

    def push(self, repo, tag):
        blob = self.rng.randbytes(64 * 1024)
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        s, loc, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/")
        assert s == 202, s
        sep = "&" if "?" in loc else "?"
        s, _, _ = self.req("PUT", f"{loc}{sep}digest={digest}", blob, {"Content-Type": "application/octet-stream"})
        assert s == 201, s
        cfg = b"{}"
        cfg_digest = "sha256:" + hashlib.sha256(cfg).hexdigest()
        s, loc, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/")
        sep = "&" if "?" in loc else "?"
        s, _, _ = self.req("PUT", f"{loc}{sep}digest={cfg_digest}", cfg)
        assert s == 201, s
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": len(blob)}],
        }).encode()
        s, _, _ = self.req("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
        assert s == 201, s
        return digest

    def pull(self, repo, tag, digest):
        s, _, m = self.req("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        assert s == 200, s
        s, _, b = self.req("GET", f"/v2/{repo}/blobs/{digest}")
        assert s == 200 and "sha256:" + hashlib.sha256(b).hexdigest() == digest, s


def latencies(port, seconds, stop_when=None):
    """Push+pull rounds for `seconds` (or until `stop_when()`): latencies in ms."""
    c = Client(port, seconds)
    push, pull = [], []
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end and not (stop_when and stop_when()):
        n += 1
        t0 = time.monotonic()
        d = c.push("lat/app", f"t{n}")
        t1 = time.monotonic()
        c.pull("lat/app", f"t{n}", d)
        t2 = time.monotonic()
        push.append((t1 - t0) * 1000)
        pull.append((t2 - t1) * 1000)
    return push, pull


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def measure_online(blockreg, data, work, latency_secs, io_percent, no_conversion=False):
    """Serves `data` (no background collection), measures latencies for
    `latency_secs` alone, then while `blockreg gc --io-percent` runs:
    ((push, pull) alone, (push, pull) during, the collection's run_gc)."""
    port = free_port()
    log = open(os.path.join(work, f"serve-{io_percent}.log"), "w")
    extra = ["--no-conversion"] if no_conversion else []
    server = subprocess.Popen([blockreg, "serve", "--no-gc", *extra, "--data", data, "--addr", f"127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/v2/")
                break
            except OSError:
                time.sleep(0.1)
        alone = latencies(port, latency_secs)
        done = threading.Event()
        result = {}

        def collect():
            result["gc"] = run_gc(blockreg, data, grace="1h", io_percent=io_percent)
            done.set()

        t = threading.Thread(target=collect)
        t.start()
        during = latencies(port, 3600 * 6, stop_when=done.is_set)
        t.join()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return alone, during, result["gc"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blobs", type=int, default=100_000)
    ap.add_argument("--blocks-per-blob", type=int, default=100)
    ap.add_argument("--block-len", type=int, default=64)
    ap.add_argument("--blobs-per-pack", type=int, default=1000)
    ap.add_argument("--layers-per-image", type=int, default=5)
    ap.add_argument("--latency-secs", type=float, default=60)
    ap.add_argument("--no-conversion", action="store_true",
                    help="serve with --no-conversion in both phases (the collection's own effect alone: "
                         "otherwise conversion runs without a collection and waits during one)")
    ap.add_argument("--io-percent", default="100,50",
                    help="comma-separated io_percent values to measure latency during a collection with")
    ap.add_argument("--blockreg", default=os.path.join(ROOT, "target/release/blockreg"))
    ap.add_argument("--work", default=None, help="directory for the store (default: a temporary one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/gc-scale.md"))
    args = ap.parse_args()

    load_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    work = args.work or tempfile.mkdtemp(prefix="gc-scale-")
    os.makedirs(work, exist_ok=True)
    blockreg = os.path.join(work, "blockreg")
    shutil.copy2(args.blockreg, blockreg)
    data = os.path.join(work, "data")
    shutil.rmtree(data, ignore_errors=True)
    t0 = time.monotonic()
    facts = build_store(data, args.blobs, args.blocks_per_blob, args.block_len,
                        args.blobs_per_pack, args.layers_per_image, seed=1)
    build_secs = time.monotonic() - t0
    before = du(data)
    print(f"store built in {build_secs:.0f} s: {facts}, {before / 2**20:.0f} MiB", flush=True)
    pristine = data + ".pristine"
    shutil.rmtree(pristine, ignore_errors=True)
    subprocess.run(["cp", "-a", data, pristine], check=True)

    # 1. The collection alone.
    report, gc_secs, gc_rss = run_gc(blockreg, data)
    after = du(data)
    figures = {k: v for k, v in report.items() if k != "removed"}
    print(f"collection: {gc_secs:.1f} s, peak RSS {gc_rss / 1024:.0f} MiB: {figures}", flush=True)
    again, again_secs, again_rss = run_gc(blockreg, data)

    # 2. Latency without and with a collection running, on a fresh copy
    # for each pacing.
    online = {}
    for p in [int(x) for x in args.io_percent.split(",")]:
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run(["cp", "-a", pristine, data], check=True)
        online[p] = measure_online(blockreg, data, work, args.latency_secs, p, args.no_conversion)
        print(f"io_percent {p}: {online[p][2][1]:.1f} s", flush=True)
    shutil.rmtree(pristine, ignore_errors=True)

    rows = [
        ("blobs / blocks / images (kept)", f"{facts['blobs']:,} / {facts['blocks']:,} / {facts['images']:,} ({facts['kept_images']:,})"),
        ("store before (du, MiB)", f"{before / 2**20:.0f}"),
        ("collection wall time (s)", f"{gc_secs:.1f}"),
        ("collection peak RSS (MiB, whole `blockreg gc` process)", f"{gc_rss / 1024:.0f}"),
        ("blobs removed / kept", f"{report['blobs_removed']:,} / {report['blobs_kept']:,}"),
        ("packs removed / rewritten", f"{report['packs_removed']} / {report['packs_repacked']}"),
        ("index records removed", f"{report['index_records_removed']:,}"),
        ("store after (du, MiB)", f"{after / 2**20:.0f}"),
        ("second collection (nothing to do): s, MiB RSS", f"{again_secs:.1f}, {again_rss / 1024:.0f}"),
    ]
    for p, ((base_push, base_pull), (gc_push, gc_pull), gc_run) in online.items():
        rows += [
            (f"**io_percent {p}**: collection while serving (grace 1h): s (of it paused)",
             f"{gc_run[1]:.1f} ({gc_run[0].get('paused_ms', 0) / 1000:.1f})"),
            (f"io_percent {p}: push latency p50 / p95 without (ms)",
             f"{pct(base_push, .5):.1f} / {pct(base_push, .95):.1f} (n={len(base_push)})"),
            (f"io_percent {p}: push latency p50 / p95 during (ms)",
             f"{pct(gc_push, .5):.1f} / {pct(gc_push, .95):.1f} (n={len(gc_push)})"),
            (f"**io_percent {p}: push ratio p50 / p95**",
             f"{pct(gc_push, .5) / pct(base_push, .5):.2f} / {pct(gc_push, .95) / pct(base_push, .95):.2f}"),
            (f"io_percent {p}: pull latency p50 / p95 without (ms)",
             f"{pct(base_pull, .5):.1f} / {pct(base_pull, .95):.1f}"),
            (f"io_percent {p}: pull latency p50 / p95 during (ms)",
             f"{pct(gc_pull, .5):.1f} / {pct(gc_pull, .95):.1f}"),
            (f"**io_percent {p}: pull ratio p50 / p95**",
             f"{pct(gc_pull, .5) / pct(base_pull, .5):.2f} / {pct(gc_pull, .95) / pct(base_pull, .95):.2f}"),
        ]
    lines = [f"# Garbage collection at scale ({time.strftime('%Y-%m-%d')})", "",
             f"`python3 bench/gc-scale.py --blobs {args.blobs} --blocks-per-blob {args.blocks_per_blob} "
             f"--latency-secs {args.latency_secs:g} --io-percent {args.io_percent}"
             f"{' --no-conversion' if args.no_conversion else ''}` "
             f"(store built in {build_secs:.0f} s; {os.cpu_count()} cores; load average "
             f"{load_start} at the start, {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end)", "",
             "| | |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
