"""Security settings: one settings object drives every Kafka client; secrets are never shown."""

from __future__ import annotations

import io
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SASL_TEST_PASSWORD, secret_leaks
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from streamdrift.streams.kafka.credentials import faust_credentials
from streamdrift.streams.security import (
    certificate_cn,
    confluent_config,
    masked,
    principal,
    printable,
    scrub,
    secret_values,
    settings_errors,
    ssl_context,
)
from streamdrift.streams.settings import Settings, redact_url
from tests.servers.kafka_tls import CertificateAuthority

SASL = dict(
    kafka_security_protocol="SASL_SSL",
    kafka_sasl_mechanism="SCRAM-SHA-512",
    kafka_sasl_username="svc",
    kafka_sasl_password="pa55-word",
)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate and key, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=streamdrift-test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_plaintext_needs_no_credentials():
    settings = Settings(kafka_bootstrap="k:9092")
    assert faust_credentials(settings) is None
    assert confluent_config(settings) == {
        "bootstrap.servers": "k:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_sasl_ssl_gives_both_clients_the_same_mechanism_and_user(client_cert):
    cert, _ = client_cert
    settings = Settings(**SASL, kafka_ssl_cafile=cert)
    creds = faust_credentials(settings)
    assert isinstance(creds, SASLCredentials)
    assert (creds.mechanism.value, creds.username, creds.password) == (
        "SCRAM-SHA-512",
        "svc",
        "pa55-word",
    )
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)
    config = confluent_config(settings)
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("svc", "pa55-word")
    assert config["ssl.ca.location"] == str(cert)


def test_sasl_plaintext_has_no_tls():
    settings = Settings(
        **{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}
    )
    creds = faust_credentials(settings)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
    assert "ssl.ca.location" not in confluent_config(settings)


def test_mtls_loads_the_client_certificate(client_cert):
    cert, key = client_cert
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=cert,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    assert isinstance(faust_credentials(settings), SSLCredentials)
    assert ssl_context(settings).verify_mode == ssl.CERT_REQUIRED
    config = confluent_config(settings)
    assert (config["ssl.certificate.location"], config["ssl.key.location"]) == (str(cert), str(key))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "STREAMDRIFT_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "c.pem"},
            "STREAMDRIFT_KAFKA_SSL_KEYFILE",
        ),
    ],
)
def test_incomplete_security_settings_are_refused_with_what_to_set(settings, message):
    with pytest.raises(ValueError, match=message):
        Settings(**settings)


def test_secrets_are_masked_and_url_passwords_redacted():
    settings = Settings(**SASL, redis_url="redis://admin:r3dis-pw@cache:6379/0", http_token="t0ken")
    shown = masked(settings)
    text = repr(shown) + repr(settings)
    for secret in ("pa55-word", "r3dis-pw", "t0ken"):
        assert secret not in text
    assert shown["redis_url"] == "redis://admin:***@cache:6379/0"
    assert shown["kafka_sasl_username"] == "svc"


def test_secrets_can_come_from_files(tmp_path, monkeypatch):
    (tmp_path / "streamdrift_kafka_sasl_password").write_text("from-a-file")
    monkeypatch.setenv("STREAMDRIFT_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("STREAMDRIFT_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAMDRIFT_KAFKA_SASL_USERNAME", "svc")
    assert Settings.load().kafka_sasl_password.get_secret_value() == "from-a-file"


def test_config_command_prints_settings_without_secrets():
    env = {
        "PATH": "/usr/bin:/bin",
        "COLUMNS": "200",
        "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
        "STREAMDRIFT_KAFKA_SASL_PASSWORD": "pa55-word",
        "STREAMDRIFT_REDIS_URL": "redis://:r3dis-pw@cache:6379/0",
    }
    result = subprocess.run(
        [sys.executable, "-m", "streamdrift.streams", "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0
    assert "STREAMDRIFT_KAFKA_SASL_USERNAME" in result.stdout and "SASL_SSL" in result.stdout
    assert "pa55-word" not in result.stdout and "r3dis-pw" not in result.stdout


# --- secrets in error messages and URLs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "rediss://host:6380/0?ssl_keyfile=/x&password=s3cret",
            "rediss://host:6380/0?ssl_keyfile=/x&password=***",
        ),
        ("redis://:pw-only@h", "redis://:***@h"),
        (
            "redis://user:pw@h:1/0?passwd=a&pwd=b&token=c&client_secret=d&api_key=e&ssl_certfile=/c.pem",
            "redis://user:***@h:1/0?passwd=***&pwd=***&token=***&client_secret=***&api_key=***&ssl_certfile=/c.pem",
        ),
        ("redis://u:p@ss@h/0", "redis://u:***@h/0"),  # an unencoded @ in the password
        (
            "redis://u:pw@h/0?x=a@b",
            "redis://u:***@b",
        ),  # too odd to take apart exactly: hidden, not shown
        ("redis://h/0?password", "redis://h/0?password"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url_masks_passwords_and_secret_parameters(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "odd", [None, 42, b"redis://:x@h", "://", "@", "?&=", "redis://:@", "\x00\udcff"]
)
def test_redact_url_never_raises(odd):
    assert isinstance(redact_url(odd), str)


def _errors(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return caught.value


def test_validation_errors_never_echo_a_secret():
    error = _errors(
        redis_url=f"redis://:{SASL_TEST_PASSWORD}@h:notaport/0",
        metrics_port="x",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_password=SASL_TEST_PASSWORD,
    )
    lines = settings_errors(error)
    # hide_input_in_errors
    assert SASL_TEST_PASSWORD not in str(error) + repr(error) + "".join(lines)
    assert lines[0].startswith(
        "invalid setting STREAMDRIFT_REDIS_URL=redis://:***@h:notaport/0: must look like"
    )
    assert lines[1].startswith(
        "invalid setting STREAMDRIFT_METRICS_PORT=x: expected a whole number"
    )


def test_a_rejected_secret_is_shown_as_stars():
    # not text: refused, and not shown
    (line,) = settings_errors(_errors(kafka_sasl_password=12345678))
    assert (
        line.startswith("invalid setting STREAMDRIFT_KAFKA_SASL_PASSWORD=***: expected")
        and "12345678" not in line
    )


def test_settings_errors_name_the_flag_when_the_value_came_from_one():
    (line,) = settings_errors(_errors(kafka_bootstrap=""), {"kafka_bootstrap": "--bootstrap"})
    assert line.startswith(
        "invalid setting --bootstrap '' (STREAMDRIFT_KAFKA_BOOTSTRAP): expected host:port"
    )


@pytest.mark.parametrize(
    ("values", "variable"),
    [
        ({"log_level": "LOUD"}, "STREAMDRIFT_LOG_LEVEL=loud"),
        ({"metrics_port": 0}, "STREAMDRIFT_METRICS_PORT=0"),
        ({"kafka_bootstrap": "h:99999"}, "STREAMDRIFT_KAFKA_BOOTSTRAP=h:99999"),
        ({"input_topic": "a/b"}, "STREAMDRIFT_INPUT_TOPIC=a/b"),
        ({"group_id": "g\x1b[2J"}, "STREAMDRIFT_GROUP_ID=g\\x1b[2J"),  # control characters escaped
    ],
)
def test_each_bad_setting_is_one_line_naming_its_variable(values, variable):
    (line,) = settings_errors(_errors(**values))
    assert line.startswith(f"invalid setting {variable}: expected") and "\n" not in line


def test_the_log_level_takes_any_case():
    assert Settings(log_level="WARNING").log_level == "warning"


def test_secret_values_and_scrub():
    settings = Settings(
        **SASL,
        redis_url="redis://admin:r3dis-pw@cache:6379/0?password=k3y-pass",
        http_token="t0ken",
    )
    secrets = secret_values(settings)
    assert {"pa55-word", "r3dis-pw", "t0ken", "k3y-pass"} <= set(secrets) and "admin" not in secrets
    assert scrub("login pa55-word refused by r3dis-pw", secrets) == "login *** refused by ***"


def test_printable_keeps_markup_and_control_characters_literal():
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(printable("fraud[/bold] [link=x]y\x1b[31m\r\n"))
    assert console.export_text().strip() == "fraud[/bold] [link=x]y\\x1b[31m\\r\\n"


# --- the suite-wide scan of log files (tests/conftest.py) ---------------------------------------


def test_the_secret_scan_finds_a_leak_in_any_log(tmp_path):
    # not a TEST_SECRET: this log stays under the session's basetemp
    planted = ["planted-" + "secret"]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "worker-0.log").write_text(f"connecting with {planted[0]}\n")
    (tmp_path / "clean.log").write_text("nothing to see\n")
    (tmp_path / "notes.txt").write_text(planted[0])  # not a log
    assert secret_leaks(tmp_path, planted) == ["a/worker-0.log: 'planted-secret'"]
    assert secret_leaks(tmp_path) == []


def test_the_principal_hint_names_the_client_certificates_common_name(tmp_path: Path) -> None:
    authority = CertificateAuthority(tmp_path)
    client = authority.issue("streamdrift-worker")
    assert certificate_cn(client.cert) == "streamdrift-worker"
    assert certificate_cn(client.keystore) == "streamdrift-worker"  # key first, then certificate
    assert certificate_cn(client.key) is None  # no certificate in it
    assert certificate_cn(tmp_path / "absent.pem") is None
    settings = Settings(
        kafka_bootstrap="k:9093",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(authority.cert),
        kafka_ssl_certfile=str(client.cert),
        kafka_ssl_keyfile=str(client.key),
    )
    assert principal(settings) == "User:streamdrift-worker"
