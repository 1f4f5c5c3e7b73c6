#!/usr/bin/env bash
# bench/verify.sh — trust-policy benchmark, two parts:
#
# 1. Verifications per second of verify_image_evaluate (the call Sluice's
#    verifier thread makes for each manifest it decides), one thread, through
#    bench/verify_bench.c compiled here against $BUILD's libsluice_verify.a:
#      - key:          an ECDSA P-256 cosign signature made with the openssl CLI
#                      (sigstoreSigned keyPath);
#      - key + Rekor:  the cosign vector dir-img-cosign-key-rekor-valid (keyPath
#                      + rekorPublicKeyPath: the SET is checked too);
#      - keyless:      the cosign vector dir-img-cosign-fulcio-rekor-valid with
#                      the Fulcio root and Rekor key a policy names
#                      (fulcio caPath/oidcIssuer/subjectEmail + rekorPublicKeyPath).
#    Vectors come from tests/data/sigstore/containers-image (see PROVENANCE.md).
# 2. What enforcement costs on cached manifests: two Sluices in front of one
#    Debian docker-registry holding a signed artifact, one without a policy and
#    one with --policy requiring the signature, both primed, then wrk (2
#    threads, 16 connections) on the manifest by tag and by digest, the two
#    Sluices alternating for ROUNDS rounds in the same run. Prints req/s,
#    p50/p99 and the Sluice process's CPU time per request (utime + stime
#    from /proc/PID/stat around each cell: on a shared machine it shows the
#    cost of enforcement more steadily than throughput does), medians over
#    the rounds, and the on/off ratios; the target is less than 5%
#    throughput lost, which the verdict cache makes possible (a cached
#    manifest's verdict is a table lookup, not a verification).
# 3. The same cost without the noise of a shared machine (when valgrind is
#    installed): user-space instructions per cached manifest request, counted
#    by callgrind in a one-worker Sluice, off and on, as the difference
#    between a run of CG_LOW and one of CG_HIGH keep-alive requests (startup,
#    the first miss and shutdown cancel out). Kernel time is not counted.
#
# Everything runs on 127.0.0.1 on free ports, in one temp dir; every server is
# stopped by PID on exit and the temp dir removed.
#
# Environment:
#   BUILD=build       meson build dir with proxy/sluice and verify/libsluice_verify.a
#                     (use a release build: meson setup build-vrel --buildtype=release)
#   DURATION=5        seconds per wrk cell
#   ROUNDS=3          off/on alternations per request kind
#   VERIFY_SECONDS=3  seconds per verification cell
#   CONNS=16 THREADS=2  wrk connections and threads
#   CALLGRIND=1       part 3 (0 skips it); CG_LOW=500 CG_HIGH=2500 requests
#   KEEP=1            keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
BUILD=${BUILD:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
SLUICE_BIN=${SLUICE_BIN:-$BUILD/proxy/sluice}
VERIFY_LIB=$BUILD/verify/libsluice_verify.a
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
VERIFY_SECONDS=${VERIFY_SECONDS:-3}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
CALLGRIND=${CALLGRIND:-1}
CG_LOW=${CG_LOW:-500}
CG_HIGH=${CG_HIGH:-2500}
command -v valgrind >/dev/null || CALLGRIND=0
FIX=$ROOT/tests/data/sigstore/containers-image/fixtures
REKOR_PUB=$ROOT/tests/data/sigstore/containers-image/internal-testdata/rekor.pub
REPO=bench/app
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json

LIB_WHO=bench
. "$ROOT/scripts/lib.sh"
need wrk docker-registry skopeo curl openssl cc pkg-config
[ -x "$SLUICE_BIN" ] || die "no sluice binary at $SLUICE_BIN (ninja -C $BUILD)"
[ -f "$VERIFY_LIB" ] || die "no $VERIFY_LIB (ninja -C $BUILD)"

bench_workdir sluice-bench-verify

RPORT=$(free_port)
REGISTRY=127.0.0.1:$RPORT

# -- the driver, built against this build's verify library ----------------------------------------
sanitize=$("$PY" -c 'import json,sys
o={x["name"]: x["value"] for x in json.load(open(sys.argv[1]))}
print(o.get("b_sanitize", "none"))' "$BUILD/meson-info/intro-buildoptions.json" 2>/dev/null || echo none)
san_flags=()
[ "$sanitize" = none ] || san_flags=("-fsanitize=$sanitize")
# shellcheck disable=SC2046
cc -std=c17 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE "${san_flags[@]}" -I"$ROOT/verify" \
  "$ROOT/bench/verify_bench.c" "$VERIFY_LIB" $(pkg-config --cflags --libs openssl jansson) \
  -o "$WORK/verify_bench"

# -- content: a key, a signed and an unsigned artifact, the policies ------------------------------
echo "bench: preparing content in $WORK" >&2
"$PY" - "$ROOT/tests/integration" "$WORK" "$REGISTRY" "$REPO" "$FIX" "$REKOR_PUB" <<'EOF'
import base64, json, os, sys
sys.path.insert(0, sys.argv[1])
from ocilayout import (OciLayout, build_artifact, build_cosign_signature, generate_p256_key,
                       random_bytes)
work, registry, repo, fix, rekor = sys.argv[2:7]
os.makedirs(f"{work}/key")
priv, pub = generate_p256_key(f"{work}/key")
lay = OciLayout(f"{work}/layout")
for name in ("signed", "unsigned"):
    with open(f"{work}/{name}.bin", "wb") as f:
        f.write(random_bytes(4096))
art = build_artifact(lay, "signed", f"{work}/signed.bin")
build_artifact(lay, "unsigned", f"{work}/unsigned.bin")
md = art["manifest"]["digest"]
sig = build_cosign_signature(lay, work, priv, pub, f"{registry}/{repo}", md)
# the signature layer in the dir: format the driver reads
with open(f"{work}/signature-key", "wb") as f:
    f.write(b"\0sigstore-json\n" + json.dumps({
        "mimeType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "payload": base64.b64encode(sig["payload"]).decode(),
        "annotations": {"dev.cosignproject.cosign/signature": sig["signature_b64"]}}).encode())
key_req = {"type": "sigstoreSigned", "keyPath": pub, "signedIdentity": {"type": "matchRepository"}}
def policy(name, scope, req):
    doc = {"default": [{"type": "reject"}], "transports": {"docker": {scope: [req]}}}
    json.dump(doc, open(f"{work}/policy-{name}.json", "w"))
policy("key", f"{registry}/bench", key_req)
policy("key-rekor", "192.168.64.2:5000", {
    "type": "sigstoreSigned", "keyPath": f"{fix}/cosign2.pub", "rekorPublicKeyPath": rekor,
    "signedIdentity": {"type": "matchRepository"}})
policy("keyless", "192.168.64.2:5000", {
    "type": "sigstoreSigned",
    "fulcio": {"caPath": f"{fix}/fulcio_v1.crt.pem", "oidcIssuer": "https://github.com/login/oauth",
               "subjectEmail": "mitr@redhat.com"},
    "rekorPublicKeyPath": rekor, "signedIdentity": {"type": "matchRepository"}})
open(f"{work}/digest", "w").write(md)
EOF
MANIFEST_DIGEST=$(cat "$WORK/digest")

# -- part 1: verifications per second --------------------------------------------------------------
RESULTS=$WORK/results.txt
: >"$RESULTS"
verify_cell() {  # label args...
  local label=$1 out line
  shift
  out=$("$WORK/verify_bench" --seconds "$VERIFY_SECONDS" "$@" 2>"$WORK/verify-$label.log") \
    || { cat "$WORK/verify-$label.log" >&2; die "verify_bench failed for $label"; }
  line=$(grep '^RESULT ' <<<"$out" | tail -1)
  echo "VERIFY $label ${line#RESULT }" >>"$RESULTS"
  printf 'bench:   verify %-10s %s\n' "$label" "${line#RESULT }" >&2
}
echo "bench: verify_image_evaluate, ${VERIFY_SECONDS}s per cell, one thread" >&2
verify_cell key --policy "$WORK/policy-key.json" --registry "$REGISTRY" --repo "$REPO" \
  --tag signed --digest "$MANIFEST_DIGEST" --sig "$WORK/signature-key"
verify_cell key-rekor --policy "$WORK/policy-key-rekor.json" --registry 192.168.64.2:5000 \
  --repo cosign-signed/key-1 --manifest "$FIX/dir-img-cosign-key-rekor-valid/manifest.json" \
  --sig "$FIX/dir-img-cosign-key-rekor-valid/signature-1"
verify_cell keyless --policy "$WORK/policy-keyless.json" --registry 192.168.64.2:5000 \
  --repo cosign-signed/fulcio-rekor-1 --manifest "$FIX/dir-img-cosign-fulcio-rekor-valid/manifest.json" \
  --sig "$FIX/dir-img-cosign-fulcio-rekor-valid/signature-1"

# -- part 2: the registry, two Sluices, wrk ----------------------------------------------------------
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
http:
  addr: $REGISTRY
  secret: sluice-bench
EOF
docker-registry serve "$WORK/registry/config.yml" >>"$WORK/registry/out.log" 2>&1 &
PID[registry]=$!
wait_ok "http://$REGISTRY/v2/" "${PID[registry]}" docker-registry
for tag in signed unsigned "sha256-${MANIFEST_DIGEST#sha256:}.sig"; do
  skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$WORK/layout:$tag" "docker://$REGISTRY/$REPO:$tag"
done

declare -A PORT=()
start_sluice() {  # name [--policy FILE]
  local name=$1
  shift
  PORT[$name]=$(free_port)
  mkdir -p "$WORK/$name/cache"
  printf '# generated by bench/verify.sh\n[server]\nlog_requests = false\n' >"$WORK/$name/sluice.conf"
  "$SLUICE_BIN" serve --config "$WORK/$name/sluice.conf" --listen "127.0.0.1:${PORT[$name]}" \
    --upstream "http://$REGISTRY" --cache "$WORK/$name/cache" --no-sync "$@" 2>"$WORK/$name/stderr.log" &
  PID[$name]=$!
  wait_ok "http://127.0.0.1:${PORT[$name]}/healthz" "${PID[$name]}" "sluice ($name)"
}
start_sluice off
start_sluice on --policy "$WORK/policy-key.json"

status_of() {  # name path
  curl -s -o /dev/null -w '%{http_code}' -H "Accept: $MT_MANIFEST" "http://127.0.0.1:${PORT[$1]}$2"
}
# prime both caches and check that "on" enforces and "off" does not
for name in off on; do
  for ref in signed "$MANIFEST_DIGEST"; do
    got=$(curl -sf -H "Accept: $MT_MANIFEST" "http://127.0.0.1:${PORT[$name]}/v2/$REPO/manifests/$ref" \
          | sha256sum | cut -d' ' -f1) || got=none
    [ "sha256:$got" = "$MANIFEST_DIGEST" ] || die "sluice ($name) did not serve $REPO:$ref"
  done
done
[ "$(status_of on "/v2/$REPO/manifests/unsigned")" = 403 ] || die "sluice (on) served an unsigned manifest"
[ "$(status_of off "/v2/$REPO/manifests/unsigned")" = 200 ] || die "sluice (off) refused a manifest"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime, all threads
wrk_lua "$WORK/report.lua"
echo "bench: wrk -t$THREADS -c$CONNS -d${DURATION}s, $ROUNDS rounds, off/on alternating" >&2
for round in $(seq 1 "$ROUNDS"); do
  for kind in tag digest; do
    ref=signed
    [ "$kind" = digest ] && ref=$MANIFEST_DIGEST
    for name in off on; do
      ticks=$(cpu_ticks "${PID[$name]}")
      r=$(wrk_result "$WORK/wrk-$name.log" "$CONNS" \
            "http://127.0.0.1:${PORT[$name]}/v2/$REPO/manifests/$ref" "$name $kind")
      ticks=$(($(cpu_ticks "${PID[$name]}") - ticks))
      echo "WRK $kind $name $round $r $ticks" >>"$RESULTS"
      printf 'bench:   round %s %-6s %-3s %s\n' "$round" "$kind" "$name" "$r" >&2
    done
  done
done

# -- part 3: instructions per request under callgrind ----------------------------------------------
callgrind_run() {  # name requests [--policy FILE]
  local name=$1 n=$2 dir port pid
  shift 2
  dir=$WORK/cg-$name-$n
  port=$(free_port)
  mkdir -p "$dir/cache"
  # valgrind cannot reserve the default 256 GiB LMDB map
  printf '[server]\nlog_requests = false\n[cache]\nmap_size = 1G\n' >"$dir/sluice.conf"
  valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$SLUICE_BIN" serve \
    --config "$dir/sluice.conf" --listen "127.0.0.1:$port" --workers 1 \
    --upstream "http://$REGISTRY" --cache "$dir/cache" --no-sync "$@" 2>"$dir/stderr.log" &
  pid=$!
  PID[cg]=$pid
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || die "sluice under callgrind exited: $(tail -3 "$dir/stderr.log")"
    curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz" && break
    sleep 0.1
  done
  "$PY" - "$port" "$n" "/v2/$REPO/manifests/signed" "$MT_MANIFEST" <<'PYEOF'
import http.client, sys
port, n, path, accept = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    conn.request("GET", path, headers={"Accept": accept})
    r = conn.getresponse()
    r.read()
    assert r.status == 200, r.status
PYEOF
  kill -TERM "$pid"
  wait "$pid" || true
  unset 'PID[cg]'
  echo "CG $name $n $(awk '/^(summary|totals):/ {print $2; exit}' "$dir/callgrind.out")" >>"$RESULTS"
  printf 'bench:   callgrind %-3s %5s requests: %s instructions\n' "$name" "$n" \
    "$(tail -1 "$RESULTS" | cut -d' ' -f4)" >&2
}
if [ "$CALLGRIND" = 1 ]; then
  echo "bench: callgrind, one worker, $CG_LOW and $CG_HIGH requests" >&2
  for n in "$CG_LOW" "$CG_HIGH"; do
    callgrind_run off "$n"
    callgrind_run on "$n" --policy "$WORK/policy-key.json"
  done
fi

"$PY" - "$RESULTS" "$DURATION" "$THREADS" "$CONNS" "$ROUNDS" "$VERIFY_SECONDS" "$(nproc)" \
  "$(getconf CLK_TCK)" <<'EOF'
import statistics, sys
path, duration, threads, conns, rounds, vsecs, ncpu, hz = sys.argv[1:9]
verify, cells, cg = [], {}, {}
for line in open(path):
    f = line.split()
    if f[0] == "CG":
        cg[(f[1], int(f[2]))] = int(f[3])
    elif f[0] == "VERIFY":
        verify.append((f[1], int(f[2]), float(f[3]), float(f[4]), f[5]))
    elif f[0] == "WRK":
        # WRK kind name round req/s MB/s p50 p99 non-2xx errors requests ticks
        n, ticks = int(f[10]), int(f[11])
        cpu_us = ticks / float(hz) * 1e6 / n if n else 0.0
        cells.setdefault((f[1], f[2]), []).append(
            (float(f[4]), float(f[6]), float(f[7]), cpu_us, int(f[8]), int(f[9])))
names = {"key": "key (ECDSA P-256, openssl)", "key-rekor": "key + Rekor SET (cosign)",
         "keyless": "keyless Fulcio + Rekor (cosign)"}
print()
print(f"Signature verification: verify_image_evaluate on one thread, {vsecs}s per row, {ncpu} cores")
print()
hdr = "%-34s %10s %12s %12s  %s" % ("signature", "calls", "verifs/s", "us/verif", "verdict")
print(hdr)
print("-" * len(hdr))
for label, calls, secs, rate, reason in verify:
    print("%-34s %10d %12.0f %12.1f  %s" % (names.get(label, label), calls, rate, 1e6 / rate, reason))
print()
print(f"Cached manifests: wrk -t{threads} -c{conns}, {duration}s per cell, medians of {rounds} "
      "rounds (off/on alternating); on = --policy requiring the key signature")
print()
hdr = "%-10s %-5s %11s %9s %9s %12s %13s %12s  %s" % (
    "manifest", "trust", "req/s", "p50 ms", "p99 ms", "cpu us/req", "req/s on/off",
    "cpu on/off", "errors")
print(hdr)
print("-" * len(hdr))
worst, worst_cpu = 0.0, 0.0
for kind in ("tag", "digest"):
    med = {}
    for name in ("off", "on"):
        runs = cells.get((kind, name), [])
        if not runs:
            continue
        med[name] = tuple(statistics.median(r[i] for r in runs) for i in range(4))
        non2xx, errs = sum(r[4] for r in runs), sum(r[5] for r in runs)
        err = "" if not (non2xx or errs) else f"{non2xx} non-2xx, {errs} socket"
        both = name == "on" and "off" in med
        rps = "%.3fx" % (med["on"][0] / med["off"][0]) if both else ""
        cpu = "%.3fx" % (med["on"][3] / med["off"][3]) if both and med["off"][3] else ""
        print("%-10s %-5s %11.0f %9.3f %9.3f %12.1f %13s %12s  %s" % (
            "by " + kind, name, *med[name], rps, cpu, err))
    if "off" in med and "on" in med:
        worst = max(worst, 100.0 * (1 - med["on"][0] / med["off"][0]))
        if med["off"][3]:
            worst_cpu = max(worst_cpu, 100.0 * (med["on"][3] / med["off"][3] - 1))
    print()
print("enforcement on, worst case: %.1f%% less throughput (target < 5%%: %s), %+.1f%% CPU per "
      "request" % (worst, "met" if worst < 5 else "NOT met", worst_cpu))
ns = sorted({n for (_, n) in cg})
if len(ns) == 2 and all((name, n) in cg for name in ("off", "on") for n in ns):
    lo, hi = ns
    per = {name: (cg[(name, hi)] - cg[(name, lo)]) / (hi - lo) for name in ("off", "on")}
    print()
    print(f"User-space instructions per cached manifest request by tag (callgrind, 1 worker, "
          f"runs of {lo} and {hi} requests)")
    print()
    hdr = "%-5s %12s %10s %14s" % ("trust", "instr/req", "on/off", "added/req")
    print(hdr)
    print("-" * len(hdr))
    print("%-5s %12.0f" % ("off", per["off"]))
    print("%-5s %12.0f %9.3fx %14.0f" % ("on", per["on"], per["on"] / per["off"],
                                         per["on"] - per["off"]))
EOF
