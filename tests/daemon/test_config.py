"""The TOML config: defaults, strict validation, and refusal to listen off loopback without a token."""
from __future__ import annotations

import asyncio

import pytest

from morphcam.daemon import config as cfg
from morphcam.daemon.pipeline import PassthroughPipeline
from morphcam.daemon.server import Daemon


def _load(tmp_path, text: str) -> cfg.Config:
    path = tmp_path / "m.toml"
    path.write_text(text)
    return cfg.load(path)


def test_defaults_and_a_full_file(tmp_path):
    assert cfg.load(None).server.address == "127.0.0.1:50051"
    c = _load(tmp_path, '[server]\nunix_socket = "/run/m.sock"\nmax_message_mb = 8\n[model]\npreset = "small"\n'
                        '[log]\nformat = "json"\n[session]\nmax_prompt_chars = 500\n')
    assert c.server.unix_socket == "/run/m.sock" and c.server.max_message_mb == 8.0
    assert c.model.preset == "small" and c.log.format == "json" and c.session.max_prompt_chars == 500


@pytest.mark.parametrize("text,message", [
    ("[server]\nadress = '1'\n", "unknown key server.adress"),
    ("[servr]\n", "unknown section [servr]"),
    ("[server]\nmax_sessions = 'many'\n", "server.max_sessions must be int, got str"),
    ("[server]\nmax_sessions = true\n", "server.max_sessions must be int, got a boolean"),
    ("[server\n", "is not valid TOML"),
    ("[model]\npipeline = 'magic'\n", "model.pipeline must be 'generator' or 'passthrough'"),
    ("[log]\nformat = 'xml'\n", "log.format must be 'plain' or 'json'"),
    ("[server]\naddress = 'nocolon'\n", "server.address must be host:port"),
    ("server = 3\n", "server must be a table"),
    ("[model]\nwarm_sizes = ['512x288', '512by288']\n", 'model.warm_sizes[1] must be "WIDTHxHEIGHT"'),
    ("[model]\nwarm_sizes = ['8x8']\n", "model.warm_sizes[0]: 8x8 is too small"),
    ("[model]\nwarm_sizes = '512x288'\n", "model.warm_sizes must be a list, got str"),
    ("[model]\nwarm_sizes = [512]\n", "model.warm_sizes[0] must be str, got int"),
    ("[model]\nwarm_sizes = ['4096x2160']\n", "model.warm_sizes: 4096x2160 is larger than session.max_width"),
    ("[model]\nprompt_snap = 1.5\n", "model.prompt_snap must be -1 (auto), 0 (off) or a similarity in (0, 1]"),
    ("[model]\nprompt_snap = -0.5\n", "model.prompt_snap must be -1 (auto), 0 (off) or a similarity in (0, 1]"),
    ("[model]\nsteady_noise = 'yes'\n", "model.steady_noise must be 'auto', 'on' or 'off', got 'yes'"),
])
def test_bad_files_name_the_problem(tmp_path, text, message):
    with pytest.raises(cfg.ConfigError) as info:
        _load(tmp_path, text)
    assert message in str(info.value)
    assert "m.toml" in str(info.value)


def test_warm_sizes(tmp_path):
    assert cfg.load(None).model.frame_sizes() == ((512, 288),), "the default is morphcam live's size"
    c = _load(tmp_path, '[model]\nwarm_sizes = ["256x144", " 1280X720", "256x144"]\n')
    assert c.model.frame_sizes() == ((256, 144), (1280, 720))
    assert _load(tmp_path, "[model]\nwarm_sizes = []\n").model.frame_sizes() == ()
    with pytest.raises(cfg.ConfigError, match=r"model.warm_sizes\[0\] must be"):
        cfg.Config().replace("model", warm_sizes=("big",))


def test_a_bridge_in_the_same_file_warms_its_size(tmp_path):
    """`morphcam live` starts the daemon with its own file: the bridge's size is made ready too."""
    bridge = '[bridge]\nwidth = 640\nheight = 360\n'
    assert _load(tmp_path, bridge).warm_frame_sizes() == ((512, 288), (640, 360))
    assert _load(tmp_path, bridge + '[model]\nwarm_sizes = ["640x360"]\n').warm_frame_sizes() == ((640, 360),)
    assert _load(tmp_path, bridge + "[model]\nwarm_sizes = []\n").warm_frame_sizes() == (), "[] still means none"
    assert _load(tmp_path, "[model]\nwarm_sizes = [\"256x144\"]\n").warm_frame_sizes() == ((256, 144),)
    small_limit = bridge + "[session]\nmax_width = 600\n"
    assert _load(tmp_path, small_limit).warm_frame_sizes() == ((512, 288),), "a size no stream may use is skipped"


def test_missing_file(tmp_path):
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        cfg.load(tmp_path / "nope.toml")


def test_off_loopback_needs_a_token():
    config = cfg.Config().replace("server", address="0.0.0.0:0", metrics_address="")
    daemon = Daemon(config, PassthroughPipeline(), environ={})
    with pytest.raises(cfg.ConfigError, match="refusing to listen on 0.0.0.0:0 without a token"):
        asyncio.run(daemon.start())
    assert cfg.is_loopback("127.0.0.1:1") and cfg.is_loopback("[::1]:1") and cfg.is_loopback("localhost:1")
    assert not cfg.is_loopback("0.0.0.0:1") and not cfg.is_loopback("192.168.1.2:1")


def test_cli_reports_config_errors(tmp_path, capsys):
    from morphcam.daemon.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\ntoken_env = 5\n")
    assert main(["serve", "--config", str(bad)]) == 2
    assert "server.token_env must be str" in capsys.readouterr().err


def test_the_shipped_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "install" / "morphcam.example.toml"
    config = cfg.load(example)
    for name in cfg.SECTIONS:
        config.section(name)  # every section builds, given or defaulted


def test_bridge_and_chat_sections_are_validated_by_the_same_loader(tmp_path):
    c = _load(tmp_path, '[chat]\nchannel = "mychannel"\n[obs]\n[bridge]\n')
    assert c.section("chat").channel == "mychannel"
    with pytest.raises(cfg.ConfigError, match="unknown key chat.chanel"):
        _load(tmp_path, '[chat]\nchanel = "x"\n')


def test_fp8_linears_is_a_model_setting(tmp_path):
    assert _load(tmp_path, "[model]\n").section("model").fp8_linears is False
    assert _load(tmp_path, "[model]\nfp8_linears = true\n").section("model").fp8_linears is True
    with pytest.raises(cfg.ConfigError, match="model.fp8_linears must be bool"):
        _load(tmp_path, '[model]\nfp8_linears = "yes"\n').section("model")
