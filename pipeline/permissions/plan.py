"""The difference between the roles file and the live broker: SCRAM users and ACLs to add or remove.

Pure: :func:`compute_plan` takes the desired roles and a snapshot of the broker (:class:`LiveState`)
and returns a :class:`Plan`; ``auditseal acl apply`` executes it (``pipeline.permissions.broker``).
Secrets never enter a plan: it only says which users need a password set.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.permissions.acls import WILDCARD_PRINCIPAL, WILDCARD_RESOURCE, AclEntry, desired_acls
from pipeline.permissions.roles import SERVICE_PREFIX, RolesFile

SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
# The names AuditSeal owns on a cluster it may share with other applications: the audit topics
# (audit.raw, audit.sealed, audit.alerts, services' audit.raw* topics) and the auditseal-* topics,
# consumer groups and transactional ids of its workers.
OWNED_PREFIXES = {"topic": ("audit.", "auditseal-"), "group": ("auditseal-",), "transactional_id": ("auditseal-",)}


@dataclass(frozen=True)
class LiveState:
    """What the broker has: SCRAM users (name -> {mechanism: iterations}) and every ACL."""

    users: Mapping[str, Mapping[str, int]]
    acls: frozenset[AclEntry]


@dataclass(frozen=True)
class Plan:
    """Changes that make the broker match the roles file.

    ``users_to_set`` get a SCRAM-SHA-512 credential (created, re-created with our iteration count, or
    rotated on request); ``users_to_remove`` are deleted (only when pruning users was asked for);
    ``unmanaged_users`` exist on the broker but not in the file and are left alone; ``problems`` make
    the plan impossible to apply (a user to create with no password in the credentials file).
    """

    users_to_set: tuple[tuple[str, str], ...]  # (user, why)
    users_to_remove: tuple[str, ...]
    unmanaged_users: tuple[str, ...]
    acls_to_add: tuple[AclEntry, ...]
    acls_to_remove: tuple[AclEntry, ...]
    problems: tuple[str, ...] = field(default=())

    @property
    def changes(self) -> int:
        """Number of changes apply would make."""
        return len(self.users_to_set) + len(self.users_to_remove) + len(self.acls_to_add) + len(self.acls_to_remove)

    def as_dict(self) -> dict[str, Any]:
        """JSON form (no secrets)."""
        return {
            "changes": self.changes,
            "users_to_set": [{"user": user, "why": why} for user, why in self.users_to_set],
            "users_to_remove": list(self.users_to_remove),
            "unmanaged_users": list(self.unmanaged_users),
            "acls_to_add": [a.as_dict() for a in self.acls_to_add],
            "acls_to_remove": [a.as_dict() for a in self.acls_to_remove],
            "problems": list(self.problems),
        }

    def describe(self) -> list[str]:
        """Human form, one line per change; ``no changes`` when there is nothing to do."""
        lines = [f"  + set SCRAM-SHA-512 credential of user {user} ({why})" for user, why in self.users_to_set]
        lines += [f"  - delete user {user} (not in the roles file)" for user in self.users_to_remove]
        lines += [f"  + {acl.describe()}" for acl in self.acls_to_add]
        lines += [f"  - {acl.describe()}" for acl in self.acls_to_remove]
        if self.unmanaged_users and not self.users_to_remove:
            lines.append(f"  ~ user(s) not in the roles file, left alone (they hold no role; remove them with "
                         f"`acl apply --prune-users`): {', '.join(self.unmanaged_users)}")
        lines += [f"  ! {problem}" for problem in self.problems]
        if self.changes == 0:
            lines.append("no changes: the broker matches the roles file")
        else:
            lines.append(f"{len(self.users_to_set)} user(s) to set, {len(self.users_to_remove)} to delete, "
                         f"{len(self.acls_to_add)} ACL(s) to add, {len(self.acls_to_remove)} to remove")
        return lines


def compute_plan(
    roles: RolesFile,
    live: LiveState,
    *,
    passwords: Mapping[str, str] | None,
    rotate: Collection[str] = (),
    prune_users: bool = False,
) -> Plan:
    """The changes that make ``live`` match ``roles``.

    Every ACL in AuditSeal's scope (:func:`is_managed`) that the file does not declare is removed:
    for its own resources and principals the file is the whole truth. ACLs of other applications
    sharing the cluster are left alone (``acl check`` still judges every ACL).
    Users are only created or (for names in ``rotate``) given their password from ``passwords``
    again (``passwords`` None: not known yet, so a missing one is not reported as a problem). A user
    the file does not know is deleted only with ``prune_users`` (deleting a login is not reversible,
    and without ACLs it can do nothing anyway). Super users are never touched.
    """
    wanted_users = [role.name for role in roles.roles]
    unknown = sorted(set(rotate) - set(wanted_users))
    problems = [f"cannot rotate {name}: not a user of the roles file" for name in unknown]
    users_to_set: list[tuple[str, str]] = []
    for user in wanted_users:
        iterations = live.users.get(user, {}).get(SCRAM_MECHANISM)
        if iterations is None:
            why = "new user" if user not in live.users else f"has no {SCRAM_MECHANISM} credential"
        elif iterations != SCRAM_ITERATIONS:
            why = f"{iterations} iterations, want {SCRAM_ITERATIONS}"
        elif user in rotate:
            why = "rotation requested"
        else:
            continue
        users_to_set.append((user, why))
        if passwords is not None and not passwords.get(user):
            problems.append(f"no password for user {user} in the credentials file")
    unmanaged = tuple(sorted(set(live.users) - set(wanted_users)))
    desired = desired_acls(roles.roles)
    return Plan(
        users_to_set=tuple(users_to_set),
        users_to_remove=unmanaged if prune_users else (),
        unmanaged_users=unmanaged,
        acls_to_add=tuple(sorted(desired - live.acls)),
        acls_to_remove=tuple(sorted(acl for acl in live.acls - desired if is_managed(acl, roles))),
        problems=tuple(problems),
    )


def is_managed(acl: AclEntry, roles: RolesFile) -> bool:
    """Whether ``acl`` is AuditSeal's to manage: it could apply to a name AuditSeal owns (an audit
    topic, an ``auditseal-`` topic, group or transactional id, including wildcard and prefixed
    patterns that cover them), it belongs to a service principal, or it is a cluster ACL of one of
    the file's principals or of ``User:*``."""
    if acl.principal.startswith("User:" + SERVICE_PREFIX):
        return True
    if acl.resource == "cluster":
        return acl.principal == WILDCARD_PRINCIPAL or acl.principal in {r.principal for r in roles.roles}
    owned = OWNED_PREFIXES.get(acl.resource, ())
    if acl.pattern == "literal":
        return acl.name == WILDCARD_RESOURCE or acl.name.startswith(owned)
    return any(acl.name.startswith(prefix) or prefix.startswith(acl.name) for prefix in owned)
