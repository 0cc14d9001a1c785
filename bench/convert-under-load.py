#!/usr/bin/env python3
"""Background conversion throughput, idle vs under load (issue 13, defect 10).

    python3 bench/convert-under-load.py                 # idle, busy, trickle
    python3 bench/convert-under-load.py --phases idle,busy --clients 8
    python3 bench/convert-under-load.py --phases idle,poisoned

Builds a backlog of gzip layers (tar of text-like files, deterministic),
pushes it into a store with `--no-conversion`, then for each phase copies
that store, starts the real binary on 127.0.0.1 with conversion on and
measures how fast the backlog converts, from the converter's own log lines
(`converted <digest> ... in <secs>s`, each with its timestamp):

- idle: nothing else runs.
- busy: N client processes (default 8) loop as fast as they can over a
  chunked push of a unique 1 MiB blob (POST, 4 PATCHes, PUT), a GET of it,
  a GET /v2/ and a HEAD of a backlog layer.
- trickle: one client keeps a chunked PATCH open sending 1 byte per second.
- poisoned: nothing else runs, but 20 poisoned blobs were pushed before the
  backlog (10 decompression bombs of 16 GiB of zeros in 16 MB, 4 truncated
  and 3 corrupted gzip layers, 3 level-9 layers of the kind that crashed
  preflate's analyser before it was patched), so they wait first in line.
  Reported: the time until every backlog layer is converted, against the
  idle phase's (the issue's target: within 2x).

Throughput counts the backlog layers whose conversion started once the load
was running: their bytes over the span from the first such start to the last
end. The ratio busy/idle is the issue's target (>= 0.5). Peak RSS is the
server's VmHWM. Only the Python standard library is needed; every process it
starts is stopped by PID.
"""

import argparse
import datetime
import hashlib
import http.client
import io
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib

REPO = "bench/backlog"
WORDS = [b"registry ", b"layer ", b"block\n", b"tar ", b"gzip ", b"docker ",
         b'{"a":1}\n', b"0x1f ", b"usr/lib ", b"import os\n", b"return 0;\n"]
CONVERTED = re.compile(
    r"^(\S+)\s+INFO\s+blockreg::convert: converted (sha256:[0-9a-f]{64}) as .*"
    r" in ([0-9.]+)s(?: \(one of \d+ small blobs sharing a pack\))?$")


def layer(seed, mib):
    """A gzip (level 6) tar of text-like files, `mib` MiB of content."""
    rng = random.Random(seed)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(mib * 4):
            data = b"".join(rng.choices(WORDS, k=256 * 1024 // 6))[:256 * 1024]
            info = tarfile.TarInfo(f"srv/app{seed}/file{i}.txt")
            info.size = len(data)
            info.mtime = 1_700_000_000
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return z.compress(out.getvalue()) + z.flush()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bomb(seed, gib=16):
    """A gzip of `gib` GiB of zeros: 256 MiB members, about 1 MB per GiB."""
    zeros = bytes(256 << 20)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = z.compress(zeros) + z.flush()
    member = (b"\x1f\x8b\x08\x00" + seed.to_bytes(4, "little") + b"\x00\xff" + body
              + zlib.crc32(zeros).to_bytes(4, "little")
              + (len(zeros) & 0xFFFFFFFF).to_bytes(4, "little"))
    return member * (gib * 4)


def poisoned_blobs():
    """The 20 blobs of the poisoned phase (see the module doc)."""
    blobs = [bomb(1000 + i) for i in range(10)]
    for i in range(4):
        ok = layer(2000 + i, 2)
        blobs.append(ok[: len(ok) * (i + 1) // 5])  # cut mid-stream
    for i in range(3):
        bad = bytearray(layer(3000 + i, 2))
        for j in range(len(bad) // 3, len(bad) // 3 + 64):
            bad[j] ^= 0x5A
        blobs.append(bytes(bad))
    for i in range(3):
        rng = random.Random(4000 + i)
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for k in range(300):
                data = bytes(rng.choices(range(256), k=rng.randrange(0, 64)) * rng.randrange(1, 400))
                info = tarfile.TarInfo(f"etc/tree{i}/f{k}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        blobs.append(z.compress(out.getvalue()) + z.flush())
    return blobs


class Registry:
    """One `blockreg serve` process on 127.0.0.1."""

    def __init__(self, binary, data, log_path, extra=()):
        self.port = free_port()
        self.started = time.time()
        self.log_path = log_path
        self.log = open(log_path, "w")
        env = dict(os.environ, RUST_LOG="info")
        self.proc = subprocess.Popen(
            [binary, "serve", "--addr", f"127.0.0.1:{self.port}", "--data", data, *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                status, _ = request(self.port, "GET", "/v2/")
                if status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit(f"server did not answer; see {log_path}")

    def peak_rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def request(port, method, path, body=None, headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (resp, data)
    finally:
        if own:
            conn.close()


def push(port, data, conn=None):
    status, (resp, _) = request(
        port, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest(data)}", data,
        {"Content-Type": "application/octet-stream"}, conn)
    if status != 201:
        raise SystemExit(f"push failed: {status}")


def busy_client(port, index, stop, counts):
    """Loops over a chunked push, two GETs and a HEAD until `stop` is set."""
    base = os.urandom(1 << 20)
    head_digest = counts["head"]
    done = errors = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    n = 0
    while not stop.is_set():
        n += 1
        data = f"{index}:{n}:".encode() + base
        try:
            status, (resp, _) = request(port, "POST", "/v2/load/blobs/uploads/", b"",
                                        {"Content-Length": "0"}, conn)
            location = resp.getheader("Location")
            for start in range(0, len(data), 256 * 1024):
                piece = data[start:start + 256 * 1024]
                status, (resp, _) = request(
                    port, "PATCH", location, piece,
                    {"Content-Type": "application/octet-stream",
                     "Content-Range": f"{start}-{start + len(piece) - 1}"}, conn)
                location = resp.getheader("Location")
            sep = "&" if "?" in location else "?"
            status, _ = request(port, "PUT", f"{location}{sep}digest={digest(data)}",
                                b"", {"Content-Length": "0"}, conn)
            ok = status == 201
            status, _ = request(port, "GET", f"/v2/load/blobs/{digest(data)}", conn=conn)
            ok &= status == 200
            status, _ = request(port, "GET", "/v2/", conn=conn)
            ok &= status == 200
            status, _ = request(port, "HEAD", f"/v2/{REPO}/blobs/{head_digest}", conn=conn)
            ok &= status == 200
            done += 4 + (len(data) + 256 * 1024 - 1) // (256 * 1024)
            errors += not ok
        except (OSError, http.client.HTTPException, TypeError):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        # Every round, so a client still busy at the end is counted too.
        counts[f"requests{index}"] = done
        counts[f"errors{index}"] = errors


def trickle_client(port, stop):
    """Keeps a chunked PATCH open, one byte per second, reopening as needed."""
    while not stop.is_set():
        try:
            status, (resp, _) = request(port, "POST", "/v2/slow/blobs/uploads/", b"",
                                        {"Content-Length": "0"})
            location = resp.getheader("Location")
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(f"PATCH {location} HTTP/1.1\r\nHost: x\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n".encode())
                s.settimeout(1.0)
                while not stop.is_set():
                    s.sendall(b"1\r\nx\r\n")
                    try:
                        if s.recv(1):  # the server gave up on the body
                            break
                    except socket.timeout:
                        continue
        except OSError:
            time.sleep(1)


def parse_log(path, backlog):
    """(start, end, size) of each backlog layer converted, by its log line."""
    out = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = CONVERTED.match(re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip()))
            if m and m.group(2) in backlog:
                end = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                end = end.timestamp()
                out[m.group(2)] = (end - float(m.group(3)), end, backlog[m.group(2)])
    return out


def run_phase(name, args, seeds, work, backlog, head_digest):
    data = os.path.join(work, name)
    shutil.copytree(seeds[name == "poisoned"], data)
    log = os.path.join(work, f"{name}.log")
    server = Registry(args.binary, data, log)
    stop = multiprocessing.Event()
    manager = multiprocessing.Manager()
    counts = manager.dict(head=head_digest)
    workers = []
    if name == "busy":
        for i in range(args.clients):
            p = multiprocessing.Process(target=busy_client, args=(server.port, i, stop, counts))
            p.start()
            workers.append(p)
    elif name == "trickle":
        t = threading.Thread(target=trickle_client, args=(server.port, stop), daemon=True)
        t.start()
    time.sleep(1.0 if workers else 0.2)
    load_from = time.time()
    deadline = time.time() + args.timeout
    while True:
        done = parse_log(log, backlog)
        if len(done) == len(backlog) or time.time() > deadline:
            break
        time.sleep(0.5)
    load_until = time.time()
    rss = server.peak_rss_mib()
    requests = sum(v for k, v in counts.items() if k.startswith("requests"))
    errors = sum(v for k, v in counts.items() if k.startswith("errors"))
    stop.set()
    for p in workers:
        p.join(timeout=60)
        if p.is_alive():
            p.terminate()
    server.stop()
    manager.shutdown()
    window = [v for v in done.values() if v[0] >= load_from - 0.05] if name in ("busy", "trickle") \
        else list(done.values())
    rps = requests / (load_until - load_from)
    # From the server's start until the last backlog layer was converted.
    finish = (max(e for _, e, _ in done.values()) - server.started
              if len(done) == len(backlog) else float("nan"))
    if len(window) < 2:
        return dict(name=name, mibps=float("nan"), blobs=len(window), total=len(done),
                    rss=rss, rps=rps, errors=errors, finish=finish)
    span = max(e for _, e, _ in window) - min(s for s, _, _ in window)
    mib = sum(size for _, _, size in window) / (1 << 20)
    return dict(name=name, mibps=mib / span, blobs=len(window), total=len(done), rss=rss,
                rps=rps, errors=errors, span=span, finish=finish)


def seed_store(args, path, log, blobs):
    """A store holding `blobs`, pushed in order with conversion off."""
    server = Registry(args.binary, path, log, ["--no-conversion"])
    try:
        for b in blobs:
            push(server.port, b)
            time.sleep(0.01)  # distinct mtimes: conversion takes the oldest first
    finally:
        server.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default="target/release/blockreg")
    ap.add_argument("--layers", type=int, default=10, help="backlog layers")
    ap.add_argument("--layer-mib", type=int, default=3, help="content MiB per layer")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--phases", default="idle,busy,trickle")
    ap.add_argument("--timeout", type=float, default=900, help="per phase, seconds")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)

    work = tempfile.mkdtemp(prefix="blockreg-convload-")
    try:
        layers = [layer(i + 1, args.layer_mib) for i in range(args.layers)]
        backlog = {digest(l): len(l) for l in layers}
        phases = args.phases.split(",")
        seeds = [os.path.join(work, "seed"), os.path.join(work, "seed-poisoned")]
        seed_store(args, seeds[0], os.path.join(work, "seed.log"), layers)
        if "poisoned" in phases:
            poison = poisoned_blobs()
            seed_store(args, seeds[1], os.path.join(work, "seed-poisoned.log"),
                       poison + layers)
            print(f"poisoned: {len(poison)} blobs, {sum(map(len, poison)) / (1 << 20):.1f} MiB,"
                  " pushed before the backlog")
        total = sum(backlog.values()) / (1 << 20)
        print(f"backlog: {len(layers)} gzip layers, {total:.1f} MiB "
              f"({args.layer_mib} MiB of content each); {os.cpu_count()} cores")
        results = [run_phase(p, args, seeds, work, backlog, digest(layers[0]))
                   for p in phases]
        idle = next((r for r in results if r["name"] == "idle"), None)
        print(f"{'phase':8} {'MiB/s':>7} {'ratio':>6} {'layers':>7} {'req/s':>7} "
              f"{'errors':>6} {'peak RSS':>9} {'all done':>9} {'vs idle':>7}")
        for r in results:
            ratio = r["mibps"] / idle["mibps"] if idle else float("nan")
            finish = r["finish"] / idle["finish"] if idle else float("nan")
            print(f"{r['name']:8} {r['mibps']:7.2f} {ratio:6.2f} {r['blobs']:>3}/{r['total']:<3} "
                  f"{r['rps']:7.1f} {r['errors']:6} {r['rss']:7.0f} MiB {r['finish']:8.1f}s "
                  f"{finish:7.2f}")
    finally:
        if args.keep:
            print(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
