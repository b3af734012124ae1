"""The live broker's users and ACLs, read and changed through confluent-kafka's AdminClient.

Run as the ``admin`` role (cluster DESCRIBE to read ACLs and users, cluster ALTER to change them), or
as the setup super user while ``auditseal dev up`` creates the first users.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from concurrent.futures import Future
from pathlib import Path

import yaml
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)
from confluent_kafka.error import KafkaError

from pipeline.errors import AuditSealError, ConfigError
from pipeline.permissions.acls import ALL_ACLS_FILTER, AclEntry
from pipeline.permissions.plan import SCRAM_ITERATIONS, LiveState, Plan, compute_plan
from pipeline.permissions.roles import RolesFile

# broker configs `acl check` reads to prove how principals are built and which listeners exist
SECURITY_CONFIGS = ("principal.builder.class", "listener.security.protocol.map", "sasl.enabled.mechanisms",
                    "super.users")

REQUEST_TIMEOUT_S = 30.0
CONVERGENCE_TIMEOUT_S = 20.0


class BrokerAccessError(AuditSealError):
    """The broker refused or failed an admin request (missing admin rights, broker unreachable)."""


def _result(future: Future, what: str):
    try:
        return future.result(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as exc:
        error: KafkaError = exc.args[0]
        hint = ""
        if error.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
            hint = " (run as the admin role: `eval \"$(auditseal dev env --role admin)\"`)"
        raise BrokerAccessError(f"{what}: {error.name()}: {error.str()[:200]}{hint}") from None


def require_cluster_rights(admin: AdminClient, *operations: str) -> None:
    """Fail unless our principal holds ``operations`` (e.g. "describe", "alter") on the cluster.

    Asked up front because librdkafka reports a refused ACL listing as an empty one (which would
    make every rule look satisfied), and a refused SCRAM user listing crashes confluent-kafka 2.16.
    """
    description = _result(admin.describe_cluster(include_authorized_operations=True), "describing the cluster")
    held = {operation.name.lower() for operation in description.authorized_operations or ()}
    missing = [op for op in operations if op not in held and "all" not in held]
    if missing:
        raise BrokerAccessError(
            f"this principal lacks {', '.join(op.upper() for op in missing)} on the cluster, needed to read and "
            "change users and ACLs (run as the admin role: `eval \"$(auditseal dev env --role admin)\"`)"
        )


def read_state(admin: AdminClient) -> LiveState:
    """Every SCRAM user (with mechanism and iterations) and every ACL on the broker (cluster DESCRIBE needed)."""
    require_cluster_rights(admin, "describe")
    acls = frozenset(AclEntry.from_binding(b) for b in _result(admin.describe_acls(ALL_ACLS_FILTER), "describing ACLs"))
    described = _result(admin.describe_user_scram_credentials(), "describing SCRAM users")
    users = {
        name: {info.mechanism.name.replace("_", "-"): info.iterations for info in description.scram_credential_infos}
        for name, description in described.items()
    }
    return LiveState(users=users, acls=acls)


def read_broker_security(admin: AdminClient) -> dict[str, dict[str, str | None]]:
    """The security configs of every broker (:data:`SECURITY_CONFIGS`) by broker id, as DescribeConfigs returns
    them (cluster DESCRIBE_CONFIGS needed). A sensitive value (``super.users`` is one) reads as None."""
    description = _result(admin.describe_cluster(), "describing the cluster")
    resources = [ConfigResource(ResourceType.BROKER, str(node.id)) for node in description.nodes]
    found: dict[str, dict[str, str | None]] = {}
    for resource, future in admin.describe_configs(resources).items():
        entries = _result(future, f"describing the configs of broker {resource.name}")
        found[resource.name] = {name: (entries[name].value if name in entries else None) for name in SECURITY_CONFIGS}
    return found


def super_user_names(roles: RolesFile) -> tuple[str, ...]:
    """The names of the declared super users (``Cert:broker`` -> ``broker``)."""
    return tuple(principal.split(":", 1)[1] for principal in roles.super_users)


def remove_super_user_credentials(admin: AdminClient, roles: RolesFile) -> list[str]:
    """Delete every SCRAM credential named like a declared super user; return the names deleted.

    Such a credential cannot make a super user (certificates are ``Cert:`` principals, SCRAM logins
    ``User:``), but it has no business existing: it is either left over or planted."""
    live = read_state(admin)
    names = [name for name in super_user_names(roles) if name in live.users]
    deletions = [UserScramCredentialDeletion(name, ScramMechanism[mechanism.replace("-", "_")])
                 for name in names for mechanism in live.users[name]]
    if deletions:
        for user, future in admin.alter_user_scram_credentials(deletions).items():
            _result(future, f"deleting the SCRAM credential of {user}")
    return names


def plan_changes(admin: AdminClient, roles: RolesFile, *, passwords: Mapping[str, str] | None,
                 rotate: Collection[str] = (), prune_users: bool = False) -> Plan:
    """The plan that makes the live broker match ``roles`` (see :func:`~pipeline.permissions.plan.compute_plan`)."""
    return compute_plan(roles, read_state(admin), passwords=passwords, rotate=rotate, prune_users=prune_users)


def apply_plan(admin: AdminClient, plan: Plan, *, passwords: Mapping[str, str]) -> None:
    """Execute ``plan``: set users' credentials and add ACLs first, then remove, so nobody loses access
    half-way; then wait until the broker reports the result (ACLs spread through the metadata log)."""
    if plan.problems:
        raise ConfigError("the plan cannot be applied: " + "; ".join(plan.problems))
    if plan.changes:
        require_cluster_rights(admin, "alter")
    announce_credentials(plan)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts = [UserScramCredentialUpsertion(user, info, passwords[user].encode()) for user, _why in plan.users_to_set]
    if upserts:
        for user, future in admin.alter_user_scram_credentials(upserts).items():
            _result(future, f"setting the credential of user {user}")
    if plan.acls_to_add:
        for binding, future in admin.create_acls([acl.to_binding() for acl in plan.acls_to_add]).items():
            _result(future, f"creating ACL {binding}")
    if plan.acls_to_remove:
        for acl_filter, future in admin.delete_acls([acl.to_filter() for acl in plan.acls_to_remove]).items():
            _result(future, f"deleting ACL {acl_filter}")
    if plan.users_to_remove:
        deletions = [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512) for user in plan.users_to_remove]
        for user, future in admin.alter_user_scram_credentials(deletions).items():
            _result(future, f"deleting user {user}")
    _wait_until_visible(admin, plan)


def announce_credentials(plan: Plan) -> None:
    """Record, before they are made, the credentials this plan sets (``acl apply``, ``--rotate`` included, and
    ``dev up``): the access auditor marks those credential changes as announced, and the detector alerts on
    every other change of a credential as made outside ``acl apply``."""
    from pipeline.access.metadata_watch import ROTATE_ACTION
    from pipeline.access.record import record_access

    for user, why in plan.users_to_set:
        record_access(action=ROTATE_ACTION, resource={"type": "kafka.user", "id": user},
                      attributes={"via": "auditseal acl apply", "why": why})


def _wait_until_visible(admin: AdminClient, plan: Plan) -> None:
    deadline = time.monotonic() + CONVERGENCE_TIMEOUT_S
    while True:
        live = read_state(admin)
        pending = [a.describe() for a in plan.acls_to_add if a not in live.acls]
        pending += [f"removal of {a.describe()}" for a in plan.acls_to_remove if a in live.acls]
        pending += [f"user {u}" for u, _why in plan.users_to_set if u not in live.users]
        pending += [f"removal of user {u}" for u in plan.users_to_remove if u in live.users]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BrokerAccessError(f"the broker did not show the applied changes within {CONVERGENCE_TIMEOUT_S:.0f}s: "
                                    + "; ".join(pending[:5]))
        time.sleep(0.2)


def load_passwords(path: Path) -> dict[str, str]:
    """SCRAM passwords by user name from a JSON or YAML file: ``{"kafka": {user: password}}`` (the local
    stack's ``credentials.json``) or a flat ``{user: password}`` mapping."""
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"the credentials file {path} is neither JSON nor YAML") from None
    if isinstance(document, Mapping) and isinstance(document.get("kafka"), Mapping):
        document = document["kafka"]
    if not isinstance(document, Mapping) or not all(isinstance(v, str) for v in document.values()):
        raise ConfigError(f"the credentials file {path} must map user names to passwords "
                          "(or hold such a mapping under `kafka`)")
    return {str(user): password for user, password in document.items()}
