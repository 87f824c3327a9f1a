"""The Faust app's ``broker_credentials``, from the same settings as every other Kafka client.

Faust (aiokafka) takes a credentials object holding an ``ssl.SSLContext``. It is built here,
in the one package that imports Kafka client libraries, from the library-free parts of
:mod:`streams.security` (``ssl_context``), so the worker's consumer and producer log in exactly
as the properties ``confluent_config`` gives confluent-kafka's clients.
"""

from __future__ import annotations

from faust.auth import SASLCredentials, SSLCredentials

from streamdrift.streams.security import ssl_context
from streamdrift.streams.settings import Settings


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
