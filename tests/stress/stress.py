#!/usr/bin/env python3
"""Randomized concurrent stress of the real `blockreg` binary, with kill -9.

Starts `blockreg serve` on 127.0.0.1 with a temporary data dir, runs worker
threads that push, mount, read and delete blobs, manifests and tags across a
few repositories (including deliberate races on one upload session, a
chunked PATCH held open while a PUT commits, and manifest PUT against DELETE),
kills the server with SIGKILL at random moments and restarts it on the same
data, and checks invariants all along:

* a 200 blob GET hashes to its digest and is as long as its Content-Length;
* every acknowledged (201) and never-deleted blob and manifest stays readable,
  across kills too;
* every tag listed in tags/list answers GET 200 with Content-Type,
  Docker-Content-Digest and Content-Length;
* no answer is a 5xx.

Only the Python 3.11 standard library is used. The last line is
`N passed, M failed` (invariant checks and violations); the exit code is 1
when anything was violated. See tests/README.md ("Stress").
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from email.message import Message

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"

REQUEST_TIMEOUT = 120.0
# Content of pushed blobs kept in memory for Range checks, at most this much.
CONTENT_BUDGET = 256 << 20
TAGS_PER_REPO = 6
# Violations printed as they happen, and listed at the end, per kind.
LIVE_PER_KIND = 3
LISTED_PER_KIND = 8


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Abort(Exception):
    """The operation cannot go on (the server went away, or a step answered
    something that leaves nothing to check); the worker drops it."""


# ------------------------------------------------------------------ server


class Server:
    """One `blockreg serve` process at a time on the same data dir. `gen`
    grows at every kill and start, so a request can tell whether the server
    it talked to was killed under it."""

    def __init__(self, binary: str, data: str, log_path: str, extra: list[str]):
        self.binary = binary
        self.data = data
        self.log_path = log_path
        self.extra = extra
        self.lock = threading.Lock()
        self.gen = 0
        self.down = True
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        # Set once at exit: no start after that, so no server outlives the run.
        self.closed = False
        # One kill/restart at a time (the killer, or a restart after a crash).
        self.restart_lock = threading.Lock()

    def start(self) -> float:
        """Starts the server and waits for `GET /v2/` 200; returns seconds taken."""
        t0 = time.monotonic()
        for attempt in range(3):
            if attempt:
                # The old port may still be held (TIME_WAIT, a slow exit): take another.
                self.port = free_port()
            with open(self.log_path, "ab") as log, self.lock:
                if self.closed:
                    raise RuntimeError("closing")
                log.write(f"\n==== start on port {self.port}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    [self.binary, "serve", "--addr", f"127.0.0.1:{self.port}",
                     "--data", self.data, *self.extra],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            if self._wait_ready(120):
                with self.lock:
                    self.gen += 1
                    self.down = False
                return time.monotonic() - t0
            self._reap()
        raise RuntimeError(f"blockreg did not start (log: {self.log_path})")

    def _wait_ready(self, secs: float) -> bool:
        end = time.monotonic() + secs
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """SIGKILL by PID, then wait for the process to be gone."""
        with self.lock:
            self.down = True
            self.gen += 1
        self._reap()

    def close(self) -> None:
        """Kills the server for good (at exit)."""
        with self.lock:
            self.closed = True
            self.down = True
        self._reap()

    def _reap(self) -> None:
        p = self.proc
        if p is None:
            return
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.wait()

    def died(self) -> bool:
        """The server exited although nobody killed it."""
        p = self.proc
        return not self.down and p is not None and p.poll() is not None

    def changed_since(self, gen: int) -> bool:
        return self.down or self.gen != gen


# ------------------------------------------------------------------ ledger


@dataclass
class Ledger:
    """What the server acknowledged, and what a DELETE was sent for (marked
    before sending, so anything marked may be gone: no assertion on it)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    blobs: dict = field(default_factory=dict)  # (repo, digest) -> time acknowledged
    blob_del: set = field(default_factory=set)  # (repo, digest)
    sizes: dict = field(default_factory=dict)  # digest -> size, every blob made
    content: dict = field(default_factory=dict)  # digest -> bytes (within budget)
    content_bytes: int = 0
    manifests: dict = field(default_factory=dict)  # (repo, digest) -> (media type, size)
    man_del: set = field(default_factory=set)  # (repo, digest)
    tag_ack: dict = field(default_factory=dict)  # (repo, tag) -> {digest}
    tag_try: dict = field(default_factory=dict)  # (repo, tag) -> {digest} (sent)
    tag_del: set = field(default_factory=set)  # (repo, tag)

    def made(self, data: bytes) -> str:
        d = sha256(data)
        with self.lock:
            if d not in self.sizes:
                self.sizes[d] = len(data)
                if len(data) <= (1 << 20) and self.content_bytes + len(data) <= CONTENT_BUDGET:
                    self.content[d] = data
                    self.content_bytes += len(data)
        return d

    def ack_blob(self, repo: str, digest: str) -> None:
        with self.lock:
            self.blobs[(repo, digest)] = time.monotonic()

    def blob_certain(self, repo: str, digest: str) -> bool:
        with self.lock:
            return (repo, digest) in self.blobs and (repo, digest) not in self.blob_del

    def mark_blob_delete(self, repo: str, digest: str) -> None:
        with self.lock:
            self.blob_del.add((repo, digest))

    def ack_manifest(self, repo: str, digest: str, media_type: str, size: int,
                     tag: str | None) -> None:
        with self.lock:
            self.manifests[(repo, digest)] = (media_type, size)
            if tag is not None:
                self.tag_ack.setdefault((repo, tag), set()).add(digest)

    def try_tag(self, repo: str, tag: str, digest: str) -> None:
        with self.lock:
            self.tag_try.setdefault((repo, tag), set()).add(digest)

    def manifest_certain(self, repo: str, digest: str) -> bool:
        with self.lock:
            return (repo, digest) in self.manifests and (repo, digest) not in self.man_del

    def mark_manifest_delete(self, repo: str, digest: str) -> None:
        with self.lock:
            self.man_del.add((repo, digest))

    def mark_tag_delete(self, repo: str, tag: str) -> None:
        with self.lock:
            self.tag_del.add((repo, tag))

    def tag_certain(self, repo: str, tag: str) -> bool:
        """Acknowledged, never deleted, and no manifest it was ever sent for deleted."""
        with self.lock:
            if (repo, tag) not in self.tag_ack or (repo, tag) in self.tag_del:
                return False
            return not any((repo, d) in self.man_del for d in self.tag_try.get((repo, tag), ()))

    def tag_digests(self, repo: str, tag: str) -> set:
        with self.lock:
            return set(self.tag_try.get((repo, tag), ()))

    def live_blobs(self, repo: str) -> list:
        with self.lock:
            return [d for (r, d) in self.blobs if r == repo and (r, d) not in self.blob_del]

    def any_blob(self, rng: random.Random, repo: str | None = None):
        with self.lock:
            keys = list(self.blobs) if repo is None else [k for k in self.blobs if k[0] == repo]
        return rng.choice(keys) if keys else None

    def any_manifest(self, rng: random.Random, repo: str | None = None):
        with self.lock:
            keys = list(self.manifests) if repo is None else [k for k in self.manifests if k[0] == repo]
        return rng.choice(keys) if keys else None

    def snapshot(self):
        with self.lock:
            return dict(self.blobs), dict(self.manifests), {k: set(v) for k, v in self.tag_ack.items()}


# ------------------------------------------------------------------ results


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.passed = 0
        self.violations: dict = {}  # (kind, key) -> (request, status, detail, count)
        self.kinds: dict = {}  # kind -> distinct violations
        self.ops = 0
        self.rounds = 0
        self.race_rounds = 0
        self.by_op: dict = {}
        self.statuses: dict = {}
        self.down_errors = 0
        self.conn_resets = 0

    def ok(self, n: int = 1) -> None:
        with self.lock:
            self.passed += n

    def violation(self, kind: str, key: str, request: str, status, detail: str) -> None:
        with self.lock:
            k = (kind, key)
            if k in self.violations:
                r, s, d, n = self.violations[k]
                self.violations[k] = (r, s, d, n + 1)
                return
            self.violations[k] = (request, status, detail, 1)
            self.kinds[kind] = self.kinds.get(kind, 0) + 1
            if self.kinds[kind] > LIVE_PER_KIND:
                return
        print(f"stress: VIOLATION {kind}: {request} -> {status}: {detail[:300]}", flush=True)

    def count_request(self, method: str, status: int) -> None:
        with self.lock:
            self.ops += 1
            k = f"{method} {status}"
            self.statuses[k] = self.statuses.get(k, 0) + 1

    def count_round(self, op: str, race: bool) -> None:
        with self.lock:
            self.rounds += 1
            if race:
                self.race_rounds += 1
            self.by_op[op] = self.by_op.get(op, 0) + 1

    def n_violations(self) -> int:
        with self.lock:
            return len(self.violations)


# ------------------------------------------------------------------ http


@dataclass
class Resp:
    status: int
    headers: Message
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def error_code(self) -> str:
        try:
            return json.loads(self.body)["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            return ""


class Client:
    """One keep-alive connection; requests classify their own failures."""

    def __init__(self, h: "Harness") -> None:
        self.h = h
        self.conn: http.client.HTTPConnection | None = None
        self.port = 0
        self.used = False

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.used = False

    def _connection(self) -> http.client.HTTPConnection:
        port = self.h.server.port
        if self.conn is None or self.port != port:
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
            self.port = port
        return self.conn

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, what: str = "") -> Resp:
        h = self.h
        server = h.server
        gen = server.gen
        if server.down:
            raise Abort("server down")
        label = f"{what + ': ' if what else ''}{method} {path}"
        for attempt in (0, 1):
            conn = self._connection()
            reused = self.used
            try:
                conn.request(method, path, body=body, headers=headers or {})
                r = conn.getresponse()
                data = r.read()
                self.used = True
                if r.will_close:
                    self.close()
                break
            except TimeoutError:
                self.close()
                if server.changed_since(gen):
                    raise Abort("server killed") from None
                h.results.violation("timeout", label, label, "-",
                                    f"no answer within {REQUEST_TIMEOUT:.0f} s")
                raise Abort("timeout") from None
            except (OSError, http.client.HTTPException) as e:
                self.close()
                if server.changed_since(gen):
                    with h.results.lock:
                        h.results.down_errors += 1
                    raise Abort("server killed") from None
                if server.died():
                    h.server_died(label, e)
                    raise Abort("server died") from None
                if attempt == 0 and reused:
                    continue  # the server closed an idle keep-alive connection
                # The server may answer early and close while the body is
                # still being sent (e.g. 404 for a cancelled session): the
                # answer is lost, which is no registry bug by itself.
                with h.results.lock:
                    h.results.conn_resets += 1
                raise Abort(f"connection error: {e!r}") from None
        h.results.count_request(method, r.status)
        resp = Resp(r.status, r.headers, data)
        if r.status >= 500:
            # One entry per kind of request and status; "seen Nx" counts them.
            h.results.violation("http_5xx", f"{what or method} -> {r.status}", label, r.status,
                                data[:300].decode("utf-8", "replace"))
        return resp


# ------------------------------------------------------------------ harness


@dataclass
class Op:
    name: str
    weight: int
    race: bool


class Harness:
    def __init__(self, args: argparse.Namespace, work: str) -> None:
        self.args = args
        self.work = work
        self.data = os.path.join(work, "data")
        os.makedirs(self.data, exist_ok=True)
        self.server = Server(args.blockreg, self.data, os.path.join(work, "server.log"),
                             args.serve_arg or [])
        self.ledger = Ledger()
        self.results = Results()
        self.stop = threading.Event()
        self.gate = threading.Event()  # workers run while set
        self.gzip_acked = threading.Event()
        self.repos = [f"stress/r{i}" if i % 2 == 0 else f"stress/n{i}/deep"
                      for i in range(args.repos)]
        self.shared = random.Random(args.seed).randbytes(1 << 20)
        self.kills = 0
        self.idle_kills = 0
        self.deaths = 0
        self.phase_start = time.monotonic()
        self.t0 = time.monotonic()
        self.ops = [
            Op("push_monolithic", 10, False),
            Op("push_session", 8, False),
            Op("push_chunked", 6, False),
            Op("push_put_only", 3, False),
            Op("push_gzip_layer", 3, False),
            Op("mount", 4, False),
            Op("manifest_put", 8, False),
            Op("get_blob", 10, False),
            Op("head_blob", 4, False),
            Op("range_blob", 5, False),
            Op("get_manifest", 6, False),
            Op("tags_check", 4, False),
            Op("catalog", 2, False),
            Op("blob_delete", 2, False),
            Op("tag_delete", 2, False),
            Op("manifest_delete", 2, False),
            Op("session_status_cancel", 2, False),
            Op("race_parallel_puts", 6, True),
            Op("race_put_vs_delete_session", 5, True),
            Op("race_held_patch", 4, True),
            Op("race_same_blob", 4, True),
            Op("race_manifest_put_delete", 6, True),
            Op("race_patch_vs_patch", 3, True),
            Op("race_blob_delete_vs_get", 2, True),
        ]
        self.weights = [o.weight for o in self.ops]

    # -------------------------------------------------------------- plumbing

    def server_died(self, label: str, err: Exception) -> None:
        """The server exited without being killed: a violation; restart it."""
        with self.server.lock:
            if self.server.down:
                return
            self.server.down = True
            self.server.gen += 1
            code = self.server.proc.returncode if self.server.proc else None
        self.deaths += 1
        self.results.violation("server_died", f"death {self.deaths}", label, code,
                               f"the server exited (code {code}) under {err!r}; log {self.server.log_path}")
        threading.Thread(target=self._restart_after_death, daemon=True).start()

    def _restart_after_death(self) -> None:
        self.gate.clear()
        try:
            with self.server.restart_lock:
                self.server._reap()
                self.server.start()
        except RuntimeError as e:
            self.results.violation("restart_failed", "after death", "blockreg serve", "-", str(e))
            self.stop.set()
        finally:
            self.gate.set()

    def check(self, cond: bool, kind: str, key: str, request: str, status, detail: str) -> bool:
        if cond:
            self.results.ok()
        else:
            self.results.violation(kind, key, request, status, detail)
        return cond

    def expect(self, r: Resp, codes: tuple, what: str, gen: int) -> None:
        """A step of an operation nothing races with must answer one of `codes`."""
        if r.status in codes:
            return
        if r.status < 500 and not self.server.changed_since(gen):
            self.results.violation("unexpected_status", f"{what} {r.status} {r.error_code()}",
                                   what, r.status, r.body[:200].decode("utf-8", "replace"))
        raise Abort(f"{what}: {r.status}")

    def make_blob(self, rng: random.Random) -> bytes:
        x = rng.random()
        if x < 0.03:
            size = 0
        elif x < 0.4:
            size = rng.randint(1, 4096)
        elif x < 0.8:
            size = rng.randint(4097, 65536)
        elif x < 0.97:
            size = rng.randint(65537, 512 << 10)
        else:
            size = rng.randint(512 << 10, self.args.max_blob)
        data = rng.randbytes(size)
        if size > 8192 and rng.random() < 0.3:
            # Share a prefix with other blobs, so blocks are deduplicated.
            k = rng.randint(4096, min(size, len(self.shared)))
            data = self.shared[:k] + data[k:]
        return data

    def make_gzip_layer(self, rng: random.Random) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(rng.randint(1, 6)):
                size = rng.choice([0, rng.randint(1, 5000), rng.randint(5000, 300_000)])
                if rng.random() < 0.5:
                    off = rng.randint(0, len(self.shared) - 1)
                    data = (self.shared[off:] + self.shared)[:size]
                else:
                    data = rng.randbytes(size // 2) + bytes(size - size // 2)
                info = tarfile.TarInfo(f"dir{i % 2}/file-{rng.getrandbits(32):08x}")
                info.size = len(data)
                info.mtime = rng.randint(0, 2_000_000_000)
                tar.addfile(info, io.BytesIO(data))
        return gzip.compress(buf.getvalue(), compresslevel=rng.choice([1, 6, 9]))

    def new_or_known_blob(self, rng: random.Random) -> bytes:
        if rng.random() < 0.15:
            with self.ledger.lock:
                keys = list(self.ledger.content)
            if keys:
                return self.ledger.content[rng.choice(keys)]
        return self.make_blob(rng)

    def race(self, fns: list, clients: list) -> list:
        """Runs `fns[i](clients[i])` at the same moment; returns results or exceptions."""
        barrier = threading.Barrier(len(fns))
        out: list = [None] * len(fns)

        def run(i: int) -> None:
            try:
                barrier.wait(timeout=30)
                out[i] = fns[i](clients[i])
            except Exception as e:  # noqa: BLE001 - reported by the caller
                out[i] = e

        threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(fns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for x in out:
            if isinstance(x, Abort):
                raise x
            if isinstance(x, Exception):
                raise x
        return out

    # -------------------------------------------------------------- checks

    def verify_blob(self, c: Client, repo: str, digest: str, what: str, head: bool = False) -> int:
        """GETs (or HEADs) a blob: a 200 must be its exact bytes; a 404 of an
        acknowledged, never-deleted blob is a loss."""
        size = self.ledger.sizes.get(digest)
        path = f"/v2/{repo}/blobs/{digest}"
        r = c.request("HEAD" if head else "GET", path, what=what)
        req = f"{what}: {'HEAD' if head else 'GET'} {path}"
        if r.status == 200:
            cl = r.header("Content-Length")
            dcd = r.header("Docker-Content-Digest")
            if head:
                self.check(cl == str(size) and dcd == digest, "blob_bad_headers", digest, req, 200,
                           f"Content-Length {cl} (size {size}), Docker-Content-Digest {dcd}")
            else:
                got = sha256(r.body)
                self.check(got == digest and len(r.body) == size and cl == str(size),
                           "blob_digest_mismatch", f"{repo}@{digest}", req, 200,
                           f"body {len(r.body)} bytes hashing to {got}, Content-Length {cl}, "
                           f"expected {size} bytes")
        elif r.status == 404:
            if self.ledger.blob_certain(repo, digest):
                self.results.violation("blob_lost", f"{repo}@{digest}", req, 404,
                                       f"acknowledged 201, never deleted ({r.error_code()})")
            else:
                self.results.ok()
        elif r.status < 500:
            self.results.violation("unexpected_status", f"blob GET {r.status}", req, r.status,
                                   r.body[:200].decode("utf-8", "replace"))
        return r.status

    def verify_range(self, c: Client, repo: str, digest: str, rng: random.Random) -> None:
        size = self.ledger.sizes.get(digest, 0)
        if size == 0:
            return
        a = rng.randrange(size)
        b = rng.randrange(a, size + 10)
        path = f"/v2/{repo}/blobs/{digest}"
        r = c.request("GET", path, headers={"Range": f"bytes={a}-{b}"}, what="range")
        req = f"range bytes={a}-{b}: GET {path}"
        if r.status == 206:
            end = min(b, size - 1)
            want = self.ledger.content.get(digest)
            ok = len(r.body) == end - a + 1
            ok = ok and r.header("Content-Range") == f"bytes {a}-{end}/{size}"
            if want is not None:
                ok = ok and r.body == want[a:end + 1]
            self.check(ok, "blob_range_mismatch", f"{repo}@{digest}", req, 206,
                       f"{len(r.body)} bytes, Content-Range {r.header('Content-Range')}")
        elif r.status == 404:
            if self.ledger.blob_certain(repo, digest):
                self.results.violation("blob_lost", f"{repo}@{digest}", req, 404, "range of a blob acknowledged 201")
        elif r.status < 500:
            self.results.violation("unexpected_status", f"range GET {r.status}", req, r.status,
                                   r.body[:200].decode("utf-8", "replace"))

    def manifest_ok(self, r: Resp, digest: str | None) -> tuple[bool, str]:
        """A 200 manifest answer with its headers, whose body hashes to its digest."""
        ct = r.header("Content-Type")
        dcd = r.header("Docker-Content-Digest")
        cl = r.header("Content-Length")
        problems = []
        if not ct:
            problems.append("no Content-Type")
        if not dcd:
            problems.append("no Docker-Content-Digest")
        elif sha256(r.body) != dcd:
            problems.append(f"body hashes to {sha256(r.body)}, Docker-Content-Digest {dcd}")
        if digest is not None and dcd != digest:
            problems.append(f"Docker-Content-Digest {dcd} for {digest}")
        if cl != str(len(r.body)):
            problems.append(f"Content-Length {cl} for a {len(r.body)}-byte body")
        return not problems, "; ".join(problems)

    def verify_manifest(self, c: Client, repo: str, digest: str, what: str) -> int:
        path = f"/v2/{repo}/manifests/{digest}"
        r = c.request("GET", path, what=what)
        req = f"{what}: GET {path}"
        if r.status == 200:
            ok, why = self.manifest_ok(r, digest)
            mt = self.ledger.manifests.get((repo, digest), (None, 0))[0]
            if ok and mt is not None and r.header("Content-Type") != mt:
                ok, why = False, f"Content-Type {r.header('Content-Type')}, pushed as {mt}"
            self.check(ok, "manifest_unservable", f"{repo}@{digest}", req, 200, why)
        elif r.status == 404:
            if self.ledger.manifest_certain(repo, digest):
                self.results.violation("manifest_lost", f"{repo}@{digest}", req, 404,
                                       f"acknowledged 201, never deleted ({r.error_code()})")
            else:
                self.results.ok()
        elif r.status >= 500:
            self.results.violation("manifest_unservable", f"{repo}@{digest}", req, r.status,
                                   r.body[:200].decode("utf-8", "replace"))
        else:
            self.results.violation("unexpected_status", f"manifest GET {r.status}", req, r.status,
                                   r.body[:200].decode("utf-8", "replace"))
        return r.status

    def list_tags(self, c: Client, repo: str) -> list | None:
        r = c.request("GET", f"/v2/{repo}/tags/list", what="tags/list")
        if r.status == 200:
            try:
                tags = json.loads(r.body)["tags"] or []
            except (ValueError, KeyError, TypeError):
                self.results.violation("bad_tags_list", repo, f"GET /v2/{repo}/tags/list", 200,
                                       r.body[:200].decode("utf-8", "replace"))
                return None
            self.results.ok()
            return tags
        if r.status == 404:
            return []
        if r.status < 500:
            self.results.violation("unexpected_status", f"tags/list {r.status}",
                                   f"GET /v2/{repo}/tags/list", r.status, r.body[:200].decode("utf-8", "replace"))
        return None

    def verify_tag(self, c: Client, repo: str, tag: str, listed: bool) -> None:
        """A listed tag must answer 200 with its headers (checked twice, a
        short while apart, since a concurrent delete may race the listing).
        A tag acknowledged and never deleted must also be listed."""
        path = f"/v2/{repo}/manifests/{tag}"
        for attempt in (0, 1):
            r = c.request("GET", path, what="tag")
            if r.status == 200:
                ok, why = self.manifest_ok(r, None)
                if ok:
                    tried = self.ledger.tag_digests(repo, tag)
                    self.check(r.header("Docker-Content-Digest") in tried, "tag_wrong_digest",
                               f"{repo}:{tag}", f"GET {path}", 200,
                               f"{r.header('Docker-Content-Digest')} was never pushed as this tag")
                    return
            else:
                why = f"{r.status} {r.error_code()} {r.body[:160].decode('utf-8', 'replace')}"
            if attempt == 0:
                time.sleep(0.3)
                still = self.list_tags(c, repo)
                certain = self.ledger.tag_certain(repo, tag)
                if still is None or (tag not in still and not certain):
                    self.results.ok()
                    return
        kind = "listed_tag_unservable" if listed else "tag_lost"
        self.results.violation(kind, f"{repo}:{tag}", f"GET {path}", r.status,
                               f"listed in tags/list: {why}")

    def check_repo_tags(self, c: Client, repo: str) -> None:
        tags = self.list_tags(c, repo)
        if tags is None:
            return
        for t in tags:
            self.verify_tag(c, repo, t, listed=True)
        # Tags acknowledged and never deleted must be listed.
        with self.ledger.lock:
            mine = [t for (r, t) in self.ledger.tag_ack if r == repo]
        for t in mine:
            if t not in tags and self.ledger.tag_certain(repo, t):
                # Re-list: the tag may have been deleted since (marked before sending).
                again = self.list_tags(c, repo) or []
                if t not in again and self.ledger.tag_certain(repo, t):
                    self.verify_tag(c, repo, t, listed=False)

    # -------------------------------------------------------------- pushes

    def session(self, c: Client, repo: str, gen: int) -> str:
        r = c.request("POST", f"/v2/{repo}/blobs/uploads/", body=b"", what="open session")
        self.expect(r, (202,), "POST open session", gen)
        loc = r.header("Location")
        if not loc or not loc.startswith("/v2/"):
            self.results.violation("bad_location", repo, "POST open session", 202, f"Location {loc!r}")
            raise Abort("no location")
        return loc

    @staticmethod
    def with_digest(loc: str, digest: str, rng: random.Random) -> str:
        d = digest.replace(":", "%3A") if rng.random() < 0.3 else digest
        return f"{loc}{'&' if '?' in loc else '?'}digest={d}"

    def acked(self, r: Resp, repo: str, digest: str, what: str) -> None:
        if r.status == 201:
            self.ledger.ack_blob(repo, digest)
            dcd = r.header("Docker-Content-Digest")
            self.check(dcd == digest, "bad_created_headers", f"{what} {repo}@{digest}", what, 201,
                       f"Docker-Content-Digest {dcd}")

    def push_monolithic(self, c: Client, rng: random.Random, repo: str | None = None,
                        data: bytes | None = None) -> str:
        repo = repo or rng.choice(self.repos)
        data = self.new_or_known_blob(rng) if data is None else data
        d = self.ledger.made(data)
        gen = self.server.gen
        r = c.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", body=data,
                      headers={"Content-Type": "application/octet-stream"}, what="monolithic")
        self.expect(r, (201,), "POST monolithic", gen)
        self.acked(r, repo, d, "POST monolithic")
        return d

    def push_session(self, c: Client, rng: random.Random, repo: str | None = None,
                     data: bytes | None = None) -> str:
        repo = repo or rng.choice(self.repos)
        data = self.new_or_known_blob(rng) if data is None else data
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 3))))
        parts, prev = [], 0
        for x in cuts + [len(data)]:
            parts.append(data[prev:x])
            prev = x
        final = parts.pop() if rng.random() < 0.5 else b""
        sent = 0
        for p in parts:
            r = c.request("PATCH", loc, body=p, headers={"Content-Type": "application/octet-stream"},
                          what="session PATCH")
            self.expect(r, (202,), "PATCH streamed", gen)
            sent += len(p)
            self.check(r.header("Range") == f"0-{max(sent - 1, 0)}", "bad_session_range", repo,
                       f"PATCH {loc}", 202, f"Range {r.header('Range')} after {sent} bytes")
        if not parts and not final:
            final = data[sent:]
        r = c.request("PUT", self.with_digest(loc, d, rng), body=final,
                      headers={"Content-Type": "application/octet-stream"}, what="session PUT")
        self.expect(r, (201,), "PUT finish session", gen)
        self.acked(r, repo, d, "PUT finish session")
        return d

    def push_chunked(self, c: Client, rng: random.Random) -> str:
        repo = rng.choice(self.repos)
        data = self.new_or_known_blob(rng)
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        off = 0
        while off < len(data):
            n = rng.randint(1, max(1, len(data) // 2))
            chunk = data[off:off + n]
            r = c.request("PATCH", loc, body=chunk, what="chunked PATCH", headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{off}-{off + len(chunk) - 1}",
            })
            self.expect(r, (202,), "PATCH Content-Range", gen)
            off += len(chunk)
            # Sometimes ask where the upload is, as resuming clients do.
            if rng.random() < 0.2:
                s = c.request("GET", loc, what="session status")
                self.expect(s, (204,), "GET session status", gen)
                self.check(s.header("Range") == f"0-{off - 1}", "bad_session_range", repo,
                           f"GET {loc}", 204, f"Range {s.header('Range')} after {off} bytes")
        r = c.request("PUT", self.with_digest(loc, d, rng), body=b"", what="chunked PUT")
        self.expect(r, (201,), "PUT finish chunked", gen)
        self.acked(r, repo, d, "PUT finish chunked")
        return d

    def push_put_only(self, c: Client, rng: random.Random) -> str:
        repo = rng.choice(self.repos)
        data = self.new_or_known_blob(rng)
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        r = c.request("PUT", self.with_digest(loc, d, rng), body=data, what="PUT whole body")
        self.expect(r, (201,), "PUT whole body", gen)
        self.acked(r, repo, d, "PUT whole body")
        return d

    def push_gzip_layer(self, c: Client, rng: random.Random) -> None:
        data = self.make_gzip_layer(rng)
        if rng.random() < 0.5:
            self.push_monolithic(c, rng, data=data)
        else:
            self.push_session(c, rng, data=data)
        self.gzip_acked.set()

    def mount(self, c: Client, rng: random.Random) -> None:
        src = self.ledger.any_blob(rng)
        if src is None:
            raise Abort("nothing to mount")
        from_repo, d = src
        repo = rng.choice(self.repos)
        gen = self.server.gen
        q = f"mount={d}" + (f"&from={from_repo}" if rng.random() < 0.8 else "")
        r = c.request("POST", f"/v2/{repo}/blobs/uploads/?{q}", body=b"", what="mount")
        self.expect(r, (201, 202), "POST mount", gen)
        if r.status == 201:
            self.acked(r, repo, d, "POST mount")
        elif self.ledger.blob_certain(from_repo, d):
            # A blob certainly in `from` must mount.
            self.results.violation("mount_refused", f"{from_repo}@{d}", f"POST /v2/{repo}/blobs/uploads/?{q}",
                                   202, "blob acknowledged in the source repository and never deleted")
        if r.status == 202 and (r.header("Location") or "").startswith("/v2/"):
            c.request("DELETE", r.header("Location"), what="cancel mount session")

    # -------------------------------------------------------------- manifests

    def build_manifest(self, c: Client, rng: random.Random, repo: str) -> tuple[str, bytes, str]:
        """Pushes a config (and layers if the repository has too few) and
        returns (media type, manifest bytes, digest)."""
        docker = rng.random() < 0.3
        cfg = json.dumps({"architecture": "amd64", "os": "linux",
                          "rootfs": {"type": "layers", "diff_ids": []},
                          "stress": rng.getrandbits(64)}).encode()
        cd = self.push_monolithic(c, rng, repo=repo, data=cfg)
        layers = self.ledger.live_blobs(repo)
        rng.shuffle(layers)
        layers = [d for d in layers if d != cd][:rng.randint(0, 3)]
        if not layers and rng.random() < 0.7:
            layers = [self.push_monolithic(c, rng, repo=repo)]
        mt = DOCKER_MANIFEST if docker else OCI_MANIFEST
        body = {
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                       "digest": cd, "size": len(cfg)},
            "layers": [{"mediaType": LAYER_GZIP if rng.random() < 0.5 else LAYER_TAR,
                        "digest": d, "size": self.ledger.sizes[d]} for d in layers],
        }
        if not docker:
            body["annotations"] = {"stress.nonce": str(rng.getrandbits(64))}
        raw = json.dumps(body, indent=rng.choice([None, 2])).encode()
        return mt, raw, sha256(raw)

    def put_manifest(self, c: Client, repo: str, mt: str, raw: bytes, d: str, tag: str | None,
                     gen: int | None, what: str) -> Resp:
        ref = tag if tag is not None else d
        if tag is not None:
            self.ledger.try_tag(repo, tag, d)
        r = c.request("PUT", f"/v2/{repo}/manifests/{ref}", body=raw, headers={"Content-Type": mt},
                      what=what)
        if r.status == 201:
            self.ledger.ack_manifest(repo, d, mt, len(raw), tag)
            self.check(r.header("Docker-Content-Digest") == d, "bad_created_headers", f"manifest {d}",
                       f"PUT /v2/{repo}/manifests/{ref}", 201,
                       f"Docker-Content-Digest {r.header('Docker-Content-Digest')}")
        elif r.status == 400 and r.error_code() == "MANIFEST_BLOB_UNKNOWN":
            refs = [x["digest"] for x in [json.loads(raw)["config"], *json.loads(raw)["layers"]]]
            if all(self.ledger.blob_certain(repo, x) for x in refs):
                self.results.violation("manifest_blob_unknown", f"{repo}@{d}", f"PUT /v2/{repo}/manifests/{ref}",
                                       400, "every referenced blob was acknowledged here and never deleted: "
                                       + r.body[:200].decode("utf-8", "replace"))
        elif gen is not None:
            self.expect(r, (201,), "PUT manifest", gen)
        return r

    def manifest_put(self, c: Client, rng: random.Random) -> None:
        repo = rng.choice(self.repos)
        gen = self.server.gen
        mt, raw, d = self.build_manifest(c, rng, repo)
        tag = f"t{rng.randrange(TAGS_PER_REPO)}" if rng.random() < 0.7 else None
        r = self.put_manifest(c, repo, mt, raw, d, tag, gen, "manifest PUT")
        if r.status == 201:
            self.verify_manifest(c, repo, d, "after manifest PUT")
            if tag is not None and rng.random() < 0.5:
                self.verify_tag(c, repo, tag, listed=False)

    def race_manifest_put_delete(self, c: Client, rng: random.Random, racers: list) -> None:
        repo = rng.choice(self.repos)
        mt, raw, d = self.build_manifest(c, rng, repo)
        tag = f"t{rng.randrange(TAGS_PER_REPO)}"
        if rng.random() < 0.5:
            self.put_manifest(c, repo, mt, raw, d, None, None, "manifest PUT before race")
        self.ledger.mark_manifest_delete(repo, d)
        self.ledger.try_tag(repo, tag, d)
        fns = [
            lambda k: self.put_manifest(k, repo, mt, raw, d, tag, None, "race: manifest PUT by tag"),
            lambda k: k.request("DELETE", f"/v2/{repo}/manifests/{d}", what="race: manifest DELETE"),
        ]
        if rng.random() < 0.5:
            fns.append(lambda k: self.put_manifest(k, repo, mt, raw, d, None, None, "race: manifest PUT by digest"))
        if rng.random() < 0.5:
            fns.append(lambda k: k.request("DELETE", f"/v2/{repo}/manifests/{d}", what="race: manifest DELETE 2"))
        if rng.random() < 0.3:
            self.ledger.mark_tag_delete(repo, tag)
            fns.append(lambda k: k.request("DELETE", f"/v2/{repo}/manifests/{tag}", what="race: tag DELETE"))
        self.race(fns, racers[:len(fns)])
        self.verify_manifest(c, repo, d, "after manifest PUT/DELETE race")
        self.check_repo_tags(c, repo)

    def get_manifest(self, c: Client, rng: random.Random) -> None:
        m = self.ledger.any_manifest(rng)
        if m is None:
            raise Abort("no manifest yet")
        self.verify_manifest(c, m[0], m[1], "get manifest")
        if rng.random() < 0.3:
            r = c.request("HEAD", f"/v2/{m[0]}/manifests/{m[1]}", what="head manifest")
            if r.status == 200:
                size = self.ledger.manifests[m][1]
                self.check(r.header("Content-Length") == str(size) and r.header("Docker-Content-Digest") == m[1]
                           and bool(r.header("Content-Type")), "manifest_unservable", f"{m[0]}@{m[1]}",
                           f"HEAD /v2/{m[0]}/manifests/{m[1]}", 200, "HEAD headers")

    def tags_check(self, c: Client, rng: random.Random) -> None:
        self.check_repo_tags(c, rng.choice(self.repos))

    def catalog(self, c: Client, rng: random.Random) -> None:
        q = f"?n={rng.randint(1, 5)}" if rng.random() < 0.3 else ""
        r = c.request("GET", f"/v2/_catalog{q}", what="catalog")
        if r.status == 200:
            try:
                repos = json.loads(r.body)["repositories"]
                self.check(repos == sorted(set(repos)), "bad_catalog", "order", "GET /v2/_catalog", 200,
                           f"not sorted or duplicates: {repos[:10]}")
            except (ValueError, KeyError, TypeError):
                self.results.violation("bad_catalog", "json", "GET /v2/_catalog", 200,
                                       r.body[:200].decode("utf-8", "replace"))

    # -------------------------------------------------------------- reads, deletes

    def get_blob(self, c: Client, rng: random.Random) -> None:
        b = self.ledger.any_blob(rng)
        if b is None:
            raise Abort("no blob yet")
        self.verify_blob(c, b[0], b[1], "get blob")

    def head_blob(self, c: Client, rng: random.Random) -> None:
        b = self.ledger.any_blob(rng)
        if b is None:
            raise Abort("no blob yet")
        self.verify_blob(c, b[0], b[1], "head blob", head=True)

    def range_blob(self, c: Client, rng: random.Random) -> None:
        b = self.ledger.any_blob(rng)
        if b is None:
            raise Abort("no blob yet")
        self.verify_range(c, b[0], b[1], rng)

    def blob_delete(self, c: Client, rng: random.Random) -> None:
        b = self.ledger.any_blob(rng)
        if b is None:
            raise Abort("no blob yet")
        self.ledger.mark_blob_delete(*b)
        r = c.request("DELETE", f"/v2/{b[0]}/blobs/{b[1]}", what="blob delete")
        if r.status not in (202, 404) and r.status < 500:
            self.results.violation("unexpected_status", f"blob DELETE {r.status}", f"DELETE /v2/{b[0]}/blobs/{b[1]}",
                                   r.status, r.body[:200].decode("utf-8", "replace"))

    def race_blob_delete_vs_get(self, c: Client, rng: random.Random, racers: list) -> None:
        """DELETE of a blob racing a GET and a new push of it: the GET is the
        whole blob or 404, the push is 201."""
        repo = rng.choice(self.repos)
        data = self.make_blob(rng)
        d = self.push_monolithic(c, rng, repo=repo, data=data)
        self.ledger.mark_blob_delete(repo, d)
        self.race([
            lambda k: k.request("DELETE", f"/v2/{repo}/blobs/{d}", what="race: blob DELETE vs GET"),
            lambda k: self.verify_blob(k, repo, d, "race: blob GET vs DELETE"),
            lambda k: self.push_monolithic(k, rng, repo=repo, data=data),
        ], racers[:3])

    def tag_delete(self, c: Client, rng: random.Random) -> None:
        repo = rng.choice(self.repos)
        tag = f"t{rng.randrange(TAGS_PER_REPO)}"
        self.ledger.mark_tag_delete(repo, tag)
        r = c.request("DELETE", f"/v2/{repo}/manifests/{tag}", what="tag delete")
        if r.status not in (202, 404) and r.status < 500:
            self.results.violation("unexpected_status", f"tag DELETE {r.status}", f"DELETE /v2/{repo}/manifests/{tag}",
                                   r.status, r.body[:200].decode("utf-8", "replace"))

    def manifest_delete(self, c: Client, rng: random.Random) -> None:
        m = self.ledger.any_manifest(rng)
        if m is None:
            raise Abort("no manifest yet")
        self.ledger.mark_manifest_delete(*m)
        r = c.request("DELETE", f"/v2/{m[0]}/manifests/{m[1]}", what="manifest delete")
        if r.status not in (202, 404) and r.status < 500:
            self.results.violation("unexpected_status", f"manifest DELETE {r.status}",
                                   f"DELETE /v2/{m[0]}/manifests/{m[1]}", r.status,
                                   r.body[:200].decode("utf-8", "replace"))
        self.check_repo_tags(c, m[0])

    def session_status_cancel(self, c: Client, rng: random.Random) -> None:
        repo = rng.choice(self.repos)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        data = rng.randbytes(rng.randint(0, 20000))
        if data:
            r = c.request("PATCH", loc, body=data, what="cancel: PATCH")
            self.expect(r, (202,), "PATCH before cancel", gen)
        s = c.request("GET", loc, what="cancel: status")
        self.expect(s, (204,), "GET session status", gen)
        r = c.request("DELETE", loc, what="cancel: DELETE")
        self.expect(r, (204,), "DELETE session", gen)
        s = c.request("GET", loc, what="cancelled: status")
        self.expect(s, (404,), "GET cancelled session", gen)
        # Cross-repository access to a session is refused.
        other = rng.choice(self.repos)
        if other != repo:
            loc2 = self.session(c, repo, gen)
            s = c.request("GET", loc2.replace(f"/v2/{repo}/", f"/v2/{other}/", 1), what="foreign session")
            self.expect(s, (404,), "GET session from another repository", gen)
            c.request("DELETE", loc2, what="cancel: DELETE")

    # -------------------------------------------------------------- session races

    def filled_session(self, c: Client, rng: random.Random, repo: str) -> tuple[str, bytes, str, int]:
        data = self.make_blob(rng)
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        if data:
            r = c.request("PATCH", loc, body=data, what="race setup PATCH")
            self.expect(r, (202,), "PATCH race setup", gen)
        return loc, data, d, gen

    def race_parallel_puts(self, c: Client, rng: random.Random, racers: list) -> None:
        """Six PUT ?digest= on one session: one 201, the others 404 BLOB_UPLOAD_UNKNOWN."""
        repo = rng.choice(self.repos)
        with_body = rng.random() < 0.25
        data = self.make_blob(rng)
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        if not with_body and data:
            r = c.request("PATCH", loc, body=data, what="race setup PATCH")
            self.expect(r, (202,), "PATCH race setup", gen)
        body = data if with_body else b""
        n = len(racers)
        url = self.with_digest(loc, d, rng)
        out = self.race([lambda k: k.request("PUT", url, body=body, what=f"race: {n} parallel PUTs")] * n, racers)
        statuses = sorted(r.status for r in out)
        for r in out:
            self.acked(r, repo, d, "race: parallel PUT")
        req = f"{n} x PUT {url}{' with the body' if with_body else ''}"
        if not with_body:
            created = statuses.count(201)
            others_ok = all(s in (201, 404) for s in statuses)
            if not self.server.changed_since(gen):
                self.check(created >= 1 and others_ok, "race_outcome", f"parallel PUTs {statuses}", req,
                           statuses, "expected one 201 and 404 BLOB_UPLOAD_UNKNOWN for the others")
        if 201 in statuses:
            self.verify_blob(c, repo, d, "after parallel PUTs")

    def race_put_vs_delete_session(self, c: Client, rng: random.Random, racers: list) -> None:
        repo = rng.choice(self.repos)
        loc, data, d, gen = self.filled_session(c, rng, repo)
        url = self.with_digest(loc, d, rng)
        out = self.race([
            lambda k: k.request("PUT", url, body=b"", what="race: PUT vs DELETE session"),
            lambda k: k.request("DELETE", loc, what="race: DELETE session vs PUT"),
        ], racers)
        put, dele = out
        self.acked(put, repo, d, "race: PUT vs DELETE")
        if not self.server.changed_since(gen):
            self.check(put.status in (201, 404) and dele.status in (204, 404)
                       and (put.status == 201 or dele.status == 204), "race_outcome",
                       f"PUT vs DELETE {put.status}/{dele.status}", f"PUT {url} | DELETE {loc}",
                       f"{put.status}/{dele.status}",
                       "expected PUT 201 or DELETE 204, the other 404")
        if put.status == 201:
            self.verify_blob(c, repo, d, "after PUT vs DELETE")

    def race_patch_vs_patch(self, c: Client, rng: random.Random, racers: list) -> None:
        """Two chunks both claiming offset 0: at most one may be accepted."""
        repo = rng.choice(self.repos)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        data = rng.randbytes(rng.randint(1, 200_000))
        d = self.ledger.made(data)
        hdr = {"Content-Range": f"0-{len(data) - 1}", "Content-Type": "application/octet-stream"}
        out = self.race([lambda k: k.request("PATCH", loc, body=data, headers=hdr,
                                             what="race: PATCH vs PATCH at 0")] * 2, racers[:2])
        statuses = sorted(r.status for r in out)
        s = c.request("GET", loc, what="after PATCH race: status")
        if self.server.changed_since(gen):
            raise Abort("killed")
        self.check(statuses.count(202) <= 1 and s.header("Range") == f"0-{len(data) - 1}",
                   "race_outcome", f"PATCH vs PATCH {statuses}", f"2 x PATCH {loc} Content-Range 0-{len(data) - 1}",
                   statuses, f"session Range afterwards {s.header('Range')} for {len(data)} bytes")
        r = c.request("PUT", self.with_digest(loc, d, rng), body=b"", what="after PATCH race: PUT")
        self.acked(r, repo, d, "PUT after PATCH race")
        if r.status == 201:
            self.verify_blob(c, repo, d, "after PATCH race")

    def race_held_patch(self, c: Client, rng: random.Random, racers: list) -> None:
        """A chunked-transfer PATCH held open while PUT ?digest= commits the
        session, then more bytes: the committed blob must stay its digest."""
        repo = rng.choice(self.repos)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        first = rng.randbytes(rng.randint(1, 100_000))
        more = rng.randbytes(rng.randint(1, 100_000))
        d = self.ledger.made(first)
        sock = socket.socket()
        try:
            sock.settimeout(30)
            sock.connect(("127.0.0.1", self.server.port))
            sock.sendall(f"PATCH {loc} HTTP/1.1\r\nHost: 127.0.0.1:{self.server.port}\r\n"
                         "Content-Type: application/octet-stream\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n".encode())
            sock.sendall(b"%x\r\n" % len(first) + first + b"\r\n")
        except OSError as e:
            sock.close()
            raise Abort(f"held PATCH: {e!r}") from None
        try:
            # Give the PATCH time to reach the registry and hold the session.
            # Its bytes are not acknowledged until it ends, so the session's
            # status says 0-0 (or its earlier size) meanwhile, never more.
            time.sleep(0.3)
            s = c.request("GET", loc, what="held PATCH: status")
            if s.status != 204 or s.header("Range") != "0-0":
                if not self.server.changed_since(gen):
                    self.results.violation("unexpected_status", "held PATCH: session status", f"GET {loc}",
                                           s.status, f"Range {s.header('Range')}, want 0-0 (nothing acknowledged yet)")
                raise Abort("held PATCH: no session")
            r = c.request("PUT", self.with_digest(loc, d, rng), body=b"", what="held PATCH: PUT")
            self.acked(r, repo, d, "PUT during held PATCH")
            try:
                sock.sendall(b"%x\r\n" % len(more) + more + b"\r\n0\r\n\r\n")
                sock.settimeout(REQUEST_TIMEOUT)
                head = b""
                while b"\r\n" not in head:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                parts = line.split()
                status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
            except TimeoutError:
                status, line = 0, ""
                if not self.server.changed_since(gen):
                    self.results.violation("timeout", "held PATCH", f"chunked PATCH {loc} (held)", "-",
                                           f"no answer within {REQUEST_TIMEOUT:.0f} s after its last chunk")
            except OSError:
                status, line = 0, ""  # the server may close the PATCH once the session is gone
            if status:
                self.results.count_request("PATCH", status)
            if status >= 500:
                self.results.violation("http_5xx", f"held PATCH {status}", f"chunked PATCH {loc} (held)",
                                       status, line)
        finally:
            sock.close()
        time.sleep(0.05)
        if r.status == 201:
            self.verify_blob(c, repo, d, "after held PATCH")

    def race_same_blob(self, c: Client, rng: random.Random, racers: list) -> None:
        """The same new blob pushed three times at once, in one or several repositories."""
        data = self.make_blob(rng)
        repos = [rng.choice(self.repos)] * 3 if rng.random() < 0.5 else rng.sample(self.repos, min(3, len(self.repos)))
        ways = [self.push_monolithic, self.push_session, self.push_put_only_data]
        fns = [lambda k, repo=repo, w=rng.choice(ways): w(k, rng, repo=repo, data=data) for repo in repos]
        self.race(fns, racers[:len(fns)])
        for repo in set(repos):
            self.verify_blob(c, repo, sha256(data), "after same-blob race")

    def push_put_only_data(self, c: Client, rng: random.Random, repo: str, data: bytes) -> str:
        d = self.ledger.made(data)
        gen = self.server.gen
        loc = self.session(c, repo, gen)
        r = c.request("PUT", self.with_digest(loc, d, rng), body=data, what="PUT whole body")
        self.expect(r, (201,), "PUT whole body", gen)
        self.acked(r, repo, d, "PUT whole body")
        return d

    # -------------------------------------------------------------- workers

    def run_op(self, op: Op, c: Client, rng: random.Random, racers: list) -> None:
        fn = getattr(self, op.name)
        if op.race:
            fn(c, rng, racers)
        else:
            fn(c, rng)

    def worker(self, i: int) -> None:
        rng = random.Random(self.args.seed * 1000 + i)
        c = Client(self)
        racers = [Client(self) for _ in range(6)]
        while not self.stop.is_set():
            if not self.gate.wait(timeout=0.2):
                continue
            if self.server.down:
                time.sleep(0.05)
                continue
            op = rng.choices(self.ops, weights=self.weights)[0]
            try:
                self.run_op(op, c, rng, racers)
                self.results.count_round(op.name, op.race)
            except Abort:
                pass
            except Exception:  # noqa: BLE001 - a harness bug must not stop the run
                self.results.violation("harness_error", op.name, op.name, "-",
                                       traceback.format_exc(limit=4).replace("\n", " | "))

    # -------------------------------------------------------------- sweeps

    def sweep(self, label: str, full_since: float | None) -> int:
        """Checks everything in the ledger; blobs acknowledged after
        `full_since` (all when None) are read whole, the rest with HEAD."""
        blobs, manifests, _ = self.ledger.snapshot()
        if full_since is not None:
            # Between kills: every blob acknowledged since the last sweep, and
            # a sample of the older ones, so long runs keep sweeps short.
            recent = {k: t for k, t in blobs.items() if t >= full_since}
            older = [k for k, t in blobs.items() if t < full_since]
            pick = random.Random(len(blobs)).sample(older, min(len(older), self.args.sweep_sample))
            blobs = {**{k: blobs[k] for k in pick}, **recent}
            mkeys = list(manifests)
            if len(mkeys) > self.args.sweep_sample:
                manifests = dict.fromkeys(random.Random(len(mkeys)).sample(mkeys, self.args.sweep_sample))
        local = threading.local()

        def client() -> Client:
            if not hasattr(local, "c"):
                local.c = Client(self)
            return local.c

        def blob(item) -> None:
            (repo, d), t = item
            whole = full_since is None or t >= full_since or random.random() < 0.05
            try:
                self.verify_blob(client(), repo, d, f"sweep {label}", head=not whole)
            except Abort:
                pass

        def manifest(key) -> None:
            try:
                self.verify_manifest(client(), key[0], key[1], f"sweep {label}")
            except Abort:
                pass

        def repo_tags(repo) -> None:
            try:
                self.check_repo_tags(client(), repo)
            except Abort:
                pass

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(blob, blobs.items()))
            list(pool.map(manifest, manifests))
            list(pool.map(repo_tags, self.repos))
        try:
            self.catalog(Client(self), random.Random(0))
        except Abort:
            pass
        return len(blobs) + len(manifests)

    def summary(self, phase: str, extra: str = "") -> str:
        r = self.results
        with r.lock:
            line = (f"stress: {phase} t={time.monotonic() - self.t0:.0f}s rounds={r.rounds} "
                    f"race_rounds={r.race_rounds} ops={r.ops} kills={self.kills} "
                    f"checks={r.passed} violations={len(r.violations)}")
        return line + (f" {extra}" if extra else "")

    def killer(self, deadline: float) -> None:
        rng = random.Random(self.args.seed * 7 + 1)
        last = time.monotonic()
        while self.kills < self.args.kills and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left < 2:
                break
            wait = left / (self.args.kills - self.kills + 0.5) * rng.uniform(0.4, 1.2)
            idle = rng.random() < 0.25
            if rng.random() < 0.4 and not idle:
                # Aim just after a gzip layer was acknowledged: its conversion is due.
                if self.stop.wait(wait * 0.5):
                    break
                self.gzip_acked.clear()
                self.gzip_acked.wait(timeout=wait * 0.5)
                if self.stop.wait(rng.uniform(0, 0.8)):
                    break
            elif self.stop.wait(wait):
                break
            if idle:
                # Workers paused: the converter has the server to itself.
                self.gate.clear()
                time.sleep(rng.uniform(0.3, 2.5))
                self.idle_kills += 1
            with self.server.restart_lock:
                self.server.kill()
                self.gate.clear()
                self.kills += 1
                time.sleep(rng.uniform(0, 0.3))
                try:
                    took = self.server.start()
                except RuntimeError as e:
                    if not self.server.closed:
                        self.results.violation("restart_failed", f"kill {self.kills}", "blockreg serve", "-", str(e))
                    self.stop.set()
                    return
            n = self.sweep(f"after kill {self.kills}", last)
            last = time.monotonic()
            print(self.summary(f"phase={self.kills}", f"restart={took:.1f}s swept={n}"), flush=True)
            self.gate.set()

    def run(self) -> int:
        took = self.server.start()
        print(f"stress: blockreg up on 127.0.0.1:{self.server.port} in {took:.1f}s "
              f"(data {self.data}, seed {self.args.seed})", flush=True)
        self.gate.set()
        self.t0 = time.monotonic()
        deadline = self.t0 + self.args.seconds
        workers = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                   for i in range(self.args.workers)]
        for w in workers:
            w.start()
        killer = threading.Thread(target=self.killer, args=(deadline,), daemon=True)
        killer.start()
        while time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(0.2)
            if self.server.died():
                self.server_died("(monitor)", RuntimeError("process exited"))
        self.stop.set()
        killer.join()
        for w in workers:
            w.join(timeout=REQUEST_TIMEOUT + 10)
        self.gate.set()
        if self.server.down:
            self.server.start()
        n = self.sweep("final", None)
        print(self.summary("final", f"swept={n}"), flush=True)
        return self.report()

    def report(self) -> int:
        r = self.results
        elapsed = time.monotonic() - self.t0
        with r.lock:
            ops = dict(sorted(r.by_op.items()))
            fails = [s for s in r.statuses if s.split()[1].startswith("5")]
        print(f"stress: rounds by kind: {ops}")
        print(f"stress: 5xx answers: {[(s, r.statuses[s]) for s in fails]}")
        print(f"stress: connection errors while the server was down: {r.down_errors}, "
              f"early closes while up: {r.conn_resets}; kills: {self.kills} "
              f"({self.idle_kills} while only the converter ran); unexpected deaths: {self.deaths}")
        by_kind: dict = {}
        for (kind, _), (_, _, _, n) in r.violations.items():
            by_kind[kind] = by_kind.get(kind, 0) + 1
        print(self.summary("done", f"seconds={elapsed:.0f} by_kind={by_kind}"))
        # Range and HEAD mismatches of a blob whose whole GET already
        # mismatched are the same corruption seen again.
        corrupt = {key.split("@")[-1] for (kind, key) in r.violations if kind == "blob_digest_mismatch"}
        for kind in ("blob_range_mismatch", "blob_bad_headers"):
            keys = [key.split("@")[-1] for (k, key) in r.violations if k == kind]
            if keys:
                same = sum(1 for k in keys if k in corrupt)
                print(f"stress: {kind}: {same} of {len(keys)} on blobs whose GET mismatched their digest")
        shown: dict = {}
        for (kind, key), (req, status, detail, n) in sorted(r.violations.items()):
            shown[kind] = shown.get(kind, 0) + 1
            if shown[kind] <= LISTED_PER_KIND:
                print(f"  {kind}: {req} -> {status} (seen {n}x): {detail[:400]}")
            elif shown[kind] == LISTED_PER_KIND + 1:
                print(f"  {kind}: … {by_kind[kind] - LISTED_PER_KIND} more distinct")
        if r.violations:
            self.show_server_errors()
        print(f"{r.passed} passed, {len(r.violations)} failed")
        return 1 if r.violations else 0

    def show_server_errors(self) -> None:
        try:
            with open(self.server.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return
        bad = [ln for ln in lines if any(w in ln.lower() for w in ("error", "panic", "fail"))
               and "StreamError::Closed" not in ln]
        if bad:
            print(f"stress: server log, last {min(20, len(bad))} of {len(bad)} error lines:")
            for ln in bad[-20:]:
                print(f"  | {ln[:300]}")


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--blockreg", default=os.environ.get("BLOCKREG", os.path.join(root, "target/release/blockreg")),
                   help="the blockreg binary (env BLOCKREG)")
    p.add_argument("--seconds", type=float, default=120, help="how long the workers run")
    p.add_argument("--kills", type=int, default=10, help="how many times to SIGKILL and restart the server")
    p.add_argument("--workers", type=int, default=8, help="worker threads")
    p.add_argument("--repos", type=int, default=4, help="repositories")
    p.add_argument("--seed", type=int, default=int(os.environ.get("STRESS_SEED", "1")), help="random seed")
    p.add_argument("--max-blob", type=int, default=3 << 20, help="largest random blob, bytes")
    p.add_argument("--sweep-sample", type=int, default=2000,
                   help="older blobs and manifests re-checked after each kill (all at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir and server log")
    p.add_argument("--serve-arg", action="append", help="extra argument for `blockreg serve` (repeatable)")
    args = p.parse_args()
    if not os.access(args.blockreg, os.X_OK):
        print(f"stress: no blockreg binary at {args.blockreg}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="blockreg-stress.")
    h = Harness(args, work)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started with SIGINT ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return h.run()
    except KeyboardInterrupt:
        print("stress: interrupted", flush=True)
        h.stop.set()
        return 130
    finally:
        h.stop.set()
        h.server.close()
        if args.keep:
            print(f"stress: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
