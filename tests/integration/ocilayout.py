# ocilayout.py — pure-Python builders for OCI image layouts (image, index,
# artifact, cosign-style signature), plus the skopeo push/pull wrappers used by
# the integration tests (tests/integration/conftest.py) and by scripts/demo.sh.
#
# Only the standard library (json, hashlib, tarfile, gzip, http.client) and the skopeo and
# openssl programs are used; nothing here talks to anything but 127.0.0.1.
#
# Facts checked against Debian 12's skopeo 1.9.3 and docker-registry 2.8.2:
# - push and pull both pass `--preserve-digests`, so that skopeo fails rather
#   than ever rewriting a manifest (its oci:/docker: destinations may otherwise
#   recompress layers; 1.9.3 left our tar+gzip, uncompressed-tar and
#   octet-stream layers alone either way, but the tests compare digests).
# - an OCI index is copied whole with `--all` (same as `--multi-arch all`);
#   without it skopeo copies only the host platform's manifest and the oci:
#   destination's tag then names that image manifest, not the index.
# - `--retry-times 0`: a failing pull must fail, not be retried into success.
# - pushing, skopeo HEADs every blob (twice when absent) before uploading it;
#   pulling, it GETs /v2/, the manifest (and each child manifest), then each blob
#   once with no HEAD first.
# - artifacts: docker-registry 2.8.2 rejects the OCI artifact manifest media
#   type, so an artifact is an image manifest with `artifactType` and the empty
#   config descriptor (application/vnd.oci.empty.v1+json, blob `{}`).
import base64
import gzip
import hashlib
import http.client
import io
import json
import os
import random
import subprocess
import tarfile
import urllib.parse

MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_EMPTY = "application/vnd.oci.empty.v1+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ANN_TITLE = "org.opencontainers.image.title"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"

# Accept header that makes docker-registry return any manifest kind (it returns
# an OCI manifest only when Accept lists the OCI media type).
ACCEPT_ALL_MANIFESTS = ", ".join([MT_OCI_MANIFEST, MT_OCI_INDEX, MT_DOCKER_MANIFEST, MT_DOCKER_LIST])

EMPTY_JSON = b"{}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def file_digest(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical_json(obj) -> bytes:
    """Deterministic JSON bytes (what gets hashed is exactly what is pushed)."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def random_bytes(n: int, seed=None) -> bytes:
    """n incompressible bytes; reproducible when seed is given."""
    if seed is None:
        return os.urandom(n)
    return random.Random(seed).randbytes(n)


class OciLayout:
    """An OCI image layout directory: oci-layout, index.json, blobs/sha256/."""

    def __init__(self, path):
        self.path = str(path)
        self.blobdir = os.path.join(self.path, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)
        with open(os.path.join(self.path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.refs = []  # descriptors listed in index.json
        self._save_index()

    # -- blobs -------------------------------------------------------------
    def add_blob(self, data: bytes, media_type: str, annotations=None) -> dict:
        digest = sha256_digest(data)
        p = self.blob_path(digest)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        desc = {"mediaType": media_type, "digest": digest, "size": len(data)}
        if annotations:
            desc["annotations"] = dict(annotations)
        return desc

    def add_blob_file(self, src, media_type: str, annotations=None) -> dict:
        with open(src, "rb") as f:
            return self.add_blob(f.read(), media_type, annotations)

    def blob_path(self, digest: str) -> str:
        algo, hexd = digest.split(":", 1)
        assert algo == "sha256"
        return os.path.join(self.blobdir, hexd)

    def read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as f:
            return f.read()

    # -- index.json ----------------------------------------------------------
    def tag(self, desc: dict, tag: str) -> None:
        """Names a manifest/index descriptor `tag` in index.json (replaces)."""
        self.refs = [r for r in self.refs if r.get("annotations", {}).get(ANN_REF_NAME) != tag]
        d = {k: v for k, v in desc.items() if k in ("mediaType", "digest", "size", "artifactType", "platform")}
        d["annotations"] = {ANN_REF_NAME: tag}
        self.refs.append(d)
        self._save_index()

    def _save_index(self):
        idx = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": self.refs}
        with open(os.path.join(self.path, "index.json"), "wb") as f:
            f.write(canonical_json(idx))


def make_layer(payload: bytes, name: str) -> tuple:
    """A real tar+gzip layer holding one file `name`; returns (gz, diff_id)."""
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(payload)
        ti.mtime = 0
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(payload))
    tar = tbuf.getvalue()
    gz = gzip.compress(tar, compresslevel=1, mtime=0)
    return gz, sha256_digest(tar)


def build_image(layout: OciLayout, layer_sizes, tag=None, os_name="linux", arch="amd64", seed=None) -> dict:
    """Writes an image (config + len(layer_sizes) random tar+gzip layers of about
    the given payload sizes) and its manifest. Tags it when tag is given.
    Returns {"manifest": desc, "manifest_bytes", "config": desc, "layers": [desc]}.
    """
    layers, diff_ids = [], []
    for i, size in enumerate(layer_sizes):
        s = None if seed is None else f"{seed}/{arch}/{i}"
        gz, diff_id = make_layer(random_bytes(size, s), f"layer{i}.bin")
        layers.append(layout.add_blob(gz, MT_OCI_LAYER_GZIP))
        diff_ids.append(diff_id)
    config = {
        "architecture": arch,
        "os": os_name,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"sluice test layer {i}"} for i in range(len(layer_sizes))],
    }
    cdesc = layout.add_blob(canonical_json(config), MT_OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cdesc, "layers": layers}
    mbytes = canonical_json(manifest)
    mdesc = layout.add_blob(mbytes, MT_OCI_MANIFEST)
    if tag:
        layout.tag(mdesc, tag)
    return {"manifest": mdesc, "manifest_bytes": mbytes, "config": cdesc, "layers": layers}


def build_index(layout: OciLayout, tag, platforms=(("linux", "amd64"), ("linux", "arm64")), layer_sizes=(4096, 2048), seed=None) -> dict:
    """An OCI image index of one image per platform. Returns
    {"index": desc, "index_bytes", "images": [build_image result per platform]}."""
    images, descs = [], []
    for os_name, arch in platforms:
        img = build_image(layout, layer_sizes, tag=None, os_name=os_name, arch=arch, seed=seed)
        images.append(img)
        d = dict(img["manifest"])
        d["platform"] = {"os": os_name, "architecture": arch}
        descs.append(d)
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": descs}
    ibytes = canonical_json(index)
    idesc = layout.add_blob(ibytes, MT_OCI_INDEX)
    layout.tag(idesc, tag)
    return {"index": idesc, "index_bytes": ibytes, "images": images}


def build_artifact(layout: OciLayout, tag, file_path, artifact_type="application/vnd.sluice.driver.v1",
                   layer_media_type="application/octet-stream", title=None, annotations=None) -> dict:
    """An artifact: image manifest with artifactType, the empty config `{}` and
    one layer = the file, annotated with org.opencontainers.image.title."""
    cdesc = layout.add_blob(EMPTY_JSON, MT_OCI_EMPTY)
    ldesc = layout.add_blob_file(file_path, layer_media_type,
                                 {ANN_TITLE: title or os.path.basename(str(file_path))})
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": artifact_type,
                "config": cdesc, "layers": [ldesc]}
    if annotations:
        manifest["annotations"] = dict(annotations)
    mbytes = canonical_json(manifest)
    mdesc = layout.add_blob(mbytes, MT_OCI_MANIFEST)
    mdesc["artifactType"] = artifact_type
    layout.tag(mdesc, tag)
    return {"manifest": mdesc, "manifest_bytes": mbytes, "config": cdesc, "layers": [ldesc]}


# -- cosign key-based signature made with the openssl CLI -----------------------

def generate_p256_key(dirpath) -> tuple:
    """Throwaway ECDSA P-256 key pair; returns (private_pem, public_pem) paths."""
    priv = os.path.join(str(dirpath), "cosign-private.pem")
    pub = os.path.join(str(dirpath), "cosign.pub")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", priv], check=True, capture_output=True)
    subprocess.run(["openssl", "pkey", "-in", priv, "-pubout", "-out", pub], check=True, capture_output=True)
    return priv, pub


def cosign_payload(docker_reference: str, manifest_digest: str) -> bytes:
    """The simple-signing payload cosign signs (exact bytes matter)."""
    return ('{"critical":{"identity":{"docker-reference":"%s"},"image":{"docker-manifest-digest":"%s"},'
            '"type":"cosign container image signature"},"optional":null}' % (docker_reference, manifest_digest)).encode()


def build_cosign_signature(layout: OciLayout, workdir, private_pem, public_pem, docker_reference,
                           manifest_digest) -> dict:
    """Signs manifest_digest like `cosign sign --key` does and writes the
    signature manifest into layout, tagged `sha256-<hex>.sig`. The signature is
    checked with `openssl dgst -verify` before it is returned.
    Returns {"tag", "manifest": desc, "payload", "signature_b64"}."""
    payload = cosign_payload(docker_reference, manifest_digest)
    hexd = manifest_digest.split(":", 1)[1]
    ppath = os.path.join(str(workdir), f"payload-{hexd[:12]}.json")
    spath = os.path.join(str(workdir), f"sig-{hexd[:12]}.der")
    with open(ppath, "wb") as f:
        f.write(payload)
    subprocess.run(["openssl", "dgst", "-sha256", "-sign", private_pem, "-out", spath, ppath],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "dgst", "-sha256", "-verify", public_pem, "-signature", spath, ppath],
                   check=True, capture_output=True)
    with open(spath, "rb") as f:
        sig_b64 = base64.b64encode(f.read()).decode()
    ldesc = layout.add_blob(payload, MT_COSIGN_SIMPLESIGNING, {ANN_COSIGN_SIGNATURE: sig_b64})
    config = {"architecture": "", "os": "", "config": {},
              "rootfs": {"type": "layers", "diff_ids": [ldesc["digest"]]}}
    cdesc = layout.add_blob(canonical_json(config), MT_OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cdesc, "layers": [ldesc]}
    mdesc = layout.add_blob(canonical_json(manifest), MT_OCI_MANIFEST)
    tag = f"sha256-{hexd}.sig"
    layout.tag(mdesc, tag)
    return {"tag": tag, "manifest": mdesc, "payload": payload, "signature_b64": sig_b64}


# -- Sigstore bundle as an OCI 1.1 referrer -------------------------------------

MT_SIGSTORE_BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"


def build_bundle_referrer(layout: OciLayout, bundle: bytes, subject: dict,
                          predicate_type="https://sigstore.dev/cosign/sign/v1") -> dict:
    """The referrer manifest cosign v3 writes for a bundle: artifactType and
    its one layer the bundle media type, the empty config, `subject` = the
    signed manifest's descriptor. Returns its descriptor (with artifactType
    and annotations, as a referrers list gives it)."""
    cdesc = layout.add_blob(EMPTY_JSON, MT_OCI_EMPTY)
    ldesc = layout.add_blob(bundle, MT_SIGSTORE_BUNDLE_V03)
    annotations = {"dev.sigstore.bundle.content": "dsse-envelope",
                   "dev.sigstore.bundle.predicateType": predicate_type}
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST,
                "artifactType": MT_SIGSTORE_BUNDLE_V03, "config": cdesc, "layers": [ldesc],
                "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
                "annotations": annotations}
    desc = layout.add_blob(canonical_json(manifest), MT_OCI_MANIFEST)
    desc.update(artifactType=MT_SIGSTORE_BUNDLE_V03, annotations=annotations)
    return desc


def push_by_api(layout: OciLayout, host, repo, digest, ref=None):
    """Pushes manifest `digest` of the layout (an index or a manifest, and
    what it references, children first) with the distribution API over plain
    http, as cosign and oras attach referrers: blobs by monolithic POST+PUT,
    manifests by PUT to their digest, or to `ref`. skopeo 1.9.3 cannot push
    an index whose descriptors carry artifactType unchanged."""
    body = layout.read_blob(digest)
    doc = json.loads(body)
    for child in doc.get("manifests", []):
        push_by_api(layout, host, repo, child["digest"])
    for blob in [doc["config"]] + doc["layers"] if "layers" in doc else []:
        loc = _http(host, "POST", f"/v2/{repo}/blobs/uploads/", b"", None, 202)
        sep = "&" if "?" in loc else "?"
        _http(host, "PUT", f"{loc}{sep}digest={blob['digest']}", layout.read_blob(blob["digest"]),
              "application/octet-stream", 201)
    _http(host, "PUT", f"/v2/{repo}/manifests/{ref or digest}", body, doc["mediaType"], 201)


def _http(host, method, path, body, content_type, want):
    """One request; asserts the status, returns the Location path."""
    h, p = host.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=30)
    try:
        conn.request(method, path, body, {"Content-Type": content_type} if content_type else {})
        r = conn.getresponse()
        text = r.read()
        assert r.status == want, f"{method} {path}: {r.status} {text[:300]!r}"
        loc = urllib.parse.urlsplit(r.getheader("Location") or "")
        return loc.path + ("?" + loc.query if loc.query else "")
    finally:
        conn.close()


def build_referrers_tag(layout: OciLayout, subject_digest: str, referrers) -> tuple:
    """The referrers tag schema of the distribution spec, for registries
    without the referrers API: an image index listing the referrers'
    descriptors, tagged `sha256-<hex>` of the subject. Returns (tag, desc)."""
    index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": list(referrers)}
    desc = layout.add_blob(canonical_json(index), MT_OCI_INDEX)
    tag = "sha256-" + subject_digest.split(":", 1)[1]
    layout.tag(desc, tag)
    return tag, desc


# -- skopeo ---------------------------------------------------------------------

SKOPEO_TIMEOUT = 120


def _skopeo(args, timeout=SKOPEO_TIMEOUT):
    cmd = ["skopeo", "--insecure-policy"] + args
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise SkopeoError(cmd, p.returncode, p.stdout, p.stderr)
    return p


class SkopeoError(Exception):
    def __init__(self, cmd, rc, out, err):
        super().__init__(f"{' '.join(cmd)} exited {rc}\nstdout: {out}\nstderr: {err}")
        self.rc, self.stdout, self.stderr = rc, out, err


def push(layout_dir, tag, host, repo, dest_tag=None, all_images=False):
    """skopeo copy oci:DIR:TAG -> docker://HOST/REPO:TAG over plain http, digests kept."""
    args = ["copy", "--preserve-digests", "--dest-tls-verify=false", "--retry-times", "0"]
    if all_images:
        args.append("--all")
    args += [f"oci:{layout_dir}:{tag}", f"docker://{host}/{repo}:{dest_tag or tag}"]
    return _skopeo(args)


def pull(host, repo, ref, outdir, tag=None, all_images=False, timeout=SKOPEO_TIMEOUT):
    """skopeo copy docker://HOST/REPO:REF (or @sha256:..) -> oci:OUT:TAG over
    plain http, digests kept. Returns the pulled manifest/index digest."""
    src = f"docker://{host}/{repo}" + (f"@{ref}" if ref.startswith("sha256:") else f":{ref}")
    dtag = tag or (ref if not ref.startswith("sha256:") else "pulled")
    args = ["copy", "--preserve-digests", "--src-tls-verify=false", "--retry-times", "0"]
    if all_images:
        args.append("--all")
    args += [src, f"oci:{outdir}:{dtag}"]
    _skopeo(args, timeout=timeout)
    return layout_ref_digest(outdir, dtag)


def layout_ref_digest(layout_dir, tag) -> str:
    with open(os.path.join(str(layout_dir), "index.json")) as f:
        idx = json.load(f)
    for m in idx["manifests"]:
        if m.get("annotations", {}).get(ANN_REF_NAME) == tag:
            return m["digest"]
    raise KeyError(f"{tag} not in {layout_dir}/index.json")


def layout_blob_digests(layout_dir) -> dict:
    """{digest: sha256-of-file} for every blob file in a layout (both must match)."""
    out = {}
    bdir = os.path.join(str(layout_dir), "blobs", "sha256")
    for name in os.listdir(bdir):
        out["sha256:" + name] = file_digest(os.path.join(bdir, name))
    return out


def layout_closure(layout_dir, digest) -> set:
    """All digests reachable from a manifest/index digest in a layout (itself,
    child manifests, configs, layers)."""
    seen = set()
    worklist = [digest]
    while worklist:
        d = worklist.pop()
        if d in seen:
            continue
        seen.add(d)
        path = os.path.join(str(layout_dir), "blobs", "sha256", d.split(":", 1)[1])
        with open(path, "rb") as f:
            data = f.read()
        try:
            doc = json.loads(data)
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        if doc.get("mediaType") in (MT_OCI_INDEX, MT_DOCKER_LIST) or "manifests" in doc:
            worklist += [m["digest"] for m in doc.get("manifests", [])]
        elif "layers" in doc and "config" in doc:
            worklist.append(doc["config"]["digest"])
            worklist += [l["digest"] for l in doc["layers"]]
    return seen
