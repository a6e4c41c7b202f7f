"""config.ini: defaults, validation with messages that name the key, path resolution."""

from __future__ import annotations

import pytest

from cluster.config import Config, ConfigError, load_config, normalize_vm

pytestmark = pytest.mark.timeout(30)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "config.ini"
    path.write_text(text)
    return str(path)


def test_empty_file_gives_the_course_defaults(tmp_path):
    config = load_config(write(tmp_path, ""))
    assert config.introducer == "01" and config.leader == "01"
    assert config.nodes["10"] == "127.0.0.1:7010" and len(config.nodes) == 10
    assert config.membership.protocol_period == 5.0 and config.membership.suspicion is True
    assert config.hydfs.replicas == 3 and config.hydfs.ring_bits == 11
    assert config.node_data_dir("3") == str(tmp_path / "data" / "vm03")
    assert config.node_log_path("03") == str(tmp_path / "logs" / "vm03.log")


def test_the_shipped_config_ini_loads():
    config = load_config("config.ini")
    assert config.address("3") == ("127.0.0.1", 7003)


def test_values_and_inline_comments(tmp_path):
    config = load_config(write(tmp_path, """
[cluster]
introducer = 2   ; a comment
secret = abc
[nodes]
01 = 127.0.0.11:7000
2 = 127.0.0.12:7000
[membership]
suspicion = off
protocol_period = 0.2
"""))
    assert config.introducer == "02" and config.leader == "02"     # leader follows introducer
    assert config.nodes == {"01": "127.0.0.11:7000", "02": "127.0.0.12:7000"}
    assert config.secret == "abc" and config.membership.suspicion is False


@pytest.mark.parametrize("text, names", [
    ("[cluster]\nintroducr = 01\n", "introducr"),
    ("[membership]\nping_timeout = fast\n", "ping_timeout"),
    ("[membership]\ndrop_rate = 1.5\n", "drop_rate"),
    ("[membership]\nsuspicion = maybe\n", "suspicion"),
    ("[hydfs]\nreplicas = 0\n", "replicas"),
    ("[membership]\nprotocol_period = nan\n", "protocol_period"),
    ("[membership]\nping_timeout = inf\n", "ping_timeout"),
    ("[hydfs]\nring_bits = 3.5\n", "ring_bits"),
    ("[nodes]\n01 = nohost\n", "01"),
    ("[nodes]\nab = h:1\n", "ab"),
    ("[nodes]\n01 = h:1\n02 = h:1\n", "share"),
    ("[cluster]\nintroducer = 05\n[nodes]\n01 = h:1\n", "introducer"),
    ("[clutser]\n", "clutser"),
    ("not an ini file", "parse"),
])
def test_bad_files_are_refused_naming_the_key(tmp_path, text, names):
    with pytest.raises(ConfigError, match=names):
        load_config(write(tmp_path, text))


def test_missing_explicit_file_is_an_error_and_missing_default_means_defaults(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.ini"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAINSTORM_CONFIG", raising=False)
    assert load_config().nodes == Config().nodes
    monkeypatch.setenv("RAINSTORM_CONFIG", str(tmp_path / "typo.ini"))   # named, so required
    with pytest.raises(ConfigError, match="typo.ini does not exist"):
        load_config()


@pytest.mark.parametrize("raw, vm", [("3", "03"), ("03", "03"), (" 10 ", "10")])
def test_node_numbers(raw, vm):
    assert normalize_vm(raw) == vm


@pytest.mark.parametrize("raw", ["0", "abc", "-1", "100", ""])
def test_bad_node_numbers(raw):
    with pytest.raises(ConfigError):
        normalize_vm(raw)
