"""Attacks 1 (a role's credential reset) and 2 (grant, act, revoke), against the real broker.

Each privileged act is recorded with its details by the access auditor (the KRaft metadata log names the user,
the ACL binding and the config key; the authorizer log names who was allowed), the detector's rules alert on
it, and ``acl check`` fails while a forbidden grant holds.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from pipeline.access.auditor import AccessAuditor
from pipeline.cli.acl import acl_apply, acl_check
from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_lock
from pipeline.permissions.acls import AclEntry
from pipeline.wire.topics import AUDIT_TOPICS, SEALED_TOPIC
from tests.support.access import RecordingProducer, detector_alerts, read_back

pytestmark = pytest.mark.stack

GRANTS = [AclEntry("cluster", "kafka-cluster", "literal", "User:admin", "alter_configs"),
          AclEntry("topic", SEALED_TOPIC, "literal", "User:admin", "alter_configs"),
          AclEntry("topic", SEALED_TOPIC, "literal", "User:sink", "delete")]


def _check(env) -> tuple[int, dict]:
    lines: list[str] = []
    code = acl_check(env=env, as_json=True, out=lines.append)
    return code, json.loads("\n".join(lines))


def _retention(admin: AdminClient) -> str:
    resource = ConfigResource(ResourceType.TOPIC, SEALED_TOPIC)
    return admin.describe_configs([resource])[resource].result(30)["retention.ms"].value


def _set_retention(admin: AdminClient, value: str) -> None:
    resource = ConfigResource(ResourceType.TOPIC, SEALED_TOPIC, incremental_configs=[
        ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(30)


def _wait(condition, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


def test_reset_and_grant_act_revoke_are_recorded_with_details_and_alerted(stack, role_env, tmp_path, monkeypatch):
    spool = tmp_path / "records.jsonl"
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(spool))
    admin_env = role_env("admin")
    admin = AdminClient(KafkaSettings.from_env(admin_env).client_config())
    setup = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    sink = AdminClient(KafkaSettings.from_env(role_env("sink")).client_config())
    metadata_dir = stack.root / "kafka" / "data" / "__cluster_metadata-0"
    with RecordingProducer(KafkaSettings.from_env(role_env("access-auditor"))) as producer:
        auditor = AccessAuditor(producer, authorizer_log=stack.authorizer_log, spool=spool,
                                state_file=tmp_path / "position.json", own_principal="User:access-auditor",
                                audit_topics=AUDIT_TOPICS, metadata_log=metadata_dir, start_at_end=True)
        original_retention = _retention(setup)
        with acl_lock(stack.root):
            try:
                # 1: the admin resets the sealer's password (locking it out at its next login)
                info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
                admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
                    "sealer", info, secrets.token_urlsafe(24).encode())])["sealer"].result(30)
                # 2: grant, act, revoke
                for future in admin.create_acls([g.to_binding() for g in GRANTS]).values():
                    future.result(30)
                _wait(lambda: _check(admin_env)[0] == 1, "acl check never saw the grants")
                code, report = _check(admin_env)
                broken = {r["name"]: r["breaches"] for r in report["rules"] if not r["holds"]}
                assert {"cluster_rights_as_declared", "no_destructive_rights_on_audit_topics"} <= set(broken)
                assert any("User:admin can change broker and logger configs" in b
                           for b in broken["cluster_rights_as_declared"])
                _wait(lambda: _try(lambda: _set_retention(admin, str(int(original_retention) + 1))),
                      "the admin could not use its ALTER_CONFIGS grant")
                partition = TopicPartition(SEALED_TOPIC, 0, 0)  # authorized, deletes nothing before offset 0
                _wait(lambda: _try(lambda: sink.delete_records([partition])[partition].result(30)),
                      "the sink could not use its DELETE grant")
                _set_retention(admin, original_retention)
            finally:
                for future in admin.delete_acls([g.to_filter() for g in GRANTS]).values():
                    future.result(30)
                _set_retention(setup, original_retention)
                # the repair, announced: acl apply --rotate puts the credentials file's password back
                assert acl_apply(env=admin_env, rotate=["sealer"], out=lambda _line: None) == 0
        _wait(lambda: _check(admin_env)[0] == 0, "acl check stayed red after the revoke")
        time.sleep(1.0)  # the broker writes its decisions just after answering
        auditor.run(once=True)
        events = read_back(role_env("sealer"), producer.results)

    metadata = [e for e in events if e["source_service"] == "kafka-metadata"]
    credentials = [e["attributes"] for e in metadata
                   if e["action"] == "user.credential_set" and e["resource"]["id"] == "sealer"]
    assert [(c["change"], c["rotation_announced"]) for c in credentials] == [("changed", "no"), ("changed", "yes")]
    created = {e["resource"]["id"] for e in metadata if e["action"] == "acl.create"}
    deleted = {e["resource"]["id"] for e in metadata if e["action"] == "acl.delete"}
    assert {"ALLOW User:admin ALTER_CONFIGS on cluster kafka-cluster",
            "ALLOW User:sink DELETE on topic audit.sealed"} <= created & deleted
    retention = [e["attributes"]["value"] for e in metadata if e["action"] == "config.set"
                 and e["resource"] == {"type": "kafka.topic", "id": SEALED_TOPIC}
                 and e["attributes"]["key"] == "retention.ms"]
    assert retention[:2] == [str(int(original_retention) + 1), original_retention]
    broker = [e for e in events if e["source_service"] == "kafka-broker"]
    assert any(e["actor"]["id"] == "User:sink" and e["action"] == "topic.delete"
               and e["attributes"]["request_api"] == "DeleteRecords" and e["outcome"]["status"] == "SUCCESS"
               for e in broker), "the sink's allowed DeleteRecords was not recorded"
    assert any(e["actor"]["id"] == "User:admin" and e["attributes"]["request_api"] == "AlterUserScramCredentials"
               for e in broker)

    alerts = [(a.rule, a.severity, a.principal) for a in detector_alerts(events)]
    assert ("credential_change", "CRITICAL", "User:sealer") in alerts
    assert ("credential_change", "INFO", "User:sealer") in alerts
    assert ("acl_change", "CRITICAL", "User:admin") in alerts
    assert ("acl_change", "CRITICAL", "User:sink") in alerts
    assert sum(rule == "destructive_act" and severity == "CRITICAL" for rule, severity, _p in alerts) >= 3


def _try(action) -> bool:
    try:
        action()
        return True
    except KafkaException:
        return False
