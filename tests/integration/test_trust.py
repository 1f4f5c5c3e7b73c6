# test_trust.py — invariant 2 against real peers: artifacts pushed with skopeo
# to Debian's docker-registry and signed cosign-style by the openssl CLI (an
# independent signer), served by Sluice only when its containers-policy.json
# trust policy allows them — and keyless Sigstore bundles made by sigstore-js
# against its mock Fulcio and Rekor (sigstore_signer/), attached as OCI 1.1
# referrers under the referrers tag; kernel modules signed with `openssl cms` checked
# against a configured certificate. Everything on 127.0.0.1.
import json
import os
import re
import shutil
import signal
import struct
import subprocess

import pytest

from conftest import (OciLayout, build_artifact, build_bundle_referrer, build_cosign_signature,
                      build_referrers_tag, generate_p256_key, get, push_by_api,
                      pull, push, sha256_digest, wait_until, ACCEPT_ALL_MANIFESTS, SANITIZER_RE,
                      SkopeoError)

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(os.path.dirname(HERE), "data")
MODULE = os.path.join(DATA, "modules", "nvme-core", "new.ko")
UNSIGNED_MODULE = os.path.join(DATA, "sigstore", "kernel-module", "debian-sign-file",
                               "mod-simple-x86_64.unsigned.ko")
MH = {"Accept": ACCEPT_ALL_MANIFESTS}


class Site:
    """A registry with artifacts in several trust situations, and keys."""

    def __init__(self, registry, tmp_path):
        self.registry, self.tmp = registry, tmp_path
        self.key = generate_p256_key(self._dir("key"))
        self.other_key = generate_p256_key(self._dir("other-key"))
        self.digests = {}

    def _dir(self, name):
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        return d

    def publish(self, repo, tag, path, sign_with=None, signed_digest=None):
        lay = OciLayout(self._dir(f"lay-{repo.replace('/', '_')}-{tag}"))
        art = build_artifact(lay, tag, path)
        md = art["manifest"]["digest"]
        push(lay.path, tag, self.registry.host, repo)
        if sign_with:
            target = signed_digest or md
            sig = build_cosign_signature(lay, self._dir(f"sig-{tag}"), sign_with[0], sign_with[1],
                                         f"{self.registry.host}/{repo}", target)
            sig_tag = f"sha256-{md.split(':')[1]}.sig"
            lay.tag(sig["manifest"], sig_tag)
            push(lay.path, sig_tag, self.registry.host, repo)
        self.digests[(repo, tag)] = art
        return art

    def policy(self, drivers_requirement):
        reg = self.registry.host
        doc = {"default": [{"type": "reject"}],
               "transports": {"docker": {
                   f"{reg}/drivers": [drivers_requirement],
                   f"{reg}/open": [{"type": "insecureAcceptAnything"}]}}}
        path = self.tmp / "policy.json"
        path.write_text(json.dumps(doc))
        return str(path)

    def signed_by_key(self):
        return {"type": "sigstoreSigned", "keyPath": self.key[1],
                "signedIdentity": {"type": "matchRepository"}}


@pytest.fixture
def site(registry, tmp_path):
    s = Site(registry, tmp_path)
    s.publish("drivers/nvme", "signed", MODULE, sign_with=s.key)
    s.publish("drivers/nvme", "unsigned", UNSIGNED_MODULE)
    s.publish("drivers/nvme", "otherkey", UNSIGNED_MODULE, sign_with=s.other_key)
    wrong = s.digests[("drivers/nvme", "signed")]["manifest"]["digest"]
    # a signature whose payload names another manifest, under this one's .sig tag
    lay_dir = s._dir("wrong")
    shutil.copy(UNSIGNED_MODULE, lay_dir / "other.ko")
    s.publish("drivers/nvme", "wrongdigest", str(lay_dir / "other.ko"), sign_with=s.key,
              signed_digest=wrong)
    s.publish("open/tool", "v1", UNSIGNED_MODULE)
    s.publish("elsewhere/thing", "v1", UNSIGNED_MODULE)
    return s


def manifest(sl, repo, tag):
    return get(sl.host, f"/v2/{repo}/manifests/{tag}", MH)


def layer(sl, site, repo, tag):
    d = site.digests[(repo, tag)]["layers"][0]["digest"]
    return d, get(sl.host, f"/v2/{repo}/blobs/{d}")


def assert_denied(r, *words):
    assert r.status == 403, r
    assert r.oci_error_codes() == ["DENIED"], r
    msg = r.json()["errors"][0]["message"].lower()
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_policy_enforced_on_manifests_and_blobs(site, sluice_factory, registry):
    pol = site.policy(site.signed_by_key())
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    # signed with the trusted key: manifest and layer served, bytes exact
    r = manifest(sl, "drivers/nvme", "signed")
    assert r.status == 200, r
    d, b = layer(sl, site, "drivers/nvme", "signed")
    assert b.status == 200 and sha256_digest(b.body) == d
    # by digest too
    md = site.digests[("drivers/nvme", "signed")]["manifest"]["digest"]
    assert manifest(sl, "drivers/nvme", md).status == 200
    # the signature itself is served (devices may verify for themselves)
    sig = manifest(sl, "drivers/nvme", f"sha256-{md.split(':')[1]}.sig")
    assert sig.status == 200
    # unsigned, other key, signature naming another digest: 403 DENIED
    assert_denied(manifest(sl, "drivers/nvme", "unsigned"))
    assert_denied(manifest(sl, "drivers/nvme", "otherkey"))
    assert_denied(manifest(sl, "drivers/nvme", "wrongdigest"))
    # blobs of a denied manifest are not served either
    _, b = layer(sl, site, "drivers/nvme", "unsigned")
    assert_denied(b)
    # the policy's other scopes: accept anything, and the default reject
    assert manifest(sl, "open/tool", "v1").status == 200
    _, b = layer(sl, site, "open/tool", "v1")
    assert b.status == 200
    assert_denied(manifest(sl, "elsewhere/thing", "v1"), "reject")
    m = sl.metrics()
    assert m.value("sluice_denied_total") >= 5
    assert "denied" in sl.stderr()


def test_skopeo_pulls_signed_and_is_refused_unsigned(site, sluice_factory, registry, tmp_path):
    pol = site.policy(site.signed_by_key())
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    want = site.digests[("drivers/nvme", "signed")]["manifest"]["digest"]
    assert pull(sl.host, "drivers/nvme", "signed", str(tmp_path / "ok")) == want
    with pytest.raises(SkopeoError) as e:
        pull(sl.host, "drivers/nvme", "unsigned", str(tmp_path / "no"))
    assert "403" in str(e.value) or "denied" in str(e.value).lower()


def test_sighup_policy_change_changes_verdicts(site, sluice_factory, registry):
    pol = site.policy(site.signed_by_key())
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    assert_denied(manifest(sl, "drivers/nvme", "unsigned"))
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    for _ in range(2):  # the second one is answered from the remembered allowance
        assert layer(sl, site, "drivers/nvme", "signed")[1].status == 200
    assert_denied(layer(sl, site, "drivers/nvme", "unsigned")[1])
    site.policy({"type": "insecureAcceptAnything"})
    os.kill(sl.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in sl.stderr(), 5, what="reload")
    assert manifest(sl, "drivers/nvme", "unsigned").status == 200
    assert layer(sl, site, "drivers/nvme", "unsigned")[1].status == 200
    # and back: trust only the other key now; the formerly good one is denied
    site.policy({"type": "sigstoreSigned", "keyPath": site.other_key[1],
                 "signedIdentity": {"type": "matchRepository"}})
    os.kill(sl.proc.pid, signal.SIGHUP)
    wait_until(lambda: sl.stderr().count("reloaded") >= 2, 5, what="second reload")
    assert_denied(manifest(sl, "drivers/nvme", "signed"))
    assert manifest(sl, "drivers/nvme", "otherkey").status == 200
    # no allowance of a blob outlives the policy it was derived under
    assert_denied(layer(sl, site, "drivers/nvme", "signed")[1])


def test_verdicts_offline_from_cached_signatures(site, sluice_factory, registry):
    pol = site.policy(site.signed_by_key())
    conf = f"[trust]\npolicy = {pol}\n"
    sl = sluice_factory(registry.url, config=conf)
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    d, b = layer(sl, site, "drivers/nvme", "signed")
    assert b.status == 200
    sl.stop()
    registry.stop()
    sl.extra_args = ["--offline"]
    sl.start()
    # a fresh process decides again, from the signature it cached
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    d, b = layer(sl, site, "drivers/nvme", "signed")
    assert b.status == 200 and sha256_digest(b.body) == d


def trust_counts(sl):
    m = sl.metrics()
    return (m.value("sluice_trust_verifications_total"),
            m.value("sluice_trust_verdicts_reused_total"))


def test_verdicts_stored_in_the_cache(site, sluice_factory, registry, sluice_bin):
    pol = site.policy(site.signed_by_key())
    conf = f"[trust]\npolicy = {pol}\n"
    sl = sluice_factory(registry.url, config=conf, tag_ttl=3600)
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    d, b = layer(sl, site, "drivers/nvme", "signed")
    assert b.status == 200
    assert_denied(manifest(sl, "drivers/nvme", "unsigned"), "signature")
    verified, reused = trust_counts(sl)
    assert verified >= 3 and reused == 0, (verified, reused)
    # a new process on the same cache, the upstream gone: decided from the
    # stored verdicts, nothing verified again
    sl.stop()
    registry.stop()
    sl.start()
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    d, b = layer(sl, site, "drivers/nvme", "signed")
    assert b.status == 200 and sha256_digest(b.body) == d
    assert_denied(manifest(sl, "drivers/nvme", "unsigned"), "signature")
    verified, reused = trust_counts(sl)
    assert verified == 0 and reused >= 3, (verified, reused)
    # `sluice verify` sees the same stored verdict (and decides the same)
    common = ["--config", os.path.join(sl.dir, "sluice.conf"), "--cache", sl.cache,
              "--upstream", registry.url, "--offline"]
    r = verify_ref(sluice_bin, *common, "drivers/nvme:signed")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"stored verdict under this policy \(decided \d{4}-\d\d-\d\dT[0-9:]+Z\): "
                     r"allowed", r.stdout), r.stdout
    # another policy is another hash: nothing stored applies, verdicts change
    # (decided from the signatures the cache holds)
    site.policy({"type": "sigstoreSigned", "keyPath": site.other_key[1],
                 "signedIdentity": {"type": "matchRepository"}})
    os.kill(sl.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in sl.stderr(), 5, what="reload")
    assert_denied(manifest(sl, "drivers/nvme", "signed"))
    assert manifest(sl, "drivers/nvme", "unsigned").status == 200
    verified, reused2 = trust_counts(sl)
    assert verified >= 2 and reused2 == reused, (verified, reused2)
    wait_until(lambda: "dropped" in sl.stderr(), 5, what="the former policy's verdicts dropped")


def test_moved_tag_is_verified_again(site, sluice_factory, registry):
    pol = site.policy(site.signed_by_key())
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n", tag_ttl=0)
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    before, _ = trust_counts(sl)
    # the tag now names the manifest signed by another key
    push(str(site.tmp / "lay-drivers_nvme-otherkey"), "otherkey", registry.host, "drivers/nvme",
         dest_tag="signed")
    r = manifest(sl, "drivers/nvme", "signed")
    assert_denied(r)
    after, _ = trust_counts(sl)
    assert after > before
    sl.restart()
    assert_denied(manifest(sl, "drivers/nvme", "signed"))


def test_bad_policy_is_a_startup_error(sluice_bin, tmp_path):
    p = tmp_path / "policy.json"
    p.write_text('{"default": [{"type": "insecureAcceptAnything", "bogus": 1}]}')
    r = subprocess.run([sluice_bin, "serve", "--upstream", "http://127.0.0.1:9", "--policy", str(p),
                        "--cache", str(tmp_path / "c"), "--listen", "127.0.0.1:1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "policy.json" in r.stderr and "bogus" in r.stderr, r.stderr


# -- keyless Sigstore bundles attached as OCI 1.1 referrers ------------------------------------

SIGNER = os.path.join(HERE, "sigstore_signer")
EMAIL, ISSUER = "builder@vendor.example", "https://issuer.vendor.example"


def sign_keyless(workdir, bundles):
    """Runs sigstore_signer/sign.js (@sigstore/sign against @sigstore/mock's
    Fulcio and Rekor, offline) on [{file, digest, email, issuer}]; returns
    {"bundles": [paths], "fulcio": CA PEM path, "rekor": key PEM path}."""
    assert os.path.isdir(os.path.join(SIGNER, "node_modules", "@sigstore", "mock")), \
        "the test signer's npm packages are missing: run scripts/install-deps.sh"
    spec = os.path.join(str(workdir), "spec.json")
    with open(spec, "w") as f:
        json.dump({"out": str(workdir), "bundles": bundles}, f)
    r = subprocess.run(["node", os.path.join(SIGNER, "sign.js"), spec], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


class KeylessSite(Site):
    """Artifacts signed keyless, each bundle attached the way cosign v3 does
    on a registry without the referrers API: a referrer manifest whose
    subject is the artifact, listed by the referrers tag `sha256-<hex>`."""

    def publish_unique(self, repo, tag):
        """An artifact of its own: manifest and layer bytes unique to the tag."""
        path = self._dir(f"file-{tag}") / f"{tag}.bin"
        with open(UNSIGNED_MODULE, "rb") as f:
            path.write_bytes(f.read() + tag.encode())
        return self.publish(repo, tag, str(path))

    def attach(self, repo, tag, bundle_path):
        art = self.digests[(repo, tag)]
        lay = OciLayout(self._dir(f"ref-{repo.replace('/', '_')}-{tag}"))
        with open(bundle_path, "rb") as f:
            ref = build_bundle_referrer(lay, f.read(), art["manifest"])
        index_tag, index = build_referrers_tag(lay, art["manifest"]["digest"], [ref])
        push_by_api(lay, self.registry.host, repo, index["digest"], index_tag)
        return ref

    def keyless_policy(self, email=EMAIL, issuer=ISSUER):
        return self.policy({"type": "sigstoreSigned",
                            "fulcio": {"caPath": self.signed["fulcio"], "oidcIssuer": issuer,
                                       "subjectEmail": email},
                            "rekorPublicKeyPath": self.signed["rekor"]})


@pytest.fixture
def keyless(registry, tmp_path):
    """drivers/nvme: `keyless` signed right; `nobundle` unsigned; `otheremail`,
    `otherissuer` signed by another identity; `othersubject` carrying a
    bundle whose statement names another digest."""
    s = KeylessSite(registry, tmp_path)
    tags = ("keyless", "nobundle", "otheremail", "otherissuer", "othersubject")
    md = {t: s.publish_unique("drivers/nvme", t)["manifest"]["digest"] for t in tags}
    want = [("keyless", md["keyless"], EMAIL, ISSUER),
            ("otheremail", md["otheremail"], "intruder@elsewhere.example", ISSUER),
            ("otherissuer", md["otherissuer"], EMAIL, "https://accounts.elsewhere.example"),
            ("othersubject", md["keyless"], EMAIL, ISSUER)]
    s.signed = sign_keyless(s._dir("bundles"), [
        {"file": f"{t}.sigstore.json", "digest": d, "email": e, "issuer": i} for t, d, e, i in want])
    s.referrers = {t: s.attach("drivers/nvme", t, b) for (t, *_), b in zip(want, s.signed["bundles"])}
    return s


def test_keyless_bundle_referrer_is_verified(keyless, sluice_factory, registry, sluice_bin):
    pol = keyless.keyless_policy()
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    md = keyless.digests[("drivers/nvme", "keyless")]["manifest"]["digest"]
    # docker-registry has no referrers API: the daemon read the fallback tag
    assert get(registry.host, f"/v2/drivers/nvme/referrers/{md}").status == 404
    r = manifest(sl, "drivers/nvme", "keyless")
    assert r.status == 200, r
    assert r.header("docker-content-digest") == md
    assert manifest(sl, "drivers/nvme", md).status == 200
    d, b = layer(sl, keyless, "drivers/nvme", "keyless")
    assert b.status == 200 and sha256_digest(b.body) == d
    assert_denied(manifest(sl, "drivers/nvme", "nobundle"), "no signature")
    assert_denied(manifest(sl, "drivers/nvme", "otheremail"), "intruder@elsewhere.example")
    assert_denied(manifest(sl, "drivers/nvme", "otherissuer"), "issuer")
    assert_denied(manifest(sl, "drivers/nvme", "othersubject"), "not a subject")
    _, b = layer(sl, keyless, "drivers/nvme", "otheremail")
    assert_denied(b)
    # Sluice lists the bundle among the image's referrers, from what it cached
    ref = keyless.referrers["keyless"]
    for q in ("", "?artifactType=application/vnd.dev.sigstore.bundle.v0.3%2Bjson"):
        lst = get(sl.host, f"/v2/drivers/nvme/referrers/{md}{q}")
        assert lst.status == 200, lst
        assert lst.header("content-type") == "application/vnd.oci.image.index.v1+json"
        found = [m for m in lst.json()["manifests"] if m["digest"] == ref["digest"]]
        assert len(found) == 1, lst.json()
        assert found[0]["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    other = get(sl.host, f"/v2/drivers/nvme/referrers/{md}?artifactType=application/x-none")
    assert other.status == 200 and other.json()["manifests"] == []
    # and devices can fetch the referrer and its bundle through Sluice
    rm = manifest(sl, "drivers/nvme", ref["digest"])
    assert rm.status == 200 and rm.json()["subject"]["digest"] == md
    bundle = get(sl.host, f"/v2/drivers/nvme/blobs/{rm.json()['layers'][0]['digest']}")
    assert bundle.status == 200 and bundle.json()["mediaType"] == ref["artifactType"]
    # `sluice verify` agrees
    ok = verify_ref(sluice_bin, "--upstream", registry.url, "--cache", str(keyless.tmp / "vcache"),
                    "--policy", pol, "drivers/nvme:keyless")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 Sigstore bundle among its referrers" in ok.stdout
    assert re.search(r"bundle 1: application/vnd\.dev\.sigstore\.bundle\.v0\.3\+json, \d+ bytes: "
                     r"accepted", ok.stdout), ok.stdout


def test_keyless_identity_in_policy_decides(keyless, sluice_factory, registry):
    # trusting the other identity instead flips the verdicts
    pol = keyless.keyless_policy(email="intruder@elsewhere.example")
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    assert manifest(sl, "drivers/nvme", "otheremail").status == 200
    assert_denied(manifest(sl, "drivers/nvme", "keyless"), EMAIL.split("@")[0])


# -- kernel-module signatures ------------------------------------------------------------------

def sign_module(src, dst, workdir):
    """Appends a PKCS#7 signature the way the kernel's sign-file does, made
    with the openssl CLI: detached, binary, no attributes, no certificates."""
    key, crt = os.path.join(workdir, "mod.key"), os.path.join(workdir, "mod.crt")
    if not os.path.exists(crt):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "2", "-subj", "/CN=Sluice test module signing"],
                       check=True, capture_output=True)
    sig = os.path.join(workdir, "mod.p7s")
    subprocess.run(["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-md", "sha256",
                    "-in", src, "-signer", crt, "-inkey", key, "-outform", "DER", "-out", sig],
                   check=True, capture_output=True)
    body, p7 = open(src, "rb").read(), open(sig, "rb").read()
    trailer = struct.pack(">BBBBB3xI", 0, 0, 2, 0, 0, len(p7)) + b"~Module signature appended~\n"
    with open(dst, "wb") as f:
        f.write(body + p7 + trailer)
    return crt


def test_module_signatures_required_in_scope(registry, sluice_factory, tmp_path):
    work = tmp_path / "mod"
    work.mkdir()
    signed = str(work / "driver.ko")
    crt = sign_module(UNSIGNED_MODULE, signed, str(work))
    flipped = str(work / "flipped.ko")
    data = bytearray(open(signed, "rb").read())
    data[300] ^= 0x01
    open(flipped, "wb").write(bytes(data))
    site = Site(registry, tmp_path)
    site.publish("modules/drv", "good", signed)
    site.publish("modules/drv", "flipped", flipped)
    site.publish("modules/drv", "unsigned", UNSIGNED_MODULE)
    conf = (f"[trust]\nmodule_scopes = {registry.host}/modules\nmodule_certs = {crt}\n")
    sl = sluice_factory(registry.url, config=conf)
    for tag in ("good", "flipped", "unsigned"):
        assert manifest(sl, "modules/drv", tag).status == 200
    d, b = layer(sl, site, "modules/drv", "good")
    assert b.status == 200 and sha256_digest(b.body) == d
    _, b = layer(sl, site, "modules/drv", "flipped")
    assert_denied(b)
    _, b = layer(sl, site, "modules/drv", "unsigned")
    assert_denied(b)
    # and `sluice verify --file` says the same, exit 0 only when valid
    ok = subprocess.run([sl.binary, "verify", "--file", signed, "--cert", crt], capture_output=True,
                        text=True)
    bad = subprocess.run([sl.binary, "verify", "--file", flipped, "--cert", crt],
                         capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode == 1, bad.stdout + bad.stderr


# -- `sluice verify REF`: the daemon's decision from the command line --------------------------

def verify_ref(binary, *args):
    """Runs `sluice verify ARGS...`; checks that no sanitizer spoke."""
    r = subprocess.run([binary, "verify", *args], capture_output=True, text=True, timeout=120)
    m = SANITIZER_RE.search(r.stderr)
    assert not m, r.stderr
    return r


def test_verify_ref_says_what_the_daemon_would(site, registry, sluice_bin, tmp_path):
    pol = site.policy(site.signed_by_key())
    common = ["--upstream", registry.url, "--cache", str(tmp_path / "vcache"), "--policy", pol]
    ok = verify_ref(sluice_bin, *common, "drivers/nvme:signed")
    out = ok.stdout
    assert ok.returncode == 0, out + ok.stderr
    md = site.digests[("drivers/nvme", "signed")]["manifest"]["digest"]
    assert f"digest: {md}" in out
    assert f"scope: {registry.host}/drivers (1 requirement; decisive: sigstoreSigned)" in out, out
    assert re.search(r"signature 1: by key, signs sha256:[0-9a-f]{64} as "
                     + re.escape(f"{registry.host}/drivers/nvme") + ": accepted", out), out
    assert "verdict: allowed" in out and "reason: allowed" in out, out
    # by digest, and naming the upstream's host as the registry
    assert verify_ref(sluice_bin, *common, f"drivers/nvme@{md}").returncode == 0
    assert verify_ref(sluice_bin, *common, f"{registry.host}/drivers/nvme:signed").returncode == 0
    # no signature at all (a manifest of its own: "unsigned" shares "otherkey"'s bytes)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(UNSIGNED_MODULE, lone / "nosig.ko")
    site.publish("drivers/nvme", "nosig", str(lone / "nosig.ko"))
    no = verify_ref(sluice_bin, *common, "drivers/nvme:nosig")
    assert no.returncode == 1, no.stdout + no.stderr
    assert "verdict: denied" in no.stdout and "reason: no-signature" in no.stdout, no.stdout
    assert "no signature exists" in no.stdout and "no cosign tag sha256-" in no.stdout
    # signed by a key the policy does not name: the signature is found and rejected
    other = verify_ref(sluice_bin, *common, "drivers/nvme:otherkey")
    assert other.returncode == 1
    assert re.search(r"signature 1: by key, .*: rejected \(bad-signature\)", other.stdout), other.stdout
    # a valid signature for another manifest
    wrong = verify_ref(sluice_bin, *common, "drivers/nvme:wrongdigest")
    assert wrong.returncode == 1 and "reason: digest-mismatch" in wrong.stdout, wrong.stdout
    # the policy's other scopes
    anything = verify_ref(sluice_bin, *common, "open/tool:v1")
    assert anything.returncode == 0 and "insecureAcceptAnything" in anything.stdout
    rejected = verify_ref(sluice_bin, *common, "elsewhere/thing:v1")
    assert rejected.returncode == 1 and "reason: rejected-by-policy" in rejected.stdout, rejected.stdout
    assert "scope: default (1 requirement; decisive: reject)" in rejected.stdout
    # unknown tag
    unknown = verify_ref(sluice_bin, *common, "drivers/nvme:nope")
    assert unknown.returncode == 1 and "reason: manifest-unknown" in unknown.stdout


def test_verify_ref_offline_from_the_daemons_cache(site, sluice_factory, registry, sluice_bin):
    pol = site.policy(site.signed_by_key())
    sl = sluice_factory(registry.url, config=f"[trust]\npolicy = {pol}\n")
    assert manifest(sl, "drivers/nvme", "signed").status == 200
    assert_denied(manifest(sl, "drivers/nvme", "unsigned"))
    sl.stop()
    registry.stop()
    common = ["--config", os.path.join(sl.dir, "sluice.conf"), "--cache", sl.cache,
              "--upstream", registry.url, "--offline"]
    ok = verify_ref(sluice_bin, *common, "drivers/nvme:signed")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "offline" in ok.stdout and ": accepted" in ok.stdout, ok.stdout
    # "unsigned" carries only a signature by another key; the daemon cached it
    no = verify_ref(sluice_bin, *common, "drivers/nvme:unsigned")
    assert no.returncode == 1 and "reason: bad-signature" in no.stdout, no.stdout
    assert "signature 1: by key" in no.stdout
    # never fetched by the daemon: not in the cache
    never = verify_ref(sluice_bin, *common, "drivers/nvme:otherkey")
    assert never.returncode == 1 and "reason: not-cached" in never.stdout, never.stdout


def test_verify_ref_usage_and_config_errors(sluice_bin, registry, tmp_path):
    bad = tmp_path / "policy.json"
    bad.write_text('{"default": [{"type": "insecureAcceptAnything", "bogus": 1}]}')
    common = ["--upstream", registry.url, "--cache", str(tmp_path / "c")]
    r = verify_ref(sluice_bin, *common, "--policy", str(bad), "drivers/nvme:signed")
    assert r.returncode == 2 and "policy.json" in r.stderr and "bogus" in r.stderr, r.stderr
    missing = verify_ref(sluice_bin, *common, "--policy", str(tmp_path / "absent.json"), "a/b:c")
    assert missing.returncode == 2, missing.stderr
    for ref in ("drivers/nvme", "drivers/nvme:t@sha256:" + "0" * 64, "Drivers/x:t", "a/b@sha256:12"):
        r = verify_ref(sluice_bin, *common, ref)
        assert r.returncode == 2, (ref, r.stdout, r.stderr)
    # no upstream at all, and offline with no cache
    assert verify_ref(sluice_bin, "--cache", str(tmp_path / "c"), "a/b:c").returncode == 2
    r = verify_ref(sluice_bin, *common[:2], "--cache", str(tmp_path / "none"), "--offline", "a/b:c")
    assert r.returncode == 2 and "no cache" in r.stderr, r.stderr
    # daemon options without a REF, file options with one
    assert verify_ref(sluice_bin, "--offline").returncode == 2
    assert verify_ref(sluice_bin, *common, "--file", "x.ko", "a/b:c").returncode == 2
