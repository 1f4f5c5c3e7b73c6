#!/usr/bin/env bash
# demo.sh — Sluice's main-job demo, end to end on 127.0.0.1 only:
#   1. installs the Debian dependencies (scripts/install-deps.sh) and builds Sluice;
#   2. starts a throwaway docker-registry (the "upstream") on a free port;
#   3. publishes two versions (2.4.1, 2.4.2) of a sample driver artifact — the real
#      nvme-core.ko from two Debian kernel builds (tests/data/modules/nvme-core) —
#      with skopeo, and signs each manifest cosign-style (sha256-<hex>.sig tag) with
#      the openssl CLI and a throwaway P-256 key;
#   4. starts Sluice in front of the registry and pulls both versions through it
#      with skopeo twice (device A: cold cache, device B: warm cache);
#   5. verifies digests and signatures and prints what came from upstream versus
#      from Sluice's cache (from /metrics and the registry's access log).
# Every process is started here and stopped by PID on exit. Temp files live in
# one mktemp dir (kept on failure, or always with KEEP=1).
#
# Environment: SLUICE_BIN=path skips the build and uses that binary;
#              SKIP_DEPS=1 skips install-deps.sh; KEEP=1 keeps the temp dir.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
REPO=drivers/nvme-core
DATA=$ROOT/tests/data/modules/nvme-core
ARTIFACT_TYPE=application/vnd.sluice.driver.v1
LAYER_TYPE=application/vnd.sluice.kernel-module.v1

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
LIB_WHO=demo
. "$ROOT/scripts/lib.sh"

# -- 1. dependencies and build ---------------------------------------------------------
if [ "${SKIP_DEPS:-0}" != 1 ]; then
  say "installing dependencies (scripts/install-deps.sh)"
  bash "$ROOT/scripts/install-deps.sh"
fi
if [ -n "${SLUICE_BIN:-}" ]; then
  SLUICE=$SLUICE_BIN
else
  say "building Sluice"
  cd "$ROOT"
  [ -f build/build.ninja ] || meson setup build
  ninja -C build
  SLUICE=$ROOT/build/proxy/sluice
fi
[ -x "$SLUICE" ] || die "no sluice binary at $SLUICE"
for f in old.ko new.ko; do
  [ -f "$DATA/$f" ] || die "missing $DATA/$f (see $DATA/PROVENANCE.md)"
done

WORK=$(mktemp -d /tmp/sluice-demo.XXXXXX)
PIDS=()
ok=0
cleanup() {
  stop_pids "${PIDS[@]}"
  if [ "$ok" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    echo "demo: logs and files kept in $WORK" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# -- 2. upstream registry -----------------------------------------------------------------
RPORT=$(free_port)
REG=127.0.0.1:$RPORT
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
  delete: {enabled: true}
http:
  addr: $REG
  secret: sluice-demo
EOF
say "starting docker-registry on $REG"
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/access.log" 2>"$WORK/registry/registry.log" &
PIDS+=($!)
wait_ok "http://$REG/v2/" "${PIDS[-1]}" docker-registry

# -- 3. publish two signed versions ---------------------------------------------------------
say "publishing $REPO:2.4.1 and :2.4.2 (nvme-core.ko from Debian kernels 6.1.176-1 and 6.1.192-2), signed"
"$PY" - "$ROOT/tests/integration" "$WORK" "$REG" "$REPO" "$DATA" "$ARTIFACT_TYPE" "$LAYER_TYPE" <<'EOF'
import json, os, sys
sys.path.insert(0, sys.argv[1])
from ocilayout import (OciLayout, build_artifact, build_cosign_signature, file_digest, generate_p256_key, push)
work, reg, repo, data, atype, ltype = sys.argv[2:8]
lay = OciLayout(os.path.join(work, "publish"))
priv, pub = generate_p256_key(work)
out = {}
for version, ko in (("2.4.1", "old.ko"), ("2.4.2", "new.ko")):
    art = build_artifact(lay, version, os.path.join(data, ko), artifact_type=atype, layer_media_type=ltype,
                         title="nvme-core.ko", annotations={"org.opencontainers.image.version": version})
    push(lay.path, version, reg, repo)
    md = art["manifest"]["digest"]
    sig = build_cosign_signature(lay, work, priv, pub, f"{reg}/{repo}", md)
    push(lay.path, sig["tag"], reg, repo)
    out[version] = {"manifest": md, "layer": art["layers"][0]["digest"], "size": art["layers"][0]["size"],
                    "file": os.path.join(data, ko), "sig_tag": sig["tag"]}
    print(f"    {version}: manifest {md}  layer {art['layers'][0]['digest'][:19]}…  signature tag {sig['tag'][:20]}….sig")
json.dump(out, open(os.path.join(work, "published.json"), "w"), indent=1)
EOF

# -- 4. sluice in front, two devices pull --------------------------------------------------------
SPORT=$(free_port)
SL=127.0.0.1:$SPORT
mkdir -p "$WORK/sluice-cache"
# Sluice itself enforces the signatures: a containers-policy.json that
# trusts only the publisher's key for this repository and rejects the rest.
cat >"$WORK/policy.json" <<POLICY
{"default": [{"type": "reject"}],
 "transports": {"docker": {"$REG/$REPO": [{"type": "sigstoreSigned",
   "keyPath": "$WORK/cosign.pub", "signedIdentity": {"type": "matchRepository"}}]}}}
POLICY
say "starting sluice on $SL (upstream http://$REG, trust policy: $REPO signed by the publisher's key)"
"$SLUICE" serve --listen "$SL" --upstream "http://$REG" --cache "$WORK/sluice-cache" \
  --policy "$WORK/policy.json" 2>"$WORK/sluice.log" &
PIDS+=($!)
SLUICE_PID=${PIDS[-1]}
wait_ok "http://$SL/healthz" "$SLUICE_PID" sluice

curl -sf "http://$SL/metrics" >"$WORK/metrics-0.txt"
wc -l <"$WORK/registry/access.log" >"$WORK/access-0.lines"
for device in A B; do
  say "device $device pulls both versions through sluice"
  for version in 2.4.1 2.4.2; do
    skopeo --insecure-policy copy --quiet --preserve-digests --src-tls-verify=false \
      "docker://$SL/$REPO:$version" "oci:$WORK/device-$device:$version"
  done
  # and the signatures, as a verifying client would
  for version in 2.4.1 2.4.2; do
    tag=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]]["sig_tag"])' "$WORK/published.json" "$version")
    curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      -o "$WORK/device-$device-$version.sig.json" "http://$SL/v2/$REPO/manifests/$tag" \
      || die "signature tag $tag not served by sluice"
    payload=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$WORK/device-$device-$version.sig.json")
    curl -sf -o "$WORK/device-$device-$version.payload" "http://$SL/v2/$REPO/blobs/$payload" \
      || die "signature payload $payload not served by sluice"
  done
  curl -sf "http://$SL/metrics" >"$WORK/metrics-$device.txt"
  sleep 0.2  # the registry logs a request after answering it; let the last line land
  wc -l <"$WORK/registry/access.log" >"$WORK/access-$device.lines"
done
curl -sf "http://$SL/v2/$REPO/tags/list" >"$WORK/tags.json"

# -- 4b. a device that runs 2.4.1 updates to 2.4.2 with a delta -------------------------------
say "device C has 2.4.1 and asks for 2.4.2's layer as a delta (RFC 3229 A-IM, RFC 9842 dcz)"
read -r OLD_LAYER NEW_LAYER < <("$PY" -c 'import json,sys; p=json.load(open(sys.argv[1])); print(p["2.4.1"]["layer"], p["2.4.2"]["layer"])' "$WORK/published.json")
curl -sf -D "$WORK/delta.headers" -o "$WORK/delta.bin" -H "A-IM: sluice-bsz, vcdiff" \
  -H "If-None-Match: \"$OLD_LAYER\"" "http://$SL/v2/$REPO/blobs/$NEW_LAYER" \
  || die "delta request failed"
"$SLUICE" delta apply --from "$DATA/old.ko" -o "$WORK/device-C-new.ko" "$WORK/delta.bin" \
  || die "delta did not apply"
DICT=$("$PY" -c 'import base64,sys; print(":"+base64.b64encode(bytes.fromhex(sys.argv[1].split(":")[1])).decode()+":")' "$OLD_LAYER")
curl -sf -o "$WORK/delta.dcz" -H "Accept-Encoding: dcz" -H "Available-Dictionary: $DICT" \
  "http://$SL/v2/$REPO/blobs/$NEW_LAYER" || die "dcz request failed"
tail -c +41 "$WORK/delta.dcz" | zstd -q -d --patch-from="$DATA/old.ko" --long=31 -o "$WORK/device-C-new-dcz.ko" \
  || die "the dcz delta did not decode with zstd"
curl -sf "http://$SL/metrics" >"$WORK/metrics-C.txt"

# -- 5. verify and summarise -------------------------------------------------------------------------
"$PY" - "$WORK" "$REG" "$SL" "$REPO" <<'EOF'
import base64, hashlib, json, os, re, subprocess, sys
work, reg, sl, repo = sys.argv[1:5]
pub = json.load(open(os.path.join(work, "published.json")))

def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return "sha256:" + h.hexdigest()

def metrics(name):
    out = {}
    for line in open(os.path.join(work, f"metrics-{name}.txt")):
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)', line)
        if m and not line.startswith("#"):
            key = m.group(1) + (m.group(2) or "")
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out

def total(ms, name, label=None):
    return sum(v for k, v in ms.items() if k.split("{")[0] == name and (label is None or label in k))

def access(lo, hi):
    lines = open(os.path.join(work, "registry", "access.log")).read().splitlines()[lo:hi]
    n = {"manifest": 0, "blob": 0}
    for l in lines:
        m = re.search(r'"(GET|HEAD) /v2/' + re.escape(repo) + r'/(manifests|blobs)/', l)
        if m:
            n["manifest" if m.group(2) == "manifests" else "blob"] += 1
    return n

failures = []
print()
print("Sluice demo — driver artifact %s, upstream http://%s, sluice http://%s" % (repo, reg, sl))
print()
print("%-7s %-22s %-9s %-28s %s" % ("version", "manifest digest", "size", "verified (both devices)", "cosign signature via sluice"))
for version, p in pub.items():
    checks = []
    for dev in ("A", "B"):
        lay = os.path.join(work, f"device-{dev}")
        idx = json.load(open(os.path.join(lay, "index.json")))
        ref = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == version]
        ok = bool(ref) and ref[0]["digest"] == p["manifest"]
        blob = os.path.join(lay, "blobs", "sha256", p["layer"].split(":")[1])
        ok = ok and os.path.exists(blob) and sha(blob) == p["layer"] == sha(p["file"])
        checks.append(ok)
    # signature: payload names this manifest, signature verifies with the public key
    sigman = json.load(open(os.path.join(work, f"device-B-{version}.sig.json")))
    layer = sigman["layers"][0]
    payload_path = os.path.join(work, f"device-B-{version}.payload")
    payload = json.load(open(payload_path))
    der = os.path.join(work, f"check-{version}.der")
    open(der, "wb").write(base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"]))
    v = subprocess.run(["openssl", "dgst", "-sha256", "-verify", os.path.join(work, "cosign.pub"),
                        "-signature", der, payload_path], capture_output=True, text=True)
    sig_ok = (v.returncode == 0 and sha(payload_path) == layer["digest"]
              and payload["critical"]["image"]["docker-manifest-digest"] == p["manifest"])
    verified = "yes" if all(checks) else "NO"
    if not all(checks):
        failures.append(f"{version}: pulled content does not match what was published")
    if not sig_ok:
        failures.append(f"{version}: signature does not verify")
    print("%-7s %-22s %-9d %-28s %s" % (version, p["manifest"][:19] + "…", p["size"],
                                        "sha256 " + verified + " (= tests/data .ko)" if all(checks) else verified,
                                        ("valid, tag " + p["sig_tag"][:14] + "….sig") if sig_ok else "INVALID"))

tags = json.load(open(os.path.join(work, "tags.json"))).get("tags") or []
for p in pub.values():
    if p["sig_tag"] not in tags:
        failures.append(f"signature tag {p['sig_tag']} missing from tags/list through sluice")
print("tags through sluice: " + ", ".join(t if not t.endswith(".sig") else t[:14] + "….sig" for t in tags))

m0, ma, mb = metrics("0"), metrics("A"), metrics("B")
l0, la, lb = (int(open(os.path.join(work, f"access-{n}.lines")).read()) for n in ("0", "A", "B"))
ua, ub = access(l0, la), access(la, lb)
rows = [
    ("registry GETs/HEADs: manifests (access log)", ua["manifest"], ub["manifest"]),
    ("registry GETs/HEADs: blobs (access log)", ua["blob"], ub["blob"]),
    ("sluice_upstream_requests_total", total(ma, "sluice_upstream_requests_total") - total(m0, "sluice_upstream_requests_total"),
     total(mb, "sluice_upstream_requests_total") - total(ma, "sluice_upstream_requests_total")),
    ("sluice_upstream_bytes_total", total(ma, "sluice_upstream_bytes_total") - total(m0, "sluice_upstream_bytes_total"),
     total(mb, "sluice_upstream_bytes_total") - total(ma, "sluice_upstream_bytes_total")),
    ("sluice_bytes_served_total", total(ma, "sluice_bytes_served_total") - total(m0, "sluice_bytes_served_total"),
     total(mb, "sluice_bytes_served_total") - total(ma, "sluice_bytes_served_total")),
]
for kind in ("manifest", "blob"):
    for what in ("misses", "hits"):
        n = f"sluice_cache_{what}_total"
        lab = f'kind="{kind}"'
        rows.append((f'{n}{{{lab}}}', total(ma, n, lab) - total(m0, n, lab), total(mb, n, lab) - total(ma, n, lab)))
print()
print("%-48s %16s %16s" % ("", "device A (cold)", "device B (warm)"))
for name, a, b in rows:
    print("%-48s %16d %16d" % (name, a, b))
print()
# device C: the delta from 2.4.1 to 2.4.2
mc = metrics("C")
full = pub["2.4.2"]["size"]
heads = open(os.path.join(work, "delta.headers")).read().lower()
im = re.search(r"^im:\s*(\S+)", heads, re.M)
delta_len = os.path.getsize(os.path.join(work, "delta.bin"))
dcz_len = os.path.getsize(os.path.join(work, "delta.dcz")) - 40
print("device C (has 2.4.1) updates to 2.4.2's layer, %d bytes:" % full)
print("  %-12s %9d bytes (%.1f%% of the layer), rebuilt with `sluice delta apply`" %
      (im.group(1) if im else "?", delta_len, 100.0 * delta_len / full))
print("  %-12s %9d bytes (%.1f%% of the layer), rebuilt with `zstd -d --patch-from`" %
      ("dcz", dcz_len, 100.0 * dcz_len / full))
for name in ("device-C-new.ko", "device-C-new-dcz.ko"):
    if sha(os.path.join(work, name)) != pub["2.4.2"]["layer"]:
        failures.append(f"{name}: rebuilt layer does not match its digest")
print("  trust policy: %d manifest requests served as allowed, %d denied by Sluice's signature checks" %
      (total(mc, "sluice_cache_hits_total", 'kind="manifest"') + total(mc, "sluice_cache_misses_total", 'kind="manifest"'),
       total(mc, "sluice_denied_total")))
print()
if total(mc, "sluice_denied_total") != 0:
    failures.append("sluice denied a signed artifact")
if ub["blob"] != 0:
    failures.append(f"device B's pull fetched {ub['blob']} blobs upstream; expected all from sluice's cache")
if ua["blob"] == 0:
    failures.append("device A's pull fetched nothing upstream?")
if failures:
    print("DEMO FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("OK: device A's pull went upstream once; device B's pull of the same two versions was served")
print("    entirely from Sluice's cache; Sluice checked both cosign signatures against its trust")
print("    policy before serving; device C got 2.4.2 as a delta and rebuilt the exact bytes.")
EOF

say "stopping sluice (SIGTERM)"
kill -TERM "$SLUICE_PID"
rc=0
wait "$SLUICE_PID" || rc=$?
[ "$rc" = 0 ] || die "sluice exited with $rc on SIGTERM (log: $WORK/sluice.log)"
ok=1
