"""The chat package (and its fakes) import without torch: the bridge never loads it."""
from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import morphcam.obs_bridge.chat
import morphcam.obs_bridge.chat.client, morphcam.obs_bridge.chat.controller
import morphcam.obs_bridge.chat.policy, morphcam.obs_bridge.chat.protocol, morphcam.obs_bridge.chat.service
import morphcam.obs_bridge.chat.settings, morphcam.obs_bridge.chat.target, morphcam.obs_bridge.chat.vote
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "triton", "transformers"))
assert not loaded, loaded
print("ok")
"""


def test_chat_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
