#!/usr/bin/python3
# fake_upstream.py — a misbehaving OCI registry for Sluice's integration tests.
#
# Run as its own process (conftest.FakeUpstream starts it and stops it by PID):
#     python3 fake_upstream.py [--port 0]
# It binds 127.0.0.1 only, prints "LISTENING <port>" on stdout once it accepts
# connections, and serves the OCI pull API for objects the test uploads through
# a control API under /_control/ (JSON):
#   POST /_control/blob?repo=R                body = blob bytes -> {"digest": ...}
#   POST /_control/manifest?repo=R[&tag=T]    body = manifest, Content-Type = its
#                                             media type -> {"digest": ...}
#   POST /_control/config                     {"mode": ..., "modes": {digest: mode},
#                                              "drop_after": N, "stall_seconds": S,
#                                              "auth": null | {"username", "password",
#                                              "token_ttl"}, "redirect_blobs": bool}
#                                             (keys given replace the current ones)
#   GET  /_control/requests                   every request seen, in order
#   POST /_control/reset                      forget the request log
#
# Modes (per object digest, else the global "mode"):
#   ok        correct bytes; honours a single "Range: bytes=a-b|a-" (206)
#   corrupt   right length, one byte flipped (also in ranged responses)
#   truncate  Content-Length of the full (or ranged) body, half of it sent, then
#             the connection is closed
#   stall     status line and headers sent, then nothing for stall_seconds
#   error500  500 with an OCI error body (GET and HEAD)
# A global "mode" of error500 or stall also applies to unknown objects (the
# whole upstream is failing); other global modes answer 404 for them.
#   drop      a GET without Range gets headers for the full body, `drop_after`
#             bytes, then a close; a GET with Range is served correctly (resume)
# garbage_deltas: poses as a parent Sluice (Sluice-Capabilities on every
# answer) and answers blob GETs that carry A-IM with 226 and junk bytes.
# Auth: with "auth" set every /v2/ request needs "Authorization: Bearer <t>" for
# a token issued by GET /token (Basic username:password, service=test,
# scope=repository:REPO:pull); otherwise 401 with a WWW-Authenticate Bearer
# challenge. redirect_blobs ("same-host": to this very listener) answers blob GETs with 307 to
# http://127.0.0.1:<storage port>/_storage/<digest>, a second listener of this
# process standing for object storage on another host, as registries backed by
# object storage do (the log shows whether the client sent Authorization there).
# Startup line: "LISTENING <registry port> <storage port>".
import argparse
import base64
import hashlib
import json
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
STATE = {
    "blobs": {},        # (repo, digest) -> bytes
    "manifests": {},    # (repo, digest) -> (media_type, bytes)
    "tags": {},         # (repo, tag) -> digest
    "config": {"mode": "ok", "modes": {}, "drop_after": 0, "stall_seconds": 60,
               "auth": None, "redirect_blobs": False},
    "requests": [],
    "tokens": {},       # token -> (scope, expiry)
}
STOP = threading.Event()
ROUTE = re.compile(r"^/v2/(?P<name>.+)/(?P<kind>blobs|manifests)/(?P<ref>[^/]+)$")
TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

    def log_message(self, fmt, *args):  # quiet; the request log is /_control/requests
        pass

    # -- plumbing ------------------------------------------------------------
    def _record(self):
        u = urlsplit(self.path)
        rec = {"method": self.command, "path": u.path, "port": self.server.server_address[1], "query": u.query,
               "range": self.headers.get("Range"), "authorization": self.headers.get("Authorization"),
               "accept": self.headers.get("Accept"), "time": time.time(), "status": None}
        if not u.path.startswith("/_control/"):
            with LOCK:
                STATE["requests"].append(rec)
        return rec

    def _send(self, rec, status, body=b"", headers=None, head_only=False):
        rec["status"] = status
        self.send_response(status)
        hdrs = {"Content-Length": str(len(body)), "Docker-Distribution-Api-Version": "registry/2.0"}
        if STATE["config"].get("garbage_deltas"):  # pose as a parent Sluice
            hdrs["Sluice-Capabilities"] = "delta=sluice-bsz,vcdiff,dcz"
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            self.send_header(k, v)
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, rec, status, obj, headers=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        self._send(rec, status, json.dumps(obj).encode(), h, head_only=self.command == "HEAD")

    def _oci_error(self, rec, status, code, msg, headers=None):
        self._json(rec, status, {"errors": [{"code": code, "message": msg, "detail": None}]}, headers)

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # -- control API -----------------------------------------------------------
    def _control(self, rec):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/_control/blob" and self.command == "POST":
            data = self._body()
            d = digest_of(data)
            with LOCK:
                STATE["blobs"][(q["repo"], d)] = data
            return self._json(rec, 201, {"digest": d, "size": len(data)})
        if u.path == "/_control/manifest" and self.command == "POST":
            data = self._body()
            d = digest_of(data)
            mt = self.headers.get("Content-Type")
            with LOCK:
                STATE["manifests"][(q["repo"], d)] = (mt, data)
                if q.get("tag"):
                    STATE["tags"][(q["repo"], q["tag"])] = d
            return self._json(rec, 201, {"digest": d, "size": len(data)})
        if u.path == "/_control/config" and self.command == "POST":
            cfg = json.loads(self._body() or b"{}")
            with LOCK:
                STATE["config"].update(cfg)
                out = dict(STATE["config"])
            return self._json(rec, 200, out)
        if u.path == "/_control/requests" and self.command == "GET":
            with LOCK:
                reqs = list(STATE["requests"])
            return self._json(rec, 200, reqs)
        if u.path == "/_control/reset" and self.command == "POST":
            with LOCK:
                STATE["requests"].clear()
            return self._json(rec, 200, {})
        return self._json(rec, 404, {"error": "unknown control path"})

    # -- auth ----------------------------------------------------------------
    def _realm(self):
        return "http://%s:%d/token" % self.server.server_address[:2]

    def _token_endpoint(self, rec, auth):
        want = "Basic " + base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
        if self.headers.get("Authorization") != want:
            return self._json(rec, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                              {"WWW-Authenticate": 'Basic realm="fake"'})
        q = parse_qs(urlsplit(self.path).query)
        scopes = q.get("scope", [])
        ttl = int(auth.get("token_ttl", 300))
        tok = secrets.token_hex(16)
        with LOCK:
            STATE["tokens"][tok] = (" ".join(scopes), time.time() + ttl)
        return self._json(rec, 200, {"token": tok, "access_token": tok, "expires_in": ttl,
                                     "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _authorized(self, auth, repo):
        h = self.headers.get("Authorization") or ""
        if not h.startswith("Bearer "):
            return False
        with LOCK:
            entry = STATE["tokens"].get(h[7:])
        if not entry or entry[1] < time.time():
            return False
        return repo is None or f"repository:{repo}:" in entry[0]

    def _challenge(self, rec, repo):
        ch = f'Bearer realm="{self._realm()}",service="test"'
        if repo:
            ch += f',scope="repository:{repo}:pull"'
        return self._oci_error(rec, 401, "UNAUTHORIZED", "authentication required", {"WWW-Authenticate": ch})

    # -- content ---------------------------------------------------------------
    def _serve_bytes(self, rec, data, headers, mode, cfg):
        size = len(data)
        head = self.command == "HEAD"
        if cfg.get("garbage_deltas"):
            headers = dict(headers, **{"Sluice-Capabilities": "delta=sluice-bsz,vcdiff,dcz"})
        if mode == "error500":
            return self._oci_error(rec, 500, "UNKNOWN", "injected failure")
        if mode == "stall":
            rec["status"] = 200
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            STOP.wait(float(cfg.get("stall_seconds", 60)))
            self.close_connection = True
            return None
        if mode == "corrupt" and size:
            b = bytearray(data)
            b[size // 2] ^= 0xFF
            data = bytes(b)
        status, first, last = 200, 0, size - 1
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and not head:
            first = int(m.group(1))
            last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            if first >= size or first > last:
                return self._send(rec, 416, b"", {"Content-Range": f"bytes */{size}"})
            status = 206
            headers = dict(headers, **{"Content-Range": f"bytes {first}-{last}/{size}"})
        body = data[first:last + 1]
        rec["status"] = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return None
        if mode == "truncate":
            self._write(body[:len(body) // 2])
            self.close_connection = True
        elif mode == "drop" and status == 200:
            self._write(body[:int(cfg.get("drop_after", 0))])
            self.close_connection = True
        else:
            self._write(body)
        return None

    def _write(self, data):
        mv = memoryview(data)
        for i in range(0, len(mv), 256 * 1024):
            self.wfile.write(mv[i:i + 256 * 1024])
        self.wfile.flush()

    def _handle(self):
        rec = self._record()
        u = urlsplit(self.path)
        path = u.path
        try:
            if path.startswith("/_control/"):
                return self._control(rec)
            with LOCK:
                cfg = json.loads(json.dumps(STATE["config"]))
            auth = cfg.get("auth")
            if path == "/token":
                if not auth:
                    return self._json(rec, 404, {"error": "no auth configured"})
                return self._token_endpoint(rec, auth)
            if path.startswith("/_storage/"):
                d = path[len("/_storage/"):]
                with LOCK:
                    data = next((v for (r, dd), v in STATE["blobs"].items() if dd == d), None)
                if data is None:
                    return self._send(rec, 404, b"no such object")
                mode = cfg["modes"].get(d, cfg["mode"])
                return self._serve_bytes(rec, data, {"Content-Type": "application/octet-stream"}, mode, cfg)
            if path == "/v2/" or path == "/v2":
                if auth and not self._authorized(auth, None):
                    return self._challenge(rec, None)
                return self._json(rec, 200, {})
            m = TAGS.match(path)
            if m:
                repo = m.group("name")
                if auth and not self._authorized(auth, repo):
                    return self._challenge(rec, repo)
                with LOCK:
                    tags = [t for (r, t) in STATE["tags"] if r == repo]
                if not tags:
                    return self._oci_error(rec, 404, "NAME_UNKNOWN", "repository name not known to registry")
                return self._json(rec, 200, {"name": repo, "tags": tags})
            m = ROUTE.match(path)
            if not m:
                return self._oci_error(rec, 404, "NOT_FOUND", "no route")
            repo, kind, ref = m.group("name"), m.group("kind"), m.group("ref")
            if auth and not self._authorized(auth, repo):
                return self._challenge(rec, repo)
            if self.command not in ("GET", "HEAD"):
                return self._oci_error(rec, 405, "UNSUPPORTED", "read-only fake")
            if kind == "blobs":
                with LOCK:
                    data = STATE["blobs"].get((repo, ref))
                if data is None:
                    if cfg["mode"] in ("error500", "stall"):  # the whole upstream is failing
                        return self._serve_bytes(rec, b"", {}, cfg["mode"], cfg)
                    return self._oci_error(rec, 404, "BLOB_UNKNOWN", "blob unknown to registry")
                mode = cfg["modes"].get(ref, cfg["mode"])
                if cfg.get("garbage_deltas") and self.headers.get("A-IM"):
                    junk = hashlib.sha256(data).digest() * 64  # not a delta of anything
                    return self._send(rec, 226, junk, {"IM": "sluice-bsz", "Docker-Content-Digest": ref,
                                                       "Delta-Base": self.headers.get("If-None-Match", "")})
                if cfg.get("redirect_blobs") and self.command == "GET":
                    port = (self.server.server_address[1] if cfg["redirect_blobs"] == "same-host"
                            else STATE["storage_port"])
                    return self._send(rec, 307, b"", {"Location": "http://127.0.0.1:%d/_storage/%s" % (
                        port, ref)})
                return self._serve_bytes(rec, data, {"Content-Type": "application/octet-stream",
                                                     "Docker-Content-Digest": ref, "ETag": f'"{ref}"'}, mode, cfg)
            with LOCK:
                d = ref if ref.startswith("sha256:") else STATE["tags"].get((repo, ref))
                entry = STATE["manifests"].get((repo, d)) if d else None
            if entry is None:
                if cfg["mode"] in ("error500", "stall"):
                    return self._serve_bytes(rec, b"", {}, cfg["mode"], cfg)
                return self._oci_error(rec, 404, "MANIFEST_UNKNOWN", "manifest unknown")
            mt, data = entry
            mode = cfg["modes"].get(d, cfg["mode"])
            return self._serve_bytes(rec, data, {"Content-Type": mt, "Docker-Content-Digest": d,
                                                 "ETag": f'"{d}"'}, mode, cfg)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return None

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    storage = Server(("127.0.0.1", 0), Handler)
    STATE["storage_port"] = storage.server_address[1]
    threading.Thread(target=storage.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print(f"LISTENING {srv.server_address[1]} {STATE['storage_port']}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        STOP.set()


if __name__ == "__main__":
    sys.exit(main())
