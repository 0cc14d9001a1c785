#!/usr/bin/env python3
"""A loopback HTTP proxy for tests/e2e (section i) and bench/tls-auth.sh
(standard library only).

Docker treats localhost and 127.0.0.0/8 as insecure registries: it skips
certificate checks there and falls back to plain HTTP. To measure a real,
verified TLS connection the benchmark names its registries with names that do
not resolve (registry.blockreg.test:PORT, plain.blockreg.test:PORT) and gives
dockerd this proxy as HTTPS_PROXY and HTTP_PROXY. The proxy:

  - answers `CONNECT NAME:PORT` for an allowed NAME with 200 and then copies
    bytes both ways between the client and 127.0.0.1:PORT (the TLS session
    runs end to end between docker and the registry);
  - forwards an absolute-form plain HTTP request (`GET http://NAME:PORT/...`,
    what a client sends to an HTTP proxy) to 127.0.0.1:PORT unchanged,
    request line included (HTTP/1.1 servers must accept the absolute form),
    then copies bytes both ways: the same byte-copying path as a tunnel, so
    plain and TLS runs pay the same proxy hop. The connection stays on the
    first request's target (docker's registry client opens one connection
    per request);
  - refuses every other host (403) and never connects anywhere but
    127.0.0.1.

It listens on 127.0.0.1 (port 0 by default: any free port), writes the port
to --port-file once it listens, and prints what it carried (connections and
bytes per target, refusals) to stderr on SIGUSR1, and on SIGTERM or SIGINT
before it exits. Each connection it carries is logged as it opens
(`CONNECT NAME:PORT -> 127.0.0.1:PORT`, or `HTTP ...`): the e2e test checks
that docker came through it.

    python3 tests/e2e/connect_proxy.py --allow registry.blockreg.test \\
        --allow plain.blockreg.test --port-file /tmp/proxy.port
"""

import argparse
import collections
import os
import signal
import socket
import sys
import threading

BUF = 256 * 1024
MAX_HEAD = 64 * 1024

lock = threading.Lock()
stats = collections.defaultdict(lambda: [0, 0, 0])  # target -> [conns, up, down]
refused = collections.Counter()


def pump(src, dst, target, index):
    """Copy src to dst until EOF, then half-close dst."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    total = 0
    try:
        while True:
            n = src.recv_into(buf)
            if not n:
                break
            dst.sendall(view[:n])
            total += n
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        with lock:
            stats[target][index] += total


def read_head(conn):
    """The request head (up to the blank line) and what followed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(8192)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > MAX_HEAD:
            return None, b""
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


def split_hostport(hostport, default_port):
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return hostport.lower(), default_port
    return host.lower(), int(port)


def answer(conn, status):
    try:
        conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass


def handle(conn, allowed):
    upstream = None
    try:
        head, rest = read_head(conn)
        if head is None:
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3:
            answer(conn, b"400 Bad Request")
            return
        method, target, _version = parts
        if method.upper() == "CONNECT":
            host, port = split_hostport(target, 443)
            tunnel = True
        elif target.lower().startswith("http://"):
            hostport = target[len("http://"):].split("/", 1)[0]
            host, port = split_hostport(hostport, 80)
            tunnel = False
        else:
            answer(conn, b"400 Bad Request")
            return
        if host not in allowed:
            with lock:
                refused[host] += 1
            answer(conn, b"403 Forbidden")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", port), timeout=30)
            upstream.settimeout(None)
        except OSError:
            answer(conn, b"502 Bad Gateway")
            return
        for s in (conn, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = "%s %s:%d" % ("CONNECT" if tunnel else "HTTP", host, port)
        print("connect_proxy: %s -> 127.0.0.1:%d" % (key, port), file=sys.stderr, flush=True)
        with lock:
            stats[key][0] += 1
        if tunnel:
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            first = rest
        else:
            first = head + rest
        if first:
            upstream.sendall(first)
            with lock:
                stats[key][1] += len(first)
        back = threading.Thread(target=pump, args=(upstream, conn, key, 2), daemon=True)
        back.start()
        pump(conn, upstream, key, 1)
        back.join()
    except OSError:
        pass
    finally:
        for s in (conn, upstream):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def dump(*_):
    """Print what was carried so far (SIGUSR1)."""
    with lock:
        for key in sorted(stats):
            c, up, down = stats[key]
            print("connect_proxy: %s: %d connections, %d bytes up, %d bytes down" % (key, c, up, down),
                  file=sys.stderr)
        for host, n in sorted(refused.items()):
            print("connect_proxy: refused %s: %d" % (host, n), file=sys.stderr)
    sys.stderr.flush()


def stop(*_):
    dump()
    sys.exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allow", action="append", required=True,
                    help="a host name to send to 127.0.0.1 (any port); repeatable")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--port-file", help="write the listening port here")
    args = ap.parse_args()
    allowed = {h.lower() for h in args.allow}

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(128)
    port = srv.getsockname()[1]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGUSR1, dump)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("connect_proxy: listening on 127.0.0.1:%d for %s" % (port, ", ".join(sorted(allowed))),
          file=sys.stderr, flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=handle, args=(conn, allowed), daemon=True).start()


if __name__ == "__main__":
    main()
