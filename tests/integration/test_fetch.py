# test_fetch.py — `sluice fetch`, the device side of deltas, against real
# peers: two versions of a driver artifact (a real kernel-module pair,
# tests/data/modules) pushed with skopeo to Debian's docker-registry and
# served by a Sluice; v1 fetched whole into an OCI layout, v2 fetched with
# --have as a delta (the report says how much was sent), the layout read back
# by skopeo. A damaged base and a server sending junk deltas both end with the
# right bytes, fetched whole; wrong bytes from the server fail verification
# and leave nothing behind; bad references are usage errors (exit 2); an
# index gives the running platform's image or, with --all-platforms, all.
import base64
import json
import os
import platform
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import (SANITIZER_RE, OciLayout, Sluice, build_artifact, build_index,
                      layout_blob_digests, layout_closure, layout_ref_digest, push, sha256_digest)
from ocilayout import SkopeoError, _skopeo

HERE = os.path.dirname(os.path.abspath(__file__))
PAIR = os.path.join(os.path.dirname(HERE), "data", "modules", "nvme-core")
OLD, NEW = os.path.join(PAIR, "old.ko"), os.path.join(PAIR, "new.ko")
REPO = "drivers/nvme-core"
ROW_RE = re.compile(r"^(sha256:[0-9a-f]{12})\s+(\S+)\s+(\S+)\s+(\d+)\s+(\d+)\s+([\d.]+)%\s+(.*)$")
TOTAL_RE = re.compile(r"^total: (\d+) of (\d+) bytes transferred")


@pytest.fixture
def versions(registry, tmp_path):
    """{tag: {"manifest": digest, "layer": digest}} for 2.4.1 (old.ko) and 2.4.2 (new.ko)."""
    out = {}
    for tag, path in (("2.4.1", OLD), ("2.4.2", NEW)):
        lay = OciLayout(tmp_path / f"lay-{tag}")
        art = build_artifact(lay, tag, path, title="nvme-core.ko")
        push(lay.path, tag, registry.host, REPO)
        out[tag] = {"manifest": art["manifest"]["digest"], "layer": art["layers"][0]["digest"]}
    return out


class Fetch:
    def __init__(self, proc):
        self.rc, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.rows = {}
        self.total = None
        for line in self.stdout.splitlines():
            m = ROW_RE.match(line)
            if m:
                self.rows[m.group(1)] = {"type": m.group(2), "name": m.group(3), "size": int(m.group(4)),
                                         "sent": int(m.group(5)), "how": m.group(7)}
            m = TOTAL_RE.match(line)
            if m:
                self.total = (int(m.group(1)), int(m.group(2)))

    def row(self, digest):
        short = digest[:19]
        assert short in self.rows, f"no report row for {digest}:\n{self.stdout}"
        return self.rows[short]

    def __repr__(self):
        return f"<fetch rc={self.rc}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}>"


def fetch(sluice_bin, *args, timeout=300, env=None) -> Fetch:
    p = subprocess.run([sluice_bin, "fetch", *[str(a) for a in args]], capture_output=True, text=True,
                       timeout=timeout, env=env)
    m = SANITIZER_RE.search(p.stderr)
    assert not m, f"sanitizer report from sluice fetch:\n{p.stderr[max(0, m.start() - 200):]}"
    return Fetch(p)


def blob_file(layout, digest):
    return os.path.join(str(layout), "blobs", "sha256", digest.split(":", 1)[1])


def assert_valid_layout(layout, tag, manifest):
    """index.json names `manifest` as `tag`, every blob of its closure is present
    and every blob file matches its name; no temporary file is left."""
    assert layout_ref_digest(layout, tag) == manifest
    files = layout_blob_digests(layout)
    assert all(name == got for name, got in files.items()), files
    assert layout_closure(layout, manifest) <= set(files)
    leftovers = [n for n in os.listdir(os.path.join(str(layout), "blobs", "sha256")) if n.startswith(".")]
    assert not leftovers, leftovers
    with open(os.path.join(str(layout), "oci-layout")) as f:
        assert json.load(f) == {"imageLayoutVersion": "1.0.0"}


def test_second_version_arrives_as_a_delta(versions, sluice, sluice_bin, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    dir1, dir2, dir3 = tmp_path / "dev-v1", tmp_path / "dev-v2", tmp_path / "copy"
    f1 = fetch(sluice_bin, "-o", dir1, f"{sluice.url}/{REPO}:2.4.1")
    assert f1.rc == 0, f1
    assert f1.row(v1["layer"])["how"] == "whole" and f1.row(v1["layer"])["name"] == "nvme-core.ko"
    assert_valid_layout(dir1, "2.4.1", v1["manifest"])

    f2 = fetch(sluice_bin, "--have", dir1, "-o", dir2, f"{sluice.url}/{REPO}:2.4.2")
    assert f2.rc == 0, f2
    layer = f2.row(v2["layer"])
    size = os.path.getsize(NEW)
    assert layer["size"] == size
    assert layer["how"].startswith("delta sluice-bsz from " + v1["layer"][:19]), f2
    assert 0 < layer["sent"] < 0.25 * size, f2
    config = [r for r in f2.rows.values() if r["type"] == "config"]
    assert config and config[0]["how"] == "copied from --have" and config[0]["sent"] == 0, f2
    sent, total = f2.total
    assert sent < 0.25 * total and total > size, f2
    assert_valid_layout(dir2, "2.4.2", v2["manifest"])
    with open(blob_file(dir2, v2["layer"]), "rb") as got, open(NEW, "rb") as want:
        assert got.read() == want.read()
    assert sluice.metrics().value("sluice_deltas_served_total", codec="sluice-bsz") == 1

    # skopeo reads the layout the device wrote
    _skopeo(["copy", "--preserve-digests", f"oci:{dir2}:2.4.2", f"oci:{dir3}:copied"])
    assert layout_ref_digest(dir3, "copied") == v2["manifest"]
    assert sha256_digest(open(blob_file(dir3, v2["layer"]), "rb").read()) == v2["layer"]

    # again into the same layout: nothing to transfer but the manifest
    f3 = fetch(sluice_bin, "--have", dir1, "-o", dir2, f"{sluice.url}/{REPO}:2.4.2")
    assert f3.rc == 0, f3
    assert f3.row(v2["layer"])["how"] == "already in the output" and f3.row(v2["layer"])["sent"] == 0
    assert f3.total[0] == f3.row(v2["manifest"])["size"]


def test_delta_from_an_older_version_in_the_output_itself(versions, sluice, sluice_bin, tmp_path):
    v2 = versions["2.4.2"]
    dev = tmp_path / "dev"
    assert fetch(sluice_bin, "-o", dev, f"{sluice.url}/{REPO}:2.4.1").rc == 0
    f = fetch(sluice_bin, "-o", dev, f"{sluice.url}/{REPO}@{v2['manifest']}")
    assert f.rc == 0, f
    assert f.row(v2["layer"])["how"].startswith("delta "), f
    # by digest: named in index.json without a tag, next to 2.4.1
    with open(dev / "index.json") as fh:
        entries = json.load(fh)["manifests"]
    assert [e["digest"] for e in entries if "annotations" not in e] == [v2["manifest"]]
    assert layout_ref_digest(dev, "2.4.1") == versions["2.4.1"]["manifest"]
    assert layout_blob_digests(dev)[v2["layer"]] == v2["layer"]


def test_damaged_base_gives_the_right_bytes(versions, sluice, sluice_bin, tmp_path):
    v1, v2 = versions["2.4.1"], versions["2.4.2"]
    dir1, dir2 = tmp_path / "dev-v1", tmp_path / "dev-v2"
    assert fetch(sluice_bin, "-o", dir1, f"{sluice.url}/{REPO}:2.4.1").rc == 0
    base = blob_file(dir1, v1["layer"])
    with open(base, "r+b") as fh:
        fh.seek(4096)
        byte = fh.read(1)
        fh.seek(4096)
        fh.write(bytes([byte[0] ^ 0x5A]))

    f = fetch(sluice_bin, "--have", dir1, "-o", dir2, f"{sluice.url}/{REPO}:2.4.2")
    assert f.rc == 0, f
    layer = f.row(v2["layer"])
    assert layer["how"].startswith("whole (delta sluice-bsz from ") and "rejected" in layer["how"], f
    assert layer["sent"] > os.path.getsize(NEW), f  # the delta, then the whole blob
    assert "rejected" in f.stderr and "damaged" in f.stderr, f
    assert_valid_layout(dir2, "2.4.2", v2["manifest"])


def test_junk_delta_is_fetched_again_whole(fake_upstream, sluice_bin, tmp_path):
    fake = fake_upstream
    old, new = open(OLD, "rb").read(), open(NEW, "rb").read()
    v1 = fake.add_image(REPO, "2.4.1", [old])
    v2 = fake.add_image(REPO, "2.4.2", [new])
    dir1, dir2 = tmp_path / "dev-v1", tmp_path / "dev-v2"
    assert fetch(sluice_bin, "-o", dir1, f"{fake.url}/{REPO}:2.4.1").rc == 0
    fake.configure(garbage_deltas=True)
    fake.reset_log()
    f = fetch(sluice_bin, "--have", dir1, "-o", dir2, f"{fake.url}/{REPO}:2.4.2")
    assert f.rc == 0, f
    assert "rejected" in f.row(v2["layers"][0])["how"], f
    gets = fake.requests("GET", rf"/v2/{REPO}/blobs/{v2['layers'][0]}")
    assert [g["status"] for g in gets] == [226, 200], gets  # the delta ask, then the whole blob
    assert_valid_layout(dir2, "2.4.2", v2["manifest"])
    assert v1["layers"][0] != v2["layers"][0]


def test_wrong_bytes_fail_and_leave_nothing(fake_upstream, sluice_bin, tmp_path):
    fake = fake_upstream
    img = fake.add_image(REPO, "1", [b"layer one" * 1000, b"layer two" * 1000])
    bad = img["layers"][1]
    fake.set_mode("corrupt", bad)
    out = tmp_path / "dev"
    f = fetch(sluice_bin, "-o", out, f"{fake.url}/{REPO}:1")
    assert f.rc == 1, f
    assert f.row(bad)["how"].startswith("FAILED"), f
    assert "hash to" in f.stderr, f
    assert not os.path.exists(blob_file(out, bad))
    assert os.path.exists(blob_file(out, img["layers"][0]))  # the good one is kept
    with open(out / "index.json") as fh:
        assert json.load(fh)["manifests"] == []  # nothing names the incomplete image
    assert not [n for n in os.listdir(out / "blobs" / "sha256") if n.startswith(".")]
    # once the server is right again, a rerun completes the layout
    fake.set_mode("ok", bad)
    f = fetch(sluice_bin, "-o", out, f"{fake.url}/{REPO}:1")
    assert f.rc == 0, f
    assert f.row(img["layers"][0])["how"] == "already in the output"
    assert_valid_layout(out, "1", img["manifest"])


def test_manifest_digest_is_verified(fake_upstream, sluice_bin, tmp_path):
    fake = fake_upstream
    img = fake.add_image(REPO, "1", [b"x" * 100])
    fake.set_mode("corrupt", img["manifest"])
    f = fetch(sluice_bin, "-o", tmp_path / "a", f"{fake.url}/{REPO}:1")
    assert f.rc == 1 and "verification failed" in f.stderr, f
    f = fetch(sluice_bin, "-o", tmp_path / "b", f"{fake.url}/{REPO}@{img['manifest']}")
    assert f.rc == 1 and "verification failed" in f.stderr, f


def test_redirected_blobs_and_registry_errors(fake_upstream, sluice_bin, tmp_path):
    fake = fake_upstream
    img = fake.add_image(REPO, "1", [b"redirected" * 500])
    fake.configure(redirect_blobs=True)
    f = fetch(sluice_bin, "-o", tmp_path / "a", f"{fake.url}/{REPO}:1")
    assert f.rc == 0, f
    assert_valid_layout(tmp_path / "a", "1", img["manifest"])
    assert fake.count("GET", r"/_storage/.*") == 2  # config and layer from "object storage"

    f = fetch(sluice_bin, "-o", tmp_path / "b", f"{fake.url}/{REPO}:nope")
    assert f.rc == 1 and "HTTP 404: MANIFEST_UNKNOWN: manifest unknown" in f.stderr, f
    fake.configure(mode="error500")
    f = fetch(sluice_bin, "-o", tmp_path / "c", f"{fake.url}/{REPO}:1")
    assert f.rc == 1 and "HTTP 500: UNKNOWN: injected failure" in f.stderr, f


@pytest.mark.parametrize("ref", [
    "drivers/nvme-core:2.4.2",                      # no URL
    "ftp://127.0.0.1:1/drivers/nvme-core:2.4.2",    # not http(s)
    "http://127.0.0.1:1/drivers/nvme-core",         # no tag or digest
    "http://127.0.0.1:1/Drivers/nvme-core:2.4.2",   # invalid name
    "http://127.0.0.1:1/drivers/nvme-core:bad!tag",  # invalid tag
    "http://127.0.0.1:1/drivers/nvme-core@sha256:1234",  # short digest
    "http://127.0.0.1:1/drivers/nvme-core@md5:" + "0" * 32,
])
def test_bad_reference_is_a_usage_error(sluice_bin, tmp_path, ref):
    out = tmp_path / "out"
    f = fetch(sluice_bin, "-o", out, ref)
    assert f.rc == 2, f
    assert f.stderr.startswith("sluice fetch: ") and ref in f.stderr, f
    assert not out.exists()


def test_usage_errors(sluice_bin, tmp_path):
    assert fetch(sluice_bin, "http://127.0.0.1:1/a:1").rc == 2  # no -o
    assert fetch(sluice_bin, "-o", tmp_path / "o").rc == 2  # no reference
    assert fetch(sluice_bin, "--bogus", "-o", tmp_path / "o", "http://127.0.0.1:1/a:1").rc == 2
    assert fetch(sluice_bin, "--help").rc == 0
    f = fetch(sluice_bin, "--have", tmp_path / "missing", "-o", tmp_path / "o", "http://127.0.0.1:1/a:1")
    assert f.rc == 2 and "not an OCI image layout" in f.stderr, f


def test_index_gives_the_running_platform_or_all(registry, sluice_bin, tmp_path):
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine())
    if arch is None:
        pytest.skip(f"no test image for {platform.machine()}")
    lay = OciLayout(tmp_path / "src")
    idx = build_index(lay, "multi", platforms=(("linux", "amd64"), ("linux", "arm64")), seed="fetch")
    push(lay.path, "multi", registry.host, "edge/multi", all_images=True)
    mine = next(i for i in idx["images"] if json.loads(i["manifest_bytes"])["config"]
                and json.loads(lay.read_blob(i["config"]["digest"]))["architecture"] == arch)

    one = tmp_path / "one"
    f = fetch(sluice_bin, "-o", one, f"{registry.url}/edge/multi:multi")
    assert f.rc == 0, f
    assert_valid_layout(one, "multi", mine["manifest"]["digest"])
    with open(one / "index.json") as fh:
        assert json.load(fh)["manifests"][0]["platform"]["architecture"] == arch

    every = tmp_path / "all"
    f = fetch(sluice_bin, "--all-platforms", "-o", every, f"{registry.url}/edge/multi:multi")
    assert f.rc == 0, f
    assert_valid_layout(every, "multi", idx["index"]["digest"])
    try:
        _skopeo(["copy", "--all", "--preserve-digests", f"oci:{every}:multi", f"oci:{tmp_path / 'c'}:m"])
    except SkopeoError as e:
        pytest.fail(str(e))
    assert layout_ref_digest(tmp_path / "c", "m") == idx["index"]["digest"]


# -- TLS ------------------------------------------------------------------------------------

class TlsSluice(Sluice):
    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"


def test_https_needs_the_ca_or_insecure(versions, sluice_bin, registry, tmp_path, monkeypatch):
    key, crt = str(tmp_path / "key.pem"), str(tmp_path / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    monkeypatch.setenv("SSL_CERT_FILE", crt)  # for the readiness probe (urllib)
    s = TlsSluice(sluice_bin, registry.url, tmp_path, name="tls",
                  extra_args=["--tls-cert", crt, "--tls-key", key]).start()
    try:
        ref = f"{s.url}/{REPO}:2.4.1"
        f = fetch(sluice_bin, "-o", tmp_path / "a", ref, env=env)
        assert f.rc == 1 and "certificate" in f.stderr.lower(), f
        f = fetch(sluice_bin, "--cacert", crt, "-o", tmp_path / "b", ref, env=env)
        assert f.rc == 0, f
        assert_valid_layout(tmp_path / "b", "2.4.1", versions["2.4.1"]["manifest"])
        f = fetch(sluice_bin, "--insecure", "-o", tmp_path / "c", ref, env=env)
        assert f.rc == 0, f
    finally:
        s.stop()


# -- a plain RFC 9842 / RFC 3229 server ---------------------------------------------------------

class DeltaServer:
    """A registry in a thread, serving one layout, that answers a blob request
    naming a base it has a delta for with that delta: `dcz` (200,
    Content-Encoding: dcz) or `vcdiff` (226 IM Used), as a server that is not a
    Sluice would. Records the headers of every blob request."""

    def __init__(self, layout, deltas, codec):
        self.layout, self.deltas, self.codec, self.seen = layout, deltas, codec, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def send(self, h, status, body, headers):
        h.send_response(status)
        for k, v in dict(headers, **{"Content-Length": str(len(body))}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def handle(self, h):
        m = re.fullmatch(r"/v2/(.+)/(manifests|blobs)/(.+)", h.path)
        if not m:
            return self.send(h, 404, b"{}", {})
        ref = m.group(3)
        if m.group(2) == "manifests":
            digest = layout_ref_digest(self.layout.path, ref)
            body = self.layout.read_blob(digest)
            return self.send(h, 200, body, {"Content-Type": json.loads(body)["mediaType"],
                                            "Docker-Content-Digest": digest})
        self.seen.append({k.lower(): v for k, v in h.headers.items()})
        base = (h.headers.get("If-None-Match") or "").strip('"')
        hdrs = {"Docker-Content-Digest": ref}
        if (ref, base) in self.deltas and self.codec == "dcz" and "dcz" in h.headers.get("Accept-Encoding", ""):
            hdrs.update({"Content-Encoding": "dcz", "Vary": "Accept-Encoding, Available-Dictionary"})
            return self.send(h, 200, self.deltas[(ref, base)], hdrs)
        if (ref, base) in self.deltas and self.codec == "vcdiff" and "vcdiff" in h.headers.get("A-IM", ""):
            hdrs.update({"IM": "vcdiff", "Delta-Base": f'"{base}"'})
            return self.send(h, 226, self.deltas[(ref, base)], hdrs)
        return self.send(h, 200, self.layout.read_blob(ref), hdrs)


@pytest.mark.parametrize("codec", ["dcz", "vcdiff"])
def test_standard_delta_encodings(sluice_bin, tmp_path, codec):
    lay = OciLayout(tmp_path / "src")
    v1 = build_artifact(lay, "1", OLD, title="nvme-core.ko")["layers"][0]["digest"]
    v2 = build_artifact(lay, "2", NEW, title="nvme-core.ko")["layers"][0]["digest"]
    delta = tmp_path / "delta"
    subprocess.run([sluice_bin, "delta", "create", "--codec", "zstd" if codec == "dcz" else "vcdiff",
                    "--from", OLD, "--to", NEW, "-o", delta], check=True, capture_output=True, timeout=120)
    srv = DeltaServer(lay, {(v2, v1): delta.read_bytes()}, codec)
    try:
        assert fetch(sluice_bin, "-o", tmp_path / "d1", f"{srv.url}/{REPO}:1").rc == 0
        f = fetch(sluice_bin, "--have", tmp_path / "d1", "-o", tmp_path / "d2", f"{srv.url}/{REPO}:2")
    finally:
        srv.stop()
    assert f.rc == 0, f
    assert f.row(v2)["how"] == f"delta {codec} from {v1[:19]}", f
    assert f.row(v2)["sent"] == delta.stat().st_size
    assert sha256_digest(open(blob_file(tmp_path / "d2", v2), "rb").read()) == v2
    asked = srv.seen[-1]
    raw = bytes.fromhex(v1.split(":")[1])
    assert asked["a-im"] == "sluice-bsz, vcdiff" and asked["if-none-match"] == f'"{v1}"'
    assert asked["accept-encoding"] == "dcz"
    assert asked["available-dictionary"] == ":" + base64.b64encode(raw).decode() + ":"
    assert asked["sluice-zstd-max-window-log"] == "27"
