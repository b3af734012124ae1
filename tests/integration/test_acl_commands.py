"""``auditseal acl plan | apply | check`` against the live broker, as the admin role."""

from __future__ import annotations

import json
import secrets
import time

import pytest
import yaml
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ScramMechanism, UserScramCredentialDeletion

from pipeline.cli.acl import acl_apply, acl_check, acl_plan
from pipeline.cli.main import main
from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_lock
from pipeline.permissions.acls import AclEntry
from pipeline.permissions.broker import BrokerAccessError
from pipeline.permissions.topology import roles_file_path

pytestmark = pytest.mark.stack


def _run(command, **kwargs) -> tuple[int, dict]:
    lines: list[str] = []
    code = command(as_json=True, out=lines.append, **kwargs)
    return code, json.loads("\n".join(lines))


def _setup_admin(stack) -> AdminClient:
    return AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())


def _wait_visible(admin: AdminClient, acls: list[AclEntry], present: bool) -> None:
    from pipeline.permissions.broker import read_state

    deadline = time.monotonic() + 20
    while any((acl in read_state(admin).acls) != present for acl in acls):
        assert time.monotonic() < deadline, f"ACLs not {'visible' if present else 'gone'} after 20s"
        time.sleep(0.2)


def _write_probe(env, topic: str) -> int | None:
    """Error code of an oversized probe record (MSG_SIZE_TOO_LARGE proves WRITE was authorized)."""
    reports = []
    producer = Producer(KafkaSettings.from_env(env).client_config(**{
        "enable.idempotence": False, "message.max.bytes": 3_000_000, "compression.type": "none",
        "message.timeout.ms": 10_000}))
    producer.produce(topic, b"x" * 1_200_000, on_delivery=lambda err, _msg: reports.append(err))
    producer.flush(20)
    return reports[0].code() if reports[0] is not None else None


def test_a_service_is_planned_applied_idempotently_and_removed(stack, role_env, tmp_path):
    name = f"matrix{secrets.token_hex(3)}"
    user, password = f"svc-{name}", secrets.token_urlsafe(24)
    document = yaml.safe_load(roles_file_path().read_text())
    document["services"] = {name: {}}
    roles = tmp_path / "roles.yaml"
    roles.write_text(yaml.safe_dump(document))
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({user: password}))
    admin_env = role_env("admin")
    # the lock keeps a `dev up` of another test session from re-asserting the shipped file half-way
    with acl_lock(stack.root):
        _service_lifecycle(stack, role_env, admin_env, roles, credentials, user, password)


def _service_lifecycle(stack, role_env, admin_env, roles, credentials, user, password) -> None:
    try:
        _code, plan = _run(acl_plan, env=admin_env, roles_path=roles, credentials=credentials)
        assert plan["users_to_set"] == [{"user": user, "why": "new user"}]
        assert {(a["principal"], a["operation"], a["name"]) for a in plan["acls_to_add"]} == {
            (f"User:{user}", "write", "audit.raw"), (f"User:{user}", "describe", "audit.raw")}
        assert plan["acls_to_remove"] == [] and plan["problems"] == []

        lines: list[str] = []
        assert acl_apply(env=admin_env, roles_path=roles, credentials=credentials, out=lines.append) == 0
        assert password not in "\n".join(lines)
        assert _run(acl_apply, env=admin_env, roles_path=roles, credentials=credentials)[1]["changes"] == 0
        lines.clear()
        acl_plan(env=admin_env, roles_path=roles, credentials=credentials, out=lines.append)
        assert lines[-1] == "no changes: the broker matches the roles file"
        assert _run(acl_check, env=admin_env, roles_path=roles)[0] == 0

        service_env = dict(role_env("producer"), AUDITSEAL_SASL_USERNAME=user, AUDITSEAL_SASL_PASSWORD=password)
        assert _write_probe(service_env, "audit.raw") == KafkaError.MSG_SIZE_TOO_LARGE
        assert _write_probe(service_env, "audit.sealed") == KafkaError.TOPIC_AUTHORIZATION_FAILED

        # back to the shipped file: the service's ACLs are drift now and go; its login stays until pruned
        _code, back = _run(acl_apply, env=admin_env)
        assert sum(a["principal"] == f"User:{user}" for a in back["acls_to_remove"]) == 2
        assert user in back["unmanaged_users"] and back["users_to_remove"] == []
        assert _write_probe(service_env, "audit.raw") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    finally:
        acl_apply(env=admin_env, out=lambda _line: None)
        deletion = UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)
        setup = _setup_admin(stack)
        try:
            setup.alter_user_scram_credentials([deletion])[user].result(timeout=30)
        except KafkaException as exc:
            assert exc.args[0].code() == KafkaError.RESOURCE_NOT_FOUND


def test_check_catches_a_violating_acl_added_by_hand(stack, role_env, capsys, monkeypatch):
    setup = _setup_admin(stack)
    # a prefixed pattern that covers every audit topic, granting a reader role deletion
    destructive = AclEntry("topic", "audit.", "prefixed", "User:verifier", "delete")
    # outside AuditSeal's managed names, so apply leaves it, but a reader writing anywhere still breaks a rule
    scratch = AclEntry("topic", f"matrix.scratch.{secrets.token_hex(4)}", "literal", "User:siem", "write")
    admin_env = role_env("admin")
    with acl_lock(stack.root):
        _violation_is_caught(setup, admin_env, destructive, scratch, capsys, monkeypatch)
    _wait_visible(setup, [scratch], present=False)
    assert _run(acl_check, env=admin_env)[0] == 0


def _violation_is_caught(setup, admin_env, destructive, scratch, capsys, monkeypatch) -> None:
    try:
        for future in setup.create_acls([destructive.to_binding(), scratch.to_binding()]).values():
            future.result(timeout=30)
        _wait_visible(setup, [destructive, scratch], present=True)

        code, report = _run(acl_check, env=admin_env)
        assert code == 1 and not report["passed"]
        broken = {rule["name"]: rule["breaches"] for rule in report["rules"] if not rule["holds"]}
        # the verifier writes its own records (audit.verification): with a delete it also writes and deletes
        assert set(broken) == {"no_destructive_rights_on_audit_topics", "readers_cannot_write",
                               "no_principal_writes_and_deletes"}
        assert any("User:verifier can delete the topic and its records of audit.raw, audit.sealed, audit.alerts"
                   in breach for breach in broken["no_destructive_rights_on_audit_topics"])
        assert any(scratch.name in breach for breach in broken["readers_cannot_write"])

        assert _cli(["acl", "check"], admin_env, monkeypatch) == 1
        human = capsys.readouterr().out
        assert "FAIL  no_destructive_rights_on_audit_topics" in human and "breach: User:verifier" in human
        assert "NOTE  super users bypass every ACL: Cert:broker, Cert:bootstrap" in human

        _code, plan = _run(acl_plan, env=admin_env)
        assert destructive.as_dict() in plan["acls_to_remove"]
        assert scratch.as_dict() not in plan["acls_to_remove"]  # the scratch topic is not AuditSeal's
        acl_apply(env=admin_env, out=lambda _line: None)
        _wait_visible(setup, [destructive], present=False)
    finally:
        futures = setup.delete_acls([destructive.to_filter(), scratch.to_filter()])
        for future in futures.values():
            future.result(timeout=30)


def _cli(argv: list[str], env: dict[str, str], monkeypatch) -> int:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return main(argv)


def test_acl_commands_need_the_admin_role(role_env):
    # librdkafka would report the refused ACL listing as an empty list: every rule would seem to hold
    with pytest.raises(BrokerAccessError, match="lacks DESCRIBE on the cluster.*run as the admin role"):
        acl_check(env=role_env("siem"), out=lambda _line: None)


def test_check_json_on_the_provisioned_stack(role_env, capsys, monkeypatch):
    assert _cli(["acl", "check", "--json"], role_env("admin"), monkeypatch) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and len(report["rules"]) == 12
    assert report["super_users"] == ["Cert:broker", "Cert:bootstrap"]

