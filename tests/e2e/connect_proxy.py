#!/usr/bin/env python3
"""A tiny HTTP CONNECT proxy for the end-to-end tests (stdlib only).

    connect_proxy.py --allow registry.blockreg.test [--port 0] [--port-file F]

Listens on 127.0.0.1 only. A `CONNECT NAME:PORT` whose NAME is one of the
--allow names is tunnelled to 127.0.0.1:PORT; every other host, and every
request that is not a CONNECT, is refused (403 / 405) and nothing is
connected. This lets a Docker engine reach a registry under a name that
resolves nowhere (so docker does not treat it as an insecure loopback
registry and verifies its TLS certificate), with HTTPS_PROXY pointing here.

Each request line and its outcome is logged to stderr, one line each. The
port actually bound (useful with --port 0) is written to --port-file
(atomically) once the socket listens.
"""

import argparse
import os
import socket
import sys
import threading

MAX_HEAD = 16384


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def pipe(src, dst):
    """Copy bytes from src to dst until EOF, then half-close dst."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def read_head(conn):
    """The request head (up to the blank line) and any bytes read past it."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            return None, b""
        buf += chunk
        if len(buf) > MAX_HEAD:
            return None, b""
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def answer(conn, status):
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())


def handle(conn, peer, allow):
    upstream = None
    try:
        conn.settimeout(30)
        head, rest = read_head(conn)
        if head is None:
            return
        line = head.split("\r\n", 1)[0]
        parts = line.split()
        if len(parts) != 3 or parts[0].upper() != "CONNECT":
            log(f"refused {line!r} from {peer}: not a CONNECT")
            answer(conn, "405 Method Not Allowed")
            return
        host, sep, port = parts[1].rpartition(":")
        host = host.strip("[]").lower()
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            log(f"refused {line!r}: no port")
            answer(conn, "400 Bad Request")
            return
        if host not in allow:
            log(f"refused CONNECT {parts[1]}: host not allowed")
            answer(conn, "403 Forbidden")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        except OSError as e:
            log(f"CONNECT {parts[1]} -> 127.0.0.1:{port} failed: {e}")
            answer(conn, "502 Bad Gateway")
            return
        log(f"CONNECT {parts[1]} -> 127.0.0.1:{port}")
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.settimeout(None)
        upstream.settimeout(None)
        if rest:
            upstream.sendall(rest)
        back = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
        back.start()
        pipe(conn, upstream)
        back.join()
    except OSError as e:
        log(f"connection from {peer}: {e}")
    finally:
        for s in (conn, upstream):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--allow", action="append", required=True,
                    help="a host name tunnelled to 127.0.0.1 (repeatable)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    allow = {a.lower() for a in args.allow}

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(64)
    port = srv.getsockname()[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    log(f"connect proxy on 127.0.0.1:{port}, tunnelling {sorted(allow)}")
    while True:
        conn, peer = srv.accept()
        threading.Thread(target=handle, args=(conn, peer, allow), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
