"""Install the morphcam OBS script: copy it into OBS's config folder and add it to scene collections.

OBS keeps its loaded scripts per scene collection (``basic/scenes/<name>.json``, key
``modules.scripts-tool``) and rewrites that file when it exits, so install while OBS is closed
(or add the script by hand: Tools > Scripts > +). Used by install/install-obs-script.sh:

    python -m morphcam.obs_bridge.obs_script_install [--config-dir DIR] [--port 47011]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

SCRIPT_NAME = "morphcam_hotkeys.py"
SCRIPTS_TOOL = "scripts-tool"


def bundled_script() -> Path:
    """The script shipped in the package."""
    return Path(__file__).resolve().parent / "obs_scripts" / SCRIPT_NAME


def obs_config_dir(environ: dict[str, str] | None = None) -> Path:
    """OBS's config folder on this OS (the one holding global.ini and basic/)."""
    env = os.environ if environ is None else environ
    system = platform.system()
    if system == "Windows":
        return Path(env.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "obs-studio"
    if system == "Darwin":
        return Path.home() / "Library" / "Application Support" / "obs-studio"
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "obs-studio"


def add_to_collection(collection: dict, script: Path, port: int) -> bool:
    """Add (or update) the script in a parsed scene collection; True when something changed."""
    scripts = collection.setdefault("modules", {}).setdefault(SCRIPTS_TOOL, [])
    for entry in scripts:
        if Path(entry.get("path", "")).name == SCRIPT_NAME:
            settings = entry.setdefault("settings", {})
            if entry["path"] == str(script) and settings.get("port") == port:
                return False
            entry["path"] = str(script)
            settings["port"] = port
            return True
    scripts.append({"path": str(script), "settings": {"port": port}})
    return True


def install(config_dir: Path, port: int, collections: list[Path] | None = None) -> tuple[Path, list[Path]]:
    """Copy the script into ``config_dir/morphcam/`` and register it in the scene collections.

    Returns the installed script's path and the collection files changed. Collections default
    to every ``basic/scenes/*.json``; if there is none, one named "morphcam" is created.
    """
    target_dir = config_dir / "morphcam"
    target_dir.mkdir(parents=True, exist_ok=True)
    script = target_dir / SCRIPT_NAME
    shutil.copyfile(bundled_script(), script)
    scenes = config_dir / "basic" / "scenes"
    if collections is None:
        collections = sorted(p for p in scenes.glob("*.json") if not p.name.endswith(".bak.json"))
    if not collections:
        scenes.mkdir(parents=True, exist_ok=True)
        collections = [scenes / "morphcam.json"]
    changed = []
    for path in collections:
        data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else _empty_collection(path.stem)
        if add_to_collection(data, script, port):
            path.write_text(json.dumps(data, indent=4), encoding="utf-8")
            changed.append(path)
    return script, changed


def _empty_collection(name: str) -> dict:
    scene = "Scene"
    return {
        "name": name,
        "current_scene": scene,
        "current_program_scene": scene,
        "scene_order": [{"name": scene}],
        "sources": [{"id": "scene", "versioned_id": "scene", "name": scene, "settings": {"items": [], "id_counter": 0}}],
    }


def obs_running() -> bool:
    """Best effort (Linux): is an ``obs`` process running?"""
    proc = Path("/proc")
    if not proc.is_dir():
        return False
    for comm in proc.glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "obs":
                return True
        except OSError:
            continue
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Install the morphcam hotkeys script into OBS.")
    parser.add_argument("--config-dir", type=Path, default=None, help="OBS config folder (default: this OS's)")
    parser.add_argument("--port", type=int, default=47011, help="the bridge's hotkey port ([bridge.hotkeys] port)")
    args = parser.parse_args(argv)
    config_dir = args.config_dir or obs_config_dir()
    if obs_running():
        print("OBS is running: it rewrites its scene collections on exit. Close OBS, then run this again.", file=sys.stderr)
        return 1
    script, changed = install(config_dir, args.port)
    print(f"installed {script}")
    for path in changed:
        print(f"added to scene collection {path}")
    print("In OBS: Settings > Hotkeys, search 'morphcam' and bind the keys you want.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
