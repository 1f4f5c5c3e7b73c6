#!/usr/bin/env bash
# Runs every libFuzzer target built in build-fuzz for SECONDS (default 20)
# each, starting from its seed corpus in tests/fuzz/corpus/<target>. Findings
# (crash-*, leak-*, timeout-*) are left in build-fuzz/findings and fail the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-20}
mkdir -p build-fuzz/findings
status=0
for bin in build-fuzz/tests/fuzz/fuzz_*; do
  [ -f "$bin" ] && [ -x "$bin" ] || continue
  name=$(basename "$bin")
  work=$(mktemp -d)
  cp -r "tests/fuzz/corpus/$name/." "$work/" 2>/dev/null || true
  dict=""
  base=${name#fuzz_}
  [ -f "tests/fuzz/$base.dict" ] && dict="-dict=tests/fuzz/$base.dict"
  echo "-- $name (${SECONDS_EACH}s)"
  if ! "$bin" $dict -max_total_time="$SECONDS_EACH" -artifact_prefix=build-fuzz/findings/ \
       -print_final_stats=0 "$work" >"build-fuzz/findings/$name.log" 2>&1; then
    echo "FAIL: $name found a problem:"; tail -40 "build-fuzz/findings/$name.log"; status=1
  else
    grep -E "^#[0-9]+.*DONE" "build-fuzz/findings/$name.log" | tail -1 || true
  fi
  rm -rf "$work"
done
exit $status
