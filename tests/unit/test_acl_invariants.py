"""Separation-of-duties rules over a set of ACLs."""

from __future__ import annotations

import pytest

from pipeline.permissions.acls import AclEntry, desired_acls
from pipeline.permissions.invariants import check_invariants
from pipeline.permissions.topology import roles, roles_file
from pipeline.wire.topics import AUDIT_TOPICS, RAW_TOPIC, SEALED_TOPIC


def _check(*extra: AclEntry):
    return check_invariants(desired_acls(roles()) | set(extra), roles_file(), raw_topic=RAW_TOPIC,
                            sealed_topic=SEALED_TOPIC, audit_topics=AUDIT_TOPICS)


def _acl(principal, operation, name="audit.raw", resource="topic", pattern="literal", permission="allow"):
    return AclEntry(resource, name, pattern, principal, operation, permission)


def test_the_shipped_roles_satisfy_every_rule():
    report = _check()
    assert report.passed, report.as_dict()
    assert {r.name for r in report.rules} == {
        "no_destructive_rights_on_audit_topics", "no_principal_writes_and_deletes", "only_sealer_writes_sealed",
        "only_producers_write_raw", "only_origin_writes", "readers_cannot_write", "cluster_rights_as_declared",
        "only_privacy_roles_read_keys"}
    assert report.super_users == ("Cert:broker", "Cert:bootstrap")
    assert any("User:admin" in note and "cluster ALTER" in note for note in report.notes)


@pytest.mark.parametrize("acl, rule, named", [
    (_acl("User:admin", "delete"), "no_destructive_rights_on_audit_topics", "User:admin can delete"),
    (_acl("User:admin", "alter_configs", name="audit.", pattern="prefixed"), "no_destructive_rights_on_audit_topics",
     "of audit.raw, audit.sealed, audit.alerts"),
    (_acl("User:ops", "alter", name="*"), "no_destructive_rights_on_audit_topics", "User:ops can alter"),
    (_acl("User:sealer", "all", name="audit.sealed"), "no_principal_writes_and_deletes", "User:sealer can write"),
    (_acl("User:producer", "delete", name="scratch"), "no_principal_writes_and_deletes", "User:producer"),
    (_acl("User:producer", "write", name="audit.sealed"), "only_sealer_writes_sealed", "User:producer can write"),
    (_acl("User:*", "write", name="audit.s", pattern="prefixed"), "only_sealer_writes_sealed", "User:*"),
    (_acl("User:sealer", "write"), "only_producers_write_raw", "User:sealer can write audit.raw"),
    # authenticated origin: each origin topic has one writer, and its components no longer write audit.raw
    (_acl("User:access-auditor", "write"), "only_producers_write_raw", "User:access-auditor can write audit.raw"),
    (_acl("User:detector", "write"), "only_producers_write_raw", "User:detector can write audit.raw"),
    (_acl("User:producer", "write", name="audit.access"), "only_origin_writes", "User:producer can write audit.access"),
    (_acl("User:svc-billing", "write", name="audit.ac", pattern="prefixed"), "only_origin_writes",
     "User:svc-billing can write audit.access"),
    (_acl("User:producer", "write", name="audit.verification"), "only_origin_writes",
     "User:producer can write audit.verification"),
    (_acl("User:access-auditor", "write", name="audit.verification"), "only_origin_writes",
     "User:access-auditor can write audit.verification"),
    (_acl("User:verifier", "write", name="audit.access"), "only_origin_writes", "User:verifier can write audit.access"),
    (_acl("User:producer", "write", name="audit.detection"), "only_origin_writes",
     "User:producer can write audit.detection"),
    (_acl("User:*", "write", name="audit.alerts"), "only_origin_writes", "User:* can write audit.alerts"),
    (_acl("User:producer", "write", name="audit.reconciliation"), "only_origin_writes",
     "User:producer can write audit.reconciliation"),
    (_acl("User:reconciler", "write", name="audit.sealed.access"), "only_sealer_writes_sealed",
     "User:reconciler can write audit.sealed.access"),
    (_acl("User:siem", "write", name="scratch"), "readers_cannot_write", "siem (declared without any write)"),
    (_acl("User:*", "write", name="scratch"), "readers_cannot_write", "sink (declared without any write)"),
    (_acl("User:siem", "read", name="audit.keys"), "only_privacy_roles_read_keys", "User:siem can read audit.keys"),
    (_acl("User:*", "read", name="audit.k", pattern="prefixed"), "only_privacy_roles_read_keys", "User:*"),
    (_acl("User:sink", "all", name="audit.keys"), "only_privacy_roles_read_keys", "User:sink"),
])
def test_each_breach_is_caught_and_named(acl, rule, named):
    report = _check(acl)
    assert not report.passed
    assert rule in report.failed()
    broken = next(r for r in report.rules if r.name == rule)
    assert any(named in breach for breach in broken.breaches), broken.breaches


def test_a_deny_does_not_excuse_an_allow():
    report = _check(_acl("User:admin", "delete"), _acl("User:admin", "delete", permission="deny"))
    assert report.failed() == ["no_destructive_rights_on_audit_topics"]


def test_harmless_acls_of_other_applications_pass():
    assert _check(_acl("User:orders", "write", name="orders"), _acl("User:orders", "read", name="orders")).passed


def test_unknown_principals_are_noted():
    report = _check(_acl("User:mallory", "read", name="audit.sealed"))
    assert report.passed
    assert any("User:mallory" in note for note in report.notes)


GOOD_BROKER = {"principal.builder.class": "dev.auditseal.kafka.CertificatePrincipalBuilder",
               "listener.security.protocol.map": "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL",
               "sasl.enabled.mechanisms": "SCRAM-SHA-512", "super.users": None}


def _super_check(users=("admin", "sealer"), broker=GOOD_BROKER, configured=("Cert:broker", "Cert:bootstrap")):
    return check_invariants(desired_acls(roles()), roles_file(), raw_topic=RAW_TOPIC, sealed_topic=SEALED_TOPIC,
                            audit_topics=AUDIT_TOPICS, users=users, brokers={"1": broker},
                            configured_super_users=configured)


def _breaches(report, rule):
    return next(r for r in report.rules if r.name == rule).breaches


def test_super_user_rules_hold_on_the_shipped_stack_layout():
    report = _super_check()
    assert report.passed, report.as_dict()
    assert {"super_users_certificate_only", "no_scram_credential_for_super_users",
            "super_users_as_declared"} <= {r.name for r in report.rules}


@pytest.mark.parametrize("kwargs, rule, named", [
    ({"users": ("admin", "broker")}, "no_scram_credential_for_super_users", "SCRAM user 'broker'"),
    ({"users": ("bootstrap",)}, "no_scram_credential_for_super_users", "super user Cert:bootstrap"),
    ({"broker": {**GOOD_BROKER, "principal.builder.class":
                 "org.apache.kafka.common.security.authenticator.DefaultKafkaPrincipalBuilder"}},
     "super_users_certificate_only", "DefaultKafkaPrincipalBuilder"),
    ({"broker": {**GOOD_BROKER, "listener.security.protocol.map": "CLIENT:SASL_SSL,OPEN:PLAINTEXT"}},
     "super_users_certificate_only", "listener OPEN uses PLAINTEXT"),
    ({"broker": {**GOOD_BROKER, "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN"}},
     "super_users_certificate_only", "PLAIN"),
    ({"configured": ("Cert:broker", "Cert:bootstrap", "User:admin")}, "super_users_as_declared",
     "super.users has User:admin"),
    ({"configured": ("Cert:broker",)}, "super_users_as_declared", "Cert:bootstrap is declared but not"),
])
def test_each_way_to_a_super_user_fails_its_rule(kwargs, rule, named):
    report = _super_check(**kwargs)
    assert not report.passed and report.failed() == [rule]
    assert any(named in breach for breach in _breaches(report, rule)), _breaches(report, rule)


@pytest.mark.parametrize("acl, named", [
    (_acl("User:admin", "alter_configs", name="kafka-cluster", resource="cluster"), "broker and logger configs"),
    (_acl("User:siem", "all", name="kafka-cluster", resource="cluster"), "every cluster right"),
    (_acl("User:sealer", "cluster_action", name="kafka-cluster", resource="cluster"), "internal requests"),
    (_acl("User:siem", "alter", name="kafka-cluster", resource="cluster"), "User:siem holds cluster ALTER"),
])
def test_cluster_rights_beyond_the_file_fail(acl, named):
    report = check_invariants(desired_acls(roles()) | {acl}, roles_file(), raw_topic=RAW_TOPIC,
                              sealed_topic=SEALED_TOPIC, audit_topics=AUDIT_TOPICS)
    assert "cluster_rights_as_declared" in report.failed()
    assert any(named in breach for breach in _breaches(report, "cluster_rights_as_declared"))
def test_a_role_without_scram_credential_is_a_breach():
    from pipeline.permissions.invariants import every_role_has_credential

    names = [r.name for r in roles()]
    assert every_role_has_credential(roles_file(), names).holds
    rule = every_role_has_credential(roles_file(), [n for n in names if n not in ("sealer", "sink")] + ["alice"])
    assert rule.name == "every_role_has_credential" and not rule.holds
    assert [b.split()[0] for b in rule.breaches] == ["User:sealer", "User:sink"]
