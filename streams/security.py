"""Kafka client security from the one settings object, for both client libraries we use.

Faust (aiokafka) takes a credentials object with an ``ssl.SSLContext``; confluent-kafka
(librdkafka) takes ``security.protocol`` / ``sasl.*`` / ``ssl.*`` properties. Both are derived
from the same ``STREAMDRIFT_KAFKA_*`` settings, so they cannot disagree: the TLS context,
aiokafka's keyword arguments and librdkafka's properties here, as plain values; the Faust
credentials object in :mod:`streams.kafka.credentials`, because building it needs Faust and only
``streams.kafka`` imports a Kafka client library. This module imports none: every CLI command
loads it, and Faust alone takes ~0.3 s to import.
"""

from __future__ import annotations

import hmac
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError
from rich.markup import escape

from streamdrift.streams.settings import Settings, redact_url


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (server verification, plus a client cert for mTLS)."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if settings.kafka_ssl_certfile:
        password = (
            settings.kafka_ssl_key_password.get_secret_value()
            if settings.kafka_ssl_key_password
            else None
        )
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile), str(settings.kafka_ssl_keyfile), password
        )
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Security keyword arguments of aiokafka's clients and connections, as Faust passes them
    (``security_protocol``, ``ssl_context``, ``sasl_*``): for checks that must connect exactly
    as the worker's consumer and producer will.

    >>> aiokafka_options(Settings())
    {'security_protocol': 'PLAINTEXT', 'ssl_context': None}
    """
    options: dict[str, Any] = {
        "security_protocol": settings.kafka_security_protocol,
        "ssl_context": ssl_context(settings),
    }
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        options |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": settings.kafka_sasl_password.get_secret_value(),
        }
    return options


def principal(settings: Settings) -> str:
    """The Kafka principal the brokers most likely see for these settings, for ACL hints:
    ``User:<SASL user name>``; with a client certificate, ``User:<its CN>`` (what
    ``ssl.principal.mapping.rules`` usually make of it; without rules it is the whole subject);
    else ``User:ANONYMOUS``.

    >>> principal(
    ...     Settings(
    ...         kafka_security_protocol="SASL_SSL",
    ...         kafka_sasl_username="sd",
    ...         kafka_sasl_password="x",
    ...     )
    ... )
    'User:sd'
    """
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL"):
        return f"User:{settings.kafka_sasl_username}"
    if protocol == "SSL" and settings.kafka_ssl_certfile:
        cn = certificate_cn(settings.kafka_ssl_certfile)
        return f"User:{cn or '<principal of STREAMDRIFT_KAFKA_SSL_CERTFILE>'}"
    return "User:ANONYMOUS"


def certificate_cn(path: object) -> str | None:
    """The subject CN of the first certificate of a PEM file, or None if it cannot be read.

    >>> certificate_cn("/nonexistent.pem") is None
    True
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certificate = x509.load_pem_x509_certificate(Path(str(path)).read_bytes())
    except (OSError, ValueError):
        return None
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


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
        "ssl.key.password": settings.kafka_ssl_key_password.get_secret_value()
        if settings.kafka_ssl_key_password
        else None,
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


def secret_values(settings: Settings) -> list[str]:
    """The secrets a settings object holds (passwords, token, the Redis URL's password), longest
    first: what no message may contain."""
    values = [v.get_secret_value() for v in dict(settings).values() if isinstance(v, SecretStr)]
    url = settings.redis_url.get_secret_value()
    values += [part for part in re.split(r"[:@/?&=]", url) if part and part not in redact_url(url)]
    return sorted({v for v in values if len(v) >= 3}, key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***`` (the last line of defence for
    error messages that quote what a library was given)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


# --- operator-facing text -------------------------------------------------------------------

#: Characters that move the cursor, recolour or reorder a terminal's text (C0/C1 controls, DEL,
#: bidirectional overrides, zero-width marks, line/paragraph separators).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(value: object) -> str:
    r"""``value`` as Rich markup that prints literally: names come from Kafka messages, and one
    holding ``[/bold]`` would crash Rich, one holding an ANSI escape could rewrite the operator's
    terminal. Control characters are shown as Python escapes.

    >>> print(printable("fraud[/bold]"), printable("[red]x\x1b[31m\r"))
    fraud\[/bold] \[red]x\x1b[31m\r
    """
    return escape(visible(value))


def visible(value: object) -> str:
    r"""``value`` as text with its control characters shown as Python escapes (for plain output).

    >>> print(visible("a\tb\u202e"))
    a\tb\u202e
    """
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))


def bearer_ok(header: str | bytes | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``, in constant time.

    Compared as bytes: ``hmac.compare_digest`` refuses non-ASCII text, and a client may send any
    header bytes (a 401, not a 500).

    >>> bearer_ok("Bearer t0k", "t0k"), bearer_ok("Bearer tök", "t0k"), bearer_ok(None, "t0k")
    (True, False, False)
    """
    if header is None:
        return False
    given = header if isinstance(header, bytes) else header.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(given, f"Bearer {token}".encode("utf-8", "surrogatepass"))


# --- settings errors, one line each -----------------------------------------------------------

_EXPECTED = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false (or 1/0, yes/no, on/off)",
    "bool_type": "true or false",
    "string_type": "text",
    "path_type": "a file path",
}


def _expected(error: Mapping[str, Any]) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}"
    bounds = {
        "greater_than_equal": ">=",
        "greater_than": ">",
        "less_than_equal": "<=",
        "less_than": "<",
    }
    if kind in bounds:
        limit = next(iter(ctx.values()), "?")
        return f"expected a number {bounds[kind]} {limit}"
    if kind == "literal_error":
        return f"expected one of {ctx.get('expected', '?')}"
    message = str(error.get("msg", kind)).removeprefix("Value error, ")
    return message.replace("Input should be", "expected", 1)


def _shown(field: str, value: object) -> str:
    """A rejected value as it may be printed: secrets masked, control characters escaped, short."""
    annotation = str(Settings.model_fields[field].annotation)
    if field == "redis_url":
        text = redact_url(str(value))
    elif "SecretStr" in annotation or isinstance(value, SecretStr):
        return "***"
    else:
        text = str(value)
    text = visible(text)
    return text if len(text) <= 80 else f"{text[:77]}..."


def settings_errors(exc: ValidationError, flags: Mapping[str, str] | None = None) -> list[str]:
    """One line per bad setting: which variable (and command-line flag, if the value came from
    one), the rejected value (``***`` for secrets) and what is expected.

    ``flags`` maps the setting names given on the command line to their flags.
    """
    flags = flags or {}
    lines = []
    for error in exc.errors():
        field = error["loc"][0] if error["loc"] else None
        if not isinstance(field, str) or field not in Settings.model_fields:
            lines.append(f"invalid configuration: {_expected(error)}")  # a rule between settings
            continue
        variable = f"STREAMDRIFT_{field.upper()}"
        value = _shown(field, error.get("input"))
        where = (
            f"{flags[field]} {value!r} ({variable})" if field in flags else f"{variable}={value}"
        )
        description = Settings.model_fields[field].description
        lines.append(
            f"invalid setting {where}: {_expected(error)}"
            + (f" — {description}" if description else "")
        )
    return lines
