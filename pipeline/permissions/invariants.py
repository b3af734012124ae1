"""Separation-of-duties rules, proved over the broker's live ACLs (``auditseal acl check``).

Pure: :func:`check_invariants` takes every ACL on the broker and the roles file, and says for each
rule whether it holds and, if not, which principal breaks it through which ACL. The rules follow
DESIGN.md, "Permission model" (anchors: Kafka's StandardAuthorizer, AWS IAM separation of duties):

- nobody may delete or alter the audit topics or delete their records: no ALLOW of DELETE, ALTER,
  ALTER_CONFIGS or ALL whose pattern (literal, ``*`` or prefixed) matches an audit topic;
- no principal holds both a write and a delete right (WRITE/ALL and DELETE/ALL on any topic,
  counting ``User:*`` ACLs as everybody's);
- only the sealer writes ``audit.sealed`` and its twins ``audit.sealed.<origin>``; only producers and the
  privacy role (erasure records) write ``audit.raw``;
- each origin topic is written by its own component only (:data:`ORIGIN_WRITERS`): access events by the
  access auditor, verification records by the verifier, alert events and alerts by the detector,
  attestations by the reconciler; so the topic a sealed entry came from names its authenticated source;
- readers cannot write: a role the file gives no topic write holds none on the broker either;
- cluster rights are only the file's: nobody holds ALTER_CONFIGS, ALL or CLUSTER_ACTION on the cluster (they
  change broker and logger configs, e.g. silence the authorizer log), and cluster ALTER/CREATE only where
  the file grants it;
- super users are reachable by certificate only: every broker runs the certificate principal builder
  (``Cert:`` principals for certificates, ``User:`` for SCRAM; it refuses a ``User:`` super user), only
  mutual-TLS and SCRAM listeners exist, no SCRAM credential carries a super user's name, and, where the
  broker's ``server.properties`` can be read, ``super.users`` is exactly the file's;
- only the privacy and investigator roles read the data subjects' keys (``audit.keys``).

The check is conservative: DENY ACLs are not credited, because a DENY can be removed as easily as
the ALLOW it hides, and a rule must hold on the ALLOWs alone. Super users bypass ACLs altogether;
the broker does not reveal ``super.users`` over the admin API, so the report names the ones the
roles file declares as the documented exception.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.permissions.acls import WILDCARD_PRINCIPAL, AclEntry
from pipeline.permissions.roles import CERTIFICATE_PRINCIPAL_TYPE, RolesFile
from pipeline.wire.topics import (
    ACCESS_TOPIC,
    ALERTS_TOPIC,
    DETECTION_TOPIC,
    KEYS_TOPIC,
    ORIGIN_TOPICS,
    RECONCILIATION_TOPIC,
    VERIFICATION_TOPIC,
    sealed_topic_of,
)

ORIGIN_WRITERS = {
    ACCESS_TOPIC: ("access-auditor",),
    VERIFICATION_TOPIC: ("verifier",),
    DETECTION_TOPIC: ("detector",),
    ALERTS_TOPIC: ("detector",),
    RECONCILIATION_TOPIC: ("reconciler",),
}
"""Origin topic -> the role kinds that alone may write it (``only_origin_writes``)."""

PRINCIPAL_BUILDER = "dev.auditseal.kafka.CertificatePrincipalBuilder"
# cluster operations nobody may hold: broker/logger config changes, and the brokers' own RPCs
FORBIDDEN_CLUSTER_OPERATIONS = {
    "alter_configs": "can change broker and logger configs (e.g. silence the authorizer log)",
    "all": "holds every cluster right, config changes included",
    "cluster_action": "can make the brokers' internal requests",
}
SAFE_PROTOCOLS = ("SSL", "SASL_SSL")

DESTRUCTIVE_OPERATIONS = {
    "delete": "can delete the topic and its records",
    "alter": "can alter the topic (add partitions)",
    "alter_configs": "can change the topic's configuration (retention, cleanup policy)",
    "all": "holds every right on the topic, deletion included",
}
WRITE_OPERATIONS = ("write", "all")
DELETE_OPERATIONS = ("delete", "all")


@dataclass(frozen=True)
class RuleResult:
    """One rule: its name, what it demands, and each breach found (empty when it holds)."""

    name: str
    description: str
    breaches: tuple[str, ...]

    @property
    def holds(self) -> bool:
        """True when no breach was found."""
        return not self.breaches


@dataclass(frozen=True)
class CheckReport:
    """The result of every rule, plus notes (super users, who can change ACLs, unknown principals)."""

    rules: tuple[RuleResult, ...]
    super_users: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def passed(self) -> bool:
        """True when every rule holds."""
        return all(rule.holds for rule in self.rules)

    def failed(self) -> list[str]:
        """Names of the rules that do not hold."""
        return [rule.name for rule in self.rules if not rule.holds]

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "passed": self.passed,
            "rules": [{"name": r.name, "holds": r.holds, "description": r.description, "breaches": list(r.breaches)}
                      for r in self.rules],
            "super_users": list(self.super_users),
            "notes": list(self.notes),
        }


def check_invariants(
    acls: Iterable[AclEntry], roles: RolesFile, *, raw_topic: str, sealed_topic: str, audit_topics: Iterable[str],
    users: Iterable[str] | None = None, brokers: Mapping[str, Mapping[str, str | None]] | None = None,
    configured_super_users: Iterable[str] | None = None,
) -> CheckReport:
    """Prove the separation-of-duties rules over ``acls`` (every ACL on the broker); with ``users`` (SCRAM
    user names) and ``brokers`` (:func:`~pipeline.permissions.broker.read_broker_security`) also the super-user
    rules; ``configured_super_users`` is ``super.users`` as read from the broker's own configuration file
    (None: not readable here, since the admin API hides it)."""
    allows = sorted(a for a in acls if a.permission == "allow")
    audit_topics = tuple(audit_topics)
    rules = (
        _no_destructive_rights(allows, audit_topics),
        _no_write_and_delete(allows),
        _only_writers(allows, (sealed_topic, *(sealed_topic_of(t) for t in ORIGIN_TOPICS)),
                      roles.principals_of_kind("sealer"), "only_sealer_writes_sealed",
                      f"only the sealer writes {sealed_topic} and its twins"),
        _only_writers(allows, (raw_topic,), roles.principals_of_kind("producer", "privacy"),
                      "only_producers_write_raw",
                      f"only producers and the privacy role (erasure records) write {raw_topic}"),
        _only_origin_writes(allows, roles),
        _readers_cannot_write(allows, roles),
        _cluster_rights(allows, roles),
        _only_key_readers(allows, roles.principals_of_kind("privacy", "investigator")),
    )
    if users is not None and brokers is not None:
        rules += _super_users(roles, frozenset(users), brokers, configured_super_users)
    return CheckReport(rules=rules, super_users=roles.super_users, notes=tuple(_notes(allows, roles)))


def _no_destructive_rights(allows: list[AclEntry], audit_topics: tuple[str, ...]) -> RuleResult:
    breaches = []
    for acl in allows:
        if acl.operation not in DESTRUCTIVE_OPERATIONS:
            continue
        hit = [topic for topic in audit_topics if acl.matches_resource("topic", topic)]
        if hit:
            breaches.append(f"{acl.principal} {DESTRUCTIVE_OPERATIONS[acl.operation]} of {', '.join(hit)} "
                            f"via `{acl.describe()}`")
    return RuleResult("no_destructive_rights_on_audit_topics",
                      f"nobody may delete or alter {', '.join(audit_topics)} or delete their records", tuple(breaches))


def _no_write_and_delete(allows: list[AclEntry]) -> RuleResult:
    principals = sorted({acl.principal for acl in allows})
    breaches = []
    for principal in principals:
        held = [acl for acl in allows if acl.resource == "topic" and acl.applies_to(principal)]
        writes = [acl for acl in held if acl.operation in WRITE_OPERATIONS]
        deletes = [acl for acl in held if acl.operation in DELETE_OPERATIONS]
        # a User:* ACL alone makes every principal a holder; report it once, under User:*
        if writes and deletes and (principal == WILDCARD_PRINCIPAL or
                                   any(a.principal == principal for a in writes + deletes)):
            breaches.append(f"{principal} can write (`{writes[0].describe()}`) and delete "
                            f"(`{deletes[0].describe()}`)")
    return RuleResult("no_principal_writes_and_deletes", "no principal holds both a write and a delete right",
                      tuple(breaches))


def _only_writers(allows: list[AclEntry], topics: tuple[str, ...], permitted: frozenset[str], name: str,
                  description: str) -> RuleResult:
    breaches = [f"{acl.principal} can write {topic} via `{acl.describe()}`"
                for topic in topics for acl in allows
                if acl.matches_resource("topic", topic) and acl.operation in WRITE_OPERATIONS
                and acl.principal not in permitted]
    return RuleResult(name, description, tuple(breaches))


def _only_origin_writes(allows: list[AclEntry], roles: RolesFile) -> RuleResult:
    breaches: list[str] = []
    for topic, kinds in ORIGIN_WRITERS.items():
        breaches += _only_writers(allows, (topic,), roles.principals_of_kind(*kinds), "", "").breaches
    return RuleResult("only_origin_writes",
                      "each origin topic is written by its own component only: "
                      + "; ".join(f"{topic} by {', '.join(kinds)}" for topic, kinds in ORIGIN_WRITERS.items()),
                      tuple(breaches))


def _only_key_readers(allows: list[AclEntry], permitted: frozenset[str]) -> RuleResult:
    breaches = [f"{acl.principal} can read {KEYS_TOPIC} via `{acl.describe()}`"
                for acl in allows
                if acl.matches_resource("topic", KEYS_TOPIC) and acl.operation in ("read", "all")
                and acl.principal not in permitted]
    return RuleResult("only_privacy_roles_read_keys",
                      f"only the privacy and investigator roles read the data subjects' keys ({KEYS_TOPIC})",
                      tuple(breaches))


def _readers_cannot_write(allows: list[AclEntry], roles: RolesFile) -> RuleResult:
    readers = [role for role in roles.roles
               if not any(g.resource == "topic" and g.operation in WRITE_OPERATIONS for g in role.kafka)]
    breaches = [f"{role.name} (declared without any write) can write topic {acl.name} via `{acl.describe()}`"
                for role in readers for acl in allows
                if acl.resource == "topic" and acl.operation in WRITE_OPERATIONS and acl.applies_to(role.principal)]
    return RuleResult("readers_cannot_write",
                      f"roles without a write in the roles file ({', '.join(r.name for r in readers)}) cannot write",
                      tuple(breaches))


def _cluster_rights(allows: list[AclEntry], roles: RolesFile) -> RuleResult:
    declared = {(role.principal, grant.operation) for role in roles.roles for grant in role.kafka
                if grant.resource == "cluster"}
    breaches = []
    for acl in allows:
        if acl.resource != "cluster":
            continue
        if acl.operation in FORBIDDEN_CLUSTER_OPERATIONS:
            breaches.append(f"{acl.principal} {FORBIDDEN_CLUSTER_OPERATIONS[acl.operation]} via `{acl.describe()}`")
        elif acl.operation in ("alter", "create", "alter_configs") and (acl.principal, acl.operation) not in declared:
            breaches.append(f"{acl.principal} holds cluster {acl.operation.upper()}, which the roles file does not "
                            f"grant it, via `{acl.describe()}`")
    return RuleResult("cluster_rights_as_declared",
                      "nobody holds cluster ALTER_CONFIGS, ALL or CLUSTER_ACTION; cluster ALTER/CREATE only as declared",
                      tuple(breaches))


def _super_users(roles: RolesFile, users: frozenset[str], brokers: Mapping[str, Mapping[str, str | None]],
                 configured: Iterable[str] | None) -> tuple[RuleResult, ...]:
    reachable = []
    for broker_id, configs in sorted(brokers.items()):
        builder = configs.get("principal.builder.class")
        if builder != PRINCIPAL_BUILDER:
            reachable.append(f"broker {broker_id} builds principals with {builder}, not {PRINCIPAL_BUILDER}: a SCRAM "
                             "login named like a super user would be one")
        for listener in filter(None, (configs.get("listener.security.protocol.map") or "").split(",")):
            name, _sep, protocol = listener.partition(":")
            if protocol not in SAFE_PROTOCOLS:
                reachable.append(f"broker {broker_id} listener {name} uses {protocol} (only SSL and SASL_SSL "
                                 "authenticate who connects)")
        mechanisms = set(filter(None, (configs.get("sasl.enabled.mechanisms") or "").split(",")))
        if mechanisms - {"SCRAM-SHA-512", "SCRAM-SHA-256"}:
            reachable.append(f"broker {broker_id} enables SASL mechanism(s) {', '.join(sorted(mechanisms))}; only "
                             "SCRAM, whose principals are always User:, is proved")
    if not brokers:
        reachable.append("no broker described its configs")
    for principal in roles.super_users:
        if not principal.startswith(f"{CERTIFICATE_PRINCIPAL_TYPE}:"):
            reachable.append(f"declared super user {principal} is not a certificate principal")
    names = {principal.split(":", 1)[1] for principal in roles.super_users}
    credentials = [f"SCRAM user {name!r} carries the name of super user "
                   f"{next(p for p in roles.super_users if p.endswith(':' + name))}" for name in sorted(users & names)]
    results = [
        RuleResult("super_users_certificate_only",
                   "super users are reachable only by certificate (principal builder, listeners, declared types)",
                   tuple(reachable)),
        RuleResult("no_scram_credential_for_super_users", "no SCRAM credential exists for any super user's name",
                   tuple(credentials)),
    ]
    if configured is not None:
        configured = tuple(configured)
        differences = [f"super.users has {p}, not declared in {roles.path}" for p in configured
                       if p not in roles.super_users]
        differences += [f"{p} is declared but not in super.users" for p in roles.super_users if p not in configured]
        results.append(RuleResult("super_users_as_declared", "the broker's super.users is exactly the roles file's",
                                  tuple(differences)))
    return tuple(results)


def _notes(allows: list[AclEntry], roles: RolesFile) -> list[str]:
    notes = []
    if roles.super_users:
        notes.append(f"super users bypass every ACL: {', '.join(roles.super_users)} (declared in {roles.path}), "
                     "certificate principals only; keep their private keys out of people's hands")
    changers = sorted({acl.principal for acl in allows
                       if acl.resource == "cluster" and acl.operation in ("alter", "all")})
    if changers:
        notes.append(f"can change ACLs and credentials (cluster ALTER): {', '.join(changers)}; such a change is "
                     "recorded by the access auditor and a grant that breaks a rule fails this check")
    known = {role.principal for role in roles.roles}
    strangers = sorted({acl.principal for acl in allows} - known)
    if strangers:
        notes.append(f"ACLs for principal(s) not in the roles file: {', '.join(strangers)} "
                     "(`auditseal acl plan` shows them for removal)")
    return notes


def every_role_has_credential(roles: RolesFile, users: Iterable[str]) -> RuleResult:
    """Each role of the roles file has a SCRAM user on the broker (``users``: the users the broker lists).

    A role without one cannot log in: its part of the pipeline stops. Kafka 3.5 to 4.4 can lose every
    SCRAM user on a broker restart (README, "SCRAM users lost on a restart"); this rule shows it.
    """
    present = set(users)
    breaches = tuple(f"{role.principal} has no SCRAM credential on the broker (cannot log in; `acl apply` "
                     "sets it again)" for role in roles.roles if role.name not in present)
    return RuleResult("every_role_has_credential", "every role of the roles file has a SCRAM credential", breaches)
