"""Parsing the broker's authorizer decisions and mapping them to AuditEvents."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pipeline.access.authorizer_log import decision_event, entry_event_id, is_audited, parse_decision
from pipeline.wire.topics import AUDIT_TOPICS
from pipeline.wire.validation import validate_event

DENIED = ("[2026-11-26T05:36:34.369Z] INFO Principal = User:producer is Denied operation = DESCRIBE from host = "
          "127.0.0.1 on resource = Topic:LITERAL:audit.sealed for request = Metadata with resourceRefCount = 1 "
          "based on rule DefaultDeny (kafka.authorizer.logger)")
ALLOWED = ("[2026-11-26T06:36:24.042+01:00] DEBUG Principal = User:sealer is Allowed operation = READ from host = "
           "::1 on resource = Topic:LITERAL:audit.raw for request = Fetch with resourceRefCount = 1 based on rule "
           "MatchingAcl(acl=StandardAcl[resourceType=TOPIC, resourceName=audit.raw, patternType=LITERAL, "
           "principal=User:sealer, host=*, operation=READ, permissionType=ALLOW]) (kafka.authorizer.logger)")
LOCAL_TIME = ("[2026-11-26 05:35:42,656] DEBUG Principal = User:bootstrap is Allowed operation = ALTER from host = "
              "127.0.0.1 on resource = Cluster:LITERAL:kafka-cluster for request = CreateAcls with resourceRefCount "
              "= 1 based on rule SuperUser (kafka.authorizer.logger)")
GROUP = ("[2026-11-26T05:36:34.786Z] INFO Principal = User:noacl-e8 is Denied operation = DESCRIBE from host = "
         "127.0.0.1 on resource = Group:LITERAL:auditseal-siem intruder for request = FindCoordinator with "
         "resourceRefCount = 1 based on rule DefaultDeny (kafka.authorizer.logger)")


def _micros(moment: datetime) -> int:
    return round(moment.timestamp() * 1_000_000)


def test_denied_decision():
    decision = parse_decision(DENIED)
    assert decision is not None
    assert (decision.principal, decision.allowed, decision.operation, decision.resource_type, decision.resource,
            decision.request, decision.rule, decision.host, decision.pattern) == (
        "User:producer", False, "describe", "topic", "audit.sealed", "Metadata", "DefaultDeny", "127.0.0.1", "LITERAL")
    assert decision.occurred_at == _micros(datetime(2026, 11, 26, 5, 36, 34, 369000, tzinfo=timezone.utc))


def test_allowed_decision_with_offset_and_acl_rule():
    decision = parse_decision(ALLOWED)
    assert decision.allowed and decision.operation == "read" and decision.host == "::1"
    assert decision.rule.startswith("MatchingAcl(acl=StandardAcl[resourceType=TOPIC")
    assert decision.occurred_at == _micros(datetime(2026, 11, 26, 5, 36, 24, 42000, tzinfo=timezone.utc))


def test_log4j_default_timestamp_is_local_time():
    decision = parse_decision(LOCAL_TIME)
    assert decision.occurred_at == _micros(datetime(2026, 11, 26, 5, 35, 42, 656000).astimezone())
    assert decision.resource_type == "cluster" and decision.request == "CreateAcls"


def test_group_names_may_contain_spaces():
    assert parse_decision(GROUP).resource == "auditseal-siem intruder"


@pytest.mark.parametrize("line", ["", "[2026-11-26T05:36:34.369Z] INFO something else (kafka.authorizer.logger)",
                                  DENIED.replace("[2026-11-26T05:36:34.369Z]", "[yesterday]"),
                                  "\tat org.apache.kafka.Foo.bar(Foo.java:1)"])
def test_other_lines_are_not_decisions(line):
    assert parse_decision(line) is None


@pytest.mark.parametrize("line, principal, audited", [
    (DENIED, None, True),
    (ALLOWED, None, True),
    (LOCAL_TIME, None, True),  # a change of ACLs, by anyone (super users included)
    (GROUP, None, True),
    (DENIED.replace("audit.sealed", "orders"), None, False),
    (LOCAL_TIME.replace("CreateAcls", "Metadata").replace("ALTER", "DESCRIBE"), None, False),
    (LOCAL_TIME.replace("CreateAcls", "Metadata"), None, True),  # any cluster right beyond DESCRIBE is privileged
    (GROUP.replace("auditseal-siem intruder", "orders-app"), None, False),
])
def test_which_decisions_are_audited(line, principal, audited):
    assert is_audited(parse_decision(line), audit_topics=AUDIT_TOPICS, routine_principals={"Cert:broker"}) is audited


def _allowed(operation: str, resource: str, request: str, principal: str = "User:sealer") -> str:
    return ALLOWED.replace("operation = READ", f"operation = {operation}").replace(
        "Topic:LITERAL:audit.raw", resource).replace("request = Fetch", f"request = {request}").replace(
        "User:sealer is", f"{principal} is")


@pytest.mark.parametrize("line, audited", [
    (ALLOWED, False),  # the sealer reading raw: routine
    (DENIED.replace("User:producer", "User:sealer"), True),  # a routine principal's denial is never routine
    (_allowed("DELETE", "Topic:LITERAL:audit.sealed", "DeleteRecords", "User:sink"), True),
    (_allowed("ALTER_CONFIGS", "Topic:LITERAL:audit.sealed", "IncrementalAlterConfigs"), True),
    (_allowed("WRITE", "TransactionalId:LITERAL:auditseal-sealer-audit.raw-0", "InitProducerId"), True),  # fencing
    (_allowed("WRITE", "TransactionalId:LITERAL:auditseal-sealer-audit.raw-0", "AddPartitionsToTxn"), False),
    (_allowed("WRITE", "TransactionalId:LITERAL:auditseal-sealer-audit.raw-0", "InitProducerId", "User:mallory"),
     True),
    (_allowed("CLUSTER_ACTION", "Cluster:LITERAL:kafka-cluster", "Fetch", "Cert:broker"), False),
    (_allowed("DELETE", "Topic:LITERAL:audit.alerts", "DeleteTopics", "Cert:broker"), True),  # whatever the principal
    (_allowed("WRITE", "Topic:LITERAL:audit.raw", "Produce", "User:access-auditor"), False),  # the auditor's own
])
def test_routine_principals_lose_only_their_routine_requests(line, audited):
    routine = {"User:sealer", "User:sink", "Cert:broker", "User:access-auditor"}
    assert is_audited(parse_decision(line), audit_topics=AUDIT_TOPICS, routine_principals=routine) is audited


def test_event_of_a_denial_is_a_valid_audit_event():
    event = decision_event(parse_decision(DENIED), entry_event_id("f" * 64, 120, DENIED.encode()))
    validate_event(event)
    assert event["actor"] == {"id": "User:producer", "type": "SERVICE", "source_ip": "127.0.0.1"}
    assert event["action"] == "topic.describe"
    assert event["resource"] == {"type": "kafka.topic", "id": "audit.sealed"}
    assert event["outcome"] == {"status": "DENIED", "reason": "DefaultDeny"}
    assert event["source_service"] == "kafka-broker"
    assert event["attributes"] == {"host": "127.0.0.1", "request_api": "Metadata", "resource_pattern": "LITERAL",
                                   "rule": "DefaultDeny"}
    allowed = decision_event(parse_decision(ALLOWED), entry_event_id("f" * 64, 0, ALLOWED.encode()))
    validate_event(allowed)
    assert allowed["outcome"]["status"] == "SUCCESS"


def test_event_ids_are_stable_per_entry_and_distinct_for_identical_text():
    line = DENIED.encode()
    assert entry_event_id("a" * 64, 10, line) == entry_event_id("a" * 64, 10, line)
    assert entry_event_id("a" * 64, 10, line) != entry_event_id("a" * 64, 500, line)
    assert entry_event_id("a" * 64, 10, line) != entry_event_id("b" * 64, 10, line)


def test_a_failed_authentication_line_becomes_a_denied_event():
    from pipeline.access.authentication_log import failed_authentication_event, parse_failed_authentication

    line = ("[2026-12-01T19:35:43.674+00:00] INFO [SocketServer listenerType=BROKER, nodeId=1] Failed authentication "
            "with /127.0.0.1 (channelId=127.0.0.1:20300-127.0.0.1:56788-1-47) (Authentication failed during "
            "authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512) "
            "(org.apache.kafka.common.network.Selector)")
    failure = parse_failed_authentication(line)
    assert (failure.address, failure.listener, failure.mechanism) == ("127.0.0.1", "127.0.0.1:20300", "SCRAM-SHA-512")
    event = failed_authentication_event(failure, "7c4b1a4e-5d2f-4c55-9a0e-1f3b2c4d5e6f")
    validate_event(event)
    assert event["actor"]["id"] == "unauthenticated@127.0.0.1" and event["outcome"]["status"] == "DENIED"
    ssl = line.replace("Authentication failed during authentication due to invalid credentials with SASL mechanism "
                       "SCRAM-SHA-512", "SSL handshake failed")
    assert parse_failed_authentication(ssl).mechanism == "TLS"
    assert parse_failed_authentication("[2026-12-01T19:35:43.674+00:00] INFO something else") is None
