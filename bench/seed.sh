#!/usr/bin/env bash
# bench/seed.sh — seeding benchmark: importing a generated OCI image layout of
# SIZE_MIB MiB (random, incompressible layers) into Sluice's cache with
# `sluice seed`, next to `skopeo copy oci:DIR docker://127.0.0.1:PORT/...`
# into Debian's docker-registry (what a site without Sluice would do to make
# the same content servable), in the same run on the same files. Prints wall
# time, throughput (layout bytes / wall time) and peak RSS of each, and the
# ratio to skopeo+registry.
#
# Both sides verify digests and fsync what they store (the registry's
# filesystem driver syncs each blob; Sluice commits with fsync unless
# [cache] sync = false). The layout is written once, so both read it from the
# page cache. Peak RSS: sluice and skopeo from /usr/bin/time (max RSS); the
# registry from VmHWM in /proc/PID/status, read after the copy.
#
# Everything lives in one temp dir under /tmp, removed on exit; the registry
# is started on a free port and stopped by PID.
#
# Environment:
#   SIZE_MIB=2048     layout size (LAYERS layers of SIZE_MIB/LAYERS MiB each)
#   LAYERS=16
#   TAR=0             1: also seed the layout as a plain tar (as `skopeo copy
#                     ... oci-archive:` or `sluice export` write it)
#   SLUICE_BIN=...    default build/proxy/sluice (use a release build)
#   KEEP=1            keep the temp dir
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
SIZE_MIB=${SIZE_MIB:-2048}
LAYERS=${LAYERS:-16}
TAR=${TAR:-0}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/proxy/sluice}
REPO=bench/seed
TAG=v1

LIB_WHO=bench
. "$ROOT/scripts/lib.sh"
need docker-registry skopeo curl
[ -x /usr/bin/time ] || die "/usr/bin/time not installed (apt-get install time)"
[ -x "$SLUICE_BIN" ] || die "no sluice binary at $SLUICE_BIN (ninja -C build)"

WORK=$(mktemp -d /tmp/sluice-bench-seed.XXXXXX)
REG_PID=
cleanup() {
  [ -z "$REG_PID" ] || stop_pids "$REG_PID"
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s%N; }  # nanoseconds

# -- the layout: LAYERS random layers, a config, a manifest, tagged $TAG --------
echo "bench: writing a ${SIZE_MIB} MiB layout ($LAYERS layers) in $WORK/layout" >&2
"$PY" - "$WORK/layout" "$SIZE_MIB" "$LAYERS" "$TAG" <<'EOF'
import hashlib, json, os, sys
out, size_mib, layers, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def put(data_iter, media_type):
    h, n, tmp = hashlib.sha256(), 0, os.path.join(blobs, "tmp")
    with open(tmp, "wb") as f:
        for piece in data_iter:
            h.update(piece); f.write(piece); n += len(piece)
    os.rename(tmp, os.path.join(blobs, h.hexdigest()))
    return {"mediaType": media_type, "digest": "sha256:" + h.hexdigest(), "size": n}
per = size_mib * (1 << 20) // layers
descs = [put((os.urandom(1 << 20) for _ in range(per >> 20)), "application/vnd.oci.image.layer.v1.tar")
         for _ in range(layers)]
cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]}}).encode()
cdesc = put([cfg], "application/vnd.oci.image.config.v1+json")
man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "config": cdesc, "layers": descs}).encode()
mdesc = put([man], "application/vnd.oci.image.manifest.v1+json")
mdesc["annotations"] = {"org.opencontainers.image.ref.name": tag}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
EOF
BYTES=$(du -sb "$WORK/layout" | cut -f1)
sync

# -- skopeo copy into docker-registry ----------------------------------------------
PORT=$(free_port)
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: error}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
http:
  addr: 127.0.0.1:$PORT
  secret: sluice-bench
EOF
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break
  kill -0 "$REG_PID" 2>/dev/null || die "docker-registry exited: $(tail -3 "$WORK/registry/log")"
  sleep 0.05
done
echo "bench: skopeo copy oci:layout:$TAG docker://127.0.0.1:$PORT/$REPO:$TAG" >&2
T0=$(now)
/usr/bin/time -f %M -o "$WORK/skopeo.rss" skopeo --insecure-policy copy --preserve-digests \
  --dest-tls-verify=false "oci:$WORK/layout:$TAG" "docker://127.0.0.1:$PORT/$REPO:$TAG" >/dev/null
T1=$(now)
SKOPEO_NS=$((T1 - T0))
SKOPEO_KB=$(cat "$WORK/skopeo.rss")
REG_KB=$(awk '/VmHWM/ {print $2}' "/proc/$REG_PID/status")
kill -TERM "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=
rm -rf "$WORK/registry/data"

# -- sluice seed ---------------------------------------------------------------------
seed_run() {  # name input
  local cache="$WORK/cache-$1"
  echo "bench: sluice seed $2" >&2
  local t0 t1
  t0=$(now)
  /usr/bin/time -f %M -o "$WORK/$1.rss" "$SLUICE_BIN" seed --cache "$cache" \
    --repo "127.0.0.1:$PORT/$REPO" "$2" >"$WORK/$1.out"
  t1=$(now)
  "$SLUICE_BIN" stat --cache "$cache" --json | grep -q '"partial_blobs": 0' || die "seed left partial blobs"
  echo "$((t1 - t0)) $(cat "$WORK/$1.rss")"
  rm -rf "$cache"
}
read -r SEED_NS SEED_KB < <(seed_run dir "$WORK/layout")
if [ "$TAR" = 1 ]; then
  (cd "$WORK/layout" && tar -cf "$WORK/layout.tar" oci-layout index.json blobs)
  read -r TAR_NS TAR_KB < <(seed_run tar "$WORK/layout.tar")
fi

# -- table ---------------------------------------------------------------------------
row() {  # name nanoseconds rss_kb other_rss_label
  "$PY" - "$@" "$BYTES" "$SKOPEO_NS" <<'EOF'
import sys
name, rss, extra, size = sys.argv[1], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
secs, base = int(sys.argv[2]) / 1e9, int(sys.argv[6]) / 1e9
mbs = size / secs / 1e6
print(f"{name:<32} {secs:8.2f} {mbs:10.1f} {rss / 1024:10.1f} {extra:>16} {base / secs:8.2f}x")
EOF
}
printf '\nlayout: %s bytes (%s MiB, %s layers); sluice: %s\n' "$BYTES" "$SIZE_MIB" "$LAYERS" "$SLUICE_BIN"
printf '%-32s %8s %10s %10s %16s %9s\n' "what" "seconds" "MB/s" "RSS MiB" "other RSS MiB" "vs skopeo"
row "skopeo copy + docker-registry" "$SKOPEO_NS" "$SKOPEO_KB" "registry $(( REG_KB / 1024 ))"
row "sluice seed (directory)" "$SEED_NS" "$SEED_KB" "-"
[ "$TAR" = 1 ] && row "sluice seed (tar)" "$TAR_NS" "$TAR_KB" "-"
exit 0
