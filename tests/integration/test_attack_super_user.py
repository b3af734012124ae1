"""Attack 1: the admin role sets a SCRAM password for a super user's name and logs in with it.

Super users are certificate principals (``Cert:broker``, ``Cert:bootstrap``); a SCRAM login is always a
``User:`` principal, so the planted credential gives a principal with no ACL at all: every destructive
act is refused, ``acl check`` fails while the credential exists, and ``dev up`` deletes it.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from pipeline.cli.acl import acl_check
from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_lock, provision_kafka
from pipeline.permissions.broker import read_state

pytestmark = pytest.mark.stack


def _check(env) -> tuple[int, dict]:
    lines: list[str] = []
    code = acl_check(env=env, as_json=True, out=lines.append)
    return code, json.loads("\n".join(lines))


def _plant(admin: AdminClient, name: str, password: str) -> None:
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    admin.alter_user_scram_credentials([UserScramCredentialUpsertion(name, info, password.encode())])[name].result(30)


def _remove(admin: AdminClient, name: str) -> None:
    deletion = UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_512)
    try:
        admin.alter_user_scram_credentials([deletion])[name].result(30)
    except KafkaException as exc:
        assert exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND


def _error_code(future) -> int | None:
    try:
        future.result(timeout=30)
    except KafkaException as exc:
        return exc.args[0].code()
    return None


REFUSED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._NOENT, KafkaError._UNKNOWN_PARTITION, KafkaError.UNKNOWN_TOPIC_OR_PART)


def _low_watermarks(stack) -> list[int]:
    consumer = Consumer(KafkaSettings.from_env(stack.setup_env("kafka")).client_config(**{"group.id": "auditseal-probe"}))
    try:
        return [consumer.get_watermark_offsets(TopicPartition("audit.sealed", p), timeout=10)[0] for p in range(6)]
    finally:
        consumer.close()


def _login(role_env, name: str, password: str) -> AdminClient:
    env = dict(role_env("admin"), AUDITSEAL_SASL_USERNAME=name, AUDITSEAL_SASL_PASSWORD=password)
    admin = AdminClient(KafkaSettings.from_env(env).client_config())
    deadline = time.monotonic() + 20
    while True:  # the credential spreads through the metadata log first
        try:
            admin.list_topics(timeout=5)
            return admin
        except KafkaException:
            assert time.monotonic() < deadline, f"SCRAM login as {name} never succeeded"
            time.sleep(0.3)


@pytest.mark.parametrize("name", ["broker", "bootstrap"])
def test_a_password_for_a_super_users_name_gives_no_power(stack, role_env, name):
    attacker = AdminClient(KafkaSettings.from_env(role_env("admin")).client_config())
    setup = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    password = secrets.token_urlsafe(24)
    with acl_lock(stack.root):
        try:
            _plant(attacker, name, password)  # admin may set credentials: this part is not refused
            intruder = _login(role_env, name, password)

            # ...but the login is User:<name>, which is no super user and holds no ACL
            low_before = _low_watermarks(stack)
            partition = TopicPartition("audit.sealed", 0, -1)
            # librdkafka may refuse up front: without DESCRIBE the partition is not even in its metadata
            assert _error_code(intruder.delete_records([partition])[partition]) in REFUSED
            retention = ConfigResource(ResourceType.TOPIC, "audit.sealed", incremental_configs=[
                ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
            assert _error_code(intruder.incremental_alter_configs([retention])[retention]) in (
                KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)
            assert _error_code(intruder.delete_topics(["audit.alerts"])["audit.alerts"]) == \
                KafkaError.TOPIC_AUTHORIZATION_FAILED
            assert "audit.alerts" in setup.list_topics(timeout=10).topics
            assert _low_watermarks(stack) == low_before

            # acl check fails while the credential exists, naming it
            code, report = _check(role_env("admin"))
            assert code == 1
            rule = next(r for r in report["rules"] if r["name"] == "no_scram_credential_for_super_users")
            assert not rule["holds"] and any(repr(name) in breach for breach in rule["breaches"])
            assert next(r for r in report["rules"] if r["name"] == "super_users_certificate_only")["holds"]

        except BaseException:
            _remove(setup, name)
            raise
    # dev up's provisioning deletes it (it must not exist even unusable), and the check is green again
    lines: list[str] = []
    provision_kafka(stack.setup_env("kafka"), stack.credentials(), log=lines.append)
    assert any(f"named like a super user: {name}" in line for line in lines), lines
    assert name not in read_state(setup).users
    code, report = _check(role_env("admin"))
    assert code == 0, report
