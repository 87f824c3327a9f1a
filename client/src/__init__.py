"""streamdrift's producer client, for inference services (the ``streamdrift-client`` distribution).

    from streamdrift.client import DriftClient

    client = DriftClient.from_env()  # the workers' STREAMDRIFT_KAFKA_*, STREAMDRIFT_INPUT_TOPIC
    client.emit("fraud", {"amount": 12.5, "country": "DE"}, prediction=0.91, event_id="e-123")
    client.close(timeout=5.0)

Modules: :mod:`~streamdrift.client.client` (:class:`DriftClient`, :class:`ClientStats`: the
non-blocking ``emit``, envelopes, drops and their counters), :mod:`~streamdrift.client.config`
(the ``STREAMDRIFT_*`` variables, :func:`masked_config`), :mod:`~streamdrift.client.sampling`
(:func:`sampled`) and :mod:`~streamdrift.client.producer` (:func:`produce_with_retry`, the one
"produce, and while librdkafka's queue is full serve deliveries and retry" step of every
streamdrift producer).

Imports only the standard library, msgspec and confluent-kafka: never the worker
(``streamdrift.streams``) or the detectors.
"""

from streamdrift.client.client import ClientStats, DriftClient
from streamdrift.client.config import (
    DEFAULT_TOPIC,
    MAX_EVENTS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    ClientSettings,
    masked_config,
    settings_from_env,
)
from streamdrift.client.producer import produce_with_retry
from streamdrift.client.sampling import sampled

__all__ = [
    "DEFAULT_TOPIC",
    "MAX_EVENTS_PER_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "ClientSettings",
    "ClientStats",
    "DriftClient",
    "masked_config",
    "produce_with_retry",
    "sampled",
    "settings_from_env",
]
