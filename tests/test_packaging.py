"""Packaging and layout: one namespace, generated code current, the bridge free of torch."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"daemon": "morphcam.daemon", "model": "morphcam.model", "kernels": "morphcam.kernels",
           "obs_bridge": "morphcam.obs_bridge", "protos": "morphcam.protos"}


def test_every_package_folder_is_installed():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(meta["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert found <= listed, f"add to pyproject's packages: {sorted(found - listed)}"


def test_generated_protocol_code_is_current():
    from morphcam.protos import codegen

    assert codegen.stale_files() == [], "run: python -m morphcam.protos.codegen"


def test_stale_generated_code_is_detected(tmp_path):
    import shutil

    from morphcam.protos import codegen

    shutil.copytree(codegen.PROTO_ROOT / "morphcam", tmp_path / "protos" / "morphcam")
    proto = next((tmp_path / "protos" / "morphcam" / "v1").glob("*.proto"))
    proto.write_text(proto.read_text() + "\nmessage Extra { int32 x = 1; }\n")
    assert "morphcam_pb2.py" in codegen.stale_files(tmp_path / "protos", codegen.OUTPUT_DIR)


def test_client_and_config_do_not_import_torch():
    code = ("import sys, morphcam.daemon.client, morphcam.daemon.config, morphcam.daemon.video, "
            "morphcam.obs_bridge; assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_readme_and_ci_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in readme and "test-command" in ci


def test_readme_config_block_is_valid_and_complete():
    import dataclasses
    import re

    from morphcam.daemon import config

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Configuration.*?```toml\n(.*?)```", readme, re.S).group(1)
    data = tomllib.loads(block)
    parsed = config.parse(data)  # every key the README shows is a real one
    for name in ("server", "model", "session", "panel", "log"):
        fields = {f.name for f in dataclasses.fields(type(parsed.section(name)))}
        assert fields == set(data[name]), f"README's [{name}] misses {sorted(fields - set(data[name]))}"
