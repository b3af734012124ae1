"""Kafka ACLs as plain values, and how the broker's StandardAuthorizer evaluates them.

An :class:`AclEntry` is one ACL binding with lower-case names (``topic``, ``prefixed``, ``write``,
``allow``), hashable so desired and live sets can be diffed. :func:`allows` answers "may this
principal do that?" with the authorizer's rules (``User:*`` and the literal ``*`` resource are
wildcards, a prefixed name matches every resource it begins, ALL implies every operation,
READ/WRITE/DELETE/ALTER imply DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS, a matching DENY
wins), so tests and checks can compare the broker's behaviour with what the roles file says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from pipeline.permissions.roles import Grant, Role

WILDCARD_PRINCIPAL = "User:*"
WILDCARD_RESOURCE = "*"
_IMPLIED_BY = {
    "describe": frozenset({"read", "write", "delete", "alter"}),
    "describe_configs": frozenset({"alter_configs"}),
}
_RESOURCE_TYPE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP,
                  "transactional_id": ResourceType.TRANSACTIONAL_ID, "cluster": ResourceType.BROKER}
_RESOURCE_NAME = {value: key for key, value in _RESOURCE_TYPE.items()}


@dataclass(frozen=True, order=True)
class AclEntry:
    """One ACL binding: resource (topic, group, transactional_id, cluster), pattern, principal, host,
    operation and permission (allow or deny)."""

    resource: str
    name: str
    pattern: str
    principal: str
    operation: str
    permission: str = "allow"
    host: str = "*"

    def describe(self) -> str:
        """Human form, e.g. ``ALLOW User:producer WRITE on topic audit.raw``."""
        pattern = " (prefixed)" if self.pattern == "prefixed" else ""
        host = f" from host {self.host}" if self.host != "*" else ""
        return (f"{self.permission.upper()} {self.principal} {self.operation.upper()} on "
                f"{self.resource} {self.name}{pattern}{host}")

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"resource": self.resource, "name": self.name, "pattern": self.pattern, "principal": self.principal,
                "operation": self.operation, "permission": self.permission, "host": self.host}

    def matches_resource(self, resource: str, name: str) -> bool:
        """Whether this ACL's resource pattern covers the resource ``name`` of type ``resource``."""
        if self.resource != resource:
            return False
        if self.pattern == "prefixed":
            return name.startswith(self.name)
        return self.name in (name, WILDCARD_RESOURCE)

    def applies_to(self, principal: str) -> bool:
        """Whether this ACL applies to ``principal`` (its own, or the ``User:*`` wildcard)."""
        return self.principal in (principal, WILDCARD_PRINCIPAL)

    def covers(self, operation: str) -> bool:
        """Whether holding this ACL's operation grants ``operation`` (ALL and the DESCRIBE implications)."""
        return self.operation in ("all", operation) or self.operation in _IMPLIED_BY.get(operation, ())

    def to_binding(self) -> AclBinding:
        """The confluent-kafka binding to create."""
        return AclBinding(_RESOURCE_TYPE[self.resource], self.name, ResourcePatternType[self.pattern.upper()],
                          self.principal, self.host, AclOperation[self.operation.upper()],
                          AclPermissionType[self.permission.upper()])

    def to_filter(self) -> AclBindingFilter:
        """A filter that matches exactly this binding (to delete it and nothing else)."""
        return AclBindingFilter(_RESOURCE_TYPE[self.resource], self.name, ResourcePatternType[self.pattern.upper()],
                                self.principal, self.host, AclOperation[self.operation.upper()],
                                AclPermissionType[self.permission.upper()])

    @classmethod
    def from_binding(cls, binding: AclBinding) -> AclEntry:
        """The entry for a binding returned by ``describe_acls``."""
        return cls(
            resource=_RESOURCE_NAME.get(binding.restype, binding.restype.name.lower()),
            name=binding.name,
            pattern=binding.resource_pattern_type.name.lower(),
            principal=binding.principal,
            operation=binding.operation.name.lower(),
            permission=binding.permission_type.name.lower(),
            host=binding.host,
        )


ALL_ACLS_FILTER = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                   AclOperation.ANY, AclPermissionType.ANY)


def grant_entry(principal: str, grant: Grant) -> AclEntry:
    """The ALLOW entry (any host) for one grant of a principal."""
    return AclEntry(grant.resource, grant.name, grant.pattern, principal, grant.operation)


def desired_acls(roles: Iterable[Role]) -> frozenset[AclEntry]:
    """Every ACL the roles declare."""
    return frozenset(grant_entry(role.principal, grant) for role in roles for grant in role.kafka)


def allows(entries: Iterable[AclEntry], principal: str, resource: str, name: str, operation: str) -> bool:
    """Whether the ACLs ``entries`` let ``principal`` perform ``operation`` on resource ``name``
    (deny by default; a matching DENY wins over any ALLOW)."""
    allowed = False
    for entry in entries:
        if not (entry.applies_to(principal) and entry.matches_resource(resource, name)):
            continue
        if entry.permission == "deny" and entry.operation in ("all", operation):
            return False
        if entry.permission == "allow" and entry.covers(operation):
            allowed = True
    return allowed


def role_allows(role: Role, resource: str, name: str, operation: str) -> bool:
    """Whether the roles file lets ``role`` perform ``operation`` on resource ``name``."""
    return allows(desired_acls([role]), role.principal, resource, name, operation)
