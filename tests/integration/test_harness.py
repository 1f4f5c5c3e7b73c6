# test_harness.py — checks the test harness itself against the real peers,
# without sluice: the docker-registry fixture and its access-log counting, the
# OCI layout builders + skopeo push/pull (digests preserved), the facts about
# docker-registry the other tests rely on, every fake-upstream fault mode, and
# the Bearer token realm (with skopeo as a real client). If these fail, the
# sluice tests' verdicts mean nothing.
import http.client
import json
import socket
import time

import pytest

from conftest import (MT_OCI_MANIFEST, OciLayout, blob_path_re,
                      build_artifact, build_cosign_signature, build_index, generate_p256_key, get,
                      layout_blob_digests, layout_closure, manifest_path_re, parse_metrics, pull, push,
                      push_image, random_bytes, request, sha256_digest, SANITIZER_RE, SkopeoError)


def test_registry_push_pull_roundtrip_preserves_digests(registry, tmp_path):
    img = push_image(registry, tmp_path, "team/app", "v1", [3000, 70000, 1 << 20])
    out = tmp_path / "out"
    got = pull(registry.host, "team/app", "v1", str(out))
    assert got == img["manifest"]["digest"]
    pulled = layout_blob_digests(out)
    assert all(k == v for k, v in pulled.items()), "a pulled blob's bytes do not match its name"
    want = {img["manifest"]["digest"], img["config"]["digest"]} | {l["digest"] for l in img["layers"]}
    assert want <= set(pulled)
    # the access log names every blob exactly once for this pull
    for l in img["layers"]:
        assert registry.wait_count("GET", blob_path_re("team/app", l["digest"]), 1) == 1
    assert registry.count_requests("GET", manifest_path_re("team/app", "v1"), status=200) == 1
    assert registry.count_requests("GET", r"/v2/") >= 2  # readiness poll + skopeo
    # HEAD lines are logged too (skopeo's push HEADs each blob first)
    rx = blob_path_re("team/app", img["layers"][0]["digest"])
    before = registry.count_requests("HEAD", rx)
    assert before >= 1
    r = request(registry.host, "HEAD", f"/v2/team/app/blobs/{img['layers'][0]['digest']}")
    assert r.status == 200 and int(r.header("content-length")) == img["layers"][0]["size"]
    assert registry.wait_count("HEAD", rx, before + 1) == before + 1


def test_registry_index_and_artifact_and_signature(registry, tmp_path):
    lay = OciLayout(tmp_path / "lay")
    idx = build_index(lay, "multi", seed="h")
    push(lay.path, "multi", registry.host, "multi", all_images=True)
    out = tmp_path / "out"
    assert pull(registry.host, "multi", "multi", str(out), all_images=True) == idx["index"]["digest"]
    assert layout_closure(lay.path, idx["index"]["digest"]) <= set(layout_blob_digests(out))
    # without --all skopeo picks the host platform's manifest only
    out2 = tmp_path / "out2"
    assert pull(registry.host, "multi", "multi", str(out2)) == idx["images"][0]["manifest"]["digest"]

    ko = tmp_path / "driver.ko"
    ko.write_bytes(random_bytes(50000, seed=1))
    art = build_artifact(lay, "2.4.1", ko, title="driver.ko")
    push(lay.path, "2.4.1", registry.host, "drv")
    r = registry.manifest("drv", "2.4.1")
    assert r.status == 200 and r.header("docker-content-digest") == art["manifest"]["digest"]
    doc = r.json()
    assert doc["artifactType"] and doc["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert doc["layers"][0]["annotations"]["org.opencontainers.image.title"] == "driver.ko"

    priv, pub = generate_p256_key(tmp_path)
    sig = build_cosign_signature(lay, tmp_path, priv, pub, f"{registry.host}/drv", art["manifest"]["digest"])
    push(lay.path, sig["tag"], registry.host, "drv")
    r = registry.manifest("drv", sig["tag"])
    assert r.status == 200
    layer = r.json()["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert layer["annotations"]["dev.cosignproject.cosign/signature"] == sig["signature_b64"]
    assert registry.blob("drv", layer["digest"]).body == sig["payload"]


def test_registry_facts_relied_on(registry, tmp_path):
    img = push_image(registry, tmp_path, "facts", "v1", [1000])
    md = img["manifest"]["digest"]
    # OCI manifests need an Accept listing the OCI type (GET and HEAD)
    assert get(registry.host, "/v2/facts/manifests/v1").status == 404
    assert request(registry.host, "HEAD", "/v2/facts/manifests/v1").status == 404
    r = get(registry.host, "/v2/facts/manifests/v1", {"Accept": MT_OCI_MANIFEST})
    assert r.status == 200 and r.header("docker-content-digest") == md
    assert r.header("content-type") == MT_OCI_MANIFEST and sha256_digest(r.body) == md
    # blobs: octet-stream, Range -> 206
    d = img["layers"][0]["digest"]
    r = get(registry.host, f"/v2/facts/blobs/{d}", {"Range": "bytes=10-19"})
    assert r.status == 206 and len(r.body) == 10
    assert r.header("content-range") == f"bytes 10-19/{img['layers'][0]['size']}"
    # tags/list ignores n and last
    for t in ("b", "a", "c"):
        push(img["layout"].path, "v1", registry.host, "facts", dest_tag=t)
    r = get(registry.host, "/v2/facts/tags/list?n=1")
    assert r.status == 200 and sorted(r.json()["tags"]) == ["a", "b", "c", "v1"] and not r.header("link")
    # no referrers API
    assert get(registry.host, f"/v2/facts/referrers/{md}").status == 404


def test_registry_stop_is_by_pid(registry):
    registry.stop()
    assert not registry.running and registry.proc.returncode is not None
    with pytest.raises(OSError):
        get(registry.host, "/v2/", timeout=2)


# -- fake upstream ----------------------------------------------------------------------

def _raw_get(host, path, headers=None, timeout=10):
    """(status, headers, body, complete) where complete=False means the connection
    closed before Content-Length bytes."""
    h, p = host.rsplit(":", 1)
    c = http.client.HTTPConnection(h, int(p), timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        try:
            body = r.read()
            return r.status, dict(r.getheaders()), body, True
        except http.client.IncompleteRead as e:
            return r.status, dict(r.getheaders()), e.partial, False
    finally:
        c.close()


def test_fake_upstream_modes(fake_upstream):
    data = random_bytes(300000, seed=7)
    d = fake_upstream.add_blob("r", data)
    path = f"/v2/r/blobs/{d}"
    st, h, body, ok = _raw_get(fake_upstream.host, path)
    assert (st, ok, sha256_digest(body)) == (200, True, d) and h["Docker-Content-Digest"] == d
    st, h, body, ok = _raw_get(fake_upstream.host, path, {"Range": "bytes=100-"})
    assert st == 206 and body == data[100:] and h["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert _raw_get(fake_upstream.host, path, {"Range": f"bytes={len(data)}-"})[0] == 416

    fake_upstream.set_mode("corrupt", d)
    st, h, body, ok = _raw_get(fake_upstream.host, path)
    assert st == 200 and ok and len(body) == len(data) and sha256_digest(body) != d

    fake_upstream.set_mode("truncate", d)
    st, h, body, ok = _raw_get(fake_upstream.host, path)
    assert st == 200 and not ok and len(body) == len(data) // 2

    fake_upstream.set_mode("error500", d)
    st, h, body, ok = _raw_get(fake_upstream.host, path)
    assert st == 500 and json.loads(body)["errors"][0]["code"] == "UNKNOWN"

    fake_upstream.configure(drop_after=123457)
    fake_upstream.set_mode("drop", d)
    st, h, body, ok = _raw_get(fake_upstream.host, path)
    assert st == 200 and not ok and len(body) == 123457 and body == data[:123457]
    st, h, rest, ok = _raw_get(fake_upstream.host, path, {"Range": "bytes=123457-"})
    assert st == 206 and ok and sha256_digest(body + rest) == d

    fake_upstream.configure(stall_seconds=30)
    fake_upstream.set_mode("stall", d)
    t0 = time.monotonic()
    with pytest.raises(socket.timeout):
        _raw_get(fake_upstream.host, path, timeout=1.0)
    assert time.monotonic() - t0 < 5

    fake_upstream.set_mode("ok", d)
    assert sha256_digest(_raw_get(fake_upstream.host, path)[2]) == d
    gets = fake_upstream.requests("GET", blob_path_re("r", d))
    assert [g["range"] for g in gets] == [None, "bytes=100-", f"bytes={len(data)}-", None, None, None,
                                          None, "bytes=123457-", None, None]


def test_fake_upstream_serves_skopeo_with_bearer_auth(fake_upstream, tmp_path):
    img = fake_upstream.add_image("secure/app", "v1", [random_bytes(5000, seed=3), random_bytes(7000, seed=4)])
    fake_upstream.configure(auth={"username": "alice", "password": "s3cret", "token_ttl": 300})
    r = get(fake_upstream.host, "/v2/secure/app/manifests/v1")
    assert r.status == 401
    assert r.header("www-authenticate") == (f'Bearer realm="{fake_upstream.url}/token",service="test",'
                                            f'scope="repository:secure/app:pull"')
    out = tmp_path / "out"
    with pytest.raises(SkopeoError):
        pull(fake_upstream.host, "secure/app", "v1", str(out))  # anonymous: refused
    from ocilayout import _skopeo
    _skopeo(["copy", "--preserve-digests", "--src-tls-verify=false", "--src-creds", "alice:s3cret",
             f"docker://{fake_upstream.host}/secure/app:v1", f"oci:{out}:v1"])
    assert set(img["layers"]) | {img["manifest"], img["config"]} <= set(layout_blob_digests(out))
    tokens = fake_upstream.requests("GET", r"/token")
    assert tokens and all(t["status"] in (200, 401) for t in tokens)
    assert any(t["status"] == 200 for t in tokens)


def test_fake_upstream_redirect_to_storage(fake_upstream):
    data = random_bytes(1000, seed=5)
    d = fake_upstream.add_blob("r", data)
    fake_upstream.configure(redirect_blobs=True)
    st, h, body, ok = _raw_get(fake_upstream.host, f"/v2/r/blobs/{d}")
    storage = f"127.0.0.1:{fake_upstream.storage_port}"
    assert fake_upstream.storage_port != fake_upstream.port
    assert st == 307 and h["Location"] == f"http://{storage}/_storage/{d}"
    st, h, body, ok = _raw_get(storage, f"/_storage/{d}", {"Authorization": "Bearer x"})
    assert st == 200 and body == data
    rec = fake_upstream.requests("GET", f"/_storage/{d}")
    assert [(r["port"], r["authorization"]) for r in rec] == [(fake_upstream.storage_port, "Bearer x")]


def test_metrics_parser_and_sanitizer_pattern():
    m = parse_metrics('# HELP x y\n# TYPE sluice_cache_hits_total counter\n'
                      'sluice_cache_hits_total{kind="blob"} 3\nsluice_cache_hits_total{kind="manifest"} 4\n'
                      'sluice_requests_total{route="blob",status="200"} 7 1700000000\nsluice_inflight_transfers 0\n')
    assert m.value("sluice_cache_hits_total") == 7 and m.value("sluice_cache_hits_total", kind="blob") == 3
    assert m.value("sluice_requests_total", status="200") == 7 and m.has("sluice_inflight_transfers")
    assert m.value("nope") == 0
    assert SANITIZER_RE.search("==1==ERROR: AddressSanitizer: heap-use-after-free")
    assert SANITIZER_RE.search("==1==ERROR: LeakSanitizer: detected memory leaks")
    assert SANITIZER_RE.search("proxy/server.c:10:5: runtime error: signed integer overflow")
    assert not SANITIZER_RE.search('127.0.0.1 "GET /v2/ HTTP/1.1" 200 2')
