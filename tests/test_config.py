"""Configuration: file < environment < flags, and every mistake named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrouter.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callrouter.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    config = load_config()
    assert config.http.host == "127.0.0.1" and config.http.port == 8080
    assert config.sip.port == 5060
    assert config.database.url is None
    assert config.data_dir == Path("callrouter-data")


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path, 'data_dir = "/srv/cr"\n[http]\nport = 9000\nhost = "0.0.0.0"\n[sip]\nt1 = 1\n'
    )
    config = load_config(path)
    assert (config.data_dir, config.http.port, config.http.host, config.sip.t1) == (
        Path("/srv/cr"),
        9000,
        "0.0.0.0",
        1.0,
    )

    env = {
        "CALLROUTER_HTTP_PORT": "9100",
        "CALLROUTER_DATABASE_URL": "postgresql://db/x",
        "HOME": "/root",
    }
    config = load_config(path, env)
    assert config.http.port == 9100
    assert config.database.url == "postgresql://db/x"
    assert config.http.host == "0.0.0.0"

    config = load_config(path, env, {"http.port": "9200", "sip.tls_port": "5061"})
    assert config.http.port == 9200
    assert config.sip.tls_port == 5061


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[http]\nport = 8080\nprot = 1\n", "callrouter.toml:3: unknown key 'http.prot'"),
        ("colour = 'red'\n", "callrouter.toml:1: unknown key 'colour'"),
        ("[http]\nport = 'eighty'\n", "callrouter.toml:2: http.port: expected int, got str"),
        ("[http]\nport = true\n", "callrouter.toml:2: http.port: expected int, got bool"),
        ("http = 5\n", "callrouter.toml:1: http must be a table"),
        ("[sip\n", "callrouter.toml: Expected ']' at the end of a table declaration"),
    ],
)
def test_file_errors_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(write(tmp_path, text))
    assert message in str(excinfo.value)


def test_environment_and_flag_errors_name_the_variable_or_flag() -> None:
    with pytest.raises(ConfigError, match="environment: unknown variable CALLROUTER_HTTP_PROT"):
        load_config(None, {"CALLROUTER_HTTP_PROT": "1"})
    with pytest.raises(ConfigError, match=r"CALLROUTER_SIP_T1: sip\.t1: expected float"):
        load_config(None, {"CALLROUTER_SIP_T1": "fast"})
    with pytest.raises(ConfigError, match=r"command line: unknown setting http\.prot"):
        load_config(None, {}, {"http.prot": "1"})


def test_empty_optional_setting_from_environment_is_none() -> None:
    config = load_config(None, {"CALLROUTER_DATABASE_URL": "", "CALLROUTER_SIP_TLS_PORT": ""})
    assert config.database.url is None
    assert config.sip.tls_port is None
