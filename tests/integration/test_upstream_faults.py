# test_upstream_faults.py — Sluice when its upstream misbehaves: corrupt,
# truncated, stalled and failing (500) responses from the fake upstream must
# give the client a clean error (never a complete body with the wrong digest)
# and leave nothing in the cache; a stopped docker-registry gives 502/503/504
# for uncached content while cached content and tags keep being served; Bearer
# token auth (one token per repository scope, not forwarded on redirects); and
# resuming an interrupted upstream transfer with a Range request.
import re
import threading
import time
from urllib.parse import parse_qs

import pytest

from conftest import (MT_OCI_MANIFEST, blob_path_re, fetch, get, layout_blob_digests,
                      manifest_path_re, prime_manifest, pull, push, push_image, random_bytes, request,
                      sha256_digest)

MiB = 1 << 20
GATEWAY_ERRORS = (502, 503, 504)


def fault_config(url, **upstream):
    """Sluice config with short upstream timeouts so that faults resolve quickly."""
    keys = {"url": url, "connect_timeout": 2, "transfer_timeout": 2, "retries": 1}
    keys.update(upstream)
    return ("# sluice config for an upstream fault test\n[upstream]\n" +
            "".join(f"{k} = {v}\n" for k, v in keys.items()))


@pytest.fixture
def faulty(fake_upstream, sluice_factory):
    """(fake upstream, sluice in front of it with short timeouts)."""
    return fake_upstream, sluice_factory(fake_upstream.url, config=fault_config(fake_upstream.url))


def assert_gateway_error(r, what):
    """r (from fetch) is a clean upstream-failure answer: 502/503/504 + OCI error JSON."""
    assert r["status"] in GATEWAY_ERRORS, f"{what}: expected 502/503/504, got {r['status']} {r['error']} {r['body'][:300]!r}"
    import json
    doc = json.loads(r["body"])
    assert doc["errors"] and all(isinstance(e.get("code"), str) for e in doc["errors"]), doc


def classify(r, digest, size, what):
    """'ok' for a complete verified body, 'error' for a clean failure; fails the
    test for a complete body whose digest is wrong or any other answer."""
    if r["status"] == 200 and r["complete"] and r["length"] == size:
        assert r["digest"] == digest, f"{what}: a complete {size}-byte body with the WRONG digest was served"
        return "ok"
    if r["status"] is not None and 200 <= r["status"] < 300:
        assert not r["complete"], f"{what}: 2xx with a complete body of {r['length']} bytes, expected {size}"
        return "error"  # connection closed before Content-Length / last chunk
    if r["status"] is None:
        return "error"  # connection closed before any response (also clean)
    assert_gateway_error(r, what)
    return "error"


@pytest.mark.parametrize("mode", ["corrupt", "truncate", "stall", "error500"])
def test_blob_fault_gives_clean_error_and_caches_nothing(faulty, mode):
    fake, sl = faulty
    blob = random_bytes(1 * MiB + 123, seed=f"blob-{mode}")
    img = fake.add_image("fault/app", "v1", [blob])
    d = img["layers"][0]
    path = f"/v2/fault/app/blobs/{d}"
    prime_manifest(sl.host, "fault/app", "v1")
    fake.set_mode(mode, d)
    t0 = time.monotonic()
    r = fetch(sl.host, path, timeout=40)
    elapsed = time.monotonic() - t0
    outcome = classify(r, d, len(blob), f"GET blob in {mode} mode")
    if mode != "truncate":
        assert outcome == "error", f"{mode}: the upstream never sent the right bytes, yet the client got them"
    assert elapsed < 30, f"{mode}: client waited {elapsed:.1f}s (transfer_timeout is 2s)"
    assert sl.healthy()

    fake.set_mode("ok", d)
    n0 = fake.count("GET", blob_path_re("fault/app", d))
    r = fetch(sl.host, path)
    assert r["status"] == 200 and r["complete"] and r["digest"] == d, r["error"]
    n1 = fake.count("GET", blob_path_re("fault/app", d))
    if outcome == "error":
        assert n1 > n0, f"{mode}: served from cache after a failed transfer — something was cached"
    r = fetch(sl.host, path)
    assert r["status"] == 200 and r["complete"] and r["digest"] == d
    assert fake.count("GET", blob_path_re("fault/app", d)) == n1, "verified blob was not cached"
    m = sl.settled_metrics()
    if outcome == "error":  # counted as an upstream error or as a digest mismatch
        assert m.value("sluice_upstream_errors_total") + m.value("sluice_digest_mismatches_total") >= 1


@pytest.mark.parametrize("mode", ["corrupt", "truncate", "stall", "error500"])
def test_manifest_fault_gives_clean_error_and_caches_nothing(faulty, mode):
    fake, sl = faulty
    img = fake.add_image("fault/man", "v1", [random_bytes(1000, seed=f"m-{mode}")])
    md, mbytes = img["manifest"], img["manifest_bytes"]
    path = f"/v2/fault/man/manifests/{md}"
    acc = {"Accept": MT_OCI_MANIFEST}
    fake.set_mode(mode, md)
    r = fetch(sl.host, path, acc, timeout=40)
    outcome = classify(r, md, len(mbytes), f"GET manifest by digest in {mode} mode")
    if mode != "truncate":
        assert outcome == "error"
    assert sl.healthy()
    fake.set_mode("ok", md)
    n0 = fake.count("GET", manifest_path_re("fault/man", md))
    r = fetch(sl.host, path, acc)
    assert r["status"] == 200 and r["complete"] and r["digest"] == md and r["body"] == mbytes
    if outcome == "error":
        assert fake.count("GET", manifest_path_re("fault/man", md)) > n0, "a failed manifest was cached"


def test_stalled_upstream_does_not_block_other_requests(fake_upstream, sluice_factory):
    fake = fake_upstream
    sl = sluice_factory(fake.url, config=fault_config(fake.url, transfer_timeout=4, retries=0))
    stalled = random_bytes(512 * 1024, seed="stalled")
    fine = random_bytes(256 * 1024, seed="fine")
    img = fake.add_image("fault/stall", "v1", [stalled, fine])
    ds, df = img["layers"]
    prime_manifest(sl.host, "fault/stall", "v1")
    assert fetch(sl.host, f"/v2/fault/stall/blobs/{df}")["digest"] == df  # cached
    fake.configure(stall_seconds=60)
    fake.set_mode("stall", ds)
    box = {}
    t = threading.Thread(target=lambda: box.update(r=fetch(sl.host, f"/v2/fault/stall/blobs/{ds}", timeout=60)))
    t.start()
    deadline = time.monotonic() + 10
    while fake.count("GET", blob_path_re("fault/stall", ds)) == 0:
        assert time.monotonic() < deadline, "sluice never asked the upstream for the stalled blob"
        time.sleep(0.02)
    for _ in range(5):
        t0 = time.monotonic()
        assert get(sl.host, "/healthz", timeout=5).status == 200
        r = fetch(sl.host, f"/v2/fault/stall/blobs/{df}", timeout=5)
        assert r["status"] == 200 and r["digest"] == df
        assert time.monotonic() - t0 < 1.5, "event loop blocked by a stalled upstream transfer"
    t.join(60)
    assert not t.is_alive()
    classify(box["r"], ds, len(stalled), "stalled blob")


def test_registry_down_uncached_is_gateway_error_cached_is_served(registry, sluice_factory, tmp_path):
    a = push_image(registry, tmp_path, "edge/down", "v1", [50 * 1024, 1000], seed="down-a")
    b = push_image(registry, tmp_path, "edge/down", "v2", [60 * 1024], seed="down-b")
    sl = sluice_factory(registry.url, config=fault_config(registry.url))
    assert pull(sl.host, "edge/down", "v1", str(tmp_path / "first")) == a["manifest"]["digest"]
    before = sl.settled_metrics()
    registry.stop()
    acc = {"Accept": MT_OCI_MANIFEST}
    for path, hdrs in [("/v2/edge/down/manifests/v2", acc),
                       (f"/v2/edge/down/manifests/{b['manifest']['digest']}", acc),
                       (f"/v2/edge/down/blobs/{b['layers'][0]['digest']}", {}),
                       ("/v2/edge/other/manifests/latest", acc)]:
        r = fetch(sl.host, path, hdrs, timeout=30)
        assert_gateway_error(r, f"GET {path} with the upstream down")
        r = fetch(sl.host, path, hdrs, method="HEAD", timeout=30)
        assert r["status"] in GATEWAY_ERRORS, (path, r["status"])
    # cached content is still served
    r = fetch(sl.host, "/v2/edge/down/manifests/v1", acc)
    assert r["status"] == 200 and r["digest"] == a["manifest"]["digest"]
    for l in a["layers"]:
        r = fetch(sl.host, f"/v2/edge/down/blobs/{l['digest']}")
        assert r["status"] == 200 and r["complete"] and r["digest"] == l["digest"]
    assert pull(sl.host, "edge/down", "v1", str(tmp_path / "again")) == a["manifest"]["digest"]
    after = sl.settled_metrics()
    assert after.value("sluice_upstream_errors_total") > before.value("sluice_upstream_errors_total")


def test_tag_revalidated_with_ttl_0_and_falls_back_with_warning(registry, sluice_factory, tmp_path):
    a = push_image(registry, tmp_path, "edge/tag", "v1", [1000], seed="tag-a")
    b = push_image(registry, tmp_path, "edge/tag", "next", [2000], seed="tag-b")
    sl = sluice_factory(registry.url, config=fault_config(registry.url), tag_ttl=0)
    acc = {"Accept": MT_OCI_MANIFEST}
    r = get(sl.host, "/v2/edge/tag/manifests/v1", acc)
    assert r.status == 200 and r.header("docker-content-digest") == a["manifest"]["digest"]
    assert r.header("warning") is None
    # the tag moves upstream: with tag_ttl 0 sluice sees it at once
    push(b["layout"].path, "next", registry.host, "edge/tag", dest_tag="v1")
    r = get(sl.host, "/v2/edge/tag/manifests/v1", acc)
    assert r.status == 200 and r.header("docker-content-digest") == b["manifest"]["digest"]
    assert sha256_digest(r.body) == b["manifest"]["digest"]
    registry.stop()
    for method in ("GET", "HEAD"):
        r = request(sl.host, method, "/v2/edge/tag/manifests/v1", acc)
        assert r.status == 200, (method, r)
        assert r.header("docker-content-digest") == b["manifest"]["digest"]
        w = r.header("warning")
        assert w and re.match(r"^1\d\d ", w), f"{method}: stale tag served without a Warning header: {r.headers}"
        if method == "GET":
            assert sha256_digest(r.body) == b["manifest"]["digest"]


def test_tag_falls_back_when_upstream_answers_500(fake_upstream, sluice_factory):
    fake = fake_upstream
    sl = sluice_factory(fake.url, config=fault_config(fake.url), tag_ttl=0)
    img = fake.add_image("fault/tag", "v1", [random_bytes(500, seed="t500")])
    r = prime_manifest(sl.host, "fault/tag", "v1", MT_OCI_MANIFEST)
    assert r.header("docker-content-digest") == img["manifest"]
    fake.set_mode("error500")
    r = get(sl.host, "/v2/fault/tag/manifests/v1", {"Accept": MT_OCI_MANIFEST})
    assert r.status == 200 and r.header("docker-content-digest") == img["manifest"], r
    assert r.header("warning"), r.headers
    assert r.body == img["manifest_bytes"]
    r = fetch(sl.host, f"/v2/fault/tag/manifests/{img['manifest']}", {"Accept": MT_OCI_MANIFEST})
    assert r["status"] == 200 and r["digest"] == img["manifest"]
    # never seen before + upstream failing -> gateway error, not 404
    r = fetch(sl.host, "/v2/fault/tag/manifests/other", {"Accept": MT_OCI_MANIFEST})
    assert_gateway_error(r, "unknown tag with upstream answering 500")


AUTH = {"username": "edge-site", "password": "pa55:word", "token_ttl": 300}


def _token_requests(fake, repo):
    out = []
    for t in fake.requests("GET", r"/token"):
        scopes = parse_qs(t["query"]).get("scope", [])
        if f"repository:{repo}:pull" in " ".join(scopes):
            out.append(t)
    return out


def test_bearer_auth_pull_one_token_per_scope(fake_upstream, sluice_factory, tmp_path):
    fake = fake_upstream
    layers = [random_bytes(s, seed=f"auth{i}") for i, s in enumerate((30000, 70000, 1000, 5000))]
    img = fake.add_image("secure/app", "v1", layers)
    fake.configure(auth=AUTH)
    sl = sluice_factory(fake.url, config=fault_config(fake.url, username=AUTH["username"],
                                                      password=AUTH["password"]))
    out = tmp_path / "out"
    assert pull(sl.host, "secure/app", "v1", str(out)) == img["manifest"]
    got = layout_blob_digests(out)
    assert all(k == v for k, v in got.items())
    assert set(img["layers"]) | {img["config"]} <= set(got)
    blob_gets = [r for r in fake.requests("GET", r"/v2/secure/app/blobs/.*") if r["status"] == 200]
    assert len(blob_gets) >= 5, blob_gets
    assert all((r["authorization"] or "").startswith("Bearer ") for r in blob_gets), blob_gets
    toks = _token_requests(fake, "secure/app")
    assert len(toks) == 1, f"expected one token request for the repository scope, got {toks}"
    assert toks[0]["status"] == 200 and (toks[0]["authorization"] or "").startswith("Basic ")
    assert len(fake.requests("GET", r"/token")) <= 2
    # later requests reuse the cached token too
    r = fetch(sl.host, f"/v2/secure/app/manifests/{img['manifest']}", {"Accept": MT_OCI_MANIFEST})
    assert r["status"] == 200
    extra = fake.add_blob("secure/app", random_bytes(3000, seed="extra"))
    r = fetch(sl.host, f"/v2/secure/app/blobs/{extra}")
    assert r["status"] == 200 and r["digest"] == extra
    assert len(_token_requests(fake, "secure/app")) == 1


def test_bearer_auth_wrong_password_is_not_404(fake_upstream, sluice_factory):
    fake = fake_upstream
    img = fake.add_image("secure/app", "v1", [random_bytes(1000, seed="wp")])
    fake.configure(auth=AUTH)
    sl = sluice_factory(fake.url, config=fault_config(fake.url, username=AUTH["username"], password="wrong"))
    r = fetch(sl.host, "/v2/secure/app/manifests/v1", {"Accept": MT_OCI_MANIFEST})
    assert r["status"] != 404 and r["status"] >= 400, r
    assert r["body"] and "errors" in r["body"].decode()
    assert img


@pytest.mark.parametrize("where", [True, "same-host"])
def test_bearer_auth_not_forwarded_to_redirected_storage(fake_upstream, sluice_factory, where):
    fake = fake_upstream
    blob = random_bytes(200 * 1024, seed="redir")
    img = fake.add_image("secure/redir", "v1", [blob])
    fake.configure(auth=AUTH, redirect_blobs=where)
    sl = sluice_factory(fake.url, config=fault_config(fake.url, username=AUTH["username"],
                                                      password=AUTH["password"]))
    prime_manifest(sl.host, "secure/redir", "v1")
    d = img["layers"][0]
    r = fetch(sl.host, f"/v2/secure/redir/blobs/{d}")
    assert r["status"] == 200 and r["complete"] and r["digest"] == d
    storage = fake.requests("GET", re.escape(f"/_storage/{d}"))
    assert storage, "sluice did not follow the 307 to storage"
    assert all(s["port"] == (fake.storage_port if where is True else fake.port) for s in storage)
    assert all(s["authorization"] is None for s in storage), f"Authorization sent to storage: {storage}"


def test_resume_interrupted_transfer_with_range(fake_upstream, sluice_factory):
    fake = fake_upstream
    sl = sluice_factory(fake.url, config=fault_config(fake.url, retries=3))
    blob = random_bytes(4 * MiB, seed="resume")
    img = fake.add_image("fault/resume", "v1", [blob])
    d = img["layers"][0]
    n = 1234567
    fake.configure(drop_after=n)
    fake.set_mode("drop", d)
    prime_manifest(sl.host, "fault/resume", "v1")
    before = sl.settled_metrics()
    r = fetch(sl.host, f"/v2/fault/resume/blobs/{d}", timeout=40)
    assert r["status"] == 200 and r["complete"] and r["length"] == len(blob), r["error"]
    assert r["digest"] == d
    gets = fake.requests("GET", blob_path_re("fault/resume", d))
    ranges = [g["range"] for g in gets]
    assert ranges[0] is None, ranges
    assert len(ranges) == 2, f"expected the dropped GET and one resumed GET, got {ranges}"
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", ranges[1] or "")
    assert m and int(m.group(1)) == n, f"resume did not start at byte {n}: {ranges[1]}"
    assert m.group(2) in ("", str(len(blob) - 1)), ranges[1]
    after = sl.settled_metrics()
    up = after.value("sluice_upstream_bytes_total") - before.value("sluice_upstream_bytes_total")
    assert up < len(blob) + 64 * 1024, f"{up} upstream bytes for a {len(blob)}-byte blob: not resumed"
    # now cached
    r = fetch(sl.host, f"/v2/fault/resume/blobs/{d}")
    assert r["status"] == 200 and r["digest"] == d
    assert len(fake.requests("GET", blob_path_re("fault/resume", d))) == 2



def test_resume_across_restart_keeps_what_was_received(fake_upstream, sluice_factory):
    """A transfer cut off (no retries left) and a daemon restart: the chunks
    already stored are kept, and the next request asks only for the rest."""
    fake = fake_upstream
    sl = sluice_factory(fake.url, config=fault_config(fake.url, retries=0))
    blob = random_bytes(6 * MiB + 12345, seed="restart")
    img = fake.add_image("fault/restart", "v1", [blob])
    d = img["layers"][0]
    n = 3 * MiB + 77  # three whole 1 MiB chunks reach the cache
    fake.configure(drop_after=n)
    fake.set_mode("drop", d)
    prime_manifest(sl.host, "fault/restart", "v1")
    r = fetch(sl.host, f"/v2/fault/restart/blobs/{d}", timeout=40)
    assert not (r["status"] == 200 and r["complete"]), "the cut transfer cannot have completed"
    sl.restart()
    fake.set_mode("ok", d)
    r = fetch(sl.host, f"/v2/fault/restart/blobs/{d}", timeout=40)
    assert r["status"] == 200 and r["complete"] and r["digest"] == d, r["error"]
    ranges = [g["range"] for g in fake.requests("GET", blob_path_re("fault/restart", d))]
    assert ranges[0] is None and len(ranges) == 2, ranges
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", ranges[1] or "")
    assert m and int(m.group(1)) == 3 * MiB, f"expected a resume at 3 MiB, got {ranges[1]}"
    assert "resuming" in sl.stderr()
