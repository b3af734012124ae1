"""ACL evaluation rules and the plan between the roles file and a broker snapshot."""

from __future__ import annotations

from pipeline.permissions.acls import AclEntry, allows, desired_acls
from pipeline.permissions.plan import SCRAM_ITERATIONS, LiveState, compute_plan
from pipeline.permissions.topology import roles, roles_file

PASSWORDS = {r.name: f"pw-{r.name}" for r in roles()}
IN_SYNC_USERS = {r.name: {"SCRAM-SHA-512": SCRAM_ITERATIONS} for r in roles()}


def _acl(principal, operation, name="audit.raw", resource="topic", pattern="literal", permission="allow"):
    return AclEntry(resource, name, pattern, principal, operation, permission)


def test_authorizer_rules():
    acls = [
        _acl("User:a", "read"),
        _acl("User:b", "all", name="audit.", pattern="prefixed"),
        _acl("User:*", "describe_configs", name="*"),
        _acl("User:c", "alter_configs"),
        _acl("User:d", "write"),
        _acl("User:d", "write", permission="deny"),
    ]
    assert allows(acls, "User:a", "topic", "audit.raw", "read")
    assert allows(acls, "User:a", "topic", "audit.raw", "describe")  # READ implies DESCRIBE
    assert not allows(acls, "User:a", "topic", "audit.raw", "write")
    assert not allows(acls, "User:a", "topic", "audit.sealed", "read")
    assert allows(acls, "User:b", "topic", "audit.sealed", "delete")  # ALL on a covering prefix
    assert not allows(acls, "User:b", "topic", "auditX", "delete")
    assert allows(acls, "User:zed", "topic", "anything", "describe_configs")  # wildcard principal and name
    assert allows(acls, "User:c", "topic", "audit.raw", "describe_configs")  # ALTER_CONFIGS implies it
    assert not allows(acls, "User:d", "topic", "audit.raw", "write")  # DENY wins
    assert not allows(acls, "User:a", "group", "audit.raw", "read")


def test_plan_on_an_empty_broker_creates_everything():
    plan = compute_plan(roles_file(), LiveState(users={}, acls=frozenset()), passwords=PASSWORDS)
    assert {u for u, _why in plan.users_to_set} == {r.name for r in roles()}
    assert set(plan.acls_to_add) == desired_acls(roles())
    assert not plan.acls_to_remove and not plan.problems


def test_plan_on_a_matching_broker_says_no_changes():
    live = LiveState(users=IN_SYNC_USERS, acls=desired_acls(roles()))
    plan = compute_plan(roles_file(), live, passwords=PASSWORDS)
    assert plan.changes == 0
    assert plan.describe()[-1] == "no changes: the broker matches the roles file"


def test_plan_removes_managed_drift_and_leaves_other_applications_alone():
    drift = [
        _acl("User:admin", "delete"),                                  # on an audit topic
        _acl("User:mallory", "read", name="audit.", pattern="prefixed"),  # pattern covering audit topics
        _acl("User:*", "write", name="*"),                             # wildcard resource
        _acl("User:siem", "read", name="auditseal-siem", resource="group", pattern="prefixed",
             permission="deny"),
        _acl("User:admin", "alter_configs", name="kafka-cluster", resource="cluster"),
        _acl("User:svc-gone", "write"),
    ]
    foreign = [
        _acl("User:orders", "write", name="orders"),
        _acl("User:producer", "write", name="test.raw.1234"),
        _acl("User:orders", "idempotent_write", name="kafka-cluster", resource="cluster"),
    ]
    live = LiveState(users=IN_SYNC_USERS, acls=desired_acls(roles()) | set(drift) | set(foreign))
    plan = compute_plan(roles_file(), live, passwords=PASSWORDS)
    assert set(plan.acls_to_remove) == set(drift)
    assert not plan.acls_to_add and not plan.users_to_set


def test_users_unknown_to_the_file_are_listed_and_removed_only_when_pruning():
    users = IN_SYNC_USERS | {"noacl-1": {"SCRAM-SHA-512": 8192}}
    live = LiveState(users=users, acls=desired_acls(roles()))
    kept = compute_plan(roles_file(), live, passwords=PASSWORDS)
    assert kept.unmanaged_users == ("noacl-1",) and kept.users_to_remove == () and kept.changes == 0
    pruned = compute_plan(roles_file(), live, passwords=PASSWORDS, prune_users=True)
    assert pruned.users_to_remove == ("noacl-1",)


def test_a_scram_user_named_like_a_super_user_is_a_stranger_to_prune():
    live = LiveState(users=IN_SYNC_USERS | {"broker": {"SCRAM-SHA-512": 8192}}, acls=desired_acls(roles()))
    assert compute_plan(roles_file(), live, passwords=PASSWORDS).unmanaged_users == ("broker",)
    assert compute_plan(roles_file(), live, passwords=PASSWORDS, prune_users=True).users_to_remove == ("broker",)


def test_missing_password_and_unknown_rotation_are_problems_without_leaking_secrets():
    users = {k: v for k, v in IN_SYNC_USERS.items() if k != "siem"}
    plan = compute_plan(roles_file(), LiveState(users=users, acls=desired_acls(roles())),
                        passwords={k: v for k, v in PASSWORDS.items() if k != "siem"}, rotate=["sealer", "ghost"])
    assert plan.users_to_set == (("sealer", "rotation requested"), ("siem", "new user"))
    assert plan.problems == ("cannot rotate ghost: not a user of the roles file",
                             "no password for user siem in the credentials file")
    text = "\n".join(plan.describe()) + str(plan.as_dict())
    assert not any(password in text for password in PASSWORDS.values())


def test_weak_iteration_count_is_reset():
    users = IN_SYNC_USERS | {"admin": {"SCRAM-SHA-512": 4096}}
    plan = compute_plan(roles_file(), LiveState(users=users, acls=desired_acls(roles())), passwords=PASSWORDS)
    assert plan.users_to_set == (("admin", f"4096 iterations, want {SCRAM_ITERATIONS}"),)

