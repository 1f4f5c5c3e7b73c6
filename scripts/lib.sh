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
