#!/usr/bin/env python3
"""Garbage collection under fire: crash safety of blockreg's collection while
clients push, pull and delete overlapping images and the server and the
collector are killed with SIGKILL at random moments.

    python3 bench/gc-stress.py                 # 10 minutes and >= 100 server kills
    python3 bench/gc-stress.py --short         # 90 s and >= 10 kills: a smoke run
    python3 bench/gc-stress.py --duration 1800 --clients 8

Standard-library Python only; no root, no docker. Needs a built
target/release/blockreg (or --blockreg); runs a private copy of it, so a
rebuild during the run changes nothing. Everything listens on 127.0.0.1 and
is stopped by PID.

What runs at once, for --duration seconds:

- the server (`blockreg serve`, its own background collection on: every
  2 s, grace 80 s, untagged manifests removed; request timeout 15 s so
  that this grace is allowed), killed with SIGKILL --kill-min to
  --kill-max (0.5-5) seconds after it answered, and restarted at once; the
  load goes on past --duration until --min-kills (100) kills (its start recovers the store,
  after waiting for a collection another process holds);
- `blockreg gc --delete-untagged` back to back (0-2 s apart, --gc-pause),
  with --grace (30 s), each run killed with SIGKILL at a random moment of its collection with
  probability --gc-kill (0.25);
- --clients client threads speaking the OCI distribution API over plain
  HTTP (a new connection per request): push small synthetic images (gzip
  tar layers drawn from a shared pool, so layers are shared between images,
  repositories and clients, plus sometimes a fresh layer; a unique config),
  blobs by HEAD, cross-repository mount, monolithic or chunked upload; pull
  (own tags strictly against the ledger, other clients' tags loosely);
  delete by tag (the manifest stays, untagged, for the collection) or by
  digest. Each client owns its tags (in repositories shared by all), so the
  ledger of what it was told is exact: after an acknowledged push the tag
  must name that manifest and every blob must pull byte-exact until the
  client itself changes it; a request cut off by a kill leaves the ledger
  uncertain between the old and the new state until a retry settles it.

Which grace period makes "no acknowledged push lost" meaningful: one longer
than the longest request. The manifest PUT stamps its blobs, checks they
exist, then stores the manifest; the collection marks from the manifests it
reads, then sweeps blobs whose stamp is at or before its cutoff (its start
minus the grace). A PUT that stamps just before a collection starts and
stores its manifest after the marking passed its repository is seen by
neither the mark nor, with grace 0, the stamp check: it is acknowledged and
its blobs are swept (`guest/src/gc.rs`, "a manifest pushed during
marking"; the server refuses such a grace, `blockreg gc` only warns). With
30 s (requests here take milliseconds to seconds; the server's timeout is
15 s) the property must hold without exception, and so must "no manifest
push refused while its blobs were used within the grace period" (counted
as unexpected refusals). --grace0-every N makes every Nth run use --grace
0s to probe that window: refusals (MANIFEST_BLOB_UNKNOWN, the client then
uploads again) are expected then, and a loss whose acknowledged PUT
overlapped a grace-0 run is reported apart, as the documented window.

At the end: clients stop; the conversion backlog is waited for (kills
leave conversions to back off); a collection with the server serving must
complete (exit 0); every tag listed pulls byte-exact (manifest digest and
every blob's digest and size) and agrees with the ledger; then a
collection with --grace 0s and the same pull check (what is tagged survives
the most aggressive collection); the server is stopped and
`blockreg check --read-data` must be clean. The report (rounds, operations,
kills, restart times, refusals, losses) goes to bench/results/gc-stress.md
(gc-stress-short.md with --short).

`latency` subcommand (used by bench/gc.sh): push and pull back a fresh
synthetic image against a running registry, N times, and print the wall
times as JSON.
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.parse

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT = ", ".join([
    OCI_MANIFEST,
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
MTIME = 1_700_000_000


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- HTTP


class ServerDown(Exception):
    """The connection failed: refused, reset, or cut off mid-answer."""


class Http:
    """One request per connection (what docker's registry client does)."""

    def __init__(self, host, port, timeout=60):
        self.host, self.port, self.timeout = host, port, timeout

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        except (OSError, http.client.HTTPException) as e:
            raise ServerDown(f"{method} {path}: {type(e).__name__}: {e}") from e
        finally:
            conn.close()


def error_codes(body):
    try:
        return [e.get("code") for e in json.loads(body).get("errors", [])]
    except (ValueError, AttributeError):
        return []


def location_path(location, extra_query):
    """The path (+ query) of a Location header, with extra query items."""
    u = urllib.parse.urlsplit(location)
    q = urllib.parse.parse_qsl(u.query, keep_blank_values=True) + list(extra_query.items())
    return u.path + ("?" + urllib.parse.urlencode(q) if q else "")


# ---------------------------------------------------------------- content


WORDS = []


def text_file(rng, size):
    """`size` bytes of text-like lines drawn from a fixed vocabulary."""
    if not WORDS:
        r = random.Random(7)
        letters = "abcdefghijklmnopqrstuvwxyz"
        WORDS.extend("".join(r.choices(letters, k=r.randint(2, 9))) for _ in range(3000))
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(4, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def make_layer(files, prefix):
    """A gzip tar (deterministic: fixed mtimes, gzip mtime 0) of
    [(name, bytes)]; returns (gz bytes, diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as f:
        f.write(tar_bytes)
    return gz.getvalue(), sha256(tar_bytes)


class Pool:
    """Shared content: text files and a few binary ones, and layers made of
    them. Layers share files, so blocks are shared between blobs.

    Layers are drawn with Zipf-like weights (1/(i+1)^1.6): the first ones
    are in almost every image and never unreferenced; those of the tail
    go unreferenced for longer than the grace period, are collected, and
    are pushed again later: the races the collection must survive."""

    def __init__(self, seed, nfiles=160, nlayers=120, big=6):
        rng = random.Random(seed)
        self.files = [(f"f{i:03d}.txt", text_file(rng, rng.randint(2048, 48 * 1024))) for i in range(nfiles)]
        self.binaries = [(f"bin{i}.dat", rng.randbytes(1200 * 1024)) for i in range(3)]
        self.layers = []  # (digest, gz, diff_id)
        big_at = set(rng.sample(range(nlayers), min(big, nlayers)))
        for i in range(nlayers):
            files = rng.sample(self.files, rng.randint(4, 16))
            if i in big_at:
                files.append(rng.choice(self.binaries))
            gz, diff = make_layer(files, f"pool{i}")
            self.layers.append((sha256(gz), gz, diff))
        self.weights = [1 / (i + 1) ** 1.6 for i in range(nlayers)]

    def pick(self, rng, n):
        """n distinct layers, by weight."""
        chosen = {}
        while len(chosen) < min(n, len(self.layers)):
            i = rng.choices(range(len(self.layers)), self.weights)[0]
            chosen[i] = self.layers[i]
        return list(chosen.values())

    def fresh_layer(self, rng, tag):
        files = rng.sample(self.files, rng.randint(2, 8))
        files.append(("unique.txt", f"{tag} {rng.random()} {time.time()}\n".encode() * 50))
        gz, diff = make_layer(files, "fresh")
        return sha256(gz), gz, diff


def make_image(layers, note):
    """(config digest, config bytes, manifest bytes) for layers
    [(digest, gz, diff_id)]; `note` makes config and manifest unique."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"stress": note}},
        "rootfs": {"type": "layers", "diff_ids": [d for _, _, d in layers]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": len(gz)} for d, gz, _ in layers],
        "annotations": {"stress": note},
    }, sort_keys=True).encode()
    return sha256(config), config, manifest


def manifest_blobs(manifest_bytes):
    m = json.loads(manifest_bytes)
    out = [(m["config"]["digest"], m["config"]["size"])]
    out += [(l["digest"], l["size"]) for l in m.get("layers", [])]
    return out


# ---------------------------------------------------------------- the server


class Server:
    """blockreg serve on 127.0.0.1: started, killed with SIGKILL, restarted.
    `up` is set while it is believed to serve; `epoch` counts starts."""

    def __init__(self, binary, config, data, port, logf):
        self.binary, self.config, self.data, self.port = binary, config, data, port
        self.logf = logf
        self.proc = None
        self.up = threading.Event()
        self.epoch = 0
        self.lock = threading.Lock()
        self.restart_secs = []

    def start(self, timeout=300):
        t0 = time.time()
        with open(self.logf, "ab") as out:
            self.proc = subprocess.Popen([self.binary, "serve", "--config", self.config],
                                         stdout=out, stderr=subprocess.STDOUT)
        http_ = Http("127.0.0.1", self.port, timeout=2)
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"blockreg serve exited with {self.proc.returncode} (log {self.logf})")
            try:
                status, _, _ = http_.request("GET", "/v2/")
                if status in (200, 401):
                    break
            except ServerDown:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError(f"blockreg serve did not answer within {timeout} s")
        self.restart_secs.append(time.time() - t0)
        self.epoch += 1
        self.up.set()

    def kill(self):
        self.up.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL, by PID
        if self.proc:
            self.proc.wait()

    def stop(self):
        self.up.clear()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---------------------------------------------------------------- the ledger


class Ledger:
    """What clients were told, and what went wrong.

    possible[(repo, tag)]: the states the tag may be in, a set of manifest
    digests and None (absent): one element once the last change was
    acknowledged, more while a cut-off request left it open."""

    def __init__(self, path):
        self.lock = threading.Lock()
        self.possible = {}
        self.manifests = {}  # digest -> bytes
        self.acked = {}  # manifest digest -> (PUT sent, acknowledged) of its last acknowledged push
        self.violations = []
        self.refusals = []  # manifest PUTs refused with MANIFEST_BLOB_UNKNOWN
        self.errors = []  # unexpected statuses that are not losses
        self.counts = {}
        self.events = open(path, "w")

    def count(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def event(self, **kw):
        kw["t"] = round(time.time(), 3)
        with self.lock:
            self.events.write(json.dumps(kw) + "\n")

    def violation(self, kind, **kw):
        kw.update(kind=kind, t=round(time.time(), 3))
        with self.lock:
            self.violations.append(kw)
        self.event(ev="VIOLATION", **kw)
        log(f"VIOLATION {kind}: {kw}")

    def error(self, kind, **kw):
        kw.update(kind=kind, t=round(time.time(), 3))
        with self.lock:
            self.errors.append(kw)
        self.event(ev="error", **kw)

    def get(self, key):
        with self.lock:
            return set(self.possible.get(key, {None}))

    def set(self, key, states):
        with self.lock:
            self.possible[key] = set(states)

    def add(self, key, state):
        with self.lock:
            self.possible.setdefault(key, {None}).add(state)


# ---------------------------------------------------------------- clients


class Client(threading.Thread):
    def __init__(self, cid, args, server, ledger, pool, repos, stop):
        super().__init__(daemon=True, name=f"client{cid}")
        self.cid, self.args, self.server, self.ledger, self.pool = cid, args, server, ledger, pool
        self.repos, self.stop = repos, stop
        self.rng = random.Random(args.seed * 1000 + cid)
        self.http = Http("127.0.0.1", server.port)
        self.tags = [(repos[(cid + j) % len(repos)], f"c{cid}-t{j}") for j in range(args.tags)]
        self.seq = 0
        self.pool_digests = {d for d, _, _ in pool.layers}
        self.sent = set()  # (repo, pool layer) this client uploaded or mounted once

    # A request, retried across server restarts. Returns (status, headers,
    # body, cut) where cut says whether an earlier attempt was cut off
    # (a mutating request may then have taken effect already).
    def req(self, method, path, body=None, headers=None, max_wait=600):
        cut = False
        t0 = time.time()
        alive_failures = 0
        while True:
            epoch = self.server.epoch
            try:
                status, hdrs, data = self.http.request(method, path, body, headers)
                return status, hdrs, data, cut
            except ServerDown as e:
                cut = True
                if time.time() - t0 > max_wait:
                    raise
                if self.server.up.is_set() and self.server.epoch == epoch:
                    # Cut off while the same server instance still runs:
                    # maybe the kill is on its way, maybe not.
                    alive_failures += 1
                    if alive_failures >= 5:
                        self.ledger.error("cut off while the server kept running", method=method,
                                          path=path, detail=str(e))
                        alive_failures = 0
                    time.sleep(0.2)
                self.server.up.wait(60)
                self.ledger.count("requests retried after a kill")

    def run(self):
        while not self.stop.is_set():
            op = self.rng.random()
            repo, tag = self.rng.choice(self.tags)
            try:
                if op < 0.45:
                    self.push(repo, tag)
                elif op < 0.65:
                    self.pull_own(repo, tag)
                elif op < 0.8:
                    self.pull_foreign()
                else:
                    self.delete(repo, tag)
            except ServerDown as e:
                self.ledger.error("server unreachable for 10 min", detail=str(e))
            except Exception as e:  # a bug here must not end the run silently
                self.ledger.error("client exception", detail=f"{type(e).__name__}: {e}")
                log(f"client {self.cid}: {type(e).__name__}: {e}")

    # ---- push

    def upload_step(self, what, method, path, body=None, headers=None, want=(201,)):
        """One request of an upload; an answer other than `want` that no
        kill explains (no attempt was cut off) is counted by step and
        status, and a 5xx is an error of the report."""
        status, hdrs, data, cut = self.req(method, path, body, headers)
        if status not in want and not cut:
            self.ledger.count(f"upload answers not expected: {what} {status}")
            if status >= 500:
                self.ledger.error(f"{what} answered {status}", path=path.split("?")[0],
                                  body=data.decode(errors="replace")[:300])
        return status, hdrs, cut

    def ensure_blob(self, repo, digest, data):
        base = f"/v2/{repo}/blobs"
        octets = {"Content-Type": "application/octet-stream"}
        for _ in range(20):
            status, _, _, _ = self.req("HEAD", f"{base}/{digest}")
            if status == 200:
                self.ledger.count("blobs found (HEAD)")
                return
            if digest in self.pool_digests:
                if (repo, digest) in self.sent:
                    # Sent here before and gone now: collected while no
                    # manifest named it, and pushed again.
                    self.ledger.count("pool layers sent again to a repository (collected meanwhile)")
                self.sent.add((repo, digest))
            mode = self.rng.random()
            others = [r for r in self.repos if r != repo]
            if mode < 0.3:
                status, hdrs, _ = self.upload_step(
                    "mount POST", "POST", f"{base}/uploads/?mount={digest}&from={self.rng.choice(others)}",
                    want=(201, 202))
                if status == 201:
                    self.ledger.count("blobs mounted")
                    return
                if status == 202:
                    status, _, _ = self.upload_step(
                        "PUT after a mount's 202", "PUT", location_path(hdrs["location"], {"digest": digest}),
                        data, octets)
                    if status == 201:
                        self.ledger.count("blobs uploaded")
                        return
            elif mode < 0.65:
                status, _, _ = self.upload_step("monolithic POST", "POST", f"{base}/uploads/?digest={digest}",
                                                data, octets)
                if status == 201:
                    self.ledger.count("blobs uploaded")
                    return
            else:
                status, hdrs, _ = self.upload_step("session POST", "POST", f"{base}/uploads/", want=(202,))
                if status == 202:
                    loc = hdrs["location"]
                    step = max(1, len(data) // self.rng.randint(1, 3))
                    ok = True
                    for off in range(0, len(data), step):
                        chunk = data[off:off + step]
                        status, hdrs, cut = self.upload_step(
                            "PATCH", "PATCH", location_path(loc, {}), chunk,
                            {**octets, "Content-Range": f"{off}-{off + len(chunk) - 1}"}, want=(202,))
                        if status != 202:
                            ok = False
                            break
                        loc = hdrs.get("location", loc)
                    if ok:
                        status, _, _ = self.upload_step("closing PUT", "PUT", location_path(loc, {"digest": digest}))
                        if status == 201:
                            self.ledger.count("blobs uploaded")
                            return
            # A session lost with a killed server, a PATCH refused after a
            # cut-off attempt, an error: start over.
            self.ledger.count("blob upload restarted")
        raise RuntimeError(f"could not upload {digest} to {repo}")

    def push(self, repo, tag):
        self.seq += 1
        note = f"c{self.cid}-{tag}-s{self.seq}-{self.rng.random()}"
        layers = self.pool.pick(self.rng, self.rng.randint(1, 4))
        if self.rng.random() < 0.2:
            layers.append(self.pool.fresh_layer(self.rng, note))
        cdigest, config, manifest = make_image(layers, note)
        mdigest = sha256(manifest)
        with self.ledger.lock:
            self.ledger.manifests[mdigest] = manifest
        key = (repo, tag)
        uncertain = False
        for attempt in range(4):
            t_blobs = time.time()
            for d, gz, _ in layers:
                self.ensure_blob(repo, d, gz)
            self.ensure_blob(repo, cdigest, config)
            t_put = time.time()
            status, _, body, cut = self.req("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                                            {"Content-Type": OCI_MANIFEST})
            if cut:
                uncertain = True
                self.ledger.add(key, mdigest)
            if status == 201:
                self.ledger.set(key, {mdigest})
                self.ledger.count("pushes acknowledged")
                t_ack = time.time()
                with self.ledger.lock:
                    self.ledger.acked[mdigest] = (t_put, t_ack)
                self.ledger.event(ev="push", c=self.cid, repo=repo, tag=tag, digest=mdigest,
                                  secs=round(t_ack - t_blobs, 3), put=round(t_ack - t_put, 3))
                return
            codes = error_codes(body)
            if status == 400 and "MANIFEST_BLOB_UNKNOWN" in codes:
                # t_blobs: the first blob HEAD of this attempt; the push's
                # blobs were all stamped or uploaded after it.
                t_resp = time.time()
                self.ledger.refusals.append({"t0": t_blobs, "t1": t_resp, "repo": repo, "tag": tag,
                                             "detail": body.decode(errors="replace")[:300]})
                self.ledger.count("manifest pushes refused (MANIFEST_BLOB_UNKNOWN)")
                self.ledger.event(ev="refused", c=self.cid, repo=repo, tag=tag, digest=mdigest,
                                  age=round(t_resp - t_blobs, 3), t_blobs=round(t_blobs, 3))
                continue
            self.ledger.error("manifest PUT", status=status, repo=repo, tag=tag,
                              body=body.decode(errors="replace")[:300])
            break
        self.ledger.count("pushes given up")
        if uncertain:
            self.ledger.count("pushes left uncertain")

    # ---- pull

    def pull_blobs(self, repo, mbytes, strict, where):
        for d, size in manifest_blobs(mbytes):
            status, _, data, _ = self.req("GET", f"/v2/{repo}/blobs/{d}")
            if status == 200 and sha256(data) == d and len(data) == size:
                self.ledger.count("blobs pulled and verified")
                continue
            what = f"status {status}" if status != 200 else f"{len(data)} bytes hashing to {sha256(data)}"
            if strict:
                self.ledger.violation("blob of a kept manifest does not pull", repo=repo, blob=d,
                                      manifest=sha256(mbytes), got=what, where=where)
                return False
            return d
        return True

    def pull_own(self, repo, tag):
        key = (repo, tag)
        possible = self.ledger.get(key)
        status, hdrs, body, _ = self.req("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        self.ledger.count("own pulls")
        if status == 404:
            if None not in possible:
                self.ledger.violation("acknowledged tag missing", repo=repo, tag=tag, want=sorted(possible))
            return
        if status != 200:
            self.ledger.error("manifest GET", status=status, repo=repo, tag=tag)
            return
        d = sha256(body)
        if d not in possible:
            self.ledger.violation("tag names a manifest the ledger does not allow", repo=repo, tag=tag,
                                  got=d, want=sorted(x or "absent" for x in possible))
            return
        if hdrs.get("docker-content-digest") not in (None, d):
            self.ledger.violation("Docker-Content-Digest differs from the body", repo=repo, tag=tag)
        self.pull_blobs(repo, body, True, "own pull")

    def pull_foreign(self):
        repo = self.rng.choice(self.repos)
        status, _, body, _ = self.req("GET", f"/v2/{repo}/tags/list")
        if status != 200:
            return
        tags = [t for t in (json.loads(body).get("tags") or []) if not t.startswith(f"c{self.cid}-")]
        if not tags:
            return
        tag = self.rng.choice(tags)
        status, _, body, _ = self.req("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        if status != 200:
            return  # deleted meanwhile by its owner
        self.ledger.count("foreign pulls")
        missing = self.pull_blobs(repo, body, False, "foreign pull")
        if missing is True or missing is False:
            return
        # A blob failed: its owner may have deleted the manifest and a
        # collection removed the blob. Not so if the manifest is still
        # there afterwards (manifests are never re-created once deleted).
        md = sha256(body)
        status, _, _, _ = self.req("HEAD", f"/v2/{repo}/manifests/{md}", headers={"Accept": ACCEPT})
        if status == 200:
            status2, _, data, _ = self.req("GET", f"/v2/{repo}/blobs/{missing}")
            if not (status2 == 200 and sha256(data) == missing):
                self.ledger.violation("stored manifest names a blob that does not pull", repo=repo,
                                      manifest=md, blob=missing, got=status2)
        else:
            self.ledger.count("foreign pulls raced by a delete")

    # ---- delete

    def delete(self, repo, tag):
        key = (repo, tag)
        possible = self.ledger.get(key)
        by_digest = self.rng.random() < 0.5
        ref = tag
        if by_digest:
            status, hdrs, _, _ = self.req("HEAD", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
            if status == 404:
                if None not in possible:
                    self.ledger.violation("acknowledged tag missing", repo=repo, tag=tag, want=sorted(possible))
                return
            if status != 200:
                return
            ref = hdrs.get("docker-content-digest")
            if ref not in possible:
                self.ledger.violation("tag names a manifest the ledger does not allow", repo=repo, tag=tag,
                                      got=ref, want=sorted(x or "absent" for x in possible))
                return
        self.ledger.add(key, None)  # from the moment the DELETE may act
        status, _, body, cut = self.req("DELETE", f"/v2/{repo}/manifests/{ref}")
        if status == 202:
            self.ledger.set(key, {None})
            self.ledger.count("deletes by digest" if by_digest else "deletes by tag")
            self.ledger.event(ev="delete", c=self.cid, repo=repo, tag=tag, ref=ref)
        elif status == 404:
            if None not in possible and not cut:
                self.ledger.violation("DELETE of an acknowledged tag found nothing", repo=repo, tag=tag,
                                      ref=ref, want=sorted(possible))
            self.ledger.set(key, {None})
        else:
            self.ledger.error("DELETE", status=status, repo=repo, ref=ref,
                              body=body.decode(errors="replace")[:200])


# ---------------------------------------------------------------- collector


class Collector(threading.Thread):
    """blockreg gc back to back; some runs with --grace 0s; some killed."""

    def __init__(self, args, binary, data, ledger, stop, logf):
        super().__init__(daemon=True, name="collector")
        self.args, self.binary, self.data, self.ledger, self.stop = args, binary, data, ledger, stop
        self.logf = logf
        self.rng = random.Random(args.seed + 99)
        self.runs = []  # dicts: start, end, grace, rc, killed, collection
        self.proc = None

    def one(self, grace, kill_after=None):
        cmd = [self.binary, "gc", "--data", self.data, "--grace", f"{grace}s", "--delete-untagged", "--json"]
        t0 = time.time()
        with open(self.logf, "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
            killed = False
            if kill_after is not None:
                try:
                    self.proc.wait(kill_after)
                except subprocess.TimeoutExpired:
                    self.proc.kill()  # SIGKILL, by PID
                    killed = True
            out, _ = self.proc.communicate()
        run = {"start": t0, "end": time.time(), "grace": grace, "rc": self.proc.returncode, "killed": killed}
        try:
            run["collection"] = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else None
        except (ValueError, IndexError):
            run["collection"] = None
        self.proc = None
        self.runs.append(run)
        coll = run["collection"] or {}
        self.ledger.event(ev="gc", **{k: v for k, v in run.items() if k != "collection"},
                          removed=coll.get("blobs_removed"), started=coll.get("started"),
                          duration_ms=coll.get("duration_ms"))
        if run["rc"] != 0 and not killed:
            self.ledger.error("gc failed", rc=run["rc"], grace=grace, log=self.logf)
            log(f"gc exited {run['rc']} (grace {grace}); see {self.logf}")
        return run

    def run(self):
        n = 0
        while not self.stop.is_set():
            n += 1
            grace = 0 if self.args.grace0_every and n % self.args.grace0_every == 0 else self.args.grace
            kill_after = None
            if self.rng.random() < self.args.gc_kill:
                # A run is mostly loading (compiling) the guest; kill it
                # within the collection proper: after the typical load
                # time, within 1.2 times the typical collection.
                done = [r for r in self.runs if r["rc"] == 0 and not r["killed"] and r["collection"]]
                work = [r["collection"]["duration_ms"] / 1000 for r in done]
                load = [r["end"] - r["start"] - w for r, w in zip(done, work)]
                kill_after = (statistics.median(load) if load else 3.0) + self.rng.uniform(
                    0.0, 1.2 * (statistics.median(work) if work else 1.0))
            self.one(grace, kill_after)
            self.stop.wait(self.rng.uniform(0, self.args.gc_pause))


# ---------------------------------------------------------------- final checks


def pull_everything(http_, ledger, repos, label):
    try:
        return pull_all_tags(http_, ledger, repos, label)
    except ServerDown as e:
        return 0, 0, [f"{label}: the server stopped answering: {e}"]


def pull_all_tags(http_, ledger, repos, label):
    """Every listed tag pulls byte-exact and agrees with the ledger; every
    tag the ledger requires is listed. Returns (tags, blobs, problems)."""
    problems = []
    tags_seen, blobs = 0, 0
    listed = set()
    for repo in repos:
        status, _, body = http_.request("GET", f"/v2/{repo}/tags/list")
        if status == 404:
            tags = []
        elif status != 200:
            problems.append(f"{label}: tags/list of {repo}: {status}")
            continue
        else:
            tags = json.loads(body).get("tags") or []
        for tag in tags:
            listed.add((repo, tag))
            tags_seen += 1
            status, hdrs, mbytes = http_.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
            if status != 200:
                problems.append(f"{label}: {repo}:{tag} listed but its manifest answers {status}")
                continue
            d = sha256(mbytes)
            possible = ledger.possible.get((repo, tag), {None})
            if d not in possible:
                problems.append(f"{label}: {repo}:{tag} names {d}, ledger allows {sorted(x or 'absent' for x in possible)}")
            for bd, size in manifest_blobs(mbytes):
                status, _, data = http_.request("GET", f"/v2/{repo}/blobs/{bd}")
                blobs += 1
                if status != 200 or sha256(data) != bd or len(data) != size:
                    problems.append(f"{label}: {repo}:{tag} ({d}) blob {bd}: status {status}, "
                                    f"{len(data)} bytes, sha {sha256(data) if status == 200 else '-'}")
    for key, possible in ledger.possible.items():
        if None not in possible and key not in listed:
            problems.append(f"{label}: {key[0]}:{key[1]} acknowledged as {sorted(possible)} but not listed")
    return tags_seen, blobs, problems


def run_json(cmd, logf, timeout=3600):
    with open(logf, "ab") as err:
        t0 = time.time()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, timeout=timeout)
    try:
        js = json.loads(p.stdout.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        js = None
    return p.returncode, js, time.time() - t0


# ---------------------------------------------------------------- main run


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def stress(args):
    t_start = time.time()
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = args.blockreg or os.path.join(repo_root, "target", "release", "blockreg")
    work = args.work or tempfile.mkdtemp(prefix="blockreg-gc-stress.")
    os.makedirs(work, exist_ok=True)
    binary = os.path.join(work, "blockreg")
    shutil.copy2(source, binary)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    data = os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    port = free_port()
    config = os.path.join(work, "config.yml")
    with open(config, "w") as f:
        f.write(f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
blockreg:
  request_timeout_secs: 15
  gc:
    enabled: {str(args.server_gc).lower()}
    interval: {args.server_gc_interval}s
    grace: {args.server_gc_grace}s
    delete_untagged: true
""")
    log(f"work dir {work}, {version}, port {port}")
    ledger = Ledger(os.path.join(work, "events.jsonl"))
    server = Server(binary, config, data, port, os.path.join(work, "server.log"))
    log("building the content pool")
    pool = Pool(args.seed)
    log(f"pool: {len(pool.layers)} layers, {sum(len(g) for _, g, _ in pool.layers) >> 10} KiB")
    repos = [f"stress/r{i}" for i in range(args.repos)]
    server.start()

    stop_gc = threading.Event()
    collector = Collector(args, binary, data, ledger, stop_gc, os.path.join(work, "gc.log"))
    deadline = time.time() + args.duration
    stop_clients = threading.Event()
    clients = [Client(i, args, server, ledger, pool, repos, stop_clients) for i in range(args.clients)]
    for c in clients:
        c.start()
    collector.start()

    kills = 0
    krng = random.Random(args.seed + 7)
    restart_failures = 0
    # The load lasts --duration, and longer until --min-kills kills (each
    # restart compiles the guest: seconds on a busy machine).
    while True:
        life = krng.uniform(args.kill_min, args.kill_max)
        if kills >= args.min_kills:
            life = min(life, deadline - time.time())
            if life <= 0:
                break
        time.sleep(life)
        if kills >= args.min_kills and time.time() >= deadline:
            break
        server.kill()
        kills += 1
        for attempt in range(5):
            try:
                server.start()
                break
            except RuntimeError as e:
                restart_failures += 1
                ledger.error("server restart failed", detail=str(e))
                log(str(e))
                server.kill()
        else:
            raise SystemExit("the server does not start any more")
        if kills % 10 == 0:
            log(f"{kills} kills, {len(collector.runs)} collections, counts {ledger.counts}")
    log("clients finishing")
    stop_clients.set()
    for c in clients:
        c.join(600)
    stop_gc.set()
    collector.join(3600)
    t_load = time.time() - t_start

    # ---- final checks, with no kill any more
    final = {}
    if not server.up.is_set():
        server.start()
    http_ = Http("127.0.0.1", port, timeout=300)
    # Conversions cut off by the kills back off (30 s, 60 s): let them
    # finish, so that the check reads blobs back from packs and recipes.
    log("waiting for the conversion backlog")
    t0 = time.time()
    pending = None
    while time.time() - t0 < args.convert_wait:
        _, st, _ = run_json([binary, "stats", "--data", data, "--json"], os.path.join(work, "check.log"))
        pending = (st or {}).get("pending")
        if pending == 0:
            break
        time.sleep(2)
    final["converted"] = (pending, time.time() - t0)
    log("final collection (grace 30 s) with the server serving")
    rc, js, secs = run_json([binary, "gc", "--data", data, "--grace", f"{args.grace}s", "--delete-untagged", "--json"],
                            os.path.join(work, "gc.log"))
    final["collection"] = (rc, js, secs)
    final["pull1"] = pull_everything(http_, ledger, repos, "after the final collection")
    log("collection with --grace 0s, nothing else running")
    rc0, js0, secs0 = run_json([binary, "gc", "--data", data, "--grace", "0s", "--delete-untagged", "--json"],
                               os.path.join(work, "gc.log"))
    final["collection0"] = (rc0, js0, secs0)
    final["pull2"] = pull_everything(http_, ledger, repos, "after a grace-0 collection")
    server.stop()
    log("blockreg check --read-data")
    rcc, check, secsc = run_json([binary, "check", "--data", data, "--read-data", "--json"],
                                 os.path.join(work, "check.log"), timeout=7200)
    final["check"] = (rcc, check, secsc)
    rcs, stats, _ = run_json([binary, "stats", "--data", data, "--json"], os.path.join(work, "check.log"))
    final["stats"] = stats
    final["stats_text"] = subprocess.run([binary, "stats", "--data", data], capture_output=True, text=True).stdout

    report = write_report(args, version, work, server, collector, ledger, kills, final, t_load,
                          time.time() - t_start)
    print(report)
    losses, _ = split_losses(collector, ledger, final)
    failed = (losses or rc != 0 or rc0 != 0 or rcc != 0 or unexpected_refusals(collector, ledger, args))
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    else:
        log(f"work dir kept: {work}")
    return 1 if failed else 0


def unexpected_refusals(collector, ledger, args):
    """Refusals of a push that took less than --grace (from its first blob
    HEAD to the manifest PUT's answer) during which no grace-0 collection
    ran."""
    out = []
    zero = [(r["start"], r["end"]) for r in collector.runs if r["grace"] == 0]
    for ref in ledger.refusals:
        if ref["t1"] - ref["t0"] >= args.grace:
            continue
        if any(s <= ref["t1"] and e >= ref["t0"] for s, e in zero):
            continue
        out.append(ref)
    return out


def in_grace0_window(collector, ledger, digest):
    """Whether the acknowledged PUT of manifest `digest` overlapped a
    grace-0 collection run (the window gc.rs documents for a grace period
    shorter than a request)."""
    span = ledger.acked.get(digest)
    if not span:
        return False
    return any(r["grace"] == 0 and r["start"] <= span[1] and r["end"] >= span[0] for r in collector.runs)


def split_losses(collector, ledger, final):
    """(losses, losses in the grace-0 window): violations during the run
    and problems of the final pull checks."""
    import re
    items = [(json.dumps(v), v.get("manifest") or v.get("got") or (v.get("want") or [None])[0])
             for v in ledger.violations]
    for p in final["pull1"][2] + final["pull2"][2]:
        m = re.search(r"\((sha256:[0-9a-f]{64})\)", p)
        items.append((p, m.group(1) if m else None))
    window = [t for t, d in items if d and in_grace0_window(collector, ledger, d)]
    return [t for t, d in items if not (d and in_grace0_window(collector, ledger, d))], window


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def server_log_counts(path):
    restored = removed = waited = recovered = 0
    bg = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if "recovered the store:" in line and "had set aside restored and" in line:
                    recovered += 1
                    try:
                        tail = line.split("half-made session(s) removed, ")[1]
                        restored += int(tail.split()[0])
                        removed += int(tail.split("restored and ")[1].split()[0])
                    except (IndexError, ValueError):
                        pass
                if "waiting for the garbage collection another process runs" in line:
                    waited += 1
                if "collected: removed" in line:
                    bg += 1
    except OSError:
        pass
    return {"recoveries that changed something": recovered, "set-aside blobs restored at start": restored,
            "set-aside blobs removed at start": removed, "starts that waited for a collection's lock": waited,
            "background collections completed (server)": bg}


def write_report(args, version, work, server, collector, ledger, kills, final, t_load, t_total):
    runs = collector.runs
    done = [r for r in runs if r["rc"] == 0 and not r["killed"]]
    killed = [r for r in runs if r["killed"]]
    failed = [r for r in runs if r["rc"] != 0 and not r["killed"]]
    coll = [r["collection"] for r in done if r["collection"]]
    tot = lambda k: sum(c.get(k, 0) for c in coll)
    unexpected = unexpected_refusals(collector, ledger, args)
    srv = server_log_counts(server.logf)
    c = ledger.counts
    rc, js, secs = final["collection"]
    rc0, js0, secs0 = final["collection0"]
    rcc, check, secsc = final["check"]
    check = check or {}
    stats = final["stats"] or {}

    def ok(b):
        return "ok" if b else "**FAILED**"

    losses, window = split_losses(collector, ledger, final)
    lines = [
        "# Garbage collection under kill -9: crash safety (bench/gc-stress.py)",
        "",
        f"Command: `{' '.join(['python3 bench/gc-stress.py'] + sys.argv[1:])}`",
        "",
        f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}, {version}, {os.cpu_count()} cores, "
        f"load average at the end {os.getloadavg()[0]:.1f}. Load phase {t_load:.0f} s "
        f"(--duration {args.duration}), whole run {t_total:.0f} s. Seed {args.seed}.",
        "",
        f"Setup: {args.clients} client threads over {args.repos} shared repositories, {args.tags} tags each; "
        f"`blockreg gc --delete-untagged` back to back with grace {args.grace} s, every "
        f"{args.grace0_every}th run grace 0 s ({'never' if not args.grace0_every else 'on'}), {args.gc_kill:.0%} of runs killed (SIGKILL) at a random moment; "
        f"server killed (SIGKILL) every {args.kill_min}-{args.kill_max} s and restarted at once; the server's own "
        f"background collection {'on, every ' + str(args.server_gc_interval) + ' s with grace ' + str(args.server_gc_grace) + ' s' if args.server_gc else 'off'}.",
        "",
        "| property | result |",
        "|---|---|",
        f"| acknowledged pushes lost, tags naming a manifest the ledger does not allow, kept manifests with a blob that does not pull (during the run and in the final checks) | {len(losses)} {ok(not losses)} |",
        f"| the same, for manifests whose acknowledged PUT overlapped a grace-0 run (the window of a grace shorter than a request) | {len(window)} |",
        f"| final collection with the server serving (grace {args.grace} s) completes | exit {rc}, {secs:.1f} s {ok(rc == 0)} |",
        f"| every listed tag pulls byte-exact and agrees with the ledger; every acknowledged tag listed | {final['pull1'][0]} tags, {final['pull1'][1]} blobs, {len(final['pull1'][2])} problems {ok(not final['pull1'][2])} |",
        f"| collection with grace 0 s afterwards | exit {rc0}, {secs0:.1f} s, removed {(js0 or {}).get('blobs_removed', '-')} blobs, {(js0 or {}).get('manifests_removed', '-')} manifests {ok(rc0 == 0)} |",
        f"| the same pull check after it | {final['pull2'][0]} tags, {final['pull2'][1]} blobs, {len(final['pull2'][2])} problems {ok(not final['pull2'][2])} |",
        f"| `blockreg check --read-data` (server stopped) | exit {rcc}: {check.get('blocks', '-')} blocks ({check.get('bad_blocks', '-')} bad), {check.get('blobs', '-')} blobs ({check.get('bad_blobs', '-')} bad), {check.get('manifests', '-')} manifests ({check.get('bad_manifests', '-')} bad, i.e. naming a missing blob or child), {check.get('unreferenced_blobs', '-')} unreferenced blobs, {check.get('unindexed_packs', '-')} packs no record names; {secsc:.0f} s {ok(rcc == 0)} |",
        f"| manifest pushes refused (MANIFEST_BLOB_UNKNOWN) that the grace period should have prevented (push younger than {args.grace} s, no grace-0 run during it) | {len(unexpected)} {ok(not unexpected)} |",
        "",
        "| counter | value |",
        "|---|---:|",
        f"| server kills (SIGKILL) | {kills} |",
        f"| server restart, until `/v2/` answers: median / max | {median(server.restart_secs[1:]):.2f} s / {max(server.restart_secs[1:] or [0]):.2f} s |",
        f"| `blockreg gc` runs: completed / killed / failed | {len(done)} / {len(killed)} / {len(failed)} |",
        f"| of them with grace 0 s (completed) | {sum(1 for r in done if r['grace'] == 0)} |",
        f"| completed run time: median / max | {median([r['end'] - r['start'] for r in done]):.2f} s / {max([r['end'] - r['start'] for r in done] or [0]):.2f} s |",
        f"| removed by completed runs: blobs / manifests / packs whole / packs rewritten | {tot('blobs_removed')} / {tot('manifests_removed')} / {tot('packs_removed')} / {tot('packs_repacked')} |",
    ]
    for k, v in srv.items():
        lines.append(f"| {k} | {v} |")
    for k in sorted(c):
        lines.append(f"| {k} | {c[k]} |")
    lines += [
        f"| manifest pushes refused (MANIFEST_BLOB_UNKNOWN), all; then uploaded again | {len(ledger.refusals)} |",
        f"| unexpected statuses and errors (not losses; listed below) | {len(ledger.errors)} |",
        f"| conversion backlog after the load: blobs still pending after waiting {final['converted'][1]:.0f} s | {final['converted'][0]} |",
        f"| store at the end: stored bytes / blobs / manifests / unreferenced blobs / packs / blocks | {stats.get('stored_bytes', '-')} / {stats.get('blobs', '-')} / {stats.get('manifests', '-')} / {stats.get('unreferenced_blobs', '-')} / {stats.get('packs', '-')} / {stats.get('blocks', '-')} |",
        "",
    ]
    problems = list(check.get("problems") or [])
    if losses or window or problems or unexpected:
        lines += ["## Failures", ""]
        lines += [f"- loss: `{t[:400]}`" for t in losses[:40]]
        lines += [f"- loss in a grace-0 window: `{t[:400]}`" for t in window[:40]]
        lines += [f"- check: {p}" for p in problems[:40]]
        lines += [f"- unexpected refusal: `{json.dumps(u)[:400]}`" for u in unexpected[:20]]
        lines.append("")
    if window:
        # When were those PUTs, against the overlapping grace-0 runs'
        # `started` (the collection's `now`, whole Unix seconds; its cutoff
        # with grace 0, and only what is newer than the cutoff is kept)?
        lines += ["Timing of the manifests lost in grace-0 windows: the acknowledged PUT (sent → acknowledged) "
                  "against the overlapping grace-0 collection's `started` (whole seconds; with grace 0 also its cutoff):", ""]
        seen = set()
        for v in ledger.violations:
            d = v.get("manifest") or v.get("got") or (v.get("want") or [None])[0]
            if not d or d in seen or not in_grace0_window(collector, ledger, d):
                continue
            seen.add(d)
            t_put, t_ack = ledger.acked[d]
            for r in collector.runs:
                if r["grace"] == 0 and r["start"] <= t_ack and r["end"] >= t_put:
                    coll = r["collection"] or {}
                    st = coll.get("started")
                    if st:
                        # The collection began at most its duration before
                        # the process exited.
                        began = r["end"] - coll.get("duration_ms", 0) / 1000
                        rel = (f"PUT {t_put - st:+.3f} s → {t_ack - st:+.3f} s from `started`; sent "
                               f"{t_put - began:+.3f} s after the collection began (at the latest); same second: "
                               f"{'yes' if int(t_put) == st or int(t_ack) == st else 'no'}")
                    else:
                        rel = "run killed (no record)"
                    lines.append(f"- {v['kind']} ({d[:19]}…): {rel}")
        lines.append("")
    if ledger.errors:
        kinds = {}
        for e in ledger.errors:
            kinds.setdefault(e["kind"], []).append(e)
        lines += ["## Unexpected statuses and errors", ""]
        for k, es in kinds.items():
            lines.append(f"- {k}: {len(es)}, e.g. `{json.dumps(es[0])[:300]}`")
        lines.append("")
    lines += ["`blockreg stats` at the end:", "", "```", (final.get("stats_text") or "").rstrip(), "```", "",
              "Work dir (kept when something failed or with --keep): `" + work + "`", ""]
    text = "\n".join(lines)
    out = args.report or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                      "gc-stress-short.md" if args.short else "gc-stress.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    log(f"written to {out}")
    return text


# ---------------------------------------------------------------- latency


def latency(args):
    """Push a fresh image (args.layers layers of ~args.layer_kib KiB, fresh
    content each time) and pull it back, args.iterations times; delete it
    afterwards so a collection has garbage to work on. Prints JSON."""
    u = urllib.parse.urlsplit(args.url)
    http_ = Http(u.hostname, u.port, timeout=600)
    rng = random.Random(args.seed)
    pool = Pool(args.seed, nfiles=64, nlayers=0, big=0)
    out = {"push": [], "pull": [], "total": [], "refused": 0}
    for i in range(args.iterations):
        note = f"lat-{args.seed}-{i}-{time.time()}"
        layers = []
        for j in range(args.layers):
            files = rng.sample(pool.files, 6)
            files.append(("payload.bin", rng.randbytes(args.layer_kib * 1024 // 2)
                          + text_file(rng, args.layer_kib * 1024 // 2)))
            gz, diff = make_layer(files, f"{note}-{j}")
            layers.append((sha256(gz), gz, diff))
        cd, config, manifest = make_image(layers, note)
        repo, tag = args.repo, f"i{i}"
        t0 = time.time()
        for d, data in [(d, gz) for d, gz, _ in layers] + [(cd, config)]:
            st, _, body = http_.request("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data,
                                        {"Content-Type": "application/octet-stream"})
            if st != 201:
                raise SystemExit(f"upload of {d}: {st} {body[:200]!r}")
        st, _, body = http_.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": OCI_MANIFEST})
        if st != 201:
            out["refused"] += 1
            raise SystemExit(f"manifest PUT: {st} {body[:300]!r}")
        t1 = time.time()
        st, _, mb = http_.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        if st != 200 or sha256(mb) != sha256(manifest):
            raise SystemExit(f"manifest GET: {st}")
        for d, size in manifest_blobs(mb):
            st, _, data = http_.request("GET", f"/v2/{repo}/blobs/{d}")
            if st != 200 or sha256(data) != d or len(data) != size:
                raise SystemExit(f"blob GET {d}: {st}")
        t2 = time.time()
        http_.request("DELETE", f"/v2/{repo}/manifests/{sha256(manifest)}")
        out["push"].append(round(t1 - t0, 3))
        out["pull"].append(round(t2 - t1, 3))
        out["total"].append(round(t2 - t0, 3))
    print(json.dumps(out))
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd")
    lat = sub.add_parser("latency", help="push + pull of a fresh image, timed (JSON on stdout)")
    lat.add_argument("--url", required=True)
    lat.add_argument("--repo", default="latency/img")
    lat.add_argument("--iterations", type=int, default=5)
    lat.add_argument("--layers", type=int, default=3)
    lat.add_argument("--layer-kib", type=int, default=4096)
    lat.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=600, help="seconds of load (600)")
    p.add_argument("--short", action="store_true", help="smoke run: 90 s, kills every 1-3 s")
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--repos", type=int, default=3)
    p.add_argument("--tags", type=int, default=6, help="tags per client")
    p.add_argument("--kill-min", type=float, default=0.5, help="shortest life of the server, s (0.5)")
    p.add_argument("--kill-max", type=float, default=5.0, help="longest life of the server, s (5)")
    p.add_argument("--min-kills", type=int, default=100, help="go on past --duration until this many kills (100)")
    p.add_argument("--grace", type=int, default=30, help="grace of the gc runs, seconds (30)")
    p.add_argument("--grace0-every", type=int, default=0, help="every Nth gc run uses grace 0 (0: never)")
    p.add_argument("--gc-kill", type=float, default=0.25, help="share of gc runs killed (0.25)")
    p.add_argument("--gc-pause", type=float, default=2.0,
                   help="longest pause between gc runs, s (2: conversion gets the store lock now and then)")
    p.add_argument("--convert-wait", type=float, default=300,
                   help="at the end, wait up to this long for the conversion backlog (300 s)")
    p.add_argument("--no-server-gc", dest="server_gc", action="store_false",
                   help="keep the server's background collection off")
    p.add_argument("--server-gc-interval", type=int, default=2)
    p.add_argument("--server-gc-grace", type=int, default=80)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--blockreg", help="binary (target/release/blockreg); a private copy is run")
    p.add_argument("--work", help="work dir (a new temporary one)")
    p.add_argument("--report", help="report file (bench/results/gc-stress.md)")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    args = p.parse_args()
    if args.cmd == "latency":
        return latency(args)
    if args.short:
        if args.duration == 600:
            args.duration = 90
        if args.min_kills == 100:
            args.min_kills = 10
    return stress(args)


if __name__ == "__main__":
    sys.exit(main())
