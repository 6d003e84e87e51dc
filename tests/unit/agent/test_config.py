"""Configuration precedence and refusals: defaults < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyfleet.agent import config as config_module
from tinyfleet.agent.config import load
from tinyfleet.agent.errors import ConfigError

KEY = "ed25519:qpsk8IhAHVvFIs8HplBSUuShcgajynHtCgbqRvI0pF4="
TRUST = f'controller_key = "{KEY}"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, TRUST + 'broker = "mqtt://file:1883"\ndevice_id = "from-file"\nheartbeat_seconds = 7\n'
                           '[registries."reg.example:5000"]\n'
                           'username = "ops"\npassword = "s3cr3t-pw"\ninsecure = true\n')
    config = load(path, {"device_id": "from-flag"}, {"TINYFLEET_HEARTBEAT_SECONDS": "3"})
    assert (config.broker, config.device_id, config.heartbeat_seconds) == ("mqtt://file:1883", "from-flag", 3.0)
    assert config.registries["reg.example:5000"].insecure and config.state_dir == Path("/var/lib/tinyfleet")
    assert config.registries["reg.example:5000"].credentials.username == "ops"  # type: ignore[union-attr]
    assert "s3cr3t-pw" not in repr(config) and "s3cr3t-pw" not in repr(config.registries)
    assert str(config.controller_key) == KEY and not config.insecure_accept_unsigned


@pytest.mark.parametrize(("text", "env", "problem"), [
    ("", {}, "no broker configured"),
    ('broker = "mqtt://x"\nbrokr = "typo"\n', {}, "unknown setting 'brokr'"),
    ('broker = "mqtt://x"\nheartbeat_seconds = "often"\n', {}, "wrong type"),
    ('broker = "mqtt://x"\nmax_image_bytes = true\n', {}, "wrong type"),
    ('broker = "mqtt://x"\ndevice_id = "a/b"\n', {}, "may hold only"),
    ('broker = "mqtt://x"\nplatform = "linux/"\n', {}, "OS/ARCH"),
    ('broker = "mqtt://x"\n', {"TINYFLEET_MAX_IMAGE_BYTES": "lots"}, "must be a number"),
    ('broker = [', {}, "cannot read"),
    ('broker = "http://broker.example.com"\n', {}, "must look like mqtt://"),
    ('broker = "mqtt://x"\n', {}, "no controller_key configured"),
    ('broker = "mqtt://x"\ninsecure_accept_unsigned = false\n', {}, "no controller_key configured"),
    ('broker = "mqtt://x"\ninsecure_accept_unsigned = "yes"\n', {}, "wrong type"),
    ('broker = "mqtt://x"\n', {"TINYFLEET_INSECURE_ACCEPT_UNSIGNED": "maybe"}, "true or false"),
    ('broker = "mqtt://x"\ncontroller_key = "ed25519:short="\n', {}, "not an Ed25519 public key"),
    ('broker = "mqtt://x"\ncontroller_key = "' + KEY.replace("q", "Q", 1) + '"\n', {}, "not a valid Ed25519 key"),
])
def test_bad_configuration_is_refused_clearly(tmp_path: Path, text: str, env: dict, problem: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError, match=problem):
        load(write(tmp_path, text), {}, env)


def test_missing_explicit_file_is_an_error_but_the_default_may_be_absent(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", {}, {})
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert load(None, {"broker": "mqtt://x", "controller_key": KEY}, {}).broker == "mqtt://x"


@pytest.mark.parametrize("how", [{"flags": {"insecure_accept_unsigned": True}},
                                 {"env": {"TINYFLEET_INSECURE_ACCEPT_UNSIGNED": "1"}},
                                 {"text": "insecure_accept_unsigned = true\n"}])
def test_running_without_a_controller_key_takes_the_explicit_insecure_flag(tmp_path: Path, how: dict) -> None:  # type: ignore[type-arg]
    config = load(write(tmp_path, 'broker = "mqtt://x"\n' + how.get("text", "")), how.get("flags", {}),
                  how.get("env", {}))
    assert config.insecure_accept_unsigned and config.controller_key is None
