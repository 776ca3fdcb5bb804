"""Kafka TLS/SASL settings as each client library takes them, secrets from files, and no
secret in any printable form of the settings. No broker here (tests/e2e/test_security.py
runs real TLS and SASL handshakes)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr

from sinks.clickhouse import ClickHouseUrl, NativeClickHouse, connect
from streams.kafka import security
from streams.kafka.security import KafkaSecurityError
from streams.settings import Settings
from tests.services.tls import Pki, make_pki

SECRET = "pl4nted-Secret;pw"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(**kw: Any) -> Settings:
    return Settings(_secrets_dir=None, **kw)


def sasl_ssl(pki: Pki, mechanism: str = "SCRAM-SHA-512", **kw: Any) -> Settings:
    return settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="kudos",
        kafka_sasl_password=SECRET,
        kafka_ssl_ca_file=pki.ca,
        **kw,
    )


def ca_names(context: ssl.SSLContext) -> set[str]:
    names: set[str] = set()
    for cert in context.get_ca_certs():
        subject: Any = cert["subject"]
        names.update(value for rdn in subject for key, value in rdn if key == "commonName")
    return names


def test_plaintext_is_the_default() -> None:
    s = settings()
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert security.ssl_context(s) is None
    assert security.faust_credentials(s) is None
    assert security.kafka_python_kwargs(s) == {"security_protocol": "PLAINTEXT"}
    assert security.confluent_config(s) == {"security.protocol": "plaintext"}


def test_ssl_context_trusts_the_ca_file_and_verifies(pki: Pki) -> None:
    s = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca)
    context = security.ssl_context(s)
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ca_names(context) == {"kudos test CA"}  # the given CA only, not the system's

    credentials = security.faust_credentials(s)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol == AuthProtocol.SSL
    assert ca_names(credentials.context) == {"kudos test CA"}

    kwargs = security.kafka_python_kwargs(s)
    assert kwargs["security_protocol"] == "SSL"
    assert ca_names(kwargs["ssl_context"]) == {"kudos test CA"}
    assert "sasl_mechanism" not in kwargs

    assert security.confluent_config(s) == {
        "security.protocol": "ssl",
        "ssl.ca.location": str(pki.ca),
        "ssl.endpoint.identification.algorithm": "https",
        "enable.ssl.certificate.verification": "true",
    }


def test_host_name_check_can_be_turned_off_but_not_verification(pki: Pki) -> None:
    s = settings(
        kafka_security_protocol="SSL", kafka_ssl_ca_file=pki.ca, kafka_ssl_check_hostname=False
    )
    context = security.ssl_context(s)
    assert context is not None
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert security.confluent_config(s)["ssl.endpoint.identification.algorithm"] == "none"
    assert "no host name check" in security.describe(s)


def test_mutual_tls_loads_the_client_certificate_with_its_key_password(pki: Pki) -> None:
    s = settings(
        kafka_security_protocol="SSL",
        kafka_ssl_ca_file=pki.ca,
        kafka_ssl_cert_file=pki.client_cert,
        kafka_ssl_key_file=pki.client_key,
        kafka_ssl_key_password=pki.client_key_password,
    )
    assert security.ssl_context(s) is not None
    config = security.confluent_config(s)
    assert config["ssl.certificate.location"] == str(pki.client_cert)
    assert config["ssl.key.location"] == str(pki.client_key)
    assert config["ssl.key.password"] == pki.client_key_password

    wrong = s.model_copy(update={"kafka_ssl_key_password": SecretStr(SECRET)})
    with pytest.raises(KafkaSecurityError) as err:
        security.ssl_context(wrong)
    assert SECRET not in str(err.value)


def test_unreadable_ca_file_is_a_clear_error(tmp_path: Path) -> None:
    s = settings(kafka_security_protocol="SSL", kafka_ssl_ca_file=tmp_path / "missing.pem")
    with pytest.raises(KafkaSecurityError, match="KUDOS_KAFKA_SSL_CA_FILE"):
        security.faust_credentials(s)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_mechanisms_map_to_every_client(pki: Pki, mechanism: str, protocol: str) -> None:
    s = settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="kudos",
        kafka_sasl_password=SECRET,
        kafka_ssl_ca_file=pki.ca if protocol == "SASL_SSL" else None,
    )
    credentials = security.faust_credentials(s)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.mechanism == SASLMechanism(mechanism)
    assert credentials.protocol == AuthProtocol(protocol)
    assert (credentials.username, credentials.password) == ("kudos", SECRET)
    assert (credentials.ssl_context is not None) == (protocol == "SASL_SSL")
    assert SECRET not in repr(credentials)

    # What faust hands to aiokafka.
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == protocol
    assert auth["sasl_mechanism"] == mechanism
    assert auth["sasl_plain_password"] == SECRET

    kwargs = security.kafka_python_kwargs(s)
    assert kwargs["security_protocol"] == protocol
    assert kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("kudos", SECRET)
    assert ("ssl_context" in kwargs) == (protocol == "SASL_SSL")
    assert SECRET not in repr(kwargs)  # kafka-python logs its configuration at DEBUG

    config = security.confluent_config(s)
    assert config["security.protocol"] == protocol.lower()
    assert config["sasl.mechanism"] == mechanism
    assert (config["sasl.username"], config["sasl.password"]) == ("kudos", SECRET)

    assert SECRET not in security.describe(s)
    assert mechanism in security.describe(s)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "KUDOS_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "KUDOS_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_ssl_ca_file": Path("/ca.pem")}, "does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_key_file": Path("/k.pem")},
            "needs KUDOS_KAFKA_SSL_CERT_FILE",
        ),
    ],
)
def test_inconsistent_settings_are_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(KafkaSecurityError, match=message):
        security.kafka_python_kwargs(settings(**kw))


def test_unknown_protocol_or_mechanism_is_refused_by_settings() -> None:
    with pytest.raises(ValueError):
        settings(kafka_security_protocol="TLS")
    with pytest.raises(ValueError):
        settings(kafka_sasl_mechanism="GSSAPI")


# --- secrets: from the environment or files, never printed -----------------------------


def test_secrets_come_from_files_named_like_the_variables(tmp_path: Path, pki: Pki) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    url = f"clickhouse://kudos:{SECRET}@ch:9440/kudos?secure=true&ca_certs={pki.ca}"
    # As a Kubernetes Secret volume writes them: one file per key, often a trailing newline.
    (secrets / "KUDOS_KAFKA_SASL_PASSWORD").write_text(SECRET + "\n")
    (secrets / "KUDOS_CLICKHOUSE").write_text(url + "\n")
    (secrets / "KUDOS_KAFKA_SSL_KEY_PASSWORD").write_text(pki.client_key_password)
    s = Settings(_secrets_dir=secrets)
    assert s.kafka_sasl_password.get_secret_value() == SECRET
    assert s.clickhouse.get_secret_value() == url
    assert s.clickhouse_url() == url
    assert s.kafka_ssl_key_password.get_secret_value() == pki.client_key_password
    # The environment wins over a file.
    os.environ["KUDOS_KAFKA_SASL_PASSWORD"] = "from-env"
    try:
        assert Settings(_secrets_dir=secrets).kafka_sasl_password.get_secret_value() == "from-env"
    finally:
        del os.environ["KUDOS_KAFKA_SASL_PASSWORD"]


def test_kudos_secrets_dir_selects_the_directory(tmp_path: Path) -> None:
    """KUDOS_SECRETS_DIR is read when the settings module loads, as a worker starts."""
    (tmp_path / "KUDOS_KAFKA_SASL_PASSWORD").write_text(SECRET)
    (tmp_path / "KUDOS_KAFKA_SASL_USERNAME").write_text("from-file")
    code = (
        "from streams.settings import Settings\n"
        "s = Settings()\n"
        "print(s.kafka_sasl_username, s.kafka_sasl_password.get_secret_value() == "
        f"{SECRET!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUDOS_")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "KUDOS_SECRETS_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.split() == ["from-file", "True"]


def test_no_secret_in_any_printable_form_of_the_settings(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, client_key_password=SECRET)
    url = f"clickhouse://kudos:{SECRET}@ch:9440/kudos?secure=true"
    s = sasl_ssl(
        pki,
        clickhouse=url,
        kafka_ssl_cert_file=pki.client_cert,
        kafka_ssl_key_file=pki.client_key,
        kafka_ssl_key_password=SECRET,
        schema_registry=f"https://u:{SECRET}@registry:8081",
    )
    for text in (
        repr(s),
        str(s),
        s.model_dump_json(),
        json.dumps(s.model_dump(mode="json")),
        repr(s.model_dump()),
        security.describe(s),
        repr(security.faust_credentials(s)),
        repr(ClickHouseUrl.parse(s.clickhouse)),
        str(ClickHouseUrl.parse(s.clickhouse)),
    ):
        assert SECRET not in text, text
    assert s.kafka_sasl_password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("clickhouse://kudos:pw@h:9000/kudos", "clickhouse://kudos:***@h:9000/kudos"),
        ("https://u:p%40ss@reg:8081/x?y=1", "https://u:***@reg:8081/x?y=1"),
        ("u:pw@host:9092", "u:***@host:9092"),
        ("a:1,u:pw@b:2", "a:1,u:***@b:2"),
        ("kafka://host:9092", "kafka://host:9092"),
        ("https://token@reg:8081", "https://token@reg:8081"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert security.redact_url(url) == shown


# --- ClickHouse: user, password and TLS in the URL ------------------------------------


def test_clickhouse_tls_url_options_reach_clickhouse_driver(pki: Pki) -> None:
    url = (
        f"clickhouse://kudos:{SECRET.replace(';', '%3B')}@ch.example:9440/kudos"
        f"?secure=true&ca_certs={pki.ca}&verify=true"
    )
    parsed = ClickHouseUrl.parse(url)
    assert parsed.secure and parsed.port == 9440 and parsed.user == "kudos"
    assert parsed.password.get_secret_value() == SECRET
    assert SECRET not in parsed.redacted()
    backend = connect(url)  # lazy: no connection is made
    try:
        assert isinstance(backend, NativeClickHouse)
        connection: Any = backend._client.connection
        assert connection.secure_socket is True
        assert connection.verify_cert is True
        assert connection.ssl_options["ca_certs"] == str(pki.ca)
        assert connection.password == SECRET
        assert SECRET not in repr(backend)
    finally:
        backend.close()
    # clickhouses:// implies TLS on 9440; verify=false is explicit.
    insecure = ClickHouseUrl.parse("clickhouses://kudos@ch/kudos?verify=false")
    assert insecure.secure and insecure.port == 9440
    assert dict(insecure.options)["verify"] == "false"
