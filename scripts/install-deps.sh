#!/usr/bin/env bash
# Installs every build, test and benchmark dependency of Sluice from Debian's
# archive. Idempotent: packages already present are skipped by apt-get, and the
# package index is refreshed only when something is missing.
#
# Debian's docker-registry package starts a service from its postinst; in a
# container without an init system that start fails or is skipped. A
# policy-rc.d that denies service starts keeps the install from failing and
# keeps a stray registry off port 5000 (tests start their own).
set -euo pipefail

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

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

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
