# conftest.py — pytest fixtures and helpers for Sluice's integration tests:
# real peers (Debian's docker-registry, skopeo, curl) and a scriptable fake
# upstream (fake_upstream.py), each a process on 127.0.0.1 with a free port,
# its own temp dir, and stopped by PID at teardown. The sluice daemon is found
# via $SLUICE_BIN (default build/proxy/sluice); tests that need it are skipped
# only when that file does not exist.
#
# Run: /usr/bin/python3 -m pytest tests/integration
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from ocilayout import *  # noqa: E402,F401,F403  (builders, push/pull, digests)
from ocilayout import (ACCEPT_ALL_MANIFESTS, MT_OCI_CONFIG, MT_OCI_LAYER_GZIP, MT_OCI_MANIFEST,  # noqa: E402
                       OciLayout, build_image, canonical_json, push)

SLUICE_BIN = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "build", "proxy", "sluice"))
PYTHON = "/usr/bin/python3"
READY_TIMEOUT = 20.0
SANITIZER_RE = re.compile(
    r"ERROR: (AddressSanitizer|LeakSanitizer|ThreadSanitizer|MemorySanitizer)|"
    r"WARNING: ThreadSanitizer|runtime error: |UndefinedBehaviorSanitizer")


# -- small helpers ----------------------------------------------------------------

def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (bind to :0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body, reason=""):
        self.status, self.headers, self.body, self.reason = status, headers, body, reason

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def json(self):
        return json.loads(self.body)

    def oci_error_codes(self):
        """Codes of an OCI error body ({"errors":[{"code":...}]}); asserts its shape."""
        doc = self.json()
        assert isinstance(doc.get("errors"), list) and doc["errors"], f"not an OCI error body: {self.body[:300]!r}"
        for e in doc["errors"]:
            assert isinstance(e.get("code"), str), f"OCI error without code: {e!r}"
        return [e["code"] for e in doc["errors"]]

    def __repr__(self):
        return f"<Response {self.status} {dict(self.headers)} {self.body[:200]!r}>"


def request(host, method, path, headers=None, body=None, timeout=30.0) -> Response:
    """One HTTP/1.1 request on a fresh connection; the path is sent verbatim
    (no normalisation of '..' or percent escapes). Raises http.client.IncompleteRead
    when the connection closes before Content-Length bytes."""
    h, p = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        data = r.read() if method != "HEAD" else b""
        hdrs = {}
        for k, v in r.getheaders():
            hdrs[k.lower()] = v if k.lower() not in hdrs else hdrs[k.lower()] + ", " + v
        return Response(r.status, hdrs, data, r.reason)
    finally:
        conn.close()


def get(host, path, headers=None, timeout=30.0) -> Response:
    return request(host, "GET", path, headers, timeout=timeout)


def wait_until(pred, timeout=10.0, interval=0.02, what="condition"):
    """Polls pred() until truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _wait_http_ok(url, proc, timeout, name, logfile):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"{name} exited with {proc.returncode}: {_tail(logfile)}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True, None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.05)
    return False, f"{name} not ready at {url} after {timeout}s (last error {last}): {_tail(logfile)}"


def _tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-n:].decode(errors="replace")
    except OSError:
        return ""


def _stop_pid(proc, sig=signal.SIGTERM, timeout=15.0):
    """Signals the process by PID and waits; SIGKILL after timeout. Returns
    (returncode, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    os.kill(proc.pid, sig)
    try:
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=10), True


def parse_metrics(text) -> "Metrics":
    m = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        mm = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$', line)
        assert mm, f"unparseable metrics line: {line!r}"
        name, labels = mm.group(1), {}
        if mm.group(3):
            for lm in re.finditer(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?', mm.group(3)):
                labels[lm.group(1)] = lm.group(2)
        m[(name, tuple(sorted(labels.items())))] = float(mm.group(4))
    return m


class Metrics(dict):
    """{(name, ((label, value), ...)): value} with a summing lookup."""

    def value(self, name, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`; 0 if none."""
        want = set(labels.items())
        return sum(v for (n, ls), v in self.items() if n == name and want <= set(ls))

    def has(self, name) -> bool:
        return any(n == name for (n, _) in self)

    def names(self):
        return sorted({n for (n, _) in self})


# -- docker-registry ------------------------------------------------------------------

ACCESS_LOG_RE = re.compile(r'^(\S+) \S+ \S+ \[[^\]]+\] "(\S+) (\S+) HTTP/[0-9.]+" (\d{3}) (\d+|-)')


class Registry:
    """Debian's docker-registry (distribution 2.8.2) as a plain process.

    Its combined-format access log ('127.0.0.1 - - [date] "GET /v2/... HTTP/1.1"
    200 <bytes> "" "<user agent>"') goes to STDOUT, one line per request once the
    response is written; the structured logrus lines go to stderr. Both are kept
    in files under the test's temp dir.
    """

    def __init__(self, tmpdir):
        self.dir = os.path.join(str(tmpdir), "registry")
        os.makedirs(self.dir, exist_ok=True)
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "registry.log")
        self.proc = None
        self.port = None

    def start(self):
        for attempt in range(3):
            self.port = free_port()
            cfg = os.path.join(self.dir, "config.yml")
            with open(cfg, "w") as f:
                f.write(f"""# docker-registry config for one test
version: 0.1
log: {{level: info}}
storage:
  filesystem: {{rootdirectory: {self.dir}/registry-data}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{self.port}
  secret: sluice-integration-tests
""")
            out = open(self.access_log, "ab")
            err = open(self.error_log, "ab")
            self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL)
            out.close()
            err.close()
            ok, why = _wait_http_ok(self.url + "/v2/", self.proc, READY_TIMEOUT, "docker-registry", self.error_log)
            if ok:
                return self
            _stop_pid(self.proc)
        raise RuntimeError(why)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            _stop_pid(self.proc)

    def requests(self):
        """[(method, uri, status, bytes)] from the access log, in order."""
        out = []
        with open(self.access_log, "r", errors="replace") as f:
            for line in f:
                m = ACCESS_LOG_RE.match(line)
                if m:
                    out.append((m.group(2), m.group(3), int(m.group(4)),
                                int(m.group(5)) if m.group(5) != "-" else 0))
        return out

    def count_requests(self, method, path_regex, status=None) -> int:
        """Requests whose method matches and whose URI (path + query) fully
        matches path_regex (and status, when given)."""
        rx = re.compile(path_regex)
        return sum(1 for (m, uri, st, _) in self.requests()
                   if m == method and rx.fullmatch(uri) and (status is None or st == status))

    def wait_count(self, method, path_regex, n, timeout=5.0) -> int:
        """Waits until at least n matching lines are logged (the registry writes
        a line after the response) and returns the count."""
        wait_until(lambda: self.count_requests(method, path_regex) >= n, timeout,
                   what=f"{n} x {method} {path_regex} in the registry access log")
        return self.count_requests(method, path_regex)

    def manifest(self, repo, ref):
        return get(self.host, f"/v2/{repo}/manifests/{ref}", {"Accept": ACCEPT_ALL_MANIFESTS})

    def blob(self, repo, digest):
        return get(self.host, f"/v2/{repo}/blobs/{digest}")


@pytest.fixture
def registry(tmp_path):
    r = Registry(tmp_path).start()
    yield r
    r.stop()


# -- sluice -----------------------------------------------------------------------------

class Sluice:
    """`sluice serve` on a free port with its cache under the test's temp dir."""

    def __init__(self, binary, upstream, tmpdir, name="sluice", config=None, tag_ttl=None, workers=None,
                 no_sync=True, extra_args=(), env=None):
        self.binary, self.upstream = binary, upstream
        self.dir = os.path.join(str(tmpdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.cache = os.path.join(self.dir, "cache")
        os.makedirs(self.cache, exist_ok=True)
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.config, self.tag_ttl, self.workers = config, tag_ttl, workers
        self.no_sync, self.extra_args = no_sync, list(extra_args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.port = None
        self.stopped_checked = False

    def command(self):
        cmd = [self.binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--cache", self.cache]
        if self.upstream:
            cmd += ["--upstream", self.upstream]
        if self.config:
            cfg = os.path.join(self.dir, "sluice.conf")
            with open(cfg, "w") as f:
                f.write(self.config)
            cmd += ["--config", cfg]
        if self.tag_ttl is not None:
            cmd += ["--tag-ttl", str(self.tag_ttl)]
        if self.workers is not None:
            cmd += ["--workers", str(self.workers)]
        if self.no_sync:
            cmd.append("--no-sync")
        return cmd + self.extra_args

    def start(self):
        why = None
        for attempt in range(3):
            self.port = free_port()
            err = open(self.stderr_path, "ab")
            self.proc = subprocess.Popen(self.command(), stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                         env=self.env)
            err.close()
            ok, why = _wait_http_ok(self.url + "/healthz", self.proc, READY_TIMEOUT, "sluice", self.stderr_path)
            if ok:
                self.stopped_checked = False
                return self
            if self.proc.poll() is None:
                _stop_pid(self.proc, signal.SIGKILL)
            if "in use" not in _tail(self.stderr_path):
                break
        pytest.fail(f"sluice did not start: {' '.join(self.command())}\n{why}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr(self):
        return _tail(self.stderr_path, 1 << 30)

    def stop(self, check=True):
        """SIGTERM by PID; asserts exit code 0 within 15 s and no sanitizer
        report in stderr. Returns stderr."""
        if self.proc is None:
            return ""
        rc, killed = _stop_pid(self.proc, signal.SIGTERM, 15.0)
        text = self.stderr()
        if check and not self.stopped_checked:
            self.stopped_checked = True
            m = SANITIZER_RE.search(text)
            assert not m, f"sanitizer report in sluice stderr:\n{text[max(0, m.start() - 200):m.start() + 6000]}"
            assert not killed, f"sluice did not exit within 15 s of SIGTERM:\n{text[-3000:]}"
            assert rc == 0, f"sluice exited with {rc} after SIGTERM:\n{text[-3000:]}"
        return text

    def kill(self):
        """SIGKILL (crash simulation); no exit-code check."""
        if self.proc is not None and self.proc.poll() is None:
            _stop_pid(self.proc, signal.SIGKILL)
        self.stopped_checked = True

    def restart(self):
        self.stop()
        return self.start()

    def metrics(self) -> Metrics:
        r = get(self.host, "/metrics")
        assert r.status == 200, f"/metrics answered {r.status}"
        return parse_metrics(r.body.decode())

    def settled_metrics(self, timeout=10.0) -> Metrics:
        """/metrics once no transfer is in flight (counters of finished work settled)."""
        box = {}

        def ok():
            box["m"] = self.metrics()
            return box["m"].value("sluice_inflight_transfers") == 0
        wait_until(ok, timeout, 0.05, "sluice_inflight_transfers == 0")
        return box["m"]

    def healthy(self) -> bool:
        try:
            return get(self.host, "/healthz", timeout=5).status == 200
        except OSError:
            return False


@pytest.fixture(scope="session")
def sluice_bin():
    if not os.path.exists(SLUICE_BIN):
        pytest.skip(f"sluice binary not found at {SLUICE_BIN} (build it with `ninja -C build` "
                    f"or set SLUICE_BIN); skipping tests that need the daemon")
    assert os.access(SLUICE_BIN, os.X_OK), f"{SLUICE_BIN} exists but is not executable"
    return SLUICE_BIN


@pytest.fixture
def sluice_factory(sluice_bin, tmp_path):
    """make(upstream_url, **Sluice kwargs) -> started Sluice; all are stopped
    (and checked: exit 0, no sanitizer report) at teardown."""
    started = []

    def make(upstream, **kw):
        kw.setdefault("name", f"sluice{len(started)}")
        s = Sluice(sluice_bin, upstream, tmp_path, **kw)
        started.append(s)
        return s.start()

    yield make
    errors = []
    for s in started:
        try:
            s.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors))


@pytest.fixture
def sluice(sluice_factory, registry):
    """Sluice in front of this test's docker-registry."""
    return sluice_factory(registry.url)


# -- fake upstream ------------------------------------------------------------------------

class FakeUpstream:
    """fake_upstream.py in its own process; see that file for the modes."""

    def __init__(self, tmpdir):
        self.dir = os.path.join(str(tmpdir), "fake-upstream")
        os.makedirs(self.dir, exist_ok=True)
        self.log = os.path.join(self.dir, "stderr.log")
        self.proc = None
        self.port = None

    def start(self):
        err = open(self.log, "ab")
        self.proc = subprocess.Popen([PYTHON, "-u", os.path.join(HERE, "fake_upstream.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        line = self.proc.stdout.readline().decode()
        m = re.match(r"LISTENING (\d+) (\d+)", line)
        if not m:
            _stop_pid(self.proc)
            raise RuntimeError(f"fake upstream did not start: {line!r} {_tail(self.log)}")
        self.port = int(m.group(1))
        self.storage_port = int(m.group(2))  # the "object storage" blob redirects point to
        return self

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        if self.proc is not None:
            _stop_pid(self.proc, signal.SIGTERM, 5.0)
            self.proc.stdout.close()

    def _ctl(self, method, path, body=None, headers=None):
        r = request(self.host, method, path, headers, body)
        assert r.status in (200, 201), f"fake upstream control {path}: {r.status} {r.body!r}"
        return r.json()

    def add_blob(self, repo, data: bytes) -> str:
        return self._ctl("POST", f"/_control/blob?repo={repo}", data)["digest"]

    def add_manifest(self, repo, data: bytes, media_type=MT_OCI_MANIFEST, tag=None) -> str:
        q = f"/_control/manifest?repo={repo}" + (f"&tag={tag}" if tag else "")
        return self._ctl("POST", q, data, {"Content-Type": media_type})["digest"]

    def add_image(self, repo, tag, layer_blobs) -> dict:
        """Uploads config + layers (raw bytes) and an OCI manifest tagged `tag`."""
        cfg = canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": []}})
        cd = self.add_blob(repo, cfg)
        layers = [{"mediaType": MT_OCI_LAYER_GZIP, "digest": self.add_blob(repo, b), "size": len(b)}
                  for b in layer_blobs]
        man = canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                              "config": {"mediaType": MT_OCI_CONFIG, "digest": cd, "size": len(cfg)},
                              "layers": layers})
        md = self.add_manifest(repo, man, MT_OCI_MANIFEST, tag)
        return {"manifest": md, "manifest_bytes": man, "config": cd, "layers": [l["digest"] for l in layers]}

    def configure(self, **cfg) -> dict:
        return self._ctl("POST", "/_control/config", json.dumps(cfg).encode(),
                         {"Content-Type": "application/json"})

    def set_mode(self, mode, digest=None):
        if digest is None:
            return self.configure(mode=mode)
        modes = self._ctl("POST", "/_control/config", b"{}")["modes"]
        modes[digest] = mode
        return self.configure(modes=modes)

    def requests(self, method=None, path_regex=None):
        reqs = self._ctl("GET", "/_control/requests")
        rx = re.compile(path_regex) if path_regex else None
        return [r for r in reqs if (method is None or r["method"] == method)
                and (rx is None or rx.fullmatch(r["path"]))]

    def count(self, method, path_regex) -> int:
        return len(self.requests(method, path_regex))

    def reset_log(self):
        self._ctl("POST", "/_control/reset")


@pytest.fixture
def fake_upstream(tmp_path):
    f = FakeUpstream(tmp_path).start()
    yield f
    f.stop()


# -- content helpers ----------------------------------------------------------------------

def push_image(registry, tmp_path, repo, tag, layer_sizes, name=None, seed=None):
    """Builds an OCI layout with one image and pushes it with skopeo."""
    lay = OciLayout(os.path.join(str(tmp_path), name or f"layout-{repo.replace('/', '_')}-{tag}"))
    img = build_image(lay, layer_sizes, tag=tag, seed=seed)
    push(lay.path, tag, registry.host, repo)
    img["layout"] = lay
    return img


def blob_path_re(repo, digest):
    return re.escape(f"/v2/{repo}/blobs/{digest}")


def manifest_path_re(repo, ref):
    return re.escape(f"/v2/{repo}/manifests/{ref}")


def fetch(host, path, headers=None, method="GET", timeout=30.0) -> dict:
    """Streams a response and hashes it. Returns {"status", "headers" (lower-case
    keys), "digest" (sha256 of what arrived), "length", "complete" (False if the
    connection closed before Content-Length / the last chunk), "body" (only when
    small), "error" (exception text for a closed or reset connection)}."""
    h, p = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=timeout)
    out = {"status": None, "headers": {}, "digest": None, "length": 0, "complete": False, "body": b"",
           "error": None}
    hasher = hashlib.sha256()
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        out["status"] = r.status
        out["headers"] = {k.lower(): v for k, v in r.getheaders()}
        if method == "HEAD":
            out["complete"] = True
            return out
        small = []
        while True:
            try:
                chunk = r.read(256 * 1024)
            except http.client.IncompleteRead as e:
                hasher.update(e.partial)
                out["length"] += len(e.partial)
                out["error"] = f"IncompleteRead({len(e.partial)} more bytes)"
                break
            if not chunk:
                # http.client raises IncompleteRead for a short Content-Length body
                # only on read() without size; check the length ourselves.
                cl = out["headers"].get("content-length")
                out["complete"] = cl is None or int(cl) == out["length"]
                if not out["complete"]:
                    out["error"] = f"connection closed after {out['length']} of {cl} bytes"
                break
            hasher.update(chunk)
            out["length"] += len(chunk)
            if out["length"] <= (1 << 20):
                small.append(chunk)
        out["body"] = b"".join(small) if out["length"] <= (1 << 20) else b""
    except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    out["digest"] = "sha256:" + hasher.hexdigest()
    return out


def prime_manifest(host, repo, ref, accept=ACCEPT_ALL_MANIFESTS) -> Response:
    """GETs a manifest through sluice first, as a real client does before its
    blobs (Sluice may serve a blob only once a manifest referencing it is known)."""
    r = get(host, f"/v2/{repo}/manifests/{ref}", {"Accept": accept})
    assert r.status == 200, f"GET manifest {repo}:{ref} through sluice: {r!r}"
    return r
