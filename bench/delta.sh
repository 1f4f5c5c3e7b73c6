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
#        RUNS     timed runs per encode, median reported (default 3)
#        DEC_RUNS rounds of decodes, every decoder of a pair and `delta help`
#                 once per round, medians reported (default 3 x RUNS, >= 9)
#        WORK     scratch directory (default /dev/shm if present, so fsync and
#                 page cache do not measure the disk)
#
# Every decode is checked against the real target. Times are wall-clock
# medians of the whole command (process start, mmap, for dcz the SHA-256 of
# the base, fsync'd atomic output for Sluice); peak RSS is /usr/bin/time's maximum
# resident set size, the largest over the runs (for vcdiff and xdelta3 the
# larger of the command and its xdelta3 process, not their sum; mapped input
# files count for the pages touched). Sizes are exact.
#
# The issue's targets are checked for Sluice's codecs (ok/FAIL): auto no
# larger than the smallest of the three tools on each pair (within 1%) and at
# most 3.1% of the targets in total; encode peak RSS <= 10x the base; decode
# >= 200 MB/s of output and peak RSS <= 2x the target. A whole command also
# pays for starting the binary, which does not grow with the input: its idle
# RSS and start time (`delta help`) are printed, and the per-byte targets
# are checked on the "net" figures (RSS above idle, MB/s over the time after
# start-up), what the delta work itself costs. Counted whole, no program
# meets them on small pairs (bspatch alone holds 1.6 MiB, 26x a 63 KB
# module); the last line also counts the whole-command figures for the
# pairs of 1 MiB or more.
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

# Microseconds, read without starting a process (date would add ~2 ms per run).
now_us() { NOW_US=${EPOCHREALTIME//[!0-9]/}; }

# run_once CMD...: runs CMD once; sets T_US (wall time) and R_KB (peak RSS).
run_once() {
  local t0
  now_us; t0=$NOW_US
  /usr/bin/time -f %M -o "$TMP/rss" "$@" >/dev/null 2>"$TMP/err" || {
    echo "bench/delta.sh: failed: $*" >&2; cat "$TMP/err" >&2; exit 1; }
  now_us; T_US=$(( NOW_US - t0 ))
  R_KB=$(tail -1 "$TMP/rss")
}

# median_ms "T_US...": the median of microsecond times, in ms.
median_ms() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'; }

# run_timed CMD...: runs CMD RUNS times; sets T_MS (median, ms) and RSS_KB (max).
run_timed() {
  local times="" rss=0 i
  for ((i = 0; i < RUNS; i++)); do
    run_once "$@"; times+=" $T_US"; (( R_KB > rss )) && rss=$R_KB
  done
  T_MS=$(median_ms "$times"); RSS_KB=$rss
}

# Decodes take a few milliseconds each and the machine's speed drifts, so
# they run DEC_RUNS rounds (default 3 x RUNS, at least 9), each round running
# every decoder of a pair once, after one `delta help` (the binary's start,
# measured in the same conditions); medians are reported.
DEC_RUNS=${DEC_RUNS:-$(( 3 * RUNS > 9 ? 3 * RUNS : 9 ))}

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

declare -A SIZE ENC DEC ERSS DRSS TOTAL DTIMES
HELP_TIMES=""; IDLE_KB=0
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
    D="$TMP/$name.$c"
    run_timed $(encode_cmd "$c"); ENC[$name,$c]=$T_MS; ERSS[$name,$c]=$RSS_KB
    SIZE[$name,$c]=$(stat -c %s "$D")
    TOTAL[$c]=$(( ${TOTAL[$c]:-0} + ${SIZE[$name,$c]} ))
  done
  for ((round = 0; round < DEC_RUNS; round++)); do
    run_once "$SL" delta help; HELP_TIMES+=" $T_US"; (( R_KB > IDLE_KB )) && IDLE_KB=$R_KB
    for c in "${CODECS[@]}"; do
      D="$TMP/$name.$c"; OUT="$TMP/$name.$c.out"
      rm -f "$OUT" # (replacing it would time the freeing of the last run's pages)
      run_once $(decode_cmd "$c"); DTIMES[$name,$c]+=" $T_US"
      (( R_KB > ${DRSS[$name,$c]:-0} )) && DRSS[$name,$c]=$R_KB
      if (( round == 0 )); then
        cmp -s "$OUT" "$NEW" || { echo "bench/delta.sh: $c decoded $name wrongly" >&2; exit 1; }
      fi
    done
  done
  for c in "${CODECS[@]}"; do DEC[$name,$c]=$(median_ms "${DTIMES[$name,$c]}"); done
done
[ ${#PAIRS[@]} -gt 0 ] || { echo "bench/delta.sh: no <name>/{old,new}.ko pairs in $DIR" >&2; exit 1; }
START_MS=$(median_ms "$HELP_TIMES")

pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f%%", 100 * a / b}'; }
# verdict OK_CONDITION: "ok" or "FAIL"
verdict() { if awk "BEGIN {exit !($1)}"; then echo ok; else echo FAIL; fi; }

echo "# Delta sizes: bytes (% of target). sluice: $SL; runs: $RUNS (decode: $DEC_RUNS rounds); work dir: $WORK"
echo "# targets: auto <= 101% of the smallest tool on each pair, TOTAL auto <= 3.1% of the targets"
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
  printf ' %8s %s\n' "$(pct "${SIZE[$n,s-auto]}" "$best")" \
    "$(verdict "${SIZE[$n,s-auto]} <= 1.01 * $best")"
done
printf '%-15s %9d' TOTAL "$TOTAL_TARGET"
for c in "${CODECS[@]}"; do printf ' %8d (%6s)' "${TOTAL[$c]}" "$(pct "${TOTAL[$c]}" "$TOTAL_TARGET")"; done
printf ' %s\n' "$(verdict "${TOTAL[s-auto]} <= 0.031 * $TOTAL_TARGET")"

echo
echo "# Time (median ms, whole command) and peak RSS (MiB; x = multiple of the base for encode,"
echo "# of the target for decode). The binary alone (\`delta help\`): $(awk -v k="$IDLE_KB" \
  'BEGIN {printf "%.1f MiB", k / 1024}') idle RSS, ${START_MS} ms to start; net = above that."
echo "# Targets for sluice's codecs, on the net figures: enc_rss <= 10x base; decode >= 200 MB/s"
echo "# and dec_rss <= 2x target."
printf '%-15s %-9s %8s %14s %6s %-4s %8s %6s %6s %-4s %14s %6s %-4s\n' pair codec enc_ms \
  'enc_rss (xB)' 'net' '' dec_ms 'MB/s' 'net' '' 'dec_rss (xT)' 'net' ''
for n in "${PAIRS[@]}"; do
  for c in "${CODECS[@]}"; do
    awk -v n="$n" -v c="$c" -v e="${ENC[$n,$c]}" -v d="${DEC[$n,$c]}" -v er="${ERSS[$n,$c]}" \
        -v dr="${DRSS[$n,$c]}" -v b="${SIZE[$n,base]}" -v t="${SIZE[$n,target]}" \
        -v idle="$IDLE_KB" -v start="$START_MS" 'function v(ok) { return ours ? (ok ? "ok" : "FAIL") : "" }
      BEGIN {
      ours = substr(c, 1, 2) == "s-"
      ex = er * 1024 / b; dx = dr * 1024 / t; mbs = t / (d / 1000) / 1e6
      nex = (er - idle) * 1024 / b; ndx = (dr - idle) * 1024 / t
      nmbs = d > start ? t / ((d - start) / 1000) / 1e6 : 1e9
      nmbs_s = nmbs >= 1e9 ? "inf" : sprintf("%.0f", nmbs)
      if (ours)
        printf "%-15s %-9s %8.1f %6.1f (%5.1fx) %5.1fx %-4s %8.1f %6.0f %6s %-4s %6.1f (%5.1fx) %5.1fx %-4s\n",
          n, c, e, er / 1024, ex, nex, v(nex <= 10), d, mbs, nmbs_s, v(nmbs >= 200), dr / 1024, dx, ndx, v(ndx <= 2)
      else
        printf "%-15s %-9s %8.1f %6.1f (%5.1fx) %6s %-4s %8.1f %6.0f %6s %-4s %6.1f (%5.1fx) %6s\n",
          n, c, e, er / 1024, ex, "-", "", d, mbs, "-", "", dr / 1024, dx, "-" }'
  done
done
# Counts of the checks above, Sluice's codecs only: net figures on every
# pair, whole-command figures on pairs of 1 MiB or more.
awk -v idle="$IDLE_KB" -v start="$START_MS" -v list="$(for n in "${PAIRS[@]}"; do
    for c in s-zstd s-vcdiff s-bsz s-auto; do
      echo "${ERSS[$n,$c]}:${SIZE[$n,base]}:${DEC[$n,$c]}:${DRSS[$n,$c]}:${SIZE[$n,target]}:$c"
    done; done)" 'function count(net, f,   e, s, r) {
    e = (f[1] - net * idle) * 1024 <= 10 * f[2]
    s = f[5] / ((f[3] - net * start) / 1000) / 1e6 >= 200 || f[3] <= net * start
    r = (f[4] - net * idle) * 1024 <= 2 * f[5]
    return e " " s " " r }
  BEGIN {
  n = split(list, rows, "\n")
  for (i = 1; i <= n; i++) {
    split(rows[i], f, ":")
    split(count(1, f), a, " "); ne += a[1]; ns += a[2]; nr += a[3]
    if (f[5] >= 1048576) { split(count(0, f), a, " "); big++; we += a[1]; ws += a[2]; wr += a[3]
      if (f[6] == "s-bsz") { bb++; be += a[1]; bs += a[2]; br += a[3] }
      if (f[6] == "s-auto") { split(count(1, f), a, " "); ab++; ae += a[1]; as += a[2]; ar += a[3] } }
  }
  printf "# net, sluice codecs x pairs: %d; enc_rss <= 10x: %d, dec >= 200 MB/s: %d, dec_rss <= 2x: %d\n",
    n, ne, ns, nr
  printf "# whole command, pairs >= 1 MiB: all codecs %d: %d, %d, %d; bsz %d: %d, %d, %d\n",
    big, we, ws, wr, bb, be, bs, br
  printf "# auto (the smallest codec; the default of delta create), pairs >= 1 MiB, net: %d pairs: enc_rss %d, dec speed %d, dec_rss %d\n",
    ab, ae, as, ar }'
