"""The client's Kafka settings from the workers' ``STREAMDRIFT_*`` environment variables.

:func:`settings_from_env` reads the variables the streamdrift workers read for their own Kafka
clients (bootstrap servers, TLS / mTLS / SASL, the input topic), with the same defaults and
rules, and makes the same librdkafka properties of them, without importing the worker (whose
dependencies an inference service does not install). streamdrift's test suite checks that every
variable read here is a worker setting and that both sides make the same properties.

Secrets (the SASL password, the client key's password) never appear in an error message or a
repr; :func:`masked_config` masks them for logging.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_TOPIC",
    "MAX_EVENTS_PER_MESSAGE",
    "MAX_MESSAGE_BYTES",
    "SECRETS_DIR",
    "VARIABLES",
    "ClientSettings",
    "masked_config",
    "settings_from_env",
]

DEFAULT_TOPIC = "predictions"
"""The worker's default input topic (``STREAMDRIFT_INPUT_TOPIC``)."""

MAX_EVENTS_PER_MESSAGE = 10_000
"""The worker's default ``STREAMDRIFT_MAX_EVENTS_PER_MESSAGE``: an envelope never holds more."""

MAX_MESSAGE_BYTES = 1_048_576
"""The worker's default ``STREAMDRIFT_MAX_MESSAGE_BYTES``: an envelope is never bigger."""

BOOTSTRAP = "STREAMDRIFT_KAFKA_BOOTSTRAP"
PROTOCOL = "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL"
MECHANISM = "STREAMDRIFT_KAFKA_SASL_MECHANISM"
USERNAME = "STREAMDRIFT_KAFKA_SASL_USERNAME"
PASSWORD = "STREAMDRIFT_KAFKA_SASL_PASSWORD"  # secret
CAFILE = "STREAMDRIFT_KAFKA_SSL_CAFILE"
CERTFILE = "STREAMDRIFT_KAFKA_SSL_CERTFILE"
KEYFILE = "STREAMDRIFT_KAFKA_SSL_KEYFILE"
KEY_PASSWORD = "STREAMDRIFT_KAFKA_SSL_KEY_PASSWORD"  # secret
INPUT_TOPIC = "STREAMDRIFT_INPUT_TOPIC"

VARIABLES = (
    BOOTSTRAP,
    PROTOCOL,
    MECHANISM,
    USERNAME,
    PASSWORD,
    CAFILE,
    CERTFILE,
    KEYFILE,
    KEY_PASSWORD,
    INPUT_TOPIC,
)
"""Every variable :func:`settings_from_env` reads (each one a worker setting of the same name)."""

SECRETS_DIR = "STREAMDRIFT_SECRETS_DIR"
"""A folder with one file per variable (e.g. a Kubernetes Secret volume holding a file
``streamdrift_kafka_sasl_password``), read as the worker reads it: a variable set in the
environment wins over its file."""

_FILES = {
    CAFILE: "ssl.ca.location",
    CERTFILE: "ssl.certificate.location",
    KEYFILE: "ssl.key.location",
}

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

_SECRET_MARKERS = ("password", "secret", "sasl.oauthbearer.config", "ssl.key.pem", "token")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def masked_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with secret values (passwords, OAuth settings, keys) masked, safe to log.

    >>> masked_config({"sasl.username": "u", "sasl.password": "p", "ssl.key.password": "k"})
    {'sasl.username': 'u', 'sasl.password': '**********', 'ssl.key.password': '**********'}
    """
    return {
        key: "**********" if any(marker in key.lower() for marker in _SECRET_MARKERS) else value
        for key, value in config.items()
    }


@dataclass(frozen=True, slots=True, repr=False)
class ClientSettings:
    """What :func:`settings_from_env` read: librdkafka properties and the input topic."""

    config: Mapping[str, Any] = field(default_factory=dict)
    """``bootstrap.servers``, ``security.protocol`` and the ``sasl.*`` / ``ssl.*`` properties."""
    topic: str = DEFAULT_TOPIC

    def __repr__(self) -> str:  # the config may hold secrets
        return f"ClientSettings(config={masked_config(self.config)!r}, topic={self.topic!r})"


def settings_from_env(environ: Mapping[str, str] | None = None) -> ClientSettings:
    """The client's Kafka properties and input topic from ``environ`` (default: ``os.environ``)
    and the files of ``STREAMDRIFT_SECRETS_DIR``, as the workers make them for their own clients.

    Raises ``ValueError`` naming the variable when a value is invalid (a secret's value is never
    shown).

    >>> settings_from_env({"STREAMDRIFT_KAFKA_BOOTSTRAP": "kafka://k:9092"}).config
    {'bootstrap.servers': 'k:9092', 'security.protocol': 'PLAINTEXT'}
    >>> settings_from_env(
    ...     {
    ...         "STREAMDRIFT_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    ...         "STREAMDRIFT_KAFKA_SASL_USERNAME": "svc",
    ...         "STREAMDRIFT_KAFKA_SASL_PASSWORD": "hunter2",
    ...     }
    ... )
    ClientSettings(config={..., 'sasl.password': '**********'}, topic='predictions')
    """
    environ = os.environ if environ is None else environ
    values = _read(environ)
    bootstrap = _bootstrap(values.get(BOOTSTRAP, "localhost:9092"))
    protocol = _choice(values, PROTOCOL, PROTOCOLS, "PLAINTEXT")
    mechanism = _choice(values, MECHANISM, MECHANISMS, "PLAIN")
    username, password = values.get(USERNAME), values.get(PASSWORD)
    certfile, keyfile = values.get(CERTFILE), values.get(KEYFILE)
    topic = values.get(INPUT_TOPIC, DEFAULT_TOPIC)
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"invalid {INPUT_TOPIC}={_shown(topic)}: expected a Kafka topic name: "
            "1-249 of a-z A-Z 0-9 . _ -"
        )
    if protocol.startswith("SASL") and not (username and password):
        raise ValueError(f"{PROTOCOL}={protocol} needs {USERNAME} and {PASSWORD}")
    if (certfile is None) != (keyfile is None):
        raise ValueError(f"mTLS needs both {CERTFILE} and {KEYFILE}")

    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "security.protocol": protocol}
    if protocol.startswith("SASL"):
        config |= {
            "sasl.mechanism": mechanism,
            "sasl.username": username,
            "sasl.password": password,
        }
    if protocol.endswith("SSL"):  # else the files are not read: no reason to refuse them
        for name, key in _FILES.items():
            if name in values:
                path = Path(values[name])
                if not path.is_file():
                    raise ValueError(f"{name}={path}: no such file")
                config[key] = str(path)
        if values.get(KEY_PASSWORD):
            config["ssl.key.password"] = values[KEY_PASSWORD]
    return ClientSettings(config, topic)


def _read(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables' values: the environment's (names in any case, as the worker reads them)
    over the secrets folder's files."""
    found: dict[str, str] = {}
    folder = environ.get(SECRETS_DIR)
    if folder:
        found |= _secret_files(Path(folder).expanduser())
    for name, value in environ.items():
        if name.upper() in VARIABLES:
            found[name.upper()] = value
    return found


def _secret_files(folder: Path) -> dict[str, str]:
    if not folder.exists():
        warnings.warn(f'{SECRETS_DIR}: directory "{folder}" does not exist', stacklevel=4)
        return {}
    if not folder.is_dir():
        raise ValueError(f"{SECRETS_DIR}={folder}: not a directory")
    inside = folder.resolve()
    found = {}
    for path in folder.iterdir():
        name = path.name.upper()
        # a file that resolves outside the folder is ignored, as by the worker
        if name in VARIABLES and path.is_file() and inside in path.resolve().parents:
            found[name] = path.read_text(encoding="utf-8").strip()
    return found


def _bootstrap(value: str) -> str:
    value = value.removeprefix("kafka://").strip()
    for server in value.split(","):
        host, colon, port = server.strip().rpartition(":")
        if not server.strip() or (colon and not host) or (colon and not _is_port(port)):
            raise ValueError(
                f"invalid {BOOTSTRAP}={_shown(value)}: "
                "expected host:port[,host:port] with ports 1-65535"
            )
    return value


def _choice(values: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = values.get(name, default)
    if value not in allowed:
        raise ValueError(f"invalid {name}={_shown(value)}: expected one of {', '.join(allowed)}")
    return value


def _is_port(text: str) -> bool:
    return text.isdigit() and 1 <= int(text) <= 65535


def _shown(value: str) -> str:
    """A rejected (non-secret) value as it may be printed: quoted, escaped, short."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."
