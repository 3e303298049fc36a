"""Logs: plain lines or one JSON object per line."""
from __future__ import annotations

import io
import json
import logging

from morphcam.daemon.config import LogConfig
from morphcam.daemon.logs import setup_logging


def test_json_and_plain_logs():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        buf = io.StringIO()
        setup_logging(LogConfig(format="json", level="debug"), stream=buf)
        logging.getLogger("morphcam.test").info("session %s opened", "abc")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("morphcam.test").exception("failed")
        lines = [json.loads(line) for line in buf.getvalue().splitlines()]
        assert lines[0]["message"] == "session abc opened" and lines[0]["level"] == "info"
        assert lines[0]["logger"] == "morphcam.test" and lines[0]["time"].endswith("Z")
        assert "ValueError: boom" in lines[1]["exception"]
        buf = io.StringIO()
        setup_logging(LogConfig(format="plain", level="warning"), stream=buf)
        logging.getLogger("morphcam.test").info("hidden")
        logging.getLogger("morphcam.test").warning("shown")
        assert "hidden" not in buf.getvalue() and "WARNING morphcam.test: shown" in buf.getvalue()
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
