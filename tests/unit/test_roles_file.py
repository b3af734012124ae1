"""The roles file: the shipped one, and how a broken one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.dev.kafka import BOOTSTRAP_USER, BROKER_PRINCIPAL, SUPER_USERS
from pipeline.permissions.acls import desired_acls, role_allows
from pipeline.permissions.plan import is_managed
from pipeline.permissions.roles import MANDATORY_ROLES, Grant, RolesFileError, parse_roles
from pipeline.permissions.topology import role, roles, roles_file, roles_file_path
from pipeline.wire.topics import AUDIT_TOPICS, RAW_TOPIC, SEALED_TOPIC

SHIPPED = yaml.safe_load(roles_file_path().read_text())


def _parse(document: dict):
    return parse_roles(yaml.safe_dump(document), path=Path("roles.yaml"), raw_topic=RAW_TOPIC)


def _with(**changes) -> dict:
    document = yaml.safe_load(yaml.safe_dump(SHIPPED))
    document.update(changes)
    return document


def test_shipped_file_has_the_mandatory_roles_first():
    assert tuple(r.name for r in roles()[: len(MANDATORY_ROLES)]) == MANDATORY_ROLES


def test_shipped_super_users_are_the_brokers():
    assert set(roles_file().super_users) == {BROKER_PRINCIPAL, f"Cert:{BOOTSTRAP_USER}"} == set(SUPER_USERS)


def test_shipped_grants_keep_the_minimal_rights():
    assert role_allows(role("producer"), "topic", RAW_TOPIC, "write")
    assert not role_allows(role("producer"), "topic", RAW_TOPIC, "read")
    assert role_allows(role("sealer"), "topic", SEALED_TOPIC, "write")
    assert role_allows(role("sealer"), "group", "auditseal-sealer-7", "read")
    assert role_allows(role("siem"), "topic", SEALED_TOPIC, "read")
    assert not role_allows(role("siem"), "topic", SEALED_TOPIC, "write")
    assert role_allows(role("admin"), "cluster", "kafka-cluster", "alter")
    assert not any(role_allows(r, "topic", t, op) for r in roles() for t in AUDIT_TOPICS
                   for op in ("delete", "alter", "alter_configs"))
    assert role("sink").s3_access == "write" and role("siem").s3_access == "read"


def test_every_declared_acl_is_in_the_managed_scope():
    # otherwise apply could add an ACL it would never remove again
    assert all(is_managed(acl, roles_file()) for acl in desired_acls(roles()))


def test_a_service_gets_its_own_principal_with_the_producer_grants():
    roles = _parse(_with(services={"billing": {}, "payments": {"topic_prefix": "audit.raw.payments"}}))
    billing, payments = roles.role("svc-billing"), roles.role("svc-payments")
    assert billing.principal == "User:svc-billing" and billing.kind == "producer"
    assert set(billing.kafka) == set(roles.role("producer").kafka)
    assert Grant("topic", "audit.raw.payments", "write", "prefixed") in payments.kafka
    assert not role_allows(payments, "topic", RAW_TOPIC, "write")
    assert roles.principals_of_kind("producer") == {"User:producer", "User:svc-billing", "User:svc-payments"}


@pytest.mark.parametrize("change, message", [
    ({"services": {"billing": {"topic_prefix": "audit."}}}, "topic_prefix must start with 'audit.raw'"),
    ({"services": {"billing": {"topics": ["audit.raw"]}}}, "unknown key(s) topics"),
    ({"version": 2}, "version: expected 1"),
    ({"super_users": ["broker"]}, "a super user is a certificate principal like 'Cert:broker'"),
    ({"super_users": ["User:broker"]}, "could be taken over by anyone allowed to set a SCRAM password"),
    ({"super_users": ["Cert:admin"]}, "shares its name with a role"),
    ({"surprise": 1}, "unknown key(s) surprise"),
])
def test_broken_top_level_is_refused_naming_the_problem(change, message):
    with pytest.raises(RolesFileError) as raised:
        _parse(_with(**change))
    assert message in str(raised.value)


@pytest.mark.parametrize("grant, message", [
    ({"topic": "audit.raw", "operations": ["write", "destroy"]}, "unknown operation 'destroy'"),
    ({"topic": "audit.raw", "group": "g", "operations": ["read"]}, "name exactly one of"),
    ({"topic": "audit.raw", "pattern": "match", "operations": ["read"]}, "pattern: expected literal or prefixed"),
    ({"cluster": "other", "operations": ["alter"]}, "always the literal 'kafka-cluster'"),
    ({"topic": "audit.raw", "operations": []}, "list at least one operation"),
])
def test_broken_grant_is_refused_naming_role_and_entry(grant, message):
    document = _with()
    document["roles"]["siem"]["kafka"].append(grant)
    position = len(document["roles"]["siem"]["kafka"]) - 1
    with pytest.raises(RolesFileError) as raised:
        _parse(document)
    assert f"roles.siem.kafka[{position}]" in str(raised.value) and message in str(raised.value)


def test_missing_mandatory_role_is_refused():
    document = _with()
    del document["roles"]["verifier"]
    with pytest.raises(RolesFileError, match="mandatory role"):
        _parse(document)


def test_service_name_space_is_reserved():
    document = _with()
    document["roles"]["svc-x"] = {"kafka": []}
    with pytest.raises(RolesFileError, match="reserved for services"):
        _parse(document)
