#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this):
#   1. installs dependencies (scripts/install-deps.sh, idempotent);
#   2. builds Sluice with -Werror under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. runs the C unit tests (cmocka, via meson test);
#   4. runs the integration tests (pytest) against real processes — Sluice
#      itself (the sanitized build, so leaks and UB fail the run), Debian's
#      docker-registry, skopeo, curl — all on 127.0.0.1;
#   5. builds the delta unit tests under ThreadSanitizer and runs them (the
#      bsz decoder's threads, the worker pool);
#   6. builds the libFuzzer targets with clang and runs each briefly.
# Environment: FUZZ_SECONDS (default 20 per target), PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

bash scripts/install-deps.sh

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== build (gcc, ASan+UBSan, -Werror)"
if [ ! -f build-asan/build.ninja ]; then
  meson setup build-asan -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
fi
ninja -C build-asan

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT

echo "== unit tests"
meson test -C build-asan --suite unit --print-errorlogs | tee "$LOGS/unit"

echo "== integration tests"
export SLUICE_BIN="$ROOT/build-asan/proxy/sluice"
/usr/bin/python3 -m pytest -q tests/integration ${PYTEST_ARGS:-} | tee "$LOGS/integration"

echo "== delta unit tests under ThreadSanitizer"
if [ ! -f build-tsan/build.ninja ]; then
  meson setup build-tsan -Db_sanitize=thread -Db_lundef=false >/dev/null
fi
ninja -C build-tsan tests/test_delta tests/test_delta_internal
(cd tests && for t in test_delta test_delta_internal; do
  TSAN_OPTIONS="halt_on_error=1" ../build-tsan/tests/$t 2>&1 || exit 1
done) | tee "$LOGS/tsan"

echo "== fuzz targets (clang, libFuzzer)"
if [ ! -f build-fuzz/build.ninja ]; then
  CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false -Db_lundef=false >/dev/null
fi
ninja -C build-fuzz
bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}" | tee "$LOGS/fuzz"

# One closing line over everything (each stage above already stopped the run
# on a failure): unit suites, integration tests, the ThreadSanitizer suite
# and fuzz targets.
unit=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$LOGS/unit")
tsan=$(grep -c '^\[  PASSED  \]' "$LOGS/tsan" || true)
integration=$(grep -Eo '[0-9]+ passed' "$LOGS/integration" | tail -1 | cut -d' ' -f1)
fuzz=$(grep -c '^-- fuzz_' "$LOGS/fuzz" || true)
echo "tests: $((unit + integration + tsan + fuzz)) passed, 0 failed"
