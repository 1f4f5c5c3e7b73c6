#!/usr/bin/env bash
# bench/serve.sh — serving benchmark: the same ~1 KiB manifest and 1 KiB, 4 MiB
# and 64 MiB blobs served from Sluice's cache, from nginx (static files,
# sendfile, one worker per core) and from Debian's docker-registry, in the same
# run, with wrk (2 threads; 16 and 256 connections). Prints req/s, MB/s,
# p50/p99 latency and each server's peak RSS, with the ratios to nginx.
#
# Everything runs on 127.0.0.1 on free ports, in one temp dir, and every server
# is stopped by PID on exit (idle servers stay up until then: the registry is
# also Sluice's upstream). Each server's objects are fetched and checked
# against their digest before timing (Sluice's cache is primed that way).
# Each cell (object x connections) runs RUNS times with the servers taking
# turns, and the table shows medians; a ratio is the median over the runs of
# server/nginx in the same run. Peak RSS is VmHWM from /proc/PID/status
# (nginx: master + workers summed), reset with /proc/PID/clear_refs once all
# servers are up and primed, where the kernel allows, read after all runs.
#
# Environment:
#   DURATION=5        seconds per wrk run
#   RUNS=3            runs per cell (medians are reported)
#   ONLY="..."        only these objects (manifest blob-1KiB blob-4MiB blob-64MiB)
#   CONNS="16 256"    connection counts
#   THREADS=2         wrk threads
#   SERVERS="nginx sluice registry"   which servers (nginx first: ratios need it)
#   SLUICE_BIN=...    default build/proxy/sluice
#   KEEP=1            keep the temp dir (configs, logs, raw wrk output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3
DURATION=${DURATION:-5}
RUNS=${RUNS:-3}
ONLY=${ONLY:-}
CONNS=${CONNS:-"16 256"}
THREADS=${THREADS:-2}
SERVERS=${SERVERS:-"nginx sluice registry"}
SLUICE_BIN=${SLUICE_BIN:-$ROOT/build/proxy/sluice}
REPO=bench/app
MT_MANIFEST=application/vnd.oci.image.manifest.v1+json

LIB_WHO=bench
. "$ROOT/scripts/lib.sh"
need wrk nginx docker-registry skopeo curl
case " $SERVERS " in *" sluice "*) [ -x "$SLUICE_BIN" ] || die "no sluice binary at $SLUICE_BIN (ninja -C build)";; esac

WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
declare -A PID=()
cleanup() {
  stop_pids "${PID[@]}"
  if [ "${KEEP:-0}" = 1 ]; then echo "bench: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM


# -- content: one layout with the four objects, pushed to the registry ---------------------------
echo "bench: preparing objects in $WORK" >&2
"$PY" - "$ROOT/tests/integration" "$WORK" <<'EOF'
import json, os, sys
sys.path.insert(0, sys.argv[1])
from ocilayout import OciLayout, EMPTY_JSON, MT_OCI_EMPTY, MT_OCI_MANIFEST, canonical_json, random_bytes
work = sys.argv[2]
lay = OciLayout(os.path.join(work, "layout"))
cfg = lay.add_blob(EMPTY_JSON, MT_OCI_EMPTY)
blobs = {name: lay.add_blob(random_bytes(size), "application/octet-stream")
         for name, size in (("blob-1KiB", 1024), ("blob-4MiB", 4 << 20), ("blob-64MiB", 64 << 20))}
def manifest(pad):
    return {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "artifactType": "application/vnd.sluice.bench.v1",
            "config": cfg, "layers": list(blobs.values()),
            "annotations": {"org.opencontainers.image.description": "x" * pad}}
pad = max(0, 1024 - len(canonical_json(manifest(0))))
m = lay.add_blob(canonical_json(manifest(pad)), MT_OCI_MANIFEST)
lay.tag(m, "bench")
objs = {"manifest": {"digest": m["digest"], "size": m["size"], "kind": "manifests"}}
objs.update({k: {"digest": v["digest"], "size": v["size"], "kind": "blobs"} for k, v in blobs.items()})
json.dump(objs, open(os.path.join(work, "objects.json"), "w"))
EOF
mapfile -t OBJECTS < <("$PY" -c 'import json,sys; [print(k, v["kind"], v["digest"], v["size"]) for k, v in json.load(open(sys.argv[1])).items()]' "$WORK/objects.json")
read -r _ _ MANIFEST_DIGEST _ <<<"${OBJECTS[0]}"   # the manifest comes first

# registry: receives the push, is Sluice's upstream, and is benchmarked itself
RPORT=$(free_port)
mkdir -p "$WORK/registry"
cat > "$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $WORK/registry/data}
http:
  addr: 127.0.0.1:$RPORT
  secret: sluice-bench
EOF
start_registry() {
  docker-registry serve "$WORK/registry/config.yml" >>"$WORK/registry/out.log" 2>&1 &
  PID[registry]=$!
  wait_ok "http://127.0.0.1:$RPORT/v2/" "${PID[registry]}" docker-registry
}
start_registry
skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
  "oci:$WORK/layout:bench" "docker://127.0.0.1:$RPORT/$REPO:bench"

# nginx: the same bytes at the same URL paths
NPORT=$(free_port)
mkdir -p "$WORK/nginx/www/v2/$REPO/blobs" "$WORK/nginx/www/v2/$REPO/manifests" "$WORK/nginx/tmp"
for o in "${OBJECTS[@]}"; do
  read -r name kind digest size <<<"$o"
  ln "$WORK/layout/blobs/sha256/${digest#sha256:}" "$WORK/nginx/www/v2/$REPO/$kind/$digest" 2>/dev/null \
    || cp "$WORK/layout/blobs/sha256/${digest#sha256:}" "$WORK/nginx/www/v2/$REPO/$kind/$digest"
done
user_line=""
[ "$(id -u)" = 0 ] && user_line="user $(id -un) $(id -gn);"
cat > "$WORK/nginx/nginx.conf" <<EOF
# generated by bench/serve.sh
$user_line
daemon off;
master_process on;
worker_processes $(nproc);
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    types { }
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NPORT;
        root $WORK/nginx/www;
        location /v2/$REPO/manifests/ { default_type $MT_MANIFEST; }
    }
}
EOF

SPORT=$(free_port)
mkdir -p "$WORK/sluice/cache"

start_server() {
  case $1 in
    nginx)
      nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" >>"$WORK/nginx/out.log" 2>&1 &
      PID[nginx]=$!
      wait_ok "http://127.0.0.1:$NPORT/v2/$REPO/manifests/$MANIFEST_DIGEST" "${PID[nginx]}" nginx
      ;;
    sluice)
      # no per-request log line, like nginx (access_log off) and the registry (accesslog disabled)
      printf '# generated by bench/serve.sh\n[server]\nlog_requests = false\n' >"$WORK/sluice/sluice.conf"
      "$SLUICE_BIN" serve --config "$WORK/sluice/sluice.conf" --listen "127.0.0.1:$SPORT" \
        --upstream "http://127.0.0.1:$RPORT" --cache "$WORK/sluice/cache" --no-sync 2>"$WORK/sluice/stderr.log" &
      PID[sluice]=$!
      wait_ok "http://127.0.0.1:$SPORT/healthz" "${PID[sluice]}" sluice
      ;;
    registry) kill -0 "${PID[registry]}" 2>/dev/null || start_registry ;;
  esac
}
port_of() { case $1 in nginx) echo "$NPORT";; sluice) echo "$SPORT";; registry) echo "$RPORT";; esac; }

# all PIDs of a server (nginx: master and its workers)
pids_of() {
  local p=${PID[$1]}
  echo "$p"
  [ -r "/proc/$p/task/$p/children" ] && tr ' ' '\n' <"/proc/$p/task/$p/children" | grep -E '^[0-9]+$' || true
}
hwm_kib() {  # summed VmHWM of a server's processes
  local total=0 p v
  for p in $(pids_of "$1"); do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
reset_hwm() { local p; for p in $(pids_of "$1"); do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }

# fetch each object once and check its digest (primes Sluice's cache)
check_objects() {
  local port=$1 o name kind digest size got
  for o in "${OBJECTS[@]}"; do
    read -r name kind digest size <<<"$o"
    got=$(curl -sf -H "Accept: $MT_MANIFEST" "http://127.0.0.1:$port/v2/$REPO/$kind/$digest" | sha256sum | cut -d' ' -f1) || got=none
    [ "sha256:$got" = "$digest" ] || die "127.0.0.1:$port did not serve the $size bytes of $name ($kind/$digest)"
  done
}

cat > "$WORK/report.lua" <<'EOF'
-- wrk done hook: one machine-readable line (req/s, MB/s, p50 ms, p99 ms, non-2xx, socket errors, requests)
done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %.3f %d %d %d\n",
    summary.requests / s, summary.bytes / s / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF

RESULTS=$WORK/results.txt
: >"$RESULTS"
# every server up and checked first; then each cell runs RUNS times, the
# servers taking turns within each run, so a change in the machine's load
# falls on all of them alike
for server in $SERVERS; do
  start_server "$server"
  check_objects "$(port_of "$server")"
  echo "bench: $server on 127.0.0.1:$(port_of "$server") (pids $(pids_of "$server" | tr '\n' ' '))" >&2
done
for server in $SERVERS; do reset_hwm "$server"; done
for o in "${OBJECTS[@]}"; do
  read -r name kind digest _ <<<"$o"
  case " $ONLY " in "  " | *" $name "*) ;; *) continue ;; esac
  for c in $CONNS; do
    for run in $(seq 1 "$RUNS"); do
      for server in $SERVERS; do
        port=$(port_of "$server")
        out=$(wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --timeout 30s -H "Accept: $MT_MANIFEST" \
                -s "$WORK/report.lua" "http://127.0.0.1:$port/v2/$REPO/$kind/$digest" 2>&1) || true
        echo "$out" >>"$WORK/wrk-$server.log"
        line=$(grep '^RESULT ' <<<"$out" | tail -1)
        [ -n "$line" ] || { echo "$out" >&2; die "wrk failed for $server $name c=$c"; }
        echo "$server $name $c $run ${line#RESULT }" >>"$RESULTS"
        printf 'bench:   %-8s %-10s c=%-4s run %s: %s\n' "$server" "$name" "$c" "$run" "${line#RESULT }" >&2
      done
    done
  done
done
for server in $SERVERS; do
  echo "RSS $server $(hwm_kib "$server") $(pids_of "$server" | wc -l)" >>"$RESULTS"
done

"$PY" - "$RESULTS" "$DURATION" "$THREADS" "$(nproc)" "$RUNS" <<'EOF'
import sys
path, duration, threads, ncpu, nruns = sys.argv[1:6]
runs, rss, order = {}, {}, []
for line in open(path):
    f = line.split()
    if f[0] == "RSS":
        rss[f[1]] = (int(f[2]), int(f[3]))
        continue
    server, obj, conns, run = f[0], f[1], int(f[2]), int(f[3])
    rps, mbs, p50, p99, non2xx, errs, n = float(f[4]), float(f[5]), float(f[6]), float(f[7]), int(f[8]), int(f[9]), int(f[10])
    runs.setdefault((server, obj, conns), {})[run] = (rps, mbs, p50, p99, non2xx, errs, n)
    if server not in order:
        order.append(server)
objs = []
for (s, o, c) in runs:
    if (o, c) not in objs:
        objs.append((o, c))

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2 if xs else 0

# a cell: medians over its runs; errors and requests summed
cells = {}
for key, by_run in runs.items():
    vals = list(by_run.values())
    cells[key] = tuple(median([v[i] for v in vals if v[6] or i < 2]) for i in range(4)) + \
        tuple(sum(v[i] for v in vals) for i in (4, 5, 6))

def paired_ratio(s, o, c, i):
    """median over runs of (server's value / nginx's value in the same run)"""
    mine, ng = runs.get((s, o, c), {}), runs.get(("nginx", o, c), {})
    rs = [mine[r][i] / ng[r][i] for r in mine if r in ng and ng[r][i] and (i < 2 or (mine[r][6] and ng[r][6]))]
    return "%.2fx" % median(rs) if rs else "-"

def ratio(a, b):
    return "%.2fx" % (a / b) if b else "-"

print()
print(f"Serving benchmark: wrk -t{threads}, {duration}s per run, {nruns} run(s) per cell, {ncpu} cores; "
      "MB = 10^6 bytes; requests: summed over the runs; req/s, MB/s, p50, p99: medians; ratios: median over the runs of "
      "server/nginx in the same run (req/s: higher is better; p99: lower is better)")
print("MB/s counts every byte read, headers and bodies still in flight at the end of a run included: it is the "
      "throughput measure for the large blobs, where few requests complete within a run at 256 connections")
print()
hdr = "%-11s %5s  %-9s %8s %11s %10s %9s %9s %9s %8s %8s  %s" % (
    "object", "conns", "server", "requests", "req/s", "MB/s", "p50 ms", "p99 ms", "req/s/ng", "MB/s/ng", "p99/ng",
    "errors")
print(hdr)
print("-" * len(hdr))
for o, c in objs:
    base = cells.get(("nginx", o, c))
    for s in order:
        v = cells.get((s, o, c))
        if not v:
            continue
        rps, mbs, p50, p99, non2xx, errs, n = v
        err = "" if not (non2xx or errs) else f"{non2xx} non-2xx, {errs} socket"
        if n == 0:  # nothing completed within the duration: no latency to show
            err = (err + "; " if err else "") + "no request completed (raise DURATION)"
        lat = lambda v: "%9.2f" % v if n else "%9s" % "-"
        print("%-11s %5d  %-9s %8d %11.0f %10.1f %s %s %9s %8s %8s  %s" % (
            o, c, s, n, rps, mbs, lat(p50), lat(p99), paired_ratio(s, o, c, 0) if base else "-",
            paired_ratio(s, o, c, 1) if base else "-", paired_ratio(s, o, c, 3) if base else "-", err))
    print()
print("peak RSS (VmHWM during the runs)")
nb = rss.get("nginx", (0, 0))[0]
for s in order:
    kib, nproc = rss.get(s, (0, 0))
    what = f"{nproc} processes summed" if nproc > 1 else "1 process"
    print("  %-9s %9.1f MiB  (%s)%s" % (s, kib / 1024, what, "" if s == "nginx" or not nb else f"  {ratio(kib, nb)} nginx"))
EOF
