# test_seed.py — disconnected sites: `sluice seed` (OCI layouts written by
# skopeo from Debian's docker-registry, tar archives of them, plain / gzip /
# zstd), `sluice export` (bundles that seed and `skopeo copy oci-archive:`
# read), `sluice gc` and `sluice stat`, and `sluice serve --offline` serving a
# seeded cache with the registry stopped. Bad input — corrupt, truncated,
# wrong or missing blobs, path traversal — is refused per entry: the entry
# that needs a bad object is not imported, naming the file and the object;
# the rest of the input is. kill -9 in the middle of a seed leaves a cache
# that a rerun completes and whose every digest verifies.
import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile
import time

import pytest

from conftest import (ACCEPT_ALL_MANIFESTS, MT_OCI_CONFIG, MT_OCI_MANIFEST, SANITIZER_RE, OciLayout,
                      Sluice, blob_path_re, build_cosign_signature, build_image, build_index,
                      canonical_json, generate_p256_key, get, layout_blob_digests, layout_closure,
                      pull, push, push_image, sha256_digest)

MiB = 1 << 20
MH = {"Accept": ACCEPT_ALL_MANIFESTS}
MT_RAW_LAYER = "application/vnd.oci.image.layer.v1.tar"


# -- running the CLI -------------------------------------------------------------------

def run_cli(sluice_bin, *args, timeout=600):
    p = subprocess.run([sluice_bin, *[str(a) for a in args]], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    m = SANITIZER_RE.search(p.stderr)
    assert not m, f"sanitizer report from sluice {args[0]}:\n{p.stderr[max(0, m.start() - 200):]}"
    return p


def seed(sluice_bin, cache, *paths, repo=None, config=None, extra=()):
    args = ["seed", "--cache", cache]
    if config:
        args += ["--config", config]
    if repo:
        args += ["--repo", repo]
    return run_cli(sluice_bin, *args, *extra, *paths)


def stat(sluice_bin, cache, verify=False):
    p = run_cli(sluice_bin, "stat", "--cache", cache, "--json", *(["--verify"] if verify else []))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def export(sluice_bin, cache, out, *refs, extra=()):
    return run_cli(sluice_bin, "export", "--cache", cache, "-o", out, *extra, *refs)


def data_hash(cache):
    with open(os.path.join(str(cache), "data.mdb"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture
def site_factory(sluice_bin, tmp_path):
    """make(upstream, **Sluice kwargs) -> a Sluice that is NOT started yet, so
    its cache (.cache) can be seeded first; started ones are stopped and
    checked at teardown."""
    made = []

    def make(upstream, **kw):
        kw.setdefault("name", f"site{len(made)}")
        s = Sluice(sluice_bin, upstream, tmp_path, **kw)
        made.append(s)
        return s

    yield make
    errors = []
    for s in made:
        if s.proc is not None:
            try:
                s.stop()
            except AssertionError as e:
                errors.append(str(e))
    if errors:
        pytest.fail("\n\n".join(errors))


# -- building inputs --------------------------------------------------------------------

def raw_image(lay, tag, sizes, seed_text, compressible=False):
    """An image whose layers are raw bytes (fast to make at any size)."""
    rng = random.Random(seed_text)
    layers = []
    for n in sizes:
        data = (bytes(rng.choice(b"abcdefghijklmnop") for _ in range(n)) if compressible
                else rng.randbytes(n))
        layers.append(lay.add_blob(data, MT_RAW_LAYER))
    cfg = lay.add_blob(canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                                       "rootfs": {"type": "layers",
                                                  "diff_ids": [l["digest"] for l in layers]}}),
                       MT_OCI_CONFIG)
    mbytes = canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg,
                             "layers": layers})
    mdesc = lay.add_blob(mbytes, MT_OCI_MANIFEST)
    if tag:
        lay.tag(mdesc, tag)
    return {"manifest": mdesc, "config": cfg, "layers": layers}


def blob_file(lay, digest):
    return os.path.join(lay.path, "blobs", "sha256", digest.split(":", 1)[1])


def image_blobs(img):
    return [img["manifest"]["digest"], img["config"]["digest"]] + [l["digest"] for l in img["layers"]]


def write_tar(lay, out, order, compress=None, extra_members=()):
    """A tar of layout `lay`. order "skopeo": blobs (sorted), then index.json
    and oci-layout, as skopeo's oci-archive writes them; otherwise a list of
    digests written after oci-layout and index.json, in that order.
    extra_members: (name, bytes) appended as regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(name, path=None, data=None):
            if path is not None:
                with open(path, "rb") as f:
                    data = f.read()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        files = ["index.json", "oci-layout"]
        if order == "skopeo":
            for name in sorted(os.listdir(lay.blobdir)):
                add(f"blobs/sha256/{name}", os.path.join(lay.blobdir, name))
            for name in files:
                add(name, os.path.join(lay.path, name))
        else:
            for name in reversed(files):
                add(name, os.path.join(lay.path, name))
            for d in order:
                add(f"blobs/sha256/{d.split(':', 1)[1]}", blob_file(lay, d))
        for name, data in extra_members:
            add(name, data=data)
    data = buf.getvalue()
    if compress == "gzip":
        data = gzip.compress(data, compresslevel=6)
    with open(out, "wb") as f:
        f.write(data)
    if compress == "zstd":
        subprocess.run(["zstd", "-q", "-f", "--rm", str(out), "-o", str(out) + ".zst"], check=True)
        os.rename(str(out) + ".zst", str(out))
    return str(out)


def two_images(tmp_path, name="lay", compressible=False):
    lay = OciLayout(tmp_path / name)
    a = raw_image(lay, "a", [100 * 1024, 3000], f"{name}-a", compressible)
    b = raw_image(lay, "b", [2 * MiB, 5000], f"{name}-b", compressible)
    return lay, a, b


def has_tag(sluice_bin, cache, ref, tmp_path):
    """Whether REF resolves in the cache with everything it needs (export succeeds)."""
    out = tmp_path / f"probe-{random.random()}.tar"
    p = export(sluice_bin, cache, out, ref)
    if p.returncode == 0:
        os.unlink(out)
    return p.returncode == 0


def assert_pulled_same(src_dir, via_dir, top):
    got = layout_blob_digests(via_dir)
    assert all(k == v for k, v in got.items()), "a pulled blob does not hash to its digest"
    assert layout_closure(src_dir, top) <= set(got)


# -- seeding what skopeo exported from a registry, then serving it offline ----------------

def test_seed_skopeo_layouts_then_serve_offline(registry, site_factory, sluice_bin, tmp_path):
    reg = registry.host
    img = push_image(registry, tmp_path, "edge/app", "1.0", [300 * 1024, 2 * MiB, 5000], seed="sk")
    md = img["manifest"]["digest"]
    priv, pub = generate_p256_key(tmp_path)
    sig = build_cosign_signature(img["layout"], tmp_path, priv, pub, f"{reg}/edge/app", md)
    push(img["layout"].path, sig["tag"], reg, "edge/app")
    src = OciLayout(tmp_path / "idx-src")
    idx = build_index(src, "multi", layer_sizes=(64 * 1024, 1000), seed="sk-idx")
    push(src.path, "multi", reg, "edge/multi", all_images=True)

    # what an operator does at the connected site: skopeo copy ... oci:DIR
    exp = tmp_path / "exported"
    assert pull(reg, "edge/app", "1.0", str(exp)) == md
    assert pull(reg, "edge/app", sig["tag"], str(exp)) == sig["manifest"]["digest"]
    exp_multi = tmp_path / "exported-multi"
    assert pull(reg, "edge/multi", "multi", str(exp_multi), all_images=True) == idx["index"]["digest"]

    site = site_factory(registry.url, extra_args=["--offline"])
    p = seed(sluice_bin, site.cache, exp, repo=f"{reg}/edge/app")
    assert p.returncode == 0, p.stderr
    assert "1 images, 1 signatures/referrers" in p.stdout and "0 problems" in p.stdout, p.stdout
    p = seed(sluice_bin, site.cache, exp_multi, repo=f"{reg}/edge/multi")
    assert p.returncode == 0 and "1 images" in p.stdout, p.stdout + p.stderr
    st = stat(sluice_bin, site.cache, verify=True)
    assert st["pinned_bytes"] == st["size_bytes"] > 2 * MiB
    assert st["partial_blobs"] == 0 and st["tags"] == 3

    registry.stop()
    site.start()
    via = tmp_path / "via"
    assert pull(site.host, "edge/app", "1.0", str(via)) == md
    assert_pulled_same(exp, via, md)
    via_multi = tmp_path / "via-multi"
    assert pull(site.host, "edge/multi", "multi", str(via_multi), all_images=True) == idx["index"]["digest"]
    assert_pulled_same(exp_multi, via_multi, idx["index"]["digest"])
    # the signature is served too: manifest and payload, byte for byte
    r = get(site.host, f"/v2/edge/app/manifests/{sig['tag']}", MH)
    assert r.status == 200 and sha256_digest(r.body) == sig["manifest"]["digest"], r
    payload = r.json()["layers"][0]
    b = get(site.host, f"/v2/edge/app/blobs/{payload['digest']}")
    assert b.status == 200 and b.body == sig["payload"]
    assert not registry.running


def test_seed_applies_trust_policy(registry, site_factory, sluice_bin, tmp_path):
    reg = registry.host
    lay = OciLayout(tmp_path / "lay")
    signed = raw_image(lay, "signed", [50000], "pol-signed")
    raw_image(lay, "unsigned", [60000], "pol-unsigned")
    priv, pub = generate_p256_key(tmp_path)
    build_cosign_signature(lay, tmp_path, priv, pub, f"{reg}/edge/app", signed["manifest"]["digest"])
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {
        f"{reg}/edge": [{"type": "sigstoreSigned", "keyPath": pub,
                         "signedIdentity": {"type": "matchRepository"}}]}}}))
    conf = f"[upstream]\nurl = {registry.url}\n[trust]\npolicy = {policy}\n"
    cfg = tmp_path / "seed.conf"
    cfg.write_text(conf)
    site = site_factory(registry.url, config=conf, extra_args=["--offline"])
    # --repo without a registry: the default upstream names it
    p = seed(sluice_bin, site.cache, lay.path, repo="edge/app", config=cfg)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"{reg}/edge/app:unsigned: denied by the trust policy" in p.stderr, p.stderr
    assert "1 images, 1 signatures/referrers, 0 deltas imported; 1 denied" in p.stdout, p.stdout
    assert has_tag(sluice_bin, site.cache, f"{reg}/edge/app:signed", tmp_path)
    assert not has_tag(sluice_bin, site.cache, f"{reg}/edge/app:unsigned", tmp_path)
    st = stat(sluice_bin, site.cache)
    assert st["blobs"] == 4  # signed's config and layer, the signature's config and payload
    registry.stop()
    site.start()
    assert get(site.host, "/v2/edge/app/manifests/signed", MH).status == 200
    assert get(site.host, f"/v2/edge/app/blobs/{signed['layers'][0]['digest']}").status == 200
    assert get(site.host, "/v2/edge/app/manifests/unsigned", MH).status != 200


# -- crash safety -----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["dir", "tar"])
def test_kill9_during_seed_then_rerun(registry, site_factory, sluice_bin, tmp_path, form):
    reg = registry.host
    lay = OciLayout(tmp_path / "big")
    big = raw_image(lay, "big", [48 * MiB] * 6 + [3000], "kill9")
    src = lay.path if form == "dir" else write_tar(lay, tmp_path / "big.tar", "skopeo")
    site = site_factory(registry.url, extra_args=["--offline"])
    rng = random.Random(f"kill9-{form}")
    cmd = [sluice_bin, "seed", "--cache", site.cache, "--repo", f"{reg}/edge/big", src]
    kills = 0
    for _ in range(5):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.0))  # each run resumes: kill early
        if proc.poll() is None:
            proc.kill()  # SIGKILL to this PID
            kills += 1
        proc.wait()
        st = stat(sluice_bin, site.cache)
        # what a kill leaves is consistent: the totals match, every complete blob verifies
        assert stat(sluice_bin, site.cache, verify=True)["blobs"] == st["blobs"]
        if st["partial_blobs"]:
            # eviction never takes a transfer in progress
            g = run_cli(sluice_bin, "gc", "--cache", site.cache, "--max-size", "1")
            assert stat(sluice_bin, site.cache)["partial_blobs"] == st["partial_blobs"], g.stdout
    assert kills >= 2, "the seed finished too fast to be killed; make the layout larger"
    p = seed(sluice_bin, site.cache, src, repo=f"{reg}/edge/big")
    assert p.returncode == 0, p.stderr
    st = stat(sluice_bin, site.cache, verify=True)
    assert st["partial_blobs"] == 0 and st["blobs"] == 8 and st["manifests"] == 1
    assert st["pinned_bytes"] == st["size_bytes"]
    site.start()
    via = tmp_path / "via"
    assert pull(site.host, "edge/big", "big", str(via), timeout=300) == big["manifest"]["digest"]
    assert_pulled_same(lay.path, via, big["manifest"]["digest"])


# -- bad input ---------------------------------------------------------------------------

def test_corrupted_tarball(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path, compressible=True)
    order = image_blobs(a) + image_blobs(b)
    bundle = write_tar(lay, tmp_path / "c.tar.gz", order, compress="gzip")
    data = bytearray(open(bundle, "rb").read())
    at = len(data) * 3 // 4  # inside b's big layer
    data[at:at + 256] = bytes(random.Random(7).randbytes(256))
    open(bundle, "wb").write(bytes(data))
    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, bundle, repo=f"{reg}/edge/app")
    assert p.returncode == 1, p.stdout + p.stderr
    assert bundle in p.stderr and f"{reg}/edge/app:b: not imported" in p.stderr, p.stderr
    assert has_tag(sluice_bin, cache, f"{reg}/edge/app:a", tmp_path)
    assert not has_tag(sluice_bin, cache, f"{reg}/edge/app:b", tmp_path)
    st = stat(sluice_bin, cache, verify=True)
    assert st["blobs"] == 3 and st["partial_blobs"] == 0  # a's config and layers only

    # the same corruption where blobs come before index.json: nothing is imported
    bundle2 = write_tar(lay, tmp_path / "c2.tar.gz", "skopeo", compress="gzip")
    data = bytearray(open(bundle2, "rb").read())
    at = len(data) // 2
    data[at:at + 256] = bytes(random.Random(8).randbytes(256))
    open(bundle2, "wb").write(bytes(data))
    cache2 = tmp_path / "cache2"
    p = seed(sluice_bin, cache2, bundle2, repo=f"{reg}/edge/app")
    assert p.returncode == 1 and bundle2 in p.stderr, p.stderr
    assert "no index.json" in p.stderr or "not imported" in p.stderr, p.stderr
    st = stat(sluice_bin, cache2, verify=True)
    assert st["tags"] == 0 and st["blobs"] == 0 and st["partial_blobs"] == 0


def test_truncated_tarball(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    # skopeo's order: blobs first; cut before index.json: nothing to import
    t = write_tar(lay, tmp_path / "t.tar", "skopeo")
    size = os.path.getsize(t)
    with open(t, "r+b") as f:
        f.truncate(size * 6 // 10)
    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, t, repo=f"{reg}/edge/app")
    assert p.returncode == 1, p.stdout + p.stderr
    assert t in p.stderr and "runcated" in p.stderr and "no index.json" in p.stderr, p.stderr
    st = stat(sluice_bin, cache, verify=True)
    assert st["blobs"] == 0 and st["tags"] == 0 and st["partial_blobs"] == 0
    # index first (as sluice export writes): a is complete before the cut, b is not
    t2 = write_tar(lay, tmp_path / "t2.tar", image_blobs(a) + image_blobs(b))
    with open(t2, "r+b") as f:
        f.truncate(os.path.getsize(t2) - 100 * 1024)
    p = seed(sluice_bin, cache, t2, repo=f"{reg}/edge/app")
    assert p.returncode == 1 and "runcated" in p.stderr, p.stderr
    assert has_tag(sluice_bin, cache, f"{reg}/edge/app:a", tmp_path)
    assert not has_tag(sluice_bin, cache, f"{reg}/edge/app:b", tmp_path)


@pytest.mark.parametrize("form", ["dir", "tar"])
def test_blob_that_does_not_match_its_digest(registry, sluice_bin, tmp_path, form):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    bad = b["layers"][1]["digest"]
    path = blob_file(lay, bad)
    n = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(random.Random(3).randbytes(n))  # same size, other bytes
    src = lay.path if form == "dir" else write_tar(lay, tmp_path / "m.tar", "skopeo")
    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, src, repo=f"{reg}/edge/app")
    assert p.returncode == 1, p.stdout + p.stderr
    hexd = bad.split(":", 1)[1]
    line = next((l for l in p.stderr.splitlines() if hexd in l and "does not match its digest" in l), None)
    assert line and src in line, p.stderr
    assert f"{reg}/edge/app:b: not imported" in p.stderr, p.stderr
    assert has_tag(sluice_bin, cache, f"{reg}/edge/app:a", tmp_path)
    assert not has_tag(sluice_bin, cache, f"{reg}/edge/app:b", tmp_path)
    st = stat(sluice_bin, cache, verify=True)
    assert st["blobs"] == 3, st  # nothing of b stays: not its bad layer, not its good ones


def test_blob_missing_from_layout(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    gone = b["layers"][0]["digest"]
    os.unlink(blob_file(lay, gone))
    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, lay.path, repo=f"{reg}/edge/app")
    assert p.returncode == 1
    assert f"blobs/sha256/{gone.split(':', 1)[1]} (layer of {reg}/edge/app:b): missing" in p.stderr, p.stderr
    assert has_tag(sluice_bin, cache, f"{reg}/edge/app:a", tmp_path)
    assert not has_tag(sluice_bin, cache, f"{reg}/edge/app:b", tmp_path)
    assert "1 images" in p.stdout and "1 refused" in p.stdout, p.stdout


def test_path_traversal_entries_are_refused(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    evil = [("../evil.txt", b"x"), ("/tmp/sluice-evil-abs.txt", b"y"),
            ("blobs/sha256/../../evil2.txt", b"z"), ("blobs/sha512/" + "0" * 128, b"w")]
    t = write_tar(lay, tmp_path / "evil.tar", "skopeo", extra_members=evil)
    p = subprocess.run([sluice_bin, "seed", "--cache", str(tmp_path / "cache"), "--repo",
                        f"{reg}/edge/app", t], capture_output=True, text=True, cwd=work)
    assert p.returncode == 1, p.stdout + p.stderr
    assert 'entry "../evil.txt": absolute path or ".." in the name (path traversal)' in p.stderr
    assert 'entry "/tmp/sluice-evil-abs.txt"' in p.stderr and "evil2.txt" in p.stderr
    assert "only sha256 is supported" in p.stderr, p.stderr
    assert not (tmp_path / "evil.txt").exists() and not os.path.exists("/tmp/sluice-evil-abs.txt")
    assert not list(work.iterdir())
    # the layout itself is imported: the bad entries were skipped, not followed
    assert "2 images" in p.stdout, p.stdout
    assert has_tag(sluice_bin, tmp_path / "cache", f"{reg}/edge/app:b", tmp_path)


def test_layout_without_repository_is_refused(sluice_bin, tmp_path):
    lay, a, b = two_images(tmp_path)
    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, lay.path)
    assert p.returncode == 1
    assert "name no repository" in p.stderr and "--repo" in p.stderr, p.stderr
    st = stat(sluice_bin, cache)
    assert st["blobs"] == 0 and st["tags"] == 0


# -- idempotence and export ---------------------------------------------------------------

def test_seeding_twice_changes_nothing(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    t = write_tar(lay, tmp_path / "l.tar.zst", "skopeo", compress="zstd")
    for src in (lay.path, t):
        cache = tmp_path / f"cache-{os.path.basename(src)}"
        p = seed(sluice_bin, cache, src, repo=f"{reg}/edge/app")
        assert p.returncode == 0, p.stderr
        before = data_hash(cache)
        p = seed(sluice_bin, cache, src, repo=f"{reg}/edge/app")
        assert p.returncode == 0 and "0 blobs stored" in p.stdout, p.stdout
        assert data_hash(cache) == before, f"a second seed of {src} changed the cache"


def tar_names(path):
    out = subprocess.run(["tar", "-tf", str(path)], capture_output=True, text=True, check=True)
    return sorted(out.stdout.split())


def bundle_index(path):
    out = subprocess.run(["tar", "-xOf", str(path), "index.json"], capture_output=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("zstd", [False, True])
def test_export_then_seed_fresh_cache(registry, site_factory, sluice_bin, tmp_path, zstd):
    reg = registry.host
    lay = OciLayout(tmp_path / "src")
    img = build_image(lay, [200 * 1024, 7000], tag="1.0", seed="exp")
    idx = build_index(lay, "multi", layer_sizes=(30000,), seed="exp-idx")
    md = img["manifest"]["digest"]
    priv, pub = generate_p256_key(tmp_path)
    sig = build_cosign_signature(lay, tmp_path, priv, pub, f"{reg}/edge/app", md)
    first = tmp_path / "first"
    assert seed(sluice_bin, first, lay.path, repo=f"{reg}/edge/app").returncode == 0
    bundle = tmp_path / ("b.tar.zst" if zstd else "b.tar")
    p = export(sluice_bin, first, bundle, f"{reg}/edge/app:1.0", f"{reg}/edge/app:multi",
               extra=["--zstd"] if zstd else [])
    assert p.returncode == 0, p.stderr
    assert "2 artifacts, 1 signatures/referrers" in p.stdout, p.stdout
    names = tar_names(bundle)
    want = {f"blobs/sha256/{d.split(':', 1)[1]}" for d in layout_closure(lay.path, md) |
            layout_closure(lay.path, idx["index"]["digest"]) | layout_closure(lay.path, sig["manifest"]["digest"])}
    assert want <= set(names) and "index.json" in names and "oci-layout" in names

    # a fresh site: no --repo needed, the bundle names its repositories
    site = site_factory(registry.url, extra_args=["--offline"])
    p = seed(sluice_bin, site.cache, bundle)
    assert p.returncode == 0, p.stderr
    assert "2 images, 1 signatures/referrers" in p.stdout, p.stdout
    again = tmp_path / ("again.tar.zst" if zstd else "again.tar")
    assert export(sluice_bin, site.cache, again, f"{reg}/edge/app:1.0", f"{reg}/edge/app:multi",
                  extra=["--zstd"] if zstd else []).returncode == 0
    assert tar_names(again) == names
    assert bundle_index(again) == bundle_index(bundle)
    assert stat(sluice_bin, site.cache, verify=True)["partial_blobs"] == 0

    # skopeo reads the bundle (plain or zstd)
    out = tmp_path / "skopeo-out"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--preserve-digests",
                    f"oci-archive:{bundle}:1.0", f"oci:{out}:1.0"], check=True, capture_output=True)
    assert layout_closure(out, md) == layout_closure(lay.path, md)
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--all", "--preserve-digests",
                    f"oci-archive:{bundle}:multi", f"oci:{out}:multi"], check=True, capture_output=True)
    with open(os.path.join(out, "index.json")) as f:
        tags = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
                for m in json.load(f)["manifests"]}
    assert tags == {"1.0": md, "multi": idx["index"]["digest"]}

    registry.stop()
    site.start()
    via = tmp_path / "via"
    assert pull(site.host, "edge/app", "1.0", str(via)) == md
    r = get(site.host, f"/v2/edge/app/manifests/{sig['tag']}", MH)
    assert r.status == 200 and sha256_digest(r.body) == sig["manifest"]["digest"]


def test_export_refuses_what_the_cache_lacks(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    cache = tmp_path / "cache"
    assert seed(sluice_bin, cache, lay.path, repo=f"{reg}/edge/app").returncode == 0
    out = tmp_path / "x.tar"
    p = export(sluice_bin, cache, out, f"{reg}/edge/app:nope")
    assert p.returncode == 1 and "no tag nope" in p.stderr, p.stderr
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith("x.tar")]


def test_deltas_travel_in_bundles(registry, sluice_bin, tmp_path):
    reg = registry.host
    rng = random.Random("deltas")
    old = bytearray(rng.randbytes(300 * 1024))
    new = bytearray(old)
    for _ in range(20):
        at = rng.randrange(len(new) - 100)
        new[at:at + 100] = rng.randbytes(100)
    lay = OciLayout(tmp_path / "lay")

    def image(tag, data):
        l = lay.add_blob(bytes(data), MT_RAW_LAYER)
        c = lay.add_blob(canonical_json({"architecture": "amd64", "os": "linux", "config": {},
                                         "rootfs": {"type": "layers", "diff_ids": [l["digest"]]}}),
                         MT_OCI_CONFIG)
        m = lay.add_blob(canonical_json({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": c,
                                         "layers": [l]}), MT_OCI_MANIFEST)
        lay.tag(m, tag)
        return l["digest"]

    base, target = image("v1", old), image("v2", new)
    (tmp_path / "old").write_bytes(old)
    (tmp_path / "new").write_bytes(new)
    subprocess.run(["zstd", "-q", "-f", "--patch-from", str(tmp_path / "old"), str(tmp_path / "new"),
                    "-o", str(tmp_path / "delta")], check=True)
    delta = lay.add_blob((tmp_path / "delta").read_bytes(), "application/octet-stream")
    with open(os.path.join(lay.path, "index.json")) as f:
        index = json.load(f)
    index["annotations"] = {"dev.sluice.deltas.v1": json.dumps([
        {"base": base, "target": target, "codec": "zstd", "digest": delta["digest"], "size": delta["size"]}])}
    with open(os.path.join(lay.path, "index.json"), "w") as f:
        json.dump(index, f)

    cache = tmp_path / "cache"
    p = seed(sluice_bin, cache, lay.path, repo=f"{reg}/edge/drv")
    assert p.returncode == 0 and "1 deltas imported" in p.stdout, p.stdout + p.stderr
    st = stat(sluice_bin, cache)
    assert st["deltas"] == 1 and st["delta_bytes"] == delta["size"]
    assert st["pinned_bytes"] == st["size_bytes"]
    bundle = tmp_path / "b.tar"
    p = export(sluice_bin, cache, bundle, f"{reg}/edge/drv:v2", extra=["--deltas-from", f"{reg}/edge/drv:v1"])
    assert p.returncode == 0 and "1 deltas" in p.stdout, p.stdout + p.stderr
    ann = json.loads(bundle_index(bundle)["annotations"]["dev.sluice.deltas.v1"])
    assert ann == [{"base": base, "target": target, "codec": "zstd", "digest": delta["digest"],
                    "size": delta["size"]}]
    fresh = tmp_path / "fresh"
    p = seed(sluice_bin, fresh, bundle)
    assert p.returncode == 0 and "1 images" in p.stdout and "1 deltas imported" in p.stdout, p.stdout
    st = stat(sluice_bin, fresh, verify=True)
    assert st["deltas"] == 1
    # the delta a site got rebuilds the new version from the old one
    raw = subprocess.run(["tar", "-xOf", str(bundle), f"blobs/sha256/{delta['digest'].split(':', 1)[1]}"],
                         capture_output=True, check=True).stdout
    (tmp_path / "got-delta").write_bytes(raw)
    subprocess.run(["zstd", "-q", "-d", "-f", "--patch-from", str(tmp_path / "old"), str(tmp_path / "got-delta"),
                    "-o", str(tmp_path / "rebuilt")], check=True)
    assert (tmp_path / "rebuilt").read_bytes() == bytes(new)
    # without --deltas-from, no deltas travel
    p = export(sluice_bin, cache, tmp_path / "nodelta.tar", f"{reg}/edge/drv:v2")
    assert p.returncode == 0 and "0 deltas" in p.stdout


# -- a running daemon, quota ------------------------------------------------------------------

def test_seed_while_serving_the_same_cache(registry, site_factory, sluice_bin, tmp_path):
    reg = registry.host
    img = push_image(registry, tmp_path, "edge/live", "v1", [1 * MiB, 4000], seed="live")
    exp = tmp_path / "exp"
    assert pull(reg, "edge/live", "v1", str(exp)) == img["manifest"]["digest"]
    site = site_factory(registry.url)
    site.start()
    gets_before = {l["digest"]: registry.count_requests("GET", blob_path_re("edge/live", l["digest"]))
                   for l in img["layers"]}
    p = seed(sluice_bin, site.cache, exp, repo=f"{reg}/edge/live")
    assert p.returncode == 0, p.stderr
    time.sleep(1.5)  # the daemon's workers pick up another process's writes within a second
    via = tmp_path / "via"
    assert pull(site.host, "edge/live", "v1", str(via)) == img["manifest"]["digest"]
    # the layers came from the seeded cache, not from the registry
    for d, n in gets_before.items():
        assert registry.count_requests("GET", blob_path_re("edge/live", d)) == n
    assert site.healthy()


def test_gc_evicts_least_recently_used_and_keeps_pinned(registry, sluice_bin, tmp_path):
    reg = registry.host
    cache = tmp_path / "cache"
    lays = {}
    for name, size in (("pinned", 1 * MiB), ("old", 1 * MiB), ("new", 1 * MiB)):
        lay = OciLayout(tmp_path / name)
        raw_image(lay, name, [size], f"gc-{name}")
        lays[name] = lay
    assert seed(sluice_bin, cache, lays["pinned"].path, repo=f"{reg}/edge/gc").returncode == 0
    pinned = stat(sluice_bin, cache)["pinned_bytes"]
    assert seed(sluice_bin, cache, lays["old"].path, repo=f"{reg}/edge/gc", extra=["--no-pin"]).returncode == 0
    time.sleep(1.1)  # access times are in seconds
    assert seed(sluice_bin, cache, lays["new"].path, repo=f"{reg}/edge/gc", extra=["--no-pin"]).returncode == 0
    st = stat(sluice_bin, cache)
    assert st["pinned_bytes"] == pinned and st["size_bytes"] > 3 * MiB
    limit = st["size_bytes"] - MiB // 2
    g = run_cli(sluice_bin, "gc", "--cache", cache, "--max-size", limit)
    assert g.returncode == 0 and "evicted" in g.stdout, g.stdout + g.stderr
    st = stat(sluice_bin, cache, verify=True)
    assert st["size_bytes"] <= limit and st["pinned_bytes"] == pinned
    assert has_tag(sluice_bin, cache, f"{reg}/edge/gc:pinned", tmp_path)
    assert has_tag(sluice_bin, cache, f"{reg}/edge/gc:new", tmp_path)
    assert not has_tag(sluice_bin, cache, f"{reg}/edge/gc:old", tmp_path)
    # a bound below what is pinned: everything else goes, the pinned image stays, exit 1
    g = run_cli(sluice_bin, "gc", "--cache", cache, "--max-size", "1K")
    assert g.returncode == 1, g.stdout + g.stderr
    assert has_tag(sluice_bin, cache, f"{reg}/edge/gc:pinned", tmp_path)
    assert stat(sluice_bin, cache)["size_bytes"] == pinned
    # no bound configured: gc says so
    g = run_cli(sluice_bin, "gc", "--cache", cache)
    assert g.returncode == 2 and "max_size" in g.stderr


def test_stat_reports(registry, sluice_bin, tmp_path):
    reg = registry.host
    lay, a, b = two_images(tmp_path)
    cache = tmp_path / "cache"
    assert seed(sluice_bin, cache, lay.path, repo=f"{reg}/edge/app").returncode == 0
    p = run_cli(sluice_bin, "stat", "--cache", cache)
    assert p.returncode == 0
    for word in ("size", "pinned", "objects", "hit ratio", "served", "fetched upstream", "saved by deltas"):
        assert word in p.stdout, p.stdout
    st = stat(sluice_bin, cache)
    assert st["blobs"] == 6 and st["manifests"] == 2 and st["tags"] == 2
    assert st["size_bytes"] == st["blob_bytes"] + st["manifest_bytes"] == st["pinned_bytes"]
    p = run_cli(sluice_bin, "stat", "--cache", tmp_path / "nowhere")
    assert p.returncode == 2 and "no cache there" in p.stderr


def test_daemon_keeps_cache_within_max_size(registry, site_factory, sluice_bin, tmp_path):
    """max_size in sluice.conf: the daemon evicts least-recently-used unpinned
    content as it fills; seeded (pinned) content and the service survive."""
    reg = registry.host
    lay = OciLayout(tmp_path / "pinned")
    pinned = raw_image(lay, "keep", [2 * MiB], "quota-pinned")
    site = site_factory(registry.url, config="[cache]\nmax_size = 6M\n")
    assert seed(sluice_bin, site.cache, lay.path, repo=f"{reg}/edge/keep").returncode == 0
    site.start()
    for i in range(6):
        img = push_image(registry, tmp_path, f"edge/fill{i}", "v1", [1 * MiB], seed=f"fill{i}")
        assert pull(site.host, f"edge/fill{i}", "v1", str(tmp_path / f"via{i}")) == img["manifest"]["digest"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and stat(sluice_bin, site.cache)["size_bytes"] > 6 * MiB:
        time.sleep(0.2)
    st = stat(sluice_bin, site.cache)
    assert st["size_bytes"] <= 6 * MiB, st
    assert site.healthy()
    # the oldest went, the newest stayed
    assert not has_tag(sluice_bin, site.cache, f"{reg}/edge/fill0:v1", tmp_path)
    assert has_tag(sluice_bin, site.cache, f"{reg}/edge/fill5:v1", tmp_path)
    registry.stop()
    assert pull(site.host, "edge/keep", "keep", str(tmp_path / "kept")) == pinned["manifest"]["digest"]
