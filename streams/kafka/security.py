"""Kafka security settings turned into what each client library takes. Pure: no I/O but
reading the certificate files named in the settings.

Three clients reach Kafka from kudos and its tests, each configured differently:

* faust (aiokafka), the worker: `faust_credentials` gives `broker_credentials=`.
* kafka-python, `ensure_topics` and `kudos produce`: `kafka_python_kwargs`.
* confluent-kafka (librdkafka), foreign producers in tests and docs: `confluent_config`.

All three get the same trust: TLS contexts come from `ssl.create_default_context` (system
roots unless `kafka_ssl_ca_file` is set, TLS 1.2 or later, certificate always verified,
host name checked unless `kafka_ssl_check_hostname` is false) with the client certificate
loaded for mutual TLS.

Secrets (`kafka_sasl_password`, `kafka_ssl_key_password`) stay `SecretStr` in `Settings`
and are unwrapped here only into the mappings handed to a client; nothing here logs them.
`redact_url` hides the userinfo of URLs that go into log messages.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

    from streams.settings import Settings

SSL_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS: Final = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """The Kafka security settings are inconsistent or name unreadable files."""


def check(settings: Settings) -> None:
    """Raises `KafkaSecurityError` for settings no client could use."""
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        if settings.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise KafkaSecurityError(
                f"KUDOS_KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}"
            )
        if not settings.kafka_sasl_username or not settings.kafka_sasl_password.get_secret_value():
            raise KafkaSecurityError(
                f"KUDOS_KAFKA_SECURITY_PROTOCOL={protocol} needs KUDOS_KAFKA_SASL_USERNAME and "
                "KUDOS_KAFKA_SASL_PASSWORD (or a file of that name in KUDOS_SECRETS_DIR)"
            )
    tls_files = (
        settings.kafka_ssl_ca_file,
        settings.kafka_ssl_cert_file,
        settings.kafka_ssl_key_file,
    )
    if protocol not in SSL_PROTOCOLS and any(f is not None for f in tls_files):
        raise KafkaSecurityError(
            f"KUDOS_KAFKA_SSL_* files are set but KUDOS_KAFKA_SECURITY_PROTOCOL={protocol} "
            "does not use TLS (use SSL or SASL_SSL)"
        )
    if settings.kafka_ssl_key_file is not None and settings.kafka_ssl_cert_file is None:
        raise KafkaSecurityError("KUDOS_KAFKA_SSL_KEY_FILE needs KUDOS_KAFKA_SSL_CERT_FILE")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The client TLS context for SSL and SASL_SSL, else None."""
    check(settings)
    if settings.kafka_security_protocol not in SSL_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_ca_file
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"cannot load KUDOS_KAFKA_SSL_CA_FILE {cafile}: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = settings.kafka_ssl_check_hostname  # chain still verified
    if settings.kafka_ssl_cert_file is not None:
        key_password = settings.kafka_ssl_key_password.get_secret_value() or None
        try:
            context.load_cert_chain(
                str(settings.kafka_ssl_cert_file),
                str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
                password=key_password,
            )
        except (OSError, ssl.SSLError) as exc:
            # ssl's messages name the problem ("[SSL] PEM lib"), never the password.
            raise KafkaSecurityError(
                f"cannot load the client certificate {settings.kafka_ssl_cert_file}: {exc}"
            ) from exc
    return context


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """`broker_credentials` for faust.App: None (plaintext), SSL or SASL credentials."""
    import faust

    context = ssl_context(settings)
    protocol = settings.kafka_security_protocol
    if protocol in SASL_PROTOCOLS:
        # faust picks SASL_SSL when a context is given, SASL_PLAINTEXT otherwise. Its repr
        # shows the user name only.
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class RedactedStr(str):
    """A str whose repr hides it: kafka-python logs its whole configuration dict at DEBUG
    ("Starting KafkaAdminClient with configuration: {...}"), and a dict shows values by
    repr. The value itself is unchanged, so clients use it as the plain string it is."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"


def kafka_python_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer, KafkaAdminClient."""
    context = ssl_context(settings)
    kwargs: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if context is not None:
        kwargs["ssl_context"] = context
        kwargs["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
    if settings.kafka_security_protocol in SASL_PROTOCOLS:
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = RedactedStr(settings.kafka_sasl_password.get_secret_value())
    return kwargs


def confluent_config(settings: Settings) -> dict[str, str]:
    """The same settings as librdkafka (confluent-kafka) configuration properties.

    librdkafka takes file names, not a Python context: the files are checked by loading
    them into a context first, so a bad file fails here as it would for the other clients.
    """
    ssl_context(settings)
    protocol = settings.kafka_security_protocol
    config = {"security.protocol": protocol.lower()}
    if protocol in SSL_PROTOCOLS:
        config["ssl.endpoint.identification.algorithm"] = (
            "https" if settings.kafka_ssl_check_hostname else "none"
        )
        config["enable.ssl.certificate.verification"] = "true"
        if settings.kafka_ssl_ca_file is not None:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_file)
        if settings.kafka_ssl_cert_file is not None:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_cert_file)
        if settings.kafka_ssl_key_file is not None:
            config["ssl.key.location"] = str(settings.kafka_ssl_key_file)
        key_password = settings.kafka_ssl_key_password.get_secret_value()
        if key_password:
            config["ssl.key.password"] = key_password
    if protocol in SASL_PROTOCOLS:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    return config


def describe(settings: Settings) -> str:
    """A loggable summary: protocol, mechanism and user, never a secret."""
    protocol = settings.kafka_security_protocol
    parts: list[str] = [protocol]
    if protocol in SASL_PROTOCOLS:
        parts.append(f"{settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}")
    if protocol in SSL_PROTOCOLS:
        parts.append(f"CA {settings.kafka_ssl_ca_file or 'system'}")
        if settings.kafka_ssl_cert_file is not None:
            parts.append(f"client cert {settings.kafka_ssl_cert_file}")
        if not settings.kafka_ssl_check_hostname:
            parts.append("no host name check")
    return ", ".join(parts)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for log messages.

    `scheme://user:secret@host/…` → `scheme://user:***@host/…`; a comma-separated list of
    URLs or host:port pairs is redacted item by item. Unparseable input is hidden whole.
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url if "://" in url else f"//{url}")
        password = parts.password
    except ValueError:
        return "***"
    if password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    redacted = urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    return redacted if "://" in url else redacted.removeprefix("//")
