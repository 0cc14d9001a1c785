#!/usr/bin/env python3
"""Concurrent cold pulls of one new layer (issue 8: a CI fleet starting on a
new image), blockreg and registry:2 side by side: how long N simultaneous
GETs of the layer take against one GET alone.

    python3 bench/concurrent-pulls.py                    # N = 20, Go 1.26 level-6 layer
    python3 bench/concurrent-pulls.py --clients 10 --go 1.27.3

Standard library only. The layer is the cached b2 Debian rootfs tar
(bench/lib-corpus.sh) compressed by Go's compress/gzip level 6
(tests/e2e/go_gzip.py), pushed to a fresh `blockreg serve` (converted before
measuring) and to a fresh registry:2 (Debian's `docker-registry`, filesystem
storage). For each registry, each row after a restart (blockreg: `cache/`
emptied, so the layer is recreated): one GET alone (seconds to the last
byte), then N GETs started together (wall seconds until the last finishes).
Every body must hash to the digest. blockreg recreates the layer once for
the N pulls (the others follow its cache fill); its log says how many reads
had to take over a recreation that gave up. Writes
bench/results/concurrent-pulls.md.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import go_gzip  # noqa: E402

em = __import__("encoder-matrix")  # the Server class and its push helpers


class Registry2(em.Server):
    """CNCF distribution 2.8 (Debian's docker-registry), filesystem storage
    under `root`; the same request helpers as blockreg's Server."""

    def __init__(self, root):
        super().__init__("docker-registry", os.path.join(root, "storage"),
                         os.path.join(root, "registry.log"))
        self.root = root

    def start(self, timeout=60):
        os.makedirs(self.data, exist_ok=True)
        self.port = em.free_port()
        conf = os.path.join(self.root, "config.yml")
        with open(conf, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.data}\nhttp:\n  addr: 127.0.0.1:{self.port}\n")
        with open(self.logf, "ab") as out:
            self.proc = subprocess.Popen(["docker-registry", "serve", conf], stdout=out,
                                         stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < timeout:
            try:
                if self.request("GET", "/v2/")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("registry:2 did not answer")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--go", default="1.26.6", help="Go version whose compress/gzip writes the layer")
    p.add_argument("--binary", default=os.path.join(HERE, "..", "target", "release", "blockreg"))
    p.add_argument("--guest", help="serve this guest .wasm instead of the embedded one")
    p.add_argument("--rootfs", default=os.path.join(em.CACHE, "rootfs"))
    p.add_argument("--out", default=os.path.join(HERE, "results", "concurrent-pulls.md"))
    args = p.parse_args()

    work = tempfile.mkdtemp(prefix="conc-pulls-")
    binary = os.path.join(work, "blockreg")
    shutil.copy(args.binary, binary)
    src = os.path.join(args.rootfs, "debian-bookworm-minbase-amd64-b2.tar")
    layer = os.path.join(work, "layer.gz")
    with open(src, "rb") as i, open(layer, "wb") as o:
        subprocess.run([go_gzip.go_filter(args.go, em.CACHE), "6"], stdin=i, stdout=o, check=True)
    digest, size = em.sha256_file(layer), os.path.getsize(layer)
    data, logf = os.path.join(work, "data"), os.path.join(work, "server.log")
    srv = em.Server(binary, data, logf, args.guest)
    r2 = Registry2(os.path.join(work, "r2"))
    config = b'{"architecture":"amd64","os":"linux"}'
    cfg = ("sha256:" + hashlib.sha256(config).hexdigest(), len(config))

    def push(server):
        server.start()
        server.push_blob("conc/app", cfg[0], cfg[1], data=config)
        server.push_blob("conc/app", digest, size, path=layer)
        server.push_manifest("conc/app", "v1", cfg, digest, size, "gzip")

    def cold(server, clients):
        """Wall seconds for `clients` GETs started together after a restart
        (blockreg's cache emptied), and whether every body was exact."""
        server.stop()
        shutil.rmtree(os.path.join(server.data, "cache"), ignore_errors=True)  # blockreg's
        server.start()
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            res = list(pool.map(lambda _: server.cold_get("conc/app", digest), range(clients)))
        return time.time() - t0, all(e and n == size for _, n, e in res)

    try:
        push(r2)
        r2_one, r2_one_ok = cold(r2, 1)
        r2_wall, r2_ok = cold(r2, args.clients)
        r2.stop()
        em.log(f"registry:2: 1 GET {r2_one:.2f} s, {args.clients} GETs {r2_wall:.2f} s")
        push(srv)
        conv = em.wait_converted(logf, digest, 1800)
        em.log(f"converted as {conv['how']} in {conv['secs']} s")
        one, one_ok = cold(srv, 1)
        em.log(f"1 cold GET: {one:.2f} s")
        wall, ok = cold(srv, args.clients)
        with open(logf, errors="replace") as f:
            gave_up = f.read().count("gave up at byte")
        em.log(f"{args.clients} cold GETs: {wall:.2f} s, x{wall / one:.2f}, exact {ok}, takeovers {gave_up}")
        yes = {True: "yes", False: "NO"}
        rows = [("1 cold GET alone", one, r2_one, yes[one_ok], yes[r2_one_ok]),
                (f"{args.clients} cold GETs at once: wall until the last", wall, r2_wall,
                 yes[ok], yes[r2_ok])]
    finally:
        srv.stop()
        r2.stop()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    with open(args.out, "w") as f:
        f.write("# Concurrent cold pulls of one layer (issue 8)\n\n")
        f.write(f"- command: `python3 bench/concurrent-pulls.py --clients {args.clients} --go {args.go}`\n")
        f.write(f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {version}, "
                f"{os.cpu_count()} cores\n")
        f.write(f"- layer: the b2 Debian rootfs tar, Go {args.go} compress/gzip level 6, "
                f"{size / 1e6:.1f} MB, converted as {conv['how'].split(chr(10))[0]}\n")
        f.write("- each row after a restart with `cache/` emptied; every body hashed to its digest; "
                f"reads that took over a recreation another gave up: {gave_up}\n\n")
        f.write("| pulls | blockreg s | registry:2 s | ours/registry:2 | blockreg N vs 1 | "
                "registry:2 N vs 1 | all exact (ours, r2) |\n|---|---:|---:|---:|---:|---:|---|\n")
        for r in rows:
            f.write(f"| {r[0]} | {r[1]:.2f} | {r[2]:.2f} | {r[1] / r[2]:.2f} | "
                    f"{r[1] / rows[0][1]:.2f} | {r[2] / rows[0][2]:.2f} | {r[3]}, {r[4]} |\n")
    print(open(args.out).read())
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
