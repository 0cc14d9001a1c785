#!/usr/bin/env python3
"""A token server for registry:2's token authentication, for the e2e tests.

Python stdlib only; ES256 signatures are made by the `openssl` CLI.

    token_server.py serve --key KEY.pem --cert CERT.pem --issuer ISS \\
        --service SVC --user NAME:PASSWORD:PATTERN=ACTIONS[,PATTERN=ACTIONS...] \\
        [--port 0] [--port-file F] [--ttl 300]
    token_server.py mint --key KEY.pem [--cert CERT.pem] --iss ISS --aud SVC \\
        [--sub NAME] [--access TYPE:NAME:ACTIONS ...] [--exp-in SECS] \\
        [--nbf-in SECS] [--alg ES256|none]

`serve` listens on 127.0.0.1 and answers the token protocol of the
docker/distribution token spec at GET /token: `service` must be the
configured one; `scope` (repeatable, or space-separated) asks for
`repository:NAME:ACTIONS`; HTTP Basic credentials name a user (without them
the token is anonymous: no `sub` grants, empty `access`; wrong ones get
401). Each requested action is granted when one of the user's patterns
matches the repository (fnmatch; `*` also crosses `/`) and lists the
action (`*` is every action). The answer is
`{"token", "access_token", "expires_in", "issued_at"}`.

The JWT (JWS compact form) carries iss, sub, aud, exp, nbf, iat, jti and
access; its header alg ES256, typ JWT, kid (libtrust's fingerprint of the
public key) and x5c (the certificate, base64 DER), so registry:2 (which
follows kid or x5c) and registries that try every certificate of their
bundle can both verify it.

`mint` prints one token built from its arguments, for tests that need
tokens the server would never issue: expired (--exp-in -3600), not yet
valid (--nbf-in 3600), for another audience or issuer, signed by another
key (forged), or unsigned (--alg none).
"""

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ALL_ACTIONS = ("pull", "push", "delete")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_der(path):
    """The DER bytes of the first PEM object in path."""
    text = open(path).read()
    m = re.search(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", text, re.S)
    if not m:
        raise SystemExit(f"{path}: no PEM object")
    return base64.b64decode("".join(m.group(2).split()))


def der_read(data, pos):
    """One DER TLV at pos: (tag, value, next position)."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, data[pos:pos + length], pos + length


def ecdsa_der_to_raw(der, size=32):
    """A DER `SEQUENCE { INTEGER r, INTEGER s }` as JWS's r || s."""
    tag, seq, _ = der_read(der, 0)
    if tag != 0x30:
        raise ValueError("ECDSA signature is not a DER SEQUENCE")
    tag_r, r, pos = der_read(seq, 0)
    tag_s, s, _ = der_read(seq, pos)
    if tag_r != 0x02 or tag_s != 0x02:
        raise ValueError("ECDSA signature does not hold two INTEGERs")
    r = int.from_bytes(r, "big").to_bytes(size, "big")
    s = int.from_bytes(s, "big").to_bytes(size, "big")
    return r + s


def libtrust_kid(cert_path):
    """libtrust's key ID: the SHA-256 of the SubjectPublicKeyInfo DER, first
    240 bits, base32, in 12 groups of 4 separated by ':'."""
    spki = subprocess.run(
        ["openssl", "x509", "-in", cert_path, "-noout", "-pubkey"],
        check=True, capture_output=True).stdout
    spki_der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=spki, check=True, capture_output=True).stdout
    digest = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(digest[i:i + 4] for i in range(0, 48, 4))


class Signer:
    """Signs JWTs with an EC P-256 key (ES256) through `openssl dgst`."""

    def __init__(self, key, cert=None, alg="ES256"):
        self.key = key
        self.alg = alg
        self.header = {"typ": "JWT", "alg": alg}
        if cert:
            self.header["x5c"] = [base64.b64encode(pem_der(cert)).decode()]
            self.header["kid"] = libtrust_kid(cert)

    def token(self, claims):
        signing_input = (b64url(json.dumps(self.header, separators=(",", ":")).encode())
                         + "." + b64url(json.dumps(claims, separators=(",", ":")).encode()))
        if self.alg == "none":
            return signing_input + "."
        if self.alg != "ES256":
            raise SystemExit(f"unsupported alg {self.alg}")
        der = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.key],
            input=signing_input.encode(), check=True, capture_output=True).stdout
        return signing_input + "." + b64url(ecdsa_der_to_raw(der))


def claims_for(iss, sub, aud, access, now, ttl, nbf=None):
    return {
        "iss": iss,
        "sub": sub,
        "aud": aud,
        "exp": now + ttl,
        "nbf": now if nbf is None else nbf,
        "iat": now,
        "jti": secrets.token_hex(16),
        "access": access,
    }


def parse_scope(scope):
    """`repository:NAME:ACTIONS` -> (type, name, [actions]), or None.
    NAME may hold ':' (a registry host with a port is not one, but be lenient)."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not name:
        return None
    return typ, name, [a for a in actions.split(",") if a]


def parse_user(spec):
    """NAME:PASSWORD:PATTERN=ACTIONS[,PATTERN=ACTIONS...] -> (name, password, grants).
    Actions within one pattern are separated by '+', e.g. e2e/**=pull+push."""
    name, password, grants_spec = spec.split(":", 2)
    grants = []
    for g in grants_spec.split(","):
        if not g:
            continue
        pattern, _, actions = g.partition("=")
        acts = set(actions.split("+"))
        if "*" in acts:
            acts = set(ALL_ACTIONS)
        grants.append((pattern, acts))
    return name, password, grants


class TokenServer:
    def __init__(self, args):
        self.signer = Signer(args.key, args.cert)
        self.issuer = args.issuer
        self.service = args.service
        self.ttl = args.ttl
        self.users = {}
        for spec in args.user or []:
            name, password, grants = parse_user(spec)
            self.users[name] = (password, grants)

    def grant(self, user, typ, name, actions):
        if typ != "repository" or user is None:
            return []
        _, grants = self.users[user]
        allowed = set()
        for pattern, acts in grants:
            if fnmatch.fnmatchcase(name, pattern):
                allowed |= acts
        want = set(ALL_ACTIONS) if "*" in actions else set(actions)
        return [a for a in ALL_ACTIONS if a in want and a in allowed]


def make_handler(ts):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            print(f"{self.address_string()} {fmt % a}", file=sys.stderr, flush=True)

        def reply(self, status, body, extra=None):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path != "/token":
                self.reply(404, {"errors": [{"code": "NOT_FOUND", "message": url.path}]})
                return
            q = parse_qs(url.query)
            service = q.get("service", [""])[0]
            if service != ts.service:
                self.reply(400, {"errors": [{"code": "UNSUPPORTED",
                                             "message": f"unknown service {service!r}"}]})
                return
            user = None
            auth = self.headers.get("Authorization", "")
            if auth:
                scheme, _, cred = auth.partition(" ")
                try:
                    name, _, password = base64.b64decode(cred.strip()).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    name, password = "", None
                if scheme.lower() != "basic" or name not in ts.users \
                        or not secrets.compare_digest(ts.users[name][0], password or ""):
                    self.log_message("login refused for %r", name)
                    self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                 "message": "wrong user name or password"}]},
                               {"WWW-Authenticate": 'Basic realm="e2e-token-server"'})
                    return
                user = name
            access = []
            scopes = [s for value in q.get("scope", []) for s in value.split()]
            for scope in scopes:
                parsed = parse_scope(scope)
                if parsed is None:
                    continue
                typ, name, actions = parsed
                granted = ts.grant(user, typ, name, actions)
                if granted:
                    access.append({"type": typ, "name": name, "actions": granted})
            now = int(time.time())
            token = ts.signer.token(claims_for(ts.issuer, user or "", ts.service, access, now, ts.ttl))
            self.log_message("token for %r: asked %s, granted %s", user or "", scopes,
                             json.dumps(access, separators=(",", ":")))
            self.reply(200, {
                "token": token,
                "access_token": token,
                "expires_in": ts.ttl,
                "issued_at": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            })

    return Handler


def serve(args):
    ts = TokenServer(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(ts))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.port_file:
        tmp = f"{args.port_file}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"token server on 127.0.0.1:{port} (issuer {ts.issuer!r}, service {ts.service!r}, "
          f"users {sorted(ts.users)})", file=sys.stderr, flush=True)
    httpd.serve_forever()


def mint(args):
    access = []
    for spec in args.access or []:
        parsed = parse_scope(spec)
        if parsed is None:
            raise SystemExit(f"--access {spec!r}: want TYPE:NAME:ACTIONS")
        typ, name, actions = parsed
        access.append({"type": typ, "name": name, "actions": actions})
    now = int(time.time())
    claims = claims_for(args.iss, args.sub, args.aud, access, now, args.exp_in,
                        nbf=now + args.nbf_in)
    if args.exp_in < 0:
        # An expired token was issued (and valid) before it expired.
        claims["iat"] = claims["nbf"] = now + args.exp_in - 300
    print(Signer(args.key, args.cert, args.alg).token(claims))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--key", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--issuer", required=True)
    s.add_argument("--service", required=True)
    s.add_argument("--user", action="append",
                   help="NAME:PASSWORD:PATTERN=ACTIONS[,...]; actions joined by +")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--port-file")
    s.add_argument("--ttl", type=int, default=300)
    m = sub.add_parser("mint")
    m.add_argument("--key", required=True)
    m.add_argument("--cert")
    m.add_argument("--iss", required=True)
    m.add_argument("--aud", required=True)
    m.add_argument("--sub", default="")
    m.add_argument("--access", action="append", help="TYPE:NAME:ACTIONS (repeatable)")
    m.add_argument("--exp-in", type=int, default=300, help="exp = now + SECS (negative: expired)")
    m.add_argument("--nbf-in", type=int, default=0, help="nbf = now + SECS")
    m.add_argument("--alg", default="ES256", choices=["ES256", "none"])
    args = ap.parse_args()
    if args.cmd == "serve":
        serve(args)
    else:
        mint(args)


if __name__ == "__main__":
    main()
