"""The role matrix: for every role and operation, the live broker allows or denies exactly as the roles
file says, and a denial reaches the caller as an authorization error.

No probe changes an audit topic, whatever the broker decides:
- produce sends a record larger than the topic's ``max.message.bytes``: the broker checks WRITE
  first (TOPIC_AUTHORIZATION_FAILED) and only then the size (MSG_SIZE_TOO_LARGE), so an allowed
  write is proven without a record being appended;
- consume starts at the end of a partition (an allowed read ends in end-of-partition);
- delete records deletes "before offset 0", which removes nothing even if allowed;
- alter configs is sent with ``validate_only``;
- delete topic is sent for real, so it runs only after the roles file and the live ACLs were both
  shown to grant nobody DELETE on an audit topic;
- create ACLs creates a harmless ACL on a scratch topic, removed again at once.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)

from pipeline.config import KafkaSettings
from pipeline.permissions.acls import role_allows
from pipeline.permissions.broker import read_state
from pipeline.permissions.invariants import check_invariants
from pipeline.permissions.topology import role, role_names, roles_file
from pipeline.producer.client import AuditProducer, AuthorizationError, UndeliveredEventsError
from pipeline.producer.event import new_event
from pipeline.wire.topics import AUDIT_TOPICS, RAW_TOPIC, SEALED_TOPIC

pytestmark = pytest.mark.stack

ALLOWED, DENIED = "allowed", "denied"
AUTHORIZATION_ERRORS = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)
PROBE_BYTES = 1_200_000  # above the audit topics' max.message.bytes (1 MiB)


def _denied_or(error: KafkaError | None, allowed_code: int | None = None) -> str:
    """ALLOWED for no error (or the error that only follows a positive authorization), DENIED for an
    authorization error, anything else spelled out so the comparison fails visibly."""
    if error is None or error.code() == allowed_code:
        return ALLOWED
    if error.code() in AUTHORIZATION_ERRORS:
        return DENIED
    return f"unexpected {error.name()}: {error.str()[:120]}"


def _error(future) -> KafkaError | None:
    try:
        future.result(timeout=30)
        return None
    except KafkaException as exc:
        return exc.args[0]


def _topic_visible(admin_or_client, topic: str) -> KafkaError | None:
    return admin_or_client.list_topics(topic, timeout=10).topics[topic].error


def probe_produce(env) -> dict[str, str]:
    reports: dict[str, KafkaError | None] = {}
    producer = Producer(KafkaSettings.from_env(env).client_config(**{
        "enable.idempotence": False, "acks": "all", "compression.type": "none", "message.max.bytes": 3_000_000,
        "message.timeout.ms": 15_000, "retries": 0}))
    payload = os.urandom(PROBE_BYTES)
    for topic in AUDIT_TOPICS:
        producer.produce(topic, payload, on_delivery=lambda err, msg, t=topic: reports.__setitem__(t, err))
    assert producer.flush(30) == 0
    outcome = {}
    for topic, error in reports.items():
        if error is None:
            pytest.fail(f"a {PROBE_BYTES}-byte probe was appended to {topic}: max.message.bytes is not enforced")
        outcome[topic] = _denied_or(error, allowed_code=KafkaError.MSG_SIZE_TOO_LARGE)
    return outcome


def probe_consume(env) -> dict[str, str]:
    outcome = {}
    for topic in AUDIT_TOPICS:
        consumer = Consumer(KafkaSettings.from_env(env).client_config(**{
            "group.id": f"auditseal-matrix-{secrets.token_hex(3)}", "enable.auto.commit": False,
            "enable.partition.eof": True}))
        try:
            # without DESCRIBE the topic is invisible and nothing can be fetched from it
            error = _topic_visible(consumer, topic)
            if error is not None:
                outcome[topic] = _denied_or(error)
                continue
            consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
            deadline = time.monotonic() + 15
            while topic not in outcome:
                if time.monotonic() > deadline:
                    outcome[topic] = "no answer within 15s"
                    break
                message = consumer.poll(0.5)
                if message is None or (message.error() and message.error().code()
                                       == KafkaError.GROUP_AUTHORIZATION_FAILED):
                    continue  # the probe group is not the point; the topic fetch is
                code = message.error().code() if message.error() else None
                outcome[topic] = ALLOWED if code in (None, KafkaError._PARTITION_EOF) else _denied_or(message.error())
        finally:
            consumer.close()
    return outcome


def probe_delete_records(env) -> dict[str, str]:
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    outcome = {}
    for topic in AUDIT_TOPICS:
        invisible = _topic_visible(admin, topic)
        if invisible is not None:  # the request cannot even be routed to the partition leader
            outcome[topic] = _denied_or(invisible)
            continue
        futures = admin.delete_records([TopicPartition(topic, 0, 0)], operation_timeout=10)
        outcome[topic] = _denied_or(_error(next(iter(futures.values()))))
    return outcome


def probe_alter_configs(env) -> dict[str, str]:
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    resources = [ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)]) for topic in AUDIT_TOPICS]
    futures = admin.incremental_alter_configs(resources, validate_only=True)
    return {resource.name: _denied_or(_error(future)) for resource, future in futures.items()}


def probe_delete_topic(env) -> dict[str, str]:
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    futures = admin.delete_topics(list(AUDIT_TOPICS), operation_timeout=10)
    outcome = {}
    for topic, future in futures.items():
        error = _error(future)
        if error is None:
            pytest.fail(f"{env['AUDITSEAL_SASL_USERNAME']} DELETED {topic}")
        outcome[topic] = _denied_or(error)
    return outcome


def probe_create_acls(env, stack) -> dict[str, str]:
    binding = AclBinding(ResourceType.TOPIC, f"matrix.scratch.{secrets.token_hex(4)}", ResourcePatternType.LITERAL,
                         "User:matrix-probe", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    try:
        return {"cluster": _denied_or(_error(admin.create_acls([binding])[binding]))}
    finally:
        setup = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
        scratch = AclBindingFilter(binding.restype, binding.name, binding.resource_pattern_type, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)
        setup.delete_acls([scratch])[scratch].result(timeout=30)


def _expected(role_name: str, resource: str, operation: str) -> dict[str, str]:
    names = ["kafka-cluster"] if resource == "cluster" else AUDIT_TOPICS
    keys = ["cluster"] if resource == "cluster" else AUDIT_TOPICS
    return {key: ALLOWED if role_allows(role(role_name), resource, name, operation) else DENIED
            for key, name in zip(keys, names, strict=False)}


PROBES: dict[str, tuple[Callable, str, str]] = {
    "produce": (probe_produce, "topic", "write"),
    "consume": (probe_consume, "topic", "read"),
    "delete_records": (probe_delete_records, "topic", "delete"),
    "alter_configs": (probe_alter_configs, "topic", "alter_configs"),
    "delete_topic": (probe_delete_topic, "topic", "delete"),
    "create_acls": (probe_create_acls, "cluster", "alter"),
}


@pytest.fixture(scope="module")
def nobody_may_delete_audit_topics(stack):
    """Both the file and the live broker grant nobody a destructive right, or delete_topic is not probed."""
    for name in role_names():
        for topic in AUDIT_TOPICS:
            assert not role_allows(role(name), "topic", topic, "delete"), f"roles file lets {name} delete {topic}"
    live = read_state(AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config()))
    report = check_invariants(live.acls, roles_file(), raw_topic=RAW_TOPIC, sealed_topic=SEALED_TOPIC,
                              audit_topics=AUDIT_TOPICS)
    rule = next(r for r in report.rules if r.name == "no_destructive_rights_on_audit_topics")
    assert rule.holds, f"refusing to probe topic deletion: {rule.breaches}"


@pytest.mark.parametrize("operation", list(PROBES))
@pytest.mark.parametrize("role_name", role_names())
def test_broker_decides_as_the_roles_file_says(stack, role_env, role_name, operation, request):
    probe, resource, acl_operation = PROBES[operation]
    if operation == "delete_topic":
        request.getfixturevalue("nobody_may_delete_audit_topics")
    env = role_env(role_name)
    actual = probe(env, stack) if operation == "create_acls" else probe(env)
    assert actual == _expected(role_name, resource, acl_operation)


@pytest.mark.parametrize("role_name", [n for n in role_names() if not role_allows(role(n), "topic", RAW_TOPIC, "write")])
def test_audit_producer_reports_a_denied_write_as_an_authorization_error(role_env, role_name):
    event = new_event(actor={"id": "matrix", "type": "SYSTEM"}, action="matrix.probe",
                      resource={"type": "test", "id": "1"}, outcome={"status": "SUCCESS"}, source_service="matrix")
    producer = AuditProducer(KafkaSettings.from_env(role_env(role_name)))
    producer.emit(event)
    with pytest.raises((AuthorizationError, UndeliveredEventsError)) as raised:
        producer.close(15)
    error = raised.value
    if isinstance(error, UndeliveredEventsError):
        assert error.failures[0].kafka_error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert f"{role_name!r}" in str(error) and RAW_TOPIC in str(error)
