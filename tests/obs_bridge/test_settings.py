"""Bridge and OBS settings: defaults work, bad values name their key, the TOML loader is strict."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from morphcam.daemon.config import ConfigError
from morphcam.obs_bridge.settings import BridgeSettings, ObsSettings, SourceSettings, load_sections

SECTIONS = {"bridge": BridgeSettings, "obs": ObsSettings}
EXAMPLE = Path(__file__).resolve().parents[2] / "install" / "morphcam.example.toml"


def test_defaults_are_valid_and_frozen():
    bridge, obs = BridgeSettings(), ObsSettings()
    assert bridge.daemon == "127.0.0.1:50051" and not obs.enabled
    with pytest.raises(dataclasses.FrozenInstanceError):
        bridge.width = 10  # type: ignore[misc]
    # A file source without a path is caught when the bridge starts, with what to do.
    with pytest.raises(ValueError, match="bridge.source.path"):
        bridge.check_runnable()


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"switch_mode": "fade"}, "bridge.switch_mode"),
        ({"width": 15}, "bridge.width"),
        ({"strength": 1.5}, "bridge.strength"),
        ({"styles": tuple(f"s{i}" for i in range(10))}, "bridge.styles"),
        ({"source": SourceSettings(kind="camera")}, "bridge.source.kind"),
    ],
)
def test_bad_values_name_their_key(changes, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        BridgeSettings(**changes)


def test_toml_sections_load_and_unknown_keys_are_named(tmp_path):
    path = tmp_path / "morphcam.toml"
    path.write_text(
        '[bridge]\nstyles = ["ink", "snow"]\n[bridge.source]\nkind = "udp"\n'
        '[obs]\nenabled = true\n[obs.scene_prompts]\n"Just Chatting" = "watercolor"\n'
    )
    loaded = load_sections(str(path), SECTIONS)
    assert loaded["bridge"].styles == ("ink", "snow") and loaded["bridge"].source.kind == "udp"
    assert loaded["obs"].scene_prompts == {"Just Chatting": "watercolor"}
    path.write_text('[bridge.sink]\nkindd = "udp"\n')
    with pytest.raises(ConfigError, match=r"bridge\.sink\.kindd"):
        load_sections(str(path), SECTIONS)
    path.write_text("[obs]\nport = 0\n")
    with pytest.raises(ConfigError, match=r"obs\.port"):
        load_sections(str(path), SECTIONS)


def test_example_config_loads():
    loaded = load_sections(str(EXAMPLE), SECTIONS)
    assert loaded["bridge"].sink.kind == "virtualcam"
