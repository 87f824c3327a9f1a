"""Kafka client security from the one settings object, for both client libraries we use.

Faust (aiokafka) takes a credentials object with an ``ssl.SSLContext``; confluent-kafka
(librdkafka) takes ``security.protocol`` / ``sasl.*`` / ``ssl.*`` properties. Both are derived
here from the same ``STREAMDRIFT_KAFKA_*`` settings, so they cannot disagree.
"""

from __future__ import annotations

import ssl
from typing import Any

from faust.auth import SASLCredentials, SSLCredentials

from streams.settings import Settings


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (server verification, plus a client cert for mTLS)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if settings.kafka_ssl_certfile:
        password = settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None
        context.load_cert_chain(str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile), password)
    return context


def faust_credentials(settings: Settings) -> SASLCredentials | SSLCredentials | None:
    """``broker_credentials`` for the Faust app (None for PLAINTEXT)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl_context(settings)
    if protocol == "SSL":
        return SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # the settings validator guarantees it
    return SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism,
    )


def confluent_config(settings: Settings) -> dict[str, Any]:
    """librdkafka properties for AdminClient / Consumer / Producer (bootstrap included).

    >>> confluent_config(Settings(kafka_bootstrap="k:9092"))
    {'bootstrap.servers': 'k:9092', 'security.protocol': 'PLAINTEXT'}
    """
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        config |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": settings.kafka_sasl_password.get_secret_value(),
        }
    optional = {
        "ssl.ca.location": settings.kafka_ssl_cafile,
        "ssl.certificate.location": settings.kafka_ssl_certfile,
        "ssl.key.location": settings.kafka_ssl_keyfile,
        "ssl.key.password": settings.kafka_ssl_key_password.get_secret_value() if settings.kafka_ssl_key_password else None,
    }
    if settings.kafka_security_protocol.endswith("SSL"):
        config |= {key: str(value) for key, value in optional.items() if value is not None}
    return config


def masked(settings: Settings) -> dict[str, str]:
    """Every effective setting as text, secrets masked and URL passwords redacted (for printing)."""
    shown = {}
    for name, value in settings.model_dump().items():
        if name == "redis_url":
            shown[name] = settings.redis_url_redacted
        elif hasattr(value, "get_secret_value"):
            shown[name] = "**********"
        else:
            shown[name] = "" if value is None else str(value)
    return shown
