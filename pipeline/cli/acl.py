"""``auditseal acl plan | apply | check``: the roles file against the live broker, as the admin role.

Exit codes follow the command line's contract: 0 success (``check``: every rule holds), 1 a rule is
broken or the broker refused, 2 usage or configuration error. Output never contains a secret.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.permissions.broker import apply_plan, load_passwords, plan_changes, read_broker_security, read_state
from pipeline.permissions.invariants import check_invariants, every_role_has_credential
from pipeline.permissions.plan import Plan
from pipeline.permissions.roles import RolesFile
from pipeline.wire.topics import AUDIT_TOPICS, RAW_TOPIC, SEALED_TOPIC
from pipeline.permissions.topology import load_roles_file

EXIT_OK, EXIT_FAILED = 0, 1


def _admin(env: Mapping[str, str] | None) -> tuple[AdminClient, KafkaSettings]:
    settings = KafkaSettings.from_env(env)
    return AdminClient(settings.client_config()), settings


def _passwords(credentials: Path | None) -> dict[str, str] | None:
    if credentials is not None:
        return load_passwords(credentials)
    from pipeline.dev.stack import LocalStack

    local = LocalStack().credentials_file
    return load_passwords(local) if local.exists() else None


def _header(settings: KafkaSettings, roles: RolesFile) -> str:
    who = settings.username or f"the certificate {settings.certificate_file}"
    return f"roles file {roles.path} ({len(roles.roles)} roles) against {settings.bootstrap} as {who}"


def acl_plan(*, env: Mapping[str, str] | None = None, roles_path: Path | None = None, credentials: Path | None = None,
             rotate: Sequence[str] = (), prune_users: bool = False, as_json: bool = False,
             out: Callable[[str], Any] = print) -> int:
    """Print the users and ACLs ``apply`` would add or remove; exit 0 (also when there are changes), 1 if
    the plan could not be applied (a user to create has no password)."""
    roles = load_roles_file(roles_path)
    admin, settings = _admin(env)
    passwords = _passwords(credentials)
    plan = plan_changes(admin, roles, passwords=passwords, rotate=rotate, prune_users=prune_users)
    _print_plan(plan, settings, roles, as_json, out, heading="plan")
    return EXIT_FAILED if plan.problems else EXIT_OK


def acl_apply(*, env: Mapping[str, str] | None = None, roles_path: Path | None = None, credentials: Path | None = None,
              rotate: Sequence[str] = (), prune_users: bool = False, as_json: bool = False,
              out: Callable[[str], Any] = print) -> int:
    """Make the broker match the roles file, print what was done; a second run changes nothing."""
    roles = load_roles_file(roles_path)
    admin, settings = _admin(env)
    passwords = _passwords(credentials)
    plan = plan_changes(admin, roles, passwords=passwords, rotate=rotate, prune_users=prune_users)
    if plan.users_to_set and passwords is None:
        raise ConfigError("users need a password but no credentials file was found; pass --credentials FILE")
    apply_plan(admin, plan, passwords=passwords or {})
    _print_plan(plan, settings, roles, as_json, out, heading="applied")
    return EXIT_OK


def configured_super_users(server_properties: Path | None) -> tuple[str, ...] | None:
    """``super.users`` from a broker's ``server.properties`` (default: the local stack's, if there is one);
    None when there is no such file to read."""
    if server_properties is None:
        from pipeline.dev.stack import LocalStack

        server_properties = LocalStack().root / "kafka" / "server.properties"
        if not server_properties.exists():
            return None
    try:
        lines = server_properties.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {server_properties}: {exc.strerror or exc}") from None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "super.users":
            return tuple(p.strip() for p in value.split(";") if p.strip())
    return ()


def _announce_rotations(plan: Plan, settings: KafkaSettings) -> None:
    # recorded before the change, so the access auditor knows a rotation was asked for when the new
    # credential shows in the metadata log; any other credential change of a role is alerted as unannounced
    from pipeline.access.metadata_watch import ROTATE_ACTION
    from pipeline.access.record import record_access

    for user, why in plan.users_to_set:
        if why == "rotation requested":
            record_access(action=ROTATE_ACTION, resource={"type": "kafka.user", "id": user},
                          principal=f"User:{settings.username}" if settings.username else None,
                          attributes={"via": "auditseal acl apply --rotate"})


def acl_check(*, env: Mapping[str, str] | None = None, roles_path: Path | None = None, as_json: bool = False,
              server_properties: Path | None = None, out: Callable[[str], Any] = print) -> int:
    """Prove the separation-of-duties and super-user rules on the live broker; exit 1 naming each breach."""
    roles = load_roles_file(roles_path)
    admin, settings = _admin(env)
    live = read_state(admin)
    report = check_invariants(live.acls, roles, raw_topic=RAW_TOPIC, sealed_topic=SEALED_TOPIC,
                              audit_topics=AUDIT_TOPICS, users=live.users, brokers=read_broker_security(admin),
                              configured_super_users=configured_super_users(server_properties))
    report = dataclasses.replace(report, rules=report.rules + (every_role_has_credential(roles, live.users),))
    if as_json:
        out(json.dumps({"broker": settings.bootstrap, "roles_file": str(roles.path), "acls": len(live.acls),
                        **report.as_dict()}, indent=2))
    else:
        out(f"separation of duties: {_header(settings, roles)}, {len(live.acls)} ACLs")
        for rule in report.rules:
            out(f"  {'PASS' if rule.holds else 'FAIL'}  {rule.name}: {rule.description}")
            for breach in rule.breaches:
                out(f"          breach: {breach}")
        for note in report.notes:
            out(f"  NOTE  {note}")
        out("every rule holds" if report.passed else f"rules broken: {', '.join(report.failed())}")
    return EXIT_OK if report.passed else EXIT_FAILED


def _print_plan(plan: Plan, settings: KafkaSettings, roles: RolesFile, as_json: bool, out: Callable[[str], Any],
                heading: str) -> None:
    if as_json:
        out(json.dumps({"broker": settings.bootstrap, "roles_file": str(roles.path), "action": heading,
                        **plan.as_dict()}, indent=2))
        return
    out(f"{heading}: {_header(settings, roles)}")
    for line in plan.describe():
        out(line)
