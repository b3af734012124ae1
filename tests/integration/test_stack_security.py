"""The local stack is really secured: TLS with our CA only, SCRAM, and deny-by-default ACLs."""

from __future__ import annotations

import secrets
import socket
import ssl
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from pipeline.config import KafkaSettings
from pipeline.dev.pki import create_ca
from pipeline.wire.topics import RAW_TOPIC, SEALED_TOPIC

pytestmark = pytest.mark.stack


def _tls_handshake(port: int, cafile: str) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("localhost", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("service", ["kafka_client", "s3"])
def test_tls_verifies_against_generated_ca(stack, service):
    port = stack.ports()[service]
    with _tls_handshake(port, str(stack.pki.ca_cert)) as tls:
        cert = tls.getpeercert()
        version = tls.version()
    sans = {value for _kind, value in cert["subjectAltName"]}
    assert {"localhost", "127.0.0.1"} <= sans
    assert version in ("TLSv1.3", "TLSv1.2")


@pytest.mark.parametrize("service", ["kafka_client", "s3"])
def test_tls_refused_with_unknown_ca(stack, service, tmp_path):
    other = create_ca(tmp_path / "other-ca", "Somebody else's CA")
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_handshake(stack.ports()[service], str(other.ca_cert))


def test_kafka_client_with_unknown_ca_cannot_connect(role_env, tmp_path):
    other = create_ca(tmp_path / "other-ca", "Somebody else's CA")
    env = dict(role_env("producer"), AUDITSEAL_CA_FILE=str(other.ca_cert))
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)


def test_scram_right_password_is_accepted(role_env):
    admin = AdminClient(KafkaSettings.from_env(role_env("producer")).client_config())
    metadata = admin.list_topics(topic=RAW_TOPIC, timeout=10)
    assert metadata.topics[RAW_TOPIC].error is None
    assert len(metadata.topics[RAW_TOPIC].partitions) == 6


def test_scram_wrong_password_fails_fast(role_env):
    errors: list[KafkaError] = []
    env = dict(role_env("producer"), AUDITSEAL_SASL_PASSWORD="not-the-password")
    admin = AdminClient(KafkaSettings.from_env(env).client_config(error_cb=errors.append))
    started = time.monotonic()
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    admin.poll(0)  # serve the error callback
    assert time.monotonic() - started < 5
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert "invalid credentials" in next(e.str() for e in errors if e.code() == KafkaError._AUTHENTICATION)


@pytest.fixture()
def user_without_acls(stack):
    """A fresh SCRAM user that holds no ACL at all, deleted afterwards."""
    name, password = f"noacl-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    setup = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for future in setup.alter_user_scram_credentials([UserScramCredentialUpsertion(name, info, password.encode())]).values():
        future.result(timeout=30)
    yield dict(stack.env("producer"), AUDITSEAL_SASL_USERNAME=name, AUDITSEAL_SASL_PASSWORD=password)
    for future in setup.alter_user_scram_credentials(
        [UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)]
    ).values():
        future.result(timeout=30)


def _authenticates(env) -> None:
    # SCRAM credentials propagate through the metadata log; wait until the new user can log in
    deadline = time.monotonic() + 20
    while True:
        try:
            AdminClient(KafkaSettings.from_env(env).client_config()).list_topics(timeout=5)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_user_without_acls_cannot_describe(user_without_acls):
    _authenticates(user_without_acls)
    admin = AdminClient(KafkaSettings.from_env(user_without_acls).client_config())
    topics = admin.list_topics(timeout=10).topics
    assert RAW_TOPIC not in topics and SEALED_TOPIC not in topics
    metadata = admin.list_topics(topic=RAW_TOPIC, timeout=10)
    assert metadata.topics[RAW_TOPIC].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_user_without_acls_cannot_produce(user_without_acls):
    _authenticates(user_without_acls)
    reports: list[KafkaError | None] = []
    producer = Producer(KafkaSettings.from_env(user_without_acls).client_config(
        **{"enable.idempotence": False, "acks": "all", "message.timeout.ms": 10000}))
    producer.produce(RAW_TOPIC, b"forged", on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(15)
    assert len(reports) == 1 and reports[0] is not None
    assert reports[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_user_without_acls_cannot_consume(user_without_acls):
    _authenticates(user_without_acls)
    consumer = Consumer(KafkaSettings.from_env(user_without_acls).client_config(
        **{"group.id": "auditseal-siem-intruder", "auto.offset.reset": "earliest"}))
    consumer.subscribe([SEALED_TOPIC])
    deadline = time.monotonic() + 15
    error = None
    while time.monotonic() < deadline and error is None:
        message = consumer.poll(1.0)
        if message is not None and message.error():
            error = message.error()
        elif message is not None:
            pytest.fail("a user without ACLs consumed a record from audit.sealed")
    consumer.close()
    assert error is not None
    assert error.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)
