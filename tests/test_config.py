"""Configuration: file < environment < flags, and every mistake named precisely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from callrouter.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callrouter.toml"
    path.write_text(text)
    return path


def refusal(tmp_path: Path, text: str) -> str:
    """Why loading ``text`` as callrouter.toml is refused, the file named ``callrouter.toml``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    return str(excinfo.value).replace(str(path), "callrouter.toml")


def test_defaults_need_no_file() -> None:
    config = load_config()
    assert config.http.host == "127.0.0.1" and config.http.port == 8080
    assert config.sip.port == 5060
    assert config.database.url is None
    assert config.data_dir == Path("callrouter-data")


def test_dialog_keepalives_default_to_a_minute_and_take_one_second_or_none(
    tmp_path: Path,
) -> None:
    assert load_config().sip.dialog_keepalive_seconds == 60
    for seconds in (1, 0):
        path = write(tmp_path, f"[sip]\ndialog_keepalive_seconds = {seconds}\n")
        assert load_config(path).sip.dialog_keepalive_seconds == seconds


def test_the_config_trunk_keeps_keepalives_unless_a_file_variable_or_flag_turns_them_off(
    tmp_path: Path,
) -> None:
    assert load_config().sip.carrier_keepalives is True
    path = write(tmp_path, "[sip]\ncarrier_keepalives = false\n")
    assert load_config(path).sip.carrier_keepalives is False
    environ = {"CALLROUTER_SIP_CARRIER_KEEPALIVES": "off"}
    assert load_config(None, environ).sip.carrier_keepalives is False
    flags = {"sip.carrier_keepalives": "true"}
    assert load_config(path, environ, flags).sip.carrier_keepalives is True


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
        (
            "[http]\n\ntrusted_proxies = '127.0.0.1, nginx'\n",
            "callrouter.toml:3: http.trusted_proxies: 'nginx' is not an IP address or network",
        ),
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
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, {"CALLROUTER_SIP_CARRIER_KEEPALIVES": "maybe"})
    assert str(excinfo.value) == (
        "environment CALLROUTER_SIP_CARRIER_KEEPALIVES: sip.carrier_keepalives: "
        "expected bool, got 'maybe'"
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, {}, {"sip.carrier_keepalives": "sometimes"})
    assert str(excinfo.value) == (
        "command line --sip-carrier-keepalives: sip.carrier_keepalives: "
        "expected bool, got 'sometimes'"
    )


def test_empty_optional_setting_from_environment_is_none() -> None:
    config = load_config(None, {"CALLROUTER_DATABASE_URL": "", "CALLROUTER_SIP_TLS_PORT": ""})
    assert config.database.url is None
    assert config.sip.tls_port is None


def test_media_workers_default_to_the_cores_and_share_the_ports_in_slices() -> None:
    config = load_config()
    assert config.media.workers == (os.cpu_count() or 1)
    media = load_config(None, {}, {"media.workers": "3", "media.ports": "30001-30021"}).media
    # Pairs 30002, 30004 ... 30020 (ten), shared 4 + 3 + 3, each slice starting even.
    assert media.port_slices() == [(30002, 30009), (30010, 30015), (30016, 30021)]
    allocated = [port for first, last in media.port_slices() for port in range(first, last, 2)]
    assert allocated == list(range(30002, 30021, 2))
    one = load_config(None, {}, {"media.workers": "1"}).media
    assert one.port_slices() == [(30000, 39999)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[media]\nworkers = -1\n",
            "callrouter.toml:2: media.workers: -1 is negative (0: no recording)",
        ),
        (
            "[media]\nworkers = 2\nports = '30000-30006'\n",
            "callrouter.toml:3: media.ports: '30000-30006' holds 3 RTP port pairs: 2 workers "
            "need at least 4 (two per recorded call) (media.workers from callrouter.toml:2)",
        ),
        (
            "[media]\nports = '30000'\n",
            "callrouter.toml:2: media.ports: '30000' is not FIRST-LAST within 1024-65535",
        ),
    ],
)
def test_media_settings_no_worker_could_run_with_are_refused_at_load(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refusal(tmp_path, text) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[sip]\nport = 5070\nsession_expires = 60\n",
            "callrouter.toml:3: sip.session_expires: 60 is not 0 or 90-86400 seconds "
            "(RFC 4028 Min-SE)",
        ),
        (
            "[sip]\nmax_call_seconds = -1\n",
            "callrouter.toml:2: sip.max_call_seconds: -1 is negative (0: no limit)",
        ),
        ("[sip]\nmax_call_seconds = '4h'\n", "callrouter.toml:2: sip.max_call_seconds: expected"),
        (
            "[sip]\n\ndialog_keepalive_seconds = -5\n",
            "callrouter.toml:3: sip.dialog_keepalive_seconds: -5 is negative (0: no keepalives; "
            "else at least 1 second)",
        ),
        (
            "[sip]\ndialog_keepalive_seconds = 0.5\n",
            "callrouter.toml:2: sip.dialog_keepalive_seconds: expected",
        ),
        (
            "[sip]\ncarriers = '192.0.2.0/24'\ncarrier_keepalives = 'no'\n",
            "callrouter.toml:3: sip.carrier_keepalives: expected bool, got str 'no'",
        ),
        (
            "[sip]\ncarrier_keepalives = 0\n",
            "callrouter.toml:2: sip.carrier_keepalives: expected bool, got int 0",
        ),
    ],
)
def test_call_lifetime_settings_are_refused_at_load_naming_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refusal(tmp_path, text).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[sip]\nmax_message_bytes = 512\n",
            "callrouter.toml:2: sip.max_message_bytes: 512 is below 1024 (an ordinary INVITE "
            "with SDP would be refused)",
        ),
        (
            "[database]\nspool_max_bytes = 1024\nmax_held_events = -5\n",
            "callrouter.toml:3: database.max_held_events: -5 is negative (0: never refuse calls)",
        ),
    ],
)
def test_limits_that_would_refuse_every_message_or_call_are_refused_at_load(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refusal(tmp_path, text) == message


def test_call_lifetimes_default_to_a_generous_ceiling_and_a_half_hour_timer() -> None:
    sip = load_config(None, {}, {}).sip
    assert (sip.session_expires, sip.max_call_seconds) == (1800, 14400)
    off = load_config(None, {"CALLROUTER_SIP_MAX_CALL_SECONDS": "0"}, {"sip.session_expires": "0"})
    assert (off.sip.session_expires, off.sip.max_call_seconds) == (0, 0)


def test_a_range_too_small_for_the_workers_is_refused_whichever_source_sets_them() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, {"CALLROUTER_MEDIA_PORTS": "30000-30010"}, {"media.workers": "4"})
    assert str(excinfo.value) == (
        "environment CALLROUTER_MEDIA_PORTS: media.ports: '30000-30010' holds 5 RTP port pairs: "
        "4 workers need at least 8 (two per recorded call) (media.workers from command line "
        "--media-workers)"
    )
    # No workers: recording is off and the range is never used.
    assert load_config(None, {}, {"media.workers": "0", "media.ports": "1-2"}).media.workers == 0


def test_a_tls_ca_file_that_cannot_serve_as_trust_roots_is_refused_at_load(tmp_path: Path) -> None:
    """Caught at start rather than at the first call over TLS, which would fail every peer."""
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    path = write(tmp_path, f"[sip]\ntls_port = 5061\ntls_ca_file = '{not_pem}'\n")
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert str(excinfo.value) == f"{path}:3: sip.tls_ca_file: {not_pem} holds no PEM certificate"
    with pytest.raises(ConfigError) as excinfo:
        load_config(None, {"CALLROUTER_SIP_TLS_CA_FILE": str(tmp_path / "gone.pem")})
    assert str(excinfo.value) == (
        "environment CALLROUTER_SIP_TLS_CA_FILE: sip.tls_ca_file: cannot read "
        f"{tmp_path / 'gone.pem'}: No such file or directory"
    )
