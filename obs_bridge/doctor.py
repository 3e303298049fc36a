"""``morphcam doctor``: check what ``morphcam live`` needs and say what to do about each failure.

GPU, torch and Triton are probed in a subprocess, so this process (and the bridge) never
imports torch. Every check returns one ``Finding``; the table of checks is ``CHECKS``.
"""
from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from morphcam.obs_bridge.obs_script_install import SCRIPT_NAME, obs_config_dir
from morphcam.obs_bridge.settings import BridgeSettings, ObsSettings, load_sections

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
GPU_PROBE_TIMEOUT_S = 120.0
GPU_PROBE = r"""
import json
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = bool(torch.cuda.is_available())
    if out["cuda"]:
        out["device"] = torch.cuda.get_device_name(0)
        out["cuda_version"] = torch.version.cuda
except Exception as e:
    out["torch_error"] = f"{type(e).__name__}: {e}"
try:
    import triton
    out["triton"] = triton.__version__
except Exception as e:
    out["triton_error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok, warn, fail, skip
    detail: str
    fix: str = ""  # what to do next, when status is warn or fail


@dataclass(frozen=True)
class Setup:
    bridge: BridgeSettings
    obs: ObsSettings
    skip_gpu: bool = False


def check_gpu(setup: Setup) -> list[Finding]:
    if setup.skip_gpu:
        return [Finding("gpu", SKIP, "skipped (--skip-gpu)")]
    try:
        done = subprocess.run([sys.executable, "-c", GPU_PROBE], capture_output=True, text=True, timeout=GPU_PROBE_TIMEOUT_S)
        probe = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
        return [Finding("gpu", FAIL, f"the torch probe failed: {e}", "run: python -c 'import torch' and fix what it reports")]
    findings = []
    if "torch_error" in probe:
        findings.append(Finding("torch", FAIL, probe["torch_error"],
                                "the daemon needs torch: pip install 'torch==2.13.0' (CPU) or the CUDA build for your driver"))
    elif probe.get("cuda"):
        findings.append(Finding("gpu", OK, f"{probe['device']} (torch {probe['torch']}, CUDA {probe.get('cuda_version')})"))
    else:
        findings.append(Finding("gpu", WARN, f"no CUDA GPU visible to torch {probe['torch']}: the daemon runs on the CPU (tiny preset only)",
                                "install the NVIDIA driver and a CUDA build of torch; check with nvidia-smi"))
    if "triton_error" in probe:
        findings.append(Finding("triton", WARN, probe["triton_error"],
                                "fast kernels need Triton: pip install 'triton>=3.7.1' (GPU only; the torch path still works)"))
    else:
        findings.append(Finding("triton", OK, f"triton {probe['triton']}"))
    return findings


def _v4l2loopback_devices() -> list[tuple[str, str]]:
    found = []
    for node in sorted(Path("/sys/class/video4linux").glob("video*")):
        try:
            name = (node / "name").read_text().strip()
        except OSError:
            continue
        driver = (node / "device" / "driver").resolve().name if (node / "device" / "driver").exists() else ""
        if "loopback" in driver or "morphcam" in name.lower() or "loopback" in name.lower():
            found.append((f"/dev/{node.name}", name))
    return found


def check_virtual_camera(setup: Setup) -> list[Finding]:
    needed = setup.bridge.sink.kind == "virtualcam" or setup.bridge.source.kind == "device"
    level = FAIL if needed else WARN
    system = platform.system()
    if system == "Linux":
        devices = _v4l2loopback_devices()
        if devices:
            return [Finding("virtual camera", OK, ", ".join(f"{d} ({n})" for d, n in devices))]
        return [Finding("virtual camera", level, "no v4l2loopback device",
                        "run: sudo install/linux/setup-v4l2loopback.sh (or use [bridge.sink] kind = \"udp\" into OBS)")]
    try:
        import pyvirtualcam.camera as cam
    except Exception as e:
        return [Finding("virtual camera", level, f"pyvirtualcam does not load: {e}", "pip install pyvirtualcam==0.15.0")]
    if "obs" in cam.BACKENDS or "unitycapture" in cam.BACKENDS:
        return [Finding("virtual camera", OK, f"pyvirtualcam backends: {', '.join(sorted(cam.BACKENDS))} "
                        "(the OBS one needs OBS's Virtual Camera installed: start it once in OBS)")]
    return [Finding("virtual camera", level, "no pyvirtualcam backend", "install OBS and start its Virtual Camera once")]


def check_daemon(setup: Setup) -> list[Finding]:
    from morphcam.daemon.client import DaemonClient, DaemonError

    address = setup.bridge.daemon
    try:
        with DaemonClient(address, token=setup.bridge.token or None, timeout_s=2.0) as client:
            status = client.status()
    except DaemonError as e:
        if e.code.name in ("DEADLINE_EXCEEDED", "UNAVAILABLE"):
            e = f"no daemon answers ({e.code.name})"
        fix = ("set [bridge] token or $MORPHCAM_TOKEN to the daemon's token" if "UNAUTHENTICATED" in str(e)
               else "start it: morphcam serve --config FILE (or: systemctl --user start morphcam-daemon)")
        return [Finding("daemon", FAIL, f"{address}: {e}", fix)]
    note = f"; {status.model_note}" if status.model_note else ""
    level = WARN if status.pipeline == "passthrough" else OK
    fix = "the daemon serves frames unchanged: see its log and [model] in the config" if level == WARN else ""
    return [Finding("daemon", level, f"{address}: pipeline {status.pipeline} on {status.device}{note}", fix)]


def check_obs(setup: Setup) -> list[Finding]:
    from morphcam.obs_bridge.obs_ws import ObsConnection, ObsRequestError, ObsUnavailable

    s = setup.obs
    if not s.enabled:
        return [Finding("obs websocket", SKIP, "[obs] enabled = false")]
    connection = ObsConnection(s)
    try:
        if not connection.connect_once():
            return [Finding("obs websocket", FAIL, connection.last_error,
                            "in OBS: Tools > WebSocket Server Settings > Enable, and match [obs] host/port/password")]
        try:
            version = connection.request("GetVersion")
        except (ObsRequestError, ObsUnavailable) as e:
            return [Finding("obs websocket", FAIL, str(e), "restart OBS, then run morphcam doctor again")]
        findings = [Finding("obs websocket", OK, f"OBS {version.get('obsVersion')}, obs-websocket "
                            f"{version.get('obsWebSocketVersion')} at {s.host}:{s.port}")]
        if not s.password and not connection.password():
            findings.append(Finding("obs auth", WARN, "OBS accepted a connection without a password",
                                    "turn on authentication in Tools > WebSocket Server Settings: it listens on all interfaces"))
        hotkeys = connection.request("GetHotkeyList").get("hotkeys", [])
        if not any(h.startswith("morphcam.") for h in hotkeys):
            findings.append(Finding("obs script", WARN, "the morphcam hotkeys script is not loaded in OBS",
                                    "close OBS and run install/install-obs-script.sh, or add it in Tools > Scripts"))
        else:
            findings.append(Finding("obs script", OK, "morphcam hotkeys registered"))
        return findings
    finally:
        connection.close()


def _port_free(kind: int, host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def check_ports(setup: Setup) -> list[Finding]:
    b = setup.bridge
    wanted = []
    if b.hotkeys.enabled:
        wanted.append(("hotkey port", b.hotkeys.host, b.hotkeys.port, "[bridge.hotkeys] port (and the OBS script's port)"))
    if b.source.kind == "udp" and b.source.url.startswith("udp://"):
        host, _, port = b.source.url[6:].split("?")[0].rpartition(":")
        wanted.append(("source port", host or "127.0.0.1", int(port), "[bridge.source] url (and OBS's Custom Output URL)"))
    findings = []
    for name, host, port, key in wanted:
        if _port_free(socket.SOCK_DGRAM, host, port):
            findings.append(Finding(name, OK, f"udp {host}:{port} is free"))
        else:
            findings.append(Finding(name, FAIL, f"udp {host}:{port} is in use (a running morphcam live?)",
                                    f"stop the other process or change {key}"))
    return findings


def check_obs_script_installed(setup: Setup) -> list[Finding]:
    script = obs_config_dir() / "morphcam" / SCRIPT_NAME
    if script.exists():
        return [Finding("obs script file", OK, str(script))]
    return [Finding("obs script file", WARN if setup.obs.enabled else SKIP, "the OBS hotkeys script is not installed",
                    "close OBS and run install/install-obs-script.sh")]


CHECKS: tuple[tuple[str, Callable[[Setup], list[Finding]]], ...] = (
    ("gpu", check_gpu),
    ("virtual camera", check_virtual_camera),
    ("daemon", check_daemon),
    ("obs", check_obs),
    ("obs script", check_obs_script_installed),
    ("ports", check_ports),
)


def diagnose(setup: Setup) -> list[Finding]:
    findings = []
    for name, check in CHECKS:
        try:
            findings += check(setup)
        except Exception as e:  # a broken check must not hide the others
            findings.append(Finding(name, FAIL, f"the check itself failed: {type(e).__name__}: {e}", "report this as a bug"))
    return findings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="the product's TOML file ([bridge], [obs])")
    parser.add_argument("--json", action="store_true", help="print one JSON object per finding")
    parser.add_argument("--skip-gpu", action="store_true", help="do not start the torch/Triton probe")


def run(args: argparse.Namespace) -> int:
    sections = load_sections(args.config, {"bridge": BridgeSettings, "obs": ObsSettings})
    findings = diagnose(Setup(sections["bridge"], sections["obs"], skip_gpu=args.skip_gpu))
    for f in findings:
        if args.json:
            print(json.dumps(asdict(f)))
        else:
            print(f"[{f.status.upper():^4}] {f.check}: {f.detail}")
            if f.fix and f.status in (WARN, FAIL):
                print(f"       fix: {f.fix}")
    return 1 if any(f.status == FAIL for f in findings) else 0
