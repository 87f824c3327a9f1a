"""Security settings: one settings object drives every Kafka client; secrets are never shown."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from streams.security import confluent_config, faust_credentials, masked, ssl_context
from streams.settings import Settings

SASL = dict(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="svc", kafka_sasl_password="pa55-word")


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate and key, made with the openssl CLI."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=streamdrift-test",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_plaintext_needs_no_credentials():
    settings = Settings(kafka_bootstrap="k:9092")
    assert faust_credentials(settings) is None
    assert confluent_config(settings) == {"bootstrap.servers": "k:9092", "security.protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_both_clients_the_same_mechanism_and_user(client_cert):
    cert, _ = client_cert
    settings = Settings(**SASL, kafka_ssl_cafile=cert)
    creds = faust_credentials(settings)
    assert isinstance(creds, SASLCredentials)
    assert (creds.mechanism.value, creds.username, creds.password) == ("SCRAM-SHA-512", "svc", "pa55-word")
    assert creds.protocol.value == "SASL_SSL" and isinstance(creds.ssl_context, ssl.SSLContext)
    config = confluent_config(settings)
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("svc", "pa55-word")
    assert config["ssl.ca.location"] == str(cert)


def test_sasl_plaintext_has_no_tls():
    settings = Settings(**{**SASL, "kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"})
    creds = faust_credentials(settings)
    assert creds.protocol.value == "SASL_PLAINTEXT" and creds.ssl_context is None
    assert "ssl.ca.location" not in confluent_config(settings)


def test_mtls_loads_the_client_certificate(client_cert):
    cert, key = client_cert
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=cert, kafka_ssl_certfile=cert, kafka_ssl_keyfile=key)
    assert isinstance(faust_credentials(settings), SSLCredentials)
    assert ssl_context(settings).verify_mode == ssl.CERT_REQUIRED
    config = confluent_config(settings)
    assert (config["ssl.certificate.location"], config["ssl.key.location"]) == (str(cert), str(key))


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"kafka_security_protocol": "SASL_SSL"}, "STREAMDRIFT_KAFKA_SASL_USERNAME"),
     ({"kafka_security_protocol": "SSL", "kafka_ssl_certfile": "c.pem"}, "STREAMDRIFT_KAFKA_SSL_KEYFILE")],
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
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "200", "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc", "STREAMDRIFT_KAFKA_SASL_PASSWORD": "pa55-word",
           "STREAMDRIFT_REDIS_URL": "redis://:r3dis-pw@cache:6379/0"}
    result = subprocess.run([sys.executable, "-m", "streams", "config"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0
    assert "STREAMDRIFT_KAFKA_SASL_USERNAME" in result.stdout and "SASL_SSL" in result.stdout
    assert "pa55-word" not in result.stdout and "r3dis-pw" not in result.stdout
