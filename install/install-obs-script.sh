#!/usr/bin/env bash
# Installs the morphcam hotkeys script into OBS (every scene collection). Close OBS first: it
# rewrites its scene collections when it exits. Then bind keys in OBS > Settings > Hotkeys ("morphcam").
# Usage: install/install-obs-script.sh [--port 47011] [--config-dir DIR]
set -euo pipefail
PYTHON=${PYTHON:-python3}
exec "$PYTHON" -m morphcam.obs_bridge.obs_script_install "$@"
