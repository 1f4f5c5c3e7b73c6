# test_pull.py — Sluice as a pull-through cache in front of Debian's real
# docker-registry: skopeo pulls (image, index) with digests identical to the
# upstream, serving from cache with the upstream stopped, response headers,
# byte ranges, tags/list pagination, coalescing of 50 concurrent misses into one
# upstream GET, refusal of push methods, malformed requests, and /metrics.
import threading

import pytest

from conftest import (ACCEPT_ALL_MANIFESTS, MT_OCI_INDEX, MT_OCI_MANIFEST, OciLayout, blob_path_re,
                      build_index, fetch, get, layout_blob_digests, layout_closure,
                      prime_manifest, pull, push, push_image, request, sha256_digest)

MiB = 1 << 20


def _assert_same_content(upstream_dir, via_sluice_dir, top_digest):
    """Both layouts hold the same verified blobs for everything reachable from top_digest."""
    up = layout_blob_digests(upstream_dir)
    sl = layout_blob_digests(via_sluice_dir)
    bad = [k for k, v in sl.items() if k != v]
    assert not bad, f"blobs pulled through sluice do not hash to their digest: {bad}"
    closure = layout_closure(upstream_dir, top_digest)
    missing = closure - set(sl)
    assert not missing, f"not pulled through sluice: {missing}"
    assert closure == layout_closure(via_sluice_dir, top_digest)
    assert set(sl) == set(up)


def test_multilayer_image_pull_identical_digests(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/app", "1.0", [2048, 300 * 1024, 3 * MiB, 10], seed="ml")
    want = img["manifest"]["digest"]
    direct = tmp_path / "direct"
    assert pull(registry.host, "edge/app", "1.0", str(direct)) == want
    via = tmp_path / "via-sluice"
    assert pull(sluice.host, "edge/app", "1.0", str(via)) == want
    _assert_same_content(direct, via, want)
    # every blob went upstream exactly once for one direct pull + one pull through sluice
    for l in img["layers"] + [img["config"]]:
        assert registry.wait_count("GET", blob_path_re("edge/app", l["digest"]), 2) == 2, l
    # a second pull through sluice is served from its cache: no new blob GETs
    via2 = tmp_path / "via-sluice-2"
    assert pull(sluice.host, "edge/app", "1.0", str(via2)) == want
    _assert_same_content(direct, via2, want)
    for l in img["layers"] + [img["config"]]:
        assert registry.count_requests("GET", blob_path_re("edge/app", l["digest"])) == 2, l
    # pulling by digest works too
    via3 = tmp_path / "via-sluice-3"
    assert pull(sluice.host, "edge/app", want, str(via3)) == want


def test_index_pull_identical_digests(registry, sluice, tmp_path):
    lay = OciLayout(tmp_path / "lay")
    idx = build_index(lay, "multi", layer_sizes=(64 * 1024, 1000), seed="idx")
    push(lay.path, "multi", registry.host, "edge/multi", all_images=True)
    want = idx["index"]["digest"]
    via = tmp_path / "via"
    assert pull(sluice.host, "edge/multi", "multi", str(via), all_images=True) == want
    _assert_same_content(lay.path, via, want)
    r = get(sluice.host, "/v2/edge/multi/manifests/multi", {"Accept": ACCEPT_ALL_MANIFESTS})
    assert r.status == 200 and r.header("content-type") == MT_OCI_INDEX
    assert r.header("docker-content-digest") == want and sha256_digest(r.body) == want
    assert r.body == idx["index_bytes"]
    # each child manifest by digest
    for im in idx["images"]:
        d = im["manifest"]["digest"]
        r = get(sluice.host, f"/v2/edge/multi/manifests/{d}", {"Accept": MT_OCI_MANIFEST})
        assert r.status == 200 and sha256_digest(r.body) == d and r.header("docker-content-digest") == d


def test_second_pull_with_registry_stopped(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/offline", "v1", [100 * 1024, 5000], seed="off")
    lay = OciLayout(tmp_path / "idxlay")
    idx = build_index(lay, "multi", layer_sizes=(2000,), seed="off-idx")
    push(lay.path, "multi", registry.host, "edge/offline-multi", all_images=True)
    want = img["manifest"]["digest"]
    assert pull(sluice.host, "edge/offline", "v1", str(tmp_path / "first")) == want
    assert pull(sluice.host, "edge/offline-multi", "multi", str(tmp_path / "first-idx"),
                all_images=True) == idx["index"]["digest"]
    registry.stop()
    assert not registry.running
    second = tmp_path / "second"
    assert pull(sluice.host, "edge/offline", "v1", str(second)) == want
    _assert_same_content(tmp_path / "first", second, want)
    assert pull(sluice.host, "edge/offline", want, str(tmp_path / "by-digest")) == want
    second_idx = tmp_path / "second-idx"
    assert pull(sluice.host, "edge/offline-multi", "multi", str(second_idx), all_images=True) == idx["index"]["digest"]
    _assert_same_content(lay.path, second_idx, idx["index"]["digest"])
    assert sluice.healthy()


def _check_digest_headers(r, digest, size, content_type=None):
    assert r["status"] == 200, r
    h = r["headers"]
    assert h.get("docker-content-digest") == digest, h
    assert h.get("etag") == f'"{digest}"', h
    assert h.get("content-length") == str(size), h
    assert h.get("content-type"), h
    if content_type:
        assert h["content-type"] == content_type, h


def test_head_and_get_headers(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/hdr", "v1", [5000, 40000], seed="hdr")
    md, mbytes = img["manifest"]["digest"], img["manifest_bytes"]
    acc = {"Accept": MT_OCI_MANIFEST}
    for ref in ("v1", md):  # HEAD on uncached, GET, HEAD on cached
        path = f"/v2/edge/hdr/manifests/{ref}"
        for method in ("HEAD", "GET", "HEAD"):
            r = fetch(sluice.host, path, acc, method=method)
            _check_digest_headers(r, md, len(mbytes), MT_OCI_MANIFEST)
            if method == "GET":
                assert r["complete"] and r["digest"] == md and r["body"] == mbytes
    for l in img["layers"]:
        d, size = l["digest"], l["size"]
        path = f"/v2/edge/hdr/blobs/{d}"
        for method in ("HEAD", "GET", "HEAD", "GET"):
            r = fetch(sluice.host, path, method=method)
            _check_digest_headers(r, d, size)
            if method == "GET":
                assert r["complete"] and r["digest"] == d and r["length"] == size
    # unknown content -> 404 with the right OCI code (upstream says it does not exist)
    r = get(sluice.host, "/v2/edge/hdr/manifests/no-such-tag", acc)
    assert r.status == 404 and "MANIFEST_UNKNOWN" in r.oci_error_codes()
    r = get(sluice.host, "/v2/edge/hdr/blobs/sha256:" + "0" * 64)
    assert r.status == 404 and "BLOB_UNKNOWN" in r.oci_error_codes()
    r = request(sluice.host, "HEAD", "/v2/edge/hdr/blobs/sha256:" + "1" * 64)
    assert r.status == 404
    r = get(sluice.host, "/v2/")
    assert r.status == 200


@pytest.mark.parametrize("cached_first", [False, True], ids=["uncached", "cached"])
def test_range_requests(registry, sluice, tmp_path, cached_first):
    img = push_image(registry, tmp_path, "edge/range", "v1", [600 * 1024], seed="rng")
    layer = img["layers"][0]
    d, size = layer["digest"], layer["size"]
    data = img["layout"].read_blob(d)
    prime_manifest(sluice.host, "edge/range", "v1")
    path = f"/v2/edge/range/blobs/{d}"
    if cached_first:
        full = fetch(sluice.host, path)
        assert full["status"] == 200 and full["digest"] == d
    cases = [
        ("bytes=10-99", 10, 99),
        ("bytes=0-0", 0, 0),
        (f"bytes={size - 1}-", size - 1, size - 1),
        ("bytes=100000-", 100000, size - 1),
        ("bytes=-10", size - 10, size - 1),
        (f"bytes=500-{size + 1000}", 500, size - 1),  # last-pos past the end is clamped
    ]
    for hdr, first, last in cases:
        r = get(sluice.host, path, {"Range": hdr})
        assert r.status == 206, (hdr, r)
        assert r.header("content-range") == f"bytes {first}-{last}/{size}", (hdr, r.headers)
        assert r.header("content-length") == str(last - first + 1), (hdr, r.headers)
        assert r.body == data[first:last + 1], hdr
    for hdr in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}"):
        r = get(sluice.host, path, {"Range": hdr})
        assert r.status == 416, (hdr, r)
        assert r.header("content-range") == f"bytes */{size}", (hdr, r.headers)
    # malformed or multi-range: ignored, full body (RFC 9110 14.2)
    for hdr in ("bytes=abc", "items=0-5", "bytes=0-1,5-6", "bytes=5-2", "bytes"):
        r = fetch(sluice.host, path, {"Range": hdr})
        assert r["status"] == 200, (hdr, r)
        assert r["complete"] and r["digest"] == d and r["length"] == size, hdr
    # the blob went upstream as a whole at most once (ranges are served from one transfer/cache)
    assert registry.count_requests("GET", blob_path_re("edge/range", d)) <= 2


def test_tags_list_pagination(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/tags", "seed", [100], seed="tags")
    tags = ["v10", "alpha", "v2", "Beta", "1.0", "latest", "v1.2.3-rc1", "_x", "zz"]
    for t in tags:
        push(img["layout"].path, "seed", registry.host, "edge/tags", dest_tag=t)
    want = sorted(tags + ["seed"])  # lexical = byte order
    r = get(sluice.host, "/v2/edge/tags/tags/list")
    assert r.status == 200, r
    doc = r.json()
    assert doc["name"] == "edge/tags" and doc["tags"] == want
    assert r.header("content-type", "").startswith("application/json")
    for n in (1, 3, 4, 10, 100):
        got, last, pages = [], None, 0
        while True:
            q = f"?n={n}" + (f"&last={last}" if last else "")
            r = get(sluice.host, "/v2/edge/tags/tags/list" + q)
            assert r.status == 200, (q, r)
            page = r.json().get("tags") or []
            assert len(page) <= n and page == sorted(page), (q, page)
            if not page:
                break
            link = r.header("link")
            if link:
                assert 'rel="next"' in link and f"n={n}" in link, link
            got += page
            last = page[-1]
            pages += 1
            assert pages <= len(want) + 1, "pagination does not end"
        assert got == want, n
    r = get(sluice.host, "/v2/edge/tags/tags/list?last=v2")
    assert r.status == 200 and r.json()["tags"] == [t for t in want if t > "v2"]
    r = get(sluice.host, "/v2/edge/tags/tags/list?n=2&last=zz")
    assert r.status == 200 and (r.json().get("tags") or []) == []
    r = get(sluice.host, "/v2/edge/no-such-repo/tags/list")
    assert r.status == 404 and "NAME_UNKNOWN" in r.oci_error_codes()


def test_50_concurrent_gets_of_uncached_blob_cost_one_upstream_get(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/big", "v1", [8 * MiB], seed="big")
    layer = img["layers"][0]
    d, size = layer["digest"], layer["size"]
    prime_manifest(sluice.host, "edge/big", "v1")
    assert registry.count_requests("GET", blob_path_re("edge/big", d)) == 0
    before = sluice.metrics()
    n = 50
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        barrier.wait()
        results[i] = fetch(sluice.host, f"/v2/edge/big/blobs/{d}", timeout=60)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client never finished"
    for i, r in enumerate(results):
        assert r["status"] == 200, (i, r["status"], r["error"])
        assert r["complete"] and r["length"] == size and r["digest"] == d, (i, r["length"], r["error"])
    assert registry.wait_count("GET", blob_path_re("edge/big", d), 1) == 1
    assert sluice.healthy()
    # counters settle once the transfer is committed
    after = sluice.settled_metrics()

    def delta(name, **lb):
        return after.value(name, **lb) - before.value(name, **lb)

    assert delta("sluice_upstream_bytes_total") >= size
    assert delta("sluice_upstream_bytes_total") < 2 * size, "more than one upstream transfer of the blob"
    assert delta("sluice_bytes_served_total") >= n * size
    hits, misses = delta("sluice_cache_hits_total", kind="blob"), delta("sluice_cache_misses_total", kind="blob")
    coalesced = delta("sluice_coalesced_waiters_total")
    assert misses >= 1 and hits + misses <= n, (hits, misses, coalesced)
    # every request is a hit, the one miss that fetched, or a miss that waited on it
    # (whether waiters also count as misses or not)
    assert hits + max(misses, 1 + coalesced) == n, (hits, misses, coalesced)


def test_push_methods_rejected(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/ro", "v1", [100], seed="ro")
    md = img["manifest"]["digest"]
    bd = img["layers"][0]["digest"]
    writes_before = {m: registry.count_requests(m, r"/v2/.*") for m in ("PUT", "POST", "PATCH", "DELETE")}
    cases = [
        ("PUT", "/v2/edge/ro/manifests/v2", img["manifest_bytes"], {"Content-Type": MT_OCI_MANIFEST}),
        ("PUT", f"/v2/edge/ro/manifests/{md}", img["manifest_bytes"], {"Content-Type": MT_OCI_MANIFEST}),
        ("POST", "/v2/edge/ro/blobs/uploads/", b"", {}),
        ("POST", f"/v2/edge/ro/blobs/uploads/?digest={bd}", b"xyz", {"Content-Type": "application/octet-stream"}),
        ("PATCH", "/v2/edge/ro/blobs/uploads/0f3c1e2a-0000-4000-8000-000000000000", b"abc",
         {"Content-Type": "application/octet-stream"}),
        ("PUT", f"/v2/edge/ro/blobs/uploads/0f3c1e2a-0000-4000-8000-000000000000?digest={bd}", b"", {}),
        ("DELETE", f"/v2/edge/ro/manifests/{md}", None, {}),
        ("DELETE", f"/v2/edge/ro/blobs/{bd}", None, {}),
    ]
    for method, path, body, hdrs in cases:
        r = request(sluice.host, method, path, hdrs, body)
        assert r.status == 405, (method, path, r)
        assert "UNSUPPORTED" in r.oci_error_codes(), (method, path, r)
    for m, c in writes_before.items():
        assert registry.count_requests(m, r"/v2/.*") == c, f"sluice forwarded a {m} upstream"
    # nothing was deleted upstream
    assert registry.manifest("edge/ro", "v1").status == 200
    assert sluice.healthy()


HEX64 = "0123456789abcdef" * 4


@pytest.mark.parametrize("path,status,code", [
    ("/v2/Edge/app/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/edge/App/blobs/sha256:" + HEX64, 400, "NAME_INVALID"),
    ("/v2/edge/../etc/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/../manifests/latest", 400, "NAME_INVALID"),
    ("/v2/%2e%2e/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/edge/%2e%2e/app/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/edge//app/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/edge-/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/" + "a" * 300 + "/manifests/latest", 400, "NAME_INVALID"),
    ("/v2/Edge/tags/list", 400, "NAME_INVALID"),
    ("/v2/edge/app/blobs/sha256:abc", 400, "DIGEST_INVALID"),
    ("/v2/edge/app/blobs/sha256:" + HEX64.upper(), 400, "DIGEST_INVALID"),
    ("/v2/edge/app/blobs/sha256:" + HEX64 + "00", 400, "DIGEST_INVALID"),
    ("/v2/edge/app/blobs/sha256:" + HEX64[:-1] + "g", 400, "DIGEST_INVALID"),
    ("/v2/edge/app/blobs/notadigest", 400, "DIGEST_INVALID"),
    ("/v2/edge/app/blobs/sha512:" + HEX64 * 2, None, "UNSUPPORTED"),
    ("/v2/edge/app/manifests/sha512:" + HEX64 * 2, None, "UNSUPPORTED"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 60 else None)
def test_bad_inputs(registry, sluice, path, status, code):
    for method in ("GET", "HEAD"):
        r = request(sluice.host, method, path)
        if status is None:  # status for an unsupported algorithm: any 4xx but 404/405
            assert 400 <= r.status < 500 and r.status not in (404, 405), (method, r)
        else:
            assert r.status == status, (method, r)
        if method == "GET":
            assert code in r.oci_error_codes(), r
            assert r.header("content-type", "").startswith("application/json"), r.headers
    # none of these reached the upstream
    reqs = [uri for (m, uri, st, _) in registry.requests() if uri != "/v2/"]
    assert reqs == [], f"invalid request forwarded upstream: {reqs}"
    assert sluice.healthy()


def test_huge_header_rejected_and_daemon_survives(sluice):
    import socket
    statuses = []
    for attempt in range(3):
        s = socket.create_connection(("127.0.0.1", sluice.port), timeout=10)
        try:
            req = (b"GET /v2/ HTTP/1.1\r\nHost: " + sluice.host.encode() + b"\r\nX-Huge: " + b"a" * 65536 +
                   b"\r\n\r\n")
            try:
                s.sendall(req)
                data = b""
                while b"\r\n" not in data:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            line = data.split(b"\r\n", 1)[0].decode(errors="replace")
            assert not line.startswith("HTTP/1.1 2") and not line.startswith("HTTP/1.0 2"), line
            if line:
                statuses.append(int(line.split()[1]))
        finally:
            s.close()
        assert sluice.healthy(), "daemon stopped answering after a 64 KiB header"
        if statuses:
            break
    assert statuses, "no HTTP response to a 64 KiB header in 3 attempts (connection reset each time)"
    assert all(400 <= st < 500 for st in statuses), statuses
    # many headers, each small
    hdrs = {f"X-H{i}": "v" * 100 for i in range(1000)}
    try:
        r = request(sluice.host, "GET", "/v2/", hdrs)
        assert 400 <= r.status < 500, r
    except (ConnectionError, OSError):
        pass
    assert sluice.healthy()


def test_metrics_counts(registry, sluice, tmp_path):
    img = push_image(registry, tmp_path, "edge/metrics", "v1", [200 * 1024], seed="met")
    layer = img["layers"][0]
    d, size = layer["digest"], layer["size"]
    m0 = sluice.metrics()
    for name in ("sluice_requests_total", "sluice_cache_hits_total", "sluice_cache_misses_total",
                 "sluice_upstream_requests_total", "sluice_upstream_bytes_total", "sluice_bytes_served_total",
                 "sluice_upstream_errors_total", "sluice_inflight_transfers", "sluice_coalesced_waiters_total"):
        assert m0.has(name), f"/metrics lacks {name}: {m0.names()}"
    acc = {"Accept": MT_OCI_MANIFEST}
    assert get(sluice.host, "/v2/edge/metrics/manifests/v1", acc).status == 200   # manifest miss
    assert get(sluice.host, "/v2/edge/metrics/manifests/v1", acc).status == 200   # manifest hit (within tag TTL)
    assert get(sluice.host, f"/v2/edge/metrics/manifests/{img['manifest']['digest']}", acc).status == 200  # hit
    for _ in range(2):                                                             # blob miss, then hit
        r = fetch(sluice.host, f"/v2/edge/metrics/blobs/{d}")
        assert r["status"] == 200 and r["digest"] == d
    assert get(sluice.host, "/v2/edge/metrics/blobs/sha256:" + "e" * 64).status == 404
    assert registry.wait_count("GET", blob_path_re("edge/metrics", d), 1) == 1
    m1 = sluice.settled_metrics()

    def delta(name, **lb):
        return m1.value(name, **lb) - m0.value(name, **lb)

    assert delta("sluice_cache_misses_total", kind="manifest") == 1
    assert delta("sluice_cache_hits_total", kind="manifest") == 2
    assert delta("sluice_cache_misses_total", kind="blob") == 2  # the blob and the unknown one
    assert delta("sluice_cache_hits_total", kind="blob") == 1
    assert delta("sluice_upstream_requests_total") >= 3
    assert size <= delta("sluice_upstream_bytes_total") < 2 * size + 64 * 1024
    assert delta("sluice_bytes_served_total") >= 2 * size + len(img["manifest_bytes"]) * 3
    assert delta("sluice_upstream_errors_total") == 0  # a 404 upstream is an answer, not an error
    assert delta("sluice_requests_total", status="200") >= 5
    assert delta("sluice_requests_total", status="404") == 1
    # one log line per request on stderr
    log = sluice.stderr()
    assert f"/v2/edge/metrics/blobs/{d}" in log and "/v2/edge/metrics/manifests/v1" in log
