#!/usr/bin/env bash
# System packages the test suite needs on Debian/Ubuntu: real OBS headless under Xvfb for the
# bridge's integration tests, ngircd for the plain-IRC chat smoke test, Chromium for the
# control panel's browser tests.
# Usage: sudo install/dev-deps.sh   (root in CI)
set -euo pipefail
PACKAGES=(obs-studio xvfb xauth libgl1-mesa-dri ngircd chromium)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present: ${PACKAGES[*]}"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# ngircd starts a system-wide service on port 6667 on install; the tests start their own.
$SUDO systemctl disable --now ngircd >/dev/null 2>&1 || $SUDO pkill -x ngircd || true
echo "installed: ${missing[*]}"
