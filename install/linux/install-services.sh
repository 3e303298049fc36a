#!/usr/bin/env bash
# Installs the systemd user units for the daemon and the bridge from install/systemd/*.service.
# Usage: install/linux/install-services.sh [CONFIG.toml]   (default: ~/.config/morphcam/morphcam.toml)
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${1:-${XDG_CONFIG_HOME:-$HOME/.config}/morphcam/morphcam.toml}
MORPHCAM=$(command -v morphcam) || { echo "morphcam is not on PATH: pip install the package (in a venv: activate it first)" >&2; exit 1; }
UNITS=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
mkdir -p "$UNITS" "$(dirname "$CONFIG")"
if [ ! -e "$CONFIG" ]; then
  cp "$HERE/morphcam.example.toml" "$CONFIG"
  echo "wrote an example config to $CONFIG: edit [bridge.source] and [bridge.sink]"
fi
CONFIG=$(cd "$(dirname "$CONFIG")" && pwd)/$(basename "$CONFIG")
for unit in morphcam-daemon.service morphcam-live.service; do
  sed -e "s|@MORPHCAM@|$MORPHCAM|g" -e "s|@CONFIG@|$CONFIG|g" "$HERE/systemd/$unit" > "$UNITS/$unit"
  echo "installed $UNITS/$unit"
done
systemctl --user daemon-reload 2>/dev/null || echo "could not reach the systemd user manager: run systemctl --user daemon-reload in your session"
echo "start with: systemctl --user enable --now morphcam-daemon morphcam-live"
echo "logs:       journalctl --user -u morphcam-live -f"
