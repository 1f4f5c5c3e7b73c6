# test_daemon.py — the daemon's own life cycle against real peers: HTTPS on
# the listener, SIGHUP reload, tag revalidation and stale tags, containerd's
# ?ns= selection, config errors, crash consistency (kill -9 at random points)
# and corruption at rest. Everything on 127.0.0.1, free ports, temp dirs.
import http.client
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (Sluice, build_image, get, OciLayout, pull, push, request, wait_until,
                      ACCEPT_ALL_MANIFESTS, sha256_digest)

MANIFEST_HEADERS = {"Accept": ACCEPT_ALL_MANIFESTS}


def publish(registry, tmp_path, repo, tag, sizes, seed):
    layout = OciLayout(tmp_path / f"layout-{repo.replace('/', '_')}-{tag}-{seed}")
    img = build_image(layout, sizes, tag=tag, seed=seed)
    push(layout.path, tag, registry.host, repo)
    return layout, img


def blob_path(repo, digest):
    return f"/v2/{repo}/blobs/{digest}"


# -- HTTPS listener -----------------------------------------------------------------

def make_cert(d):
    key, crt = os.path.join(d, "key.pem"), os.path.join(d, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return crt, key


class TlsSluice(Sluice):
    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"


def https_get(port, path, cafile, headers=None):
    ctx = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def test_https_listener_serves_verified_bytes(sluice_bin, registry, tmp_path, monkeypatch):
    crt, key = make_cert(str(tmp_path))
    monkeypatch.setenv("SSL_CERT_FILE", crt)  # for the readiness probe (urllib)
    _, img = publish(registry, tmp_path, "tls/app", "v1", [3 << 20, 1000], "tls")
    s = TlsSluice(sluice_bin, registry.url, tmp_path, name="tls",
                  extra_args=["--tls-cert", crt, "--tls-key", key]).start()
    try:
        st, hdrs, body = https_get(s.port, "/v2/tls/app/manifests/v1", crt, MANIFEST_HEADERS)
        assert st == 200 and hdrs["docker-content-digest"] == img["manifest"]["digest"]
        for layer in img["layers"]:
            for _ in range(2):  # a miss streamed over TLS, then a hit (mmap'd segments)
                st, hdrs, body = https_get(s.port, blob_path("tls/app", layer["digest"]), crt)
                assert st == 200 and sha256_digest(body) == layer["digest"]
        # skopeo speaks TLS to it with the CA in a cert dir
        certdir = tmp_path / "certs"
        certdir.mkdir()
        (certdir / "ca.crt").write_bytes(open(crt, "rb").read())
        out = tmp_path / "pulled"
        subprocess.run(["skopeo", "--insecure-policy", "copy", "--preserve-digests", "--src-cert-dir",
                        str(certdir), f"docker://{s.host}/tls/app:v1", f"oci:{out}:v1"],
                       check=True, capture_output=True, timeout=120)
        # plain HTTP on the TLS port is refused, not misread
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            r = get(s.host, "/v2/", timeout=5)
            assert r.status != 200
    finally:
        s.stop()


# -- tags: TTL, revalidation by HEAD, stale fallback ------------------------------------

def test_tag_revalidated_after_ttl_and_stale_when_upstream_down(sluice_factory, registry, tmp_path):
    _, v1 = publish(registry, tmp_path, "drv/mod", "stable", [2000], "v1")
    s = sluice_factory(registry.url, tag_ttl=1)
    r = get(s.host, "/v2/drv/mod/manifests/stable", MANIFEST_HEADERS)
    assert r.status == 200 and r.header("docker-content-digest") == v1["manifest"]["digest"]
    # within the TTL: served from the cache, nothing asked upstream
    before = registry.count_requests("HEAD", r"/v2/drv/mod/manifests/stable")
    r = get(s.host, "/v2/drv/mod/manifests/stable", MANIFEST_HEADERS)
    assert r.header("docker-content-digest") == v1["manifest"]["digest"]
    # after the TTL, unchanged: one HEAD, still the cached manifest
    time.sleep(1.2)
    r = get(s.host, "/v2/drv/mod/manifests/stable", MANIFEST_HEADERS)
    assert r.status == 200 and r.header("docker-content-digest") == v1["manifest"]["digest"]
    assert registry.wait_count("HEAD", r"/v2/drv/mod/manifests/stable", before + 1) == before + 1
    gets = registry.count_requests("GET", r"/v2/drv/mod/manifests/stable")
    assert gets == 1
    # the tag moves upstream: after the TTL the new digest is served
    _, v2 = publish(registry, tmp_path, "drv/mod", "stable", [2000], "v2")
    time.sleep(1.2)
    r = get(s.host, "/v2/drv/mod/manifests/stable", MANIFEST_HEADERS)
    assert r.status == 200 and r.header("docker-content-digest") == v2["manifest"]["digest"]
    assert r.body == v2["manifest_bytes"]
    # upstream gone: the last known digest, with a Warning
    registry.stop()
    time.sleep(1.2)
    r = get(s.host, "/v2/drv/mod/manifests/stable", MANIFEST_HEADERS, timeout=60)
    assert r.status == 200 and r.header("docker-content-digest") == v2["manifest"]["digest"]
    assert r.header("warning") and "110" in r.header("warning")


# -- SIGHUP -------------------------------------------------------------------------------

def test_sighup_reloads_and_rejects_bad_config(sluice_factory, registry, tmp_path):
    publish(registry, tmp_path, "hup/app", "v1", [1000], "hup")
    conf = "[cache]\ntag_ttl = 1h\n"
    s = sluice_factory(registry.url, config=conf)
    cfg_path = os.path.join(s.dir, "sluice.conf")
    assert get(s.host, "/v2/hup/app/manifests/v1", MANIFEST_HEADERS).status == 200
    assert get(s.host, "/v2/hup/app/manifests/v1", MANIFEST_HEADERS).status == 200
    assert registry.count_requests("HEAD", r"/v2/hup/app/manifests/v1") == 0
    # tag_ttl = 0 after SIGHUP: every tag request revalidates
    with open(cfg_path, "w") as f:
        f.write("[cache]\ntag_ttl = 0\n")
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in s.stderr(), 5, what="reload logged")
    assert get(s.host, "/v2/hup/app/manifests/v1", MANIFEST_HEADERS).status == 200
    assert registry.wait_count("HEAD", r"/v2/hup/app/manifests/v1", 1) == 1
    # a broken file is refused with file:line and the daemon keeps serving
    with open(cfg_path, "w") as f:
        f.write("[cache]\ntag_ttl = soon\n")
    os.kill(s.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reload refused" in s.stderr(), 5, what="refusal logged")
    assert re.search(r"sluice\.conf:2: ", s.stderr())
    assert get(s.host, "/v2/hup/app/manifests/v1", MANIFEST_HEADERS).status == 200


# -- configuration errors at startup ----------------------------------------------------------

@pytest.mark.parametrize("text,line,what", [
    ("[server]\nlisten = 127.0.0.1:5000\nbogus = 1\n", 3, "bogus"),
    ("[cache]\n\ntag_ttl = forever\n", 3, "tag_ttl"),
    ("[nonsense]\n", 1, "nonsense"),
])
def test_bad_config_names_file_and_line(sluice_bin, tmp_path, text, line, what):
    p = tmp_path / "bad.conf"
    p.write_text(text)
    r = subprocess.run([sluice_bin, "serve", "--config", str(p), "--upstream", "http://127.0.0.1:9"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f"bad.conf:{line}:" in r.stderr and what in r.stderr, r.stderr
    assert not (tmp_path / "cache").exists()


def test_bad_flag_value_is_reported(sluice_bin, tmp_path):
    r = subprocess.run([sluice_bin, "serve", "--upstream", "ftp://x", "--cache", str(tmp_path / "c")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "url" in r.stderr


# -- containerd's ?ns= -------------------------------------------------------------------------

def test_ns_selects_upstream(sluice, registry, tmp_path):
    _, img = publish(registry, tmp_path, "ns/app", "v1", [1000], "ns")
    r = get(sluice.host, f"/v2/ns/app/manifests/v1?ns={registry.host}", MANIFEST_HEADERS)
    assert r.status == 200 and r.header("docker-content-digest") == img["manifest"]["digest"]
    r = get(sluice.host, "/v2/ns/app/manifests/v1?ns=other.registry.example", MANIFEST_HEADERS)
    assert r.status == 404 and r.oci_error_codes() == ["NAME_UNKNOWN"]


# -- crash consistency -------------------------------------------------------------------------

def fetch_all(host, paths, results):
    for p in paths:
        try:
            r = get(host, p, timeout=60)
            results.append((p, r.status, sha256_digest(r.body)))
        except (OSError, http.client.HTTPException):
            results.append((p, None, None))


def test_kill9_at_random_points_leaves_cache_consistent(sluice_factory, registry, tmp_path):
    _, img = publish(registry, tmp_path, "crash/app", "v1", [24 << 20, 9 << 20, 5000], "crash")
    layers = [l["digest"] for l in img["layers"]]
    paths = [blob_path("crash/app", d) for d in layers]
    rng = random.Random(1234)
    s = sluice_factory(registry.url, no_sync=False)
    for round_ in range(4):
        results = []
        threads = [threading.Thread(target=fetch_all, args=(s.host, paths, results)) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.02, 0.4))
        s.kill()
        for t in threads:
            t.join()
        # a client may see a cut, never a complete wrong body
        for p, st, dg in results:
            if st == 200:
                assert dg == layers[paths.index(p)]
        s.start()
        for p, d in zip(paths, layers):
            r = get(s.host, p, timeout=120)
            assert r.status == 200 and sha256_digest(r.body) == d, f"round {round_}: {p}"
    m = s.settled_metrics()
    assert m.value("sluice_digest_mismatches_total") == 0


# -- corruption at rest --------------------------------------------------------------------------

def test_corrupt_cached_blob_is_evicted_and_refetched(sluice_factory, registry, tmp_path):
    _, img = publish(registry, tmp_path, "rot/app", "v1", [2 << 20], "rot")
    digest = img["layers"][0]["digest"]
    s = sluice_factory(registry.url)
    good = get(s.host, blob_path("rot/app", digest))
    assert good.status == 200 and sha256_digest(good.body) == digest
    s.stop()
    # flip one byte of the blob inside LMDB's data file
    data_file = os.path.join(s.cache, "data.mdb")
    raw = bytearray(open(data_file, "rb").read())
    probe = good.body[1 << 20: (1 << 20) + 64]
    at = raw.find(probe)
    assert at > 0, "blob bytes not found in data.mdb"
    with open(data_file, "r+b") as f:
        f.seek(at + 10)
        f.write(bytes([raw[at + 10] ^ 0xFF]))
    s.start()
    r = get(s.host, blob_path("rot/app", digest))
    assert r.status == 200 and sha256_digest(r.body) == digest
    assert s.metrics().value("sluice_corrupt_evictions_total") == 1
    assert registry.wait_count("GET", re.escape(blob_path("rot/app", digest)), 2) == 2


# -- offline mode and the circuit breaker -------------------------------------------------------

def test_offline_serves_only_the_cache(sluice_factory, registry, tmp_path):
    _, img = publish(registry, tmp_path, "off/app", "v1", [3000, 70000], "off")
    s = sluice_factory(registry.url)
    assert pull(s.host, "off/app", "v1", str(tmp_path / "online")) == img["manifest"]["digest"]
    s.stop()
    _, other = publish(registry, tmp_path, "off/app", "v2", [1000], "off2")
    before = len(registry.requests())
    s.extra_args = ["--offline"]
    s.start()
    assert "offline" in s.stderr()
    assert pull(s.host, "off/app", "v1", str(tmp_path / "offline")) == img["manifest"]["digest"]
    r = get(s.host, "/v2/off/app/manifests/v1", MANIFEST_HEADERS)
    assert r.status == 200 and r.header("docker-content-digest") == img["manifest"]["digest"]
    # not cached: 503, never 404, and the upstream is never asked
    r = get(s.host, "/v2/off/app/manifests/v2", MANIFEST_HEADERS)
    assert r.status == 503 and r.oci_error_codes() == ["UNAVAILABLE"]
    r = get(s.host, blob_path("off/app", other["layers"][0]["digest"]))
    assert r.status == 503
    tags = get(s.host, "/v2/off/app/tags/list").json()["tags"]
    assert tags == ["v1"]
    time.sleep(0.3)
    after = registry.requests()[before:]
    assert after == [], f"offline sluice asked the upstream: {after}"


def blackhole(port):
    """A listener on port whose accept queue is full and never drained: new
    connections hang in SYN_SENT, like a host that drops packets."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(c)
    return [lsock] + fillers


@pytest.mark.parametrize("how", ["closed", "blackhole"])
def test_breaker_serves_cached_tag_fast_when_upstream_down(sluice_factory, registry, tmp_path, how):
    _, img = publish(registry, tmp_path, "brk/app", "v1", [1000], f"brk-{how}")
    conf = f"[upstream]\nurl = {registry.url}\nconnect_timeout = 1\nretries = 1\nbreaker = 30\n"
    s = sluice_factory(None, config=conf, tag_ttl=0)
    assert get(s.host, "/v2/brk/app/manifests/v1", MANIFEST_HEADERS).status == 200
    registry.stop()
    held = blackhole(registry.port) if how == "blackhole" else []
    try:
        first = get(s.host, "/v2/brk/app/manifests/v1", MANIFEST_HEADERS, timeout=30)
        assert first.status == 200 and first.header("warning")
        for _ in range(5):
            t0 = time.monotonic()
            r = get(s.host, "/v2/brk/app/manifests/v1", MANIFEST_HEADERS)
            took = time.monotonic() - t0
            assert r.status == 200 and r.header("docker-content-digest") == img["manifest"]["digest"]
            assert took < 0.1, f"cached tag took {took:.3f}s with the upstream {how}"
        # uncached content fails fast too, with a 5xx
        t0 = time.monotonic()
        r = get(s.host, "/v2/brk/app/manifests/nope", MANIFEST_HEADERS)
        assert r.status in (502, 503, 504) and time.monotonic() - t0 < 0.1
    finally:
        for sock in held:
            sock.close()
