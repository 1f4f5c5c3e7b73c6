#!/usr/bin/env bash
# bench/delta.sh — delta sizes, times and memory for every <name>/{old,new}.ko
# pair in a directory (default ../shared/data/modules, relative to the repo):
# Sluice's zstd (dcz), vcdiff and bsz codecs and its auto choice, against the
# command-line tools `xdelta3 -9`, `zstd --ultra -22 --long --patch-from` and
# `bsdiff`.
#
#   bench/delta.sh [DIR]
#   env: SLUICE   binary whose `delta` subcommand to run (default: build/proxy/sluice
#                 if it has one, else a built tests/test_delta_cli, which is that
#                 command when its first argument is "delta"); use an optimized build
#        RUNS     timed runs per measurement, median reported (default 3)
#        WORK     scratch directory (default /dev/shm if present, so fsync and
#                 page cache do not measure the disk)
#
# Every decode is checked against the real target. Times are wall-clock
# medians of the whole command (process start, mmap, SHA-256 of the base,
# fsync'd atomic output for Sluice); peak RSS is /usr/bin/time's maximum
# resident set size, the largest over the runs. Sizes are exact.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-../shared/data/modules}
RUNS=${RUNS:-3}
if [ -z "${WORK:-}" ]; then
  if [ -d /dev/shm ]; then WORK=/dev/shm; else WORK=${TMPDIR:-/tmp}; fi
fi

find_sluice() {
  if [ -n "${SLUICE:-}" ]; then echo "$SLUICE"; return; fi
  if [ -x build/proxy/sluice ] && build/proxy/sluice delta help >/dev/null 2>&1; then
    echo build/proxy/sluice; return
  fi
  for b in build-release/tests/test_delta_cli build-delta-rel/tests/test_delta_cli \
           build/tests/test_delta_cli; do
    [ -x "$b" ] && { echo "$b"; return; }
  done
  echo "bench/delta.sh: no sluice binary with 'delta'; build one or set SLUICE" >&2
  exit 1
}
SL=$(find_sluice)
for tool in xdelta3 zstd bsdiff bspatch /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench/delta.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

TMP=$(mktemp -d "$WORK/sluice-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

now_ns() { date +%s%N; }

# run_timed NAME CMD...: runs CMD RUNS times; sets T_MS (median, ms) and RSS_KB (max).
run_timed() {
  local times=() rss=0 i t0 t1 r
  for ((i = 0; i < RUNS; i++)); do
    t0=$(now_ns)
    /usr/bin/time -f %M -o "$TMP/rss" "$@" >/dev/null 2>"$TMP/err" || {
      echo "bench/delta.sh: failed: $*" >&2; cat "$TMP/err" >&2; exit 1; }
    t1=$(now_ns)
    times+=($(( (t1 - t0) / 1000 )))
    r=$(tail -1 "$TMP/rss")
    (( r > rss )) && rss=$r
  done
  T_MS=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}')
  RSS_KB=$rss
}

# Codecs: label, encode command, decode command ($OLD $NEW $D $OUT substituted).
CODECS=(s-zstd s-vcdiff s-bsz s-auto xdelta3 zstd bsdiff)
encode_cmd() {
  case $1 in
    s-zstd|s-vcdiff|s-bsz|s-auto) echo "$SL delta create --from $OLD --to $NEW -o $D --codec ${1#s-}" ;;
    xdelta3) echo "xdelta3 -9 -e -f -s $OLD $NEW $D" ;;
    zstd) echo "zstd -q -f --ultra -22 --long=31 --patch-from=$OLD $NEW -o $D" ;;
    bsdiff) echo "bsdiff $OLD $NEW $D" ;;
  esac
}
decode_cmd() {
  case $1 in
    s-*) echo "$SL delta apply --from $OLD -o $OUT $D" ;;
    xdelta3) echo "xdelta3 -d -f -s $OLD $D $OUT" ;;
    zstd) echo "zstd -q -f -d --long=31 --patch-from=$OLD $D -o $OUT" ;;
    bsdiff) echo "bspatch $OLD $OUT $D" ;;
  esac
}

declare -A SIZE ENC DEC ERSS DRSS TOTAL
TOTAL_TARGET=0
PAIRS=()
for pdir in "$DIR"/*/; do
  name=$(basename "$pdir")
  [ -f "$pdir/old.ko" ] && [ -f "$pdir/new.ko" ] || continue
  PAIRS+=("$name")
  OLD="$pdir/old.ko"; NEW="$pdir/new.ko"
  tsize=$(stat -c %s "$NEW"); bsize=$(stat -c %s "$OLD")
  SIZE[$name,target]=$tsize; SIZE[$name,base]=$bsize
  TOTAL_TARGET=$((TOTAL_TARGET + tsize))
  for c in "${CODECS[@]}"; do
    D="$TMP/$name.$c"; OUT="$TMP/$name.$c.out"
    run_timed $(encode_cmd "$c"); ENC[$name,$c]=$T_MS; ERSS[$name,$c]=$RSS_KB
    SIZE[$name,$c]=$(stat -c %s "$D")
    TOTAL[$c]=$(( ${TOTAL[$c]:-0} + ${SIZE[$name,$c]} ))
    run_timed $(decode_cmd "$c"); DEC[$name,$c]=$T_MS; DRSS[$name,$c]=$RSS_KB
    cmp -s "$OUT" "$NEW" || { echo "bench/delta.sh: $c decoded $name wrongly" >&2; exit 1; }
  done
done
[ ${#PAIRS[@]} -gt 0 ] || { echo "bench/delta.sh: no <name>/{old,new}.ko pairs in $DIR" >&2; exit 1; }

pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f%%", 100 * a / b}'; }

echo "# Delta sizes: bytes (% of target). sluice: $SL; runs: $RUNS; work dir: $WORK"
printf '%-15s %9s' pair target
for c in "${CODECS[@]}"; do printf ' %17s' "$c"; done
printf ' %9s\n' auto/best
for n in "${PAIRS[@]}"; do
  printf '%-15s %9d' "$n" "${SIZE[$n,target]}"
  best=
  for c in "${CODECS[@]}"; do
    printf ' %8d (%6s)' "${SIZE[$n,$c]}" "$(pct "${SIZE[$n,$c]}" "${SIZE[$n,target]}")"
    case $c in
      xdelta3|zstd|bsdiff) if [ -z "$best" ] || (( ${SIZE[$n,$c]} < best )); then best=${SIZE[$n,$c]}; fi ;;
    esac
  done
  printf ' %8s\n' "$(pct "${SIZE[$n,s-auto]}" "$best")"
done
printf '%-15s %9d' TOTAL "$TOTAL_TARGET"
for c in "${CODECS[@]}"; do printf ' %8d (%6s)' "${TOTAL[$c]}" "$(pct "${TOTAL[$c]}" "$TOTAL_TARGET")"; done
echo

echo
echo "# Time (median ms, whole command) and peak RSS (MiB; x = multiple of the base for encode, of the target for decode)"
printf '%-15s %-9s %10s %10s %9s %12s %12s\n' pair codec enc_ms dec_ms dec_MB/s enc_rss dec_rss
for n in "${PAIRS[@]}"; do
  for c in "${CODECS[@]}"; do
    awk -v n="$n" -v c="$c" -v e="${ENC[$n,$c]}" -v d="${DEC[$n,$c]}" -v er="${ERSS[$n,$c]}" \
        -v dr="${DRSS[$n,$c]}" -v b="${SIZE[$n,base]}" -v t="${SIZE[$n,target]}" 'BEGIN {
      printf "%-15s %-9s %10.1f %10.1f %9.0f %6.1f (%4.1fx) %6.1f (%4.1fx)\n", n, c, e, d,
        t / (d / 1000) / 1e6, er / 1024, er * 1024 / b, dr / 1024, dr * 1024 / t }'
  done
done
