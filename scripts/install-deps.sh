#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of Sluice from Debian's
# archive. Idempotent: packages already present are skipped by apt-get, and the
# package index is refreshed only when something is missing.
#
# Debian's docker-registry package starts a service from its postinst; in a
# container without an init system that start fails or is skipped. A
# policy-rc.d that denies service starts keeps the install from failing and
# keeps a stray registry off port 5000 (tests start their own).
#
# Then the npm packages of the keyless-bundle test signer
# (tests/integration/sigstore_signer: @sigstore/sign, @sigstore/mock), with
# `npm ci` from its package-lock.json, only when its node_modules is missing
# or was installed from another lock file. npm comes from Debian's `npm`
# package when no npm is on PATH (a NodeSource nodejs brings its own).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential meson ninja-build pkg-config clang clang-format
  libclang-rt-14-dev
  libevent-dev libcurl4-openssl-dev liblmdb-dev libssl-dev libjansson-dev
  libinih-dev libarchive-dev libzstd-dev liblzma-dev libdivsufsort-dev
  libcmocka-dev
  python3 python3-pytest
  docker-registry skopeo curl openssl zstd xdelta3 bsdiff
  wrk nginx-light hyperfine lmdb-utils time
)

SIGNER=tests/integration/sigstore_signer

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)

npm_install() {
  local stamp="$SIGNER/node_modules/.sluice-lock.sha256"
  local want
  want=$(sha256sum "$SIGNER/package-lock.json" | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  (cd "$SIGNER" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

if [ ${#missing[@]} -eq 0 ]; then
  npm_install
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
cleanup() { [ $created_policy -eq 1 ] && $SUDO rm -f "$policy"; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# A registry service started anyway (systemd hosts) would hold :5000; tests do
# not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet docker-registry 2>/dev/null; then
  $SUDO systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi

npm_install
