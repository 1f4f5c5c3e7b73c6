# scripts/lib.sh — shell helpers shared by scripts/demo.sh and bench/*.sh
# (sourced, not run). Every server those scripts start listens on 127.0.0.1
# on a port picked here, and is stopped by PID with stop_pids.
#
#   LIB_WHO      prefix of error messages (default: the script's name)
#   PY           the Python that picks ports (default /usr/bin/python3)

die() { echo "${LIB_WHO:-$(basename "$0")}: $*" >&2; exit 1; }

# a free TCP port on 127.0.0.1
free_port() {
  "${PY:-/usr/bin/python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_ok URL PID NAME: until URL answers 2xx (30 s), dying if PID exits first
wait_ok() {
  local _
  for _ in $(seq 1 300); do
    kill -0 "$2" 2>/dev/null || die "$3 exited during startup"
    curl -sf -o /dev/null --max-time 2 "$1" && return 0
    sleep 0.1
  done
  die "$3 not ready at $1"
}

# stop_pids PID...: SIGTERM each live one and wait for it
stop_pids() {
  local pid
  for pid in "$@"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
}

# bench_workdir PREFIX: a temp dir in $WORK and a PID table (name -> pid);
# on exit every server in PID is stopped and the dir removed (kept, and
# said, with KEEP=1)
bench_workdir() {
  WORK=$(mktemp -d "/tmp/$1.XXXXXX")
  declare -gA PID=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}
bench_cleanup() {
  stop_pids "${PID[@]}"
  if [ "${KEEP:-0}" = 1 ]; then echo "${LIB_WHO:-bench}: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
}

# need TOOL...: each must be on PATH
need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool not installed (bash scripts/install-deps.sh)"
  done
}

# wrk_lua FILE: the wrk script of the benchmarks; its done hook prints one
# line: RESULT req/s MB/s p50_ms p99_ms non-2xx socket_errors requests
wrk_lua() {
  cat > "$1" <<'EOF'
done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %.3f %d %d %d\n",
    summary.requests / s, summary.bytes / s / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF
}

# wrk_result LOG CONNS URL WHAT: runs wrk ($THREADS threads, $DURATION s,
# Accept: $MT_MANIFEST, the script $WORK/report.lua from wrk_lua) against
# URL, appends its output to LOG and prints the RESULT fields; dies naming
# WHAT if wrk printed none (call it as x=$(wrk_result ...) under set -e)
wrk_result() {
  local out line
  out=$(wrk -t"$THREADS" -c"$2" -d"${DURATION}s" --timeout 30s -H "Accept: $MT_MANIFEST" \
          -s "$WORK/report.lua" "$3" 2>&1) || true
  echo "$out" >>"$1"
  line=$(grep '^RESULT ' <<<"$out" | tail -1)
  [ -n "$line" ] || { echo "$out" >&2; die "wrk failed for $4"; }
  echo "${line#RESULT }"
}
