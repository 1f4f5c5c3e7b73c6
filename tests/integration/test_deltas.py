# test_deltas.py — deltas on the wire against real peers: two versions of a
# driver artifact (a real kernel-module pair, tests/data/modules) pushed with
# skopeo to Debian's docker-registry; through Sluice, RFC 9842 dcz decoded by
# the `zstd` CLI, RFC 3229 vcdiff decoded by `xdelta3`, sluice-bsz decoded by
# `sluice delta apply`; coalesced computation; fallbacks to the full blob.
import base64
import concurrent.futures
import os
import subprocess

import pytest

from conftest import OciLayout, build_artifact, get, pull, push, sha256_digest, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
PAIR = os.path.join(os.path.dirname(HERE), "data", "modules", "nvme-core")
OLD, NEW = os.path.join(PAIR, "old.ko"), os.path.join(PAIR, "new.ko")
REPO = "drivers/nvme-core"


@pytest.fixture
def versions(registry, tmp_path):
    out = {}
    for tag, path in (("2.4.1", OLD), ("2.4.2", NEW)):
        lay = OciLayout(tmp_path / f"lay-{tag}")
        art = build_artifact(lay, tag, path, title="nvme-core.ko")
        push(lay.path, tag, registry.host, REPO)
        out[tag] = art["layers"][0]["digest"]
    return out


def dictionary_header(digest):
    raw = bytes.fromhex(digest.split(":")[1])
    return ":" + base64.b64encode(raw).decode() + ":"


def blob(sl, digest, headers=None):
    return get(sl.host, f"/v2/{REPO}/blobs/{digest}", headers or {}, timeout=60)


def decode(cmd, tmp_path, name):
    out = tmp_path / name
    subprocess.run(cmd + [str(out)], check=True, capture_output=True, timeout=60)
    return out.read_bytes()


def test_dcz_decodes_with_zstd_cli(versions, sluice, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    new = open(NEW, "rb").read()
    r = blob(sluice, v2, {"Available-Dictionary": dictionary_header(v1),
                          "Accept-Encoding": "gzip, br, dcz"})
    assert r.status == 200, r
    assert r.header("content-encoding") == "dcz"
    assert "available-dictionary" in r.header("vary", "").lower()
    assert r.header("docker-content-digest") == v2
    assert len(r.body) < 0.25 * len(new), f"dcz delta is {len(r.body)} of {len(new)} bytes"
    assert r.body[:8] == bytes.fromhex("5e2a4d1820000000")
    assert r.body[8:40] == bytes.fromhex(v1.split(":")[1])
    frame = tmp_path / "frame.zst"
    frame.write_bytes(r.body[40:])
    got = decode(["zstd", "-q", "-d", f"--patch-from={OLD}", "--long=31", str(frame), "-o"],
                 tmp_path, "new-from-dcz")
    assert got == new and sha256_digest(got) == v2
    # a Range on the delta's bytes
    part = blob(sluice, v2, {"Available-Dictionary": dictionary_header(v1),
                             "Accept-Encoding": "dcz", "Range": "bytes=0-39"})
    assert part.status == 206 and part.body == r.body[:40]
    m = sluice.metrics()
    assert m.value("sluice_deltas_served_total", codec="dcz") == 2
    assert m.value("sluice_delta_bytes_saved_total") > len(new)


def test_vcdiff_226_decodes_with_xdelta3(versions, sluice, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    r = blob(sluice, v2, {"A-IM": "vcdiff", "If-None-Match": f'"{v1}"'})
    assert r.status == 226, r
    assert r.header("im") == "vcdiff" and r.header("delta-base") == f'"{v1}"'
    assert r.header("docker-content-digest") == v2
    d = tmp_path / "delta.vcdiff"
    d.write_bytes(r.body)
    got = decode(["xdelta3", "-d", "-f", "-s", OLD, str(d)], tmp_path, "new-from-vcdiff")
    assert sha256_digest(got) == v2


def test_sluice_client_gets_the_smallest(versions, sluice, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    r = blob(sluice, v2, {"A-IM": "sluice-bsz, vcdiff", "If-None-Match": f'"{v1}"',
                          "Accept-Encoding": "dcz", "Available-Dictionary": dictionary_header(v1)})
    assert r.status == 226 and r.header("im") == "sluice-bsz", r
    d = tmp_path / "delta.bsz"
    d.write_bytes(r.body)
    out = tmp_path / "new-from-bsz"
    subprocess.run([sluice.binary, "delta", "apply", "--from", OLD, "-o", str(out), str(d)],
                   check=True, capture_output=True, timeout=60)
    assert sha256_digest(out.read_bytes()) == v2
    vc = blob(sluice, v2, {"A-IM": "vcdiff", "If-None-Match": f'"{v1}"'})
    assert len(r.body) < len(vc.body)


@pytest.mark.parametrize("headers", [
    {"Available-Dictionary": ":not base64!:", "Accept-Encoding": "dcz"},
    {"Available-Dictionary": ":" + base64.b64encode(b"x" * 31).decode() + ":",
     "Accept-Encoding": "dcz"},
    {"A-IM": "vcdiff", "If-None-Match": '"sha256:1234"'},
    {"A-IM": "gdiff", "If-None-Match": '"sha256:' + "ab" * 32 + '"'},
])
def test_unknown_or_malformed_bases_get_the_full_blob(versions, sluice, headers):
    v2 = versions["2.4.2"]
    r = blob(sluice, v2, headers)
    assert r.status == 200 and not r.header("content-encoding") and not r.header("im")
    assert sha256_digest(r.body) == v2


def test_base_unknown_upstream_gets_the_full_blob(versions, sluice):
    v2 = versions["2.4.2"]
    missing = "sha256:" + "cd" * 32
    r = blob(sluice, v2, {"A-IM": "vcdiff", "If-None-Match": f'"{missing}"'})
    assert r.status == 200 and sha256_digest(r.body) == v2


def test_concurrent_requests_compute_once(versions, sluice_factory, registry):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    sl = sluice_factory(registry.url)
    hdrs = {"A-IM": "sluice-bsz", "If-None-Match": f'"{v1}"'}
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        rs = list(pool.map(lambda _: blob(sl, v2, hdrs), range(20)))
    assert all(r.status == 226 for r in rs), [r.status for r in rs]
    assert len({r.body for r in rs}) == 1
    m = sl.settled_metrics()
    assert m.value("sluice_deltas_computed_total") == 1
    assert m.value("sluice_deltas_served_total", codec="sluice-bsz") == 20


def test_delta_not_worth_it_serves_full(versions, sluice_factory, registry):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    sl = sluice_factory(registry.url, config=f"[upstream]\nurl = {registry.url}\n"
                                             "[delta]\nmax_percent = 1\n")
    r = blob(sl, v2, {"A-IM": "vcdiff", "If-None-Match": f'"{v1}"'})
    assert r.status == 200 and sha256_digest(r.body) == v2
    assert sl.metrics().value("sluice_delta_fallbacks_total") == 1


# -- child mode: a Sluice whose upstream is a Sluice -----------------------------------------

def test_child_gets_only_the_delta_from_its_parent(versions, sluice_factory, registry, tmp_path):
    v2 = versions["2.4.2"]
    parent = sluice_factory(registry.url, name="parent")
    child = sluice_factory(parent.url, name="child")
    pull(child.host, REPO, "2.4.1", str(tmp_path / "dev-v1"))
    before = child.settled_metrics().value("sluice_upstream_bytes_total")
    pulled = pull(child.host, REPO, "2.4.2", str(tmp_path / "dev-v2"))
    m = child.settled_metrics()
    fetched = m.value("sluice_upstream_bytes_total") - before
    size = os.path.getsize(NEW)
    assert m.value("sluice_parent_deltas_applied_total") == 1
    assert fetched < 0.25 * size, f"child fetched {fetched} bytes for a {size}-byte layer"
    # what the device got is the exact layer
    layer = tmp_path / "dev-v2" / "blobs" / "sha256" / v2.split(":")[1]
    assert sha256_digest(layer.read_bytes()) == v2
    assert pulled


def test_child_rejects_a_corrupt_delta_and_falls_back(fake_upstream, sluice_factory):
    fake = fake_upstream
    old, new = open(OLD, "rb").read(), open(NEW, "rb").read()
    v1 = fake.add_image(REPO, "2.4.1", [old])
    v2 = fake.add_image(REPO, "2.4.2", [new])
    fake.configure(garbage_deltas=True)
    child = sluice_factory(fake.url, name="child")
    for tag, img in (("2.4.1", v1), ("2.4.2", v2)):
        assert get(child.host, f"/v2/{REPO}/manifests/{tag}",
                   {"Accept": "application/vnd.oci.image.manifest.v1+json"}).status == 200
    r = blob(child, v1["layers"][0])
    assert r.status == 200 and sha256_digest(r.body) == v1["layers"][0]
    r = blob(child, v2["layers"][0])
    assert r.status == 200 and sha256_digest(r.body) == v2["layers"][0]
    m = child.settled_metrics()
    assert m.value("sluice_parent_deltas_rejected_total") == 1
    gets = fake.requests("GET", rf"/v2/{REPO}/blobs/{v2['layers'][0]}")
    assert len(gets) == 2, gets  # the delta ask, then the whole blob


def test_precompute_when_a_new_version_arrives(versions, sluice_factory, registry, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    sl = sluice_factory(registry.url, config=f"[upstream]\nurl = {registry.url}\n"
                                             "[delta]\nprecompute = 1\n")
    pull(sl.host, REPO, "2.4.1", str(tmp_path / "p1"))
    pull(sl.host, REPO, "2.4.2", str(tmp_path / "p2"))  # no delta asked: plain pulls
    wait_until(lambda: sl.metrics().value("sluice_deltas_computed_total") >= 1, 30,
               what="a precomputed delta")
    computed = sl.metrics().value("sluice_deltas_computed_total")
    r = blob(sl, v2, {"A-IM": "sluice-bsz, vcdiff", "If-None-Match": f'"{v1}"'})
    assert r.status == 226 and r.header("im") == "sluice-bsz"
    m = sl.metrics()
    assert m.value("sluice_delta_cache_hits_total") >= 1
    assert m.value("sluice_deltas_computed_total") == computed  # nothing computed on request
