"""Attack 2: the admin grants itself cluster ALTER_CONFIGS and turns the authorizer logger down to WARN.

The grant fails ``acl check`` while it holds and is recorded (the metadata log's binding) and alerted; the
access auditor reads the logger's level and misses its own probe in the log, so the blinding is an event
(``authorizer_log.level``, ``authorizer_log.silent``) and a CRITICAL alert; the restoration is recorded too.
"""

from __future__ import annotations

import json
import time

import pytest

from pipeline.access.auditor import AccessAuditor, trail_watch
from pipeline.access.broker_logger import BrokerLoggerError, authorizer_levels, set_authorizer_level
from pipeline.cli.acl import acl_check
from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_lock
from pipeline.permissions.acls import AclEntry
from pipeline.wire.topics import AUDIT_TOPICS
from tests.support.access import RecordingProducer, detector_alerts, read_back

pytestmark = pytest.mark.stack

GRANT = AclEntry("cluster", "kafka-cluster", "literal", "User:admin", "alter_configs")


def _check(env) -> tuple[int, dict]:
    lines: list[str] = []
    code = acl_check(env=env, as_json=True, out=lines.append)
    return code, json.loads("\n".join(lines))


def _run_for(auditor: AccessAuditor, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        auditor.step()
        time.sleep(0.3)


def _trail(events: list[dict]) -> list[tuple[str, str]]:
    return [(e["action"], e["outcome"]["status"]) for e in events if e["source_service"] == "auditseal-access-auditor"]


def test_silencing_the_authorizer_log_is_recorded_and_alerted(stack, role_env, tmp_path):
    admin_env = role_env("admin")
    admin = KafkaSettings.from_env(admin_env)
    setup = KafkaSettings.from_env(stack.setup_env("kafka"))
    auditor_settings = KafkaSettings.from_env(role_env("access-auditor"))
    assert authorizer_levels(setup, [1]) == {1: "DEBUG"}
    with RecordingProducer(auditor_settings) as producer:
        auditor = AccessAuditor(producer, authorizer_log=stack.authorizer_log, spool=tmp_path / "spool.jsonl",
                                state_file=tmp_path / "position.json", own_principal="User:access-auditor",
                                audit_topics=AUDIT_TOPICS, start_at_end=True,
                                metadata_log=stack.root / "kafka" / "data" / "__cluster_metadata-0",
                                trail=trail_watch(auditor_settings, interval=1.0, timeout=4.0))
        _run_for(auditor, 6)
        healthy = len(producer.results)
        with acl_lock(stack.root):
            from confluent_kafka.admin import AdminClient

            attacker = AdminClient(admin.client_config())
            try:
                with pytest.raises(BrokerLoggerError, match="error 31"):  # not without a grant
                    set_authorizer_level(admin, 1, "WARN")
                for future in attacker.create_acls([GRANT.to_binding()]).values():
                    future.result(30)
                code, report = _check(admin_env)
                deadline = time.monotonic() + 20
                while code == 0 and time.monotonic() < deadline:
                    time.sleep(0.3)
                    code, report = _check(admin_env)
                breaches = next(r for r in report["rules"] if r["name"] == "cluster_rights_as_declared")["breaches"]
                assert code == 1 and any("User:admin can change broker and logger configs" in b for b in breaches)
                while True:
                    try:
                        set_authorizer_level(admin, 1, "WARN")
                        break
                    except BrokerLoggerError:
                        assert time.monotonic() < deadline, "the grant never took effect"
                        time.sleep(0.3)
                _run_for(auditor, 8)  # blind: what happens now is not in the authorizer log
            finally:
                set_authorizer_level(setup, 1, "DEBUG")
                for future in attacker.delete_acls([GRANT.to_filter()]).values():
                    future.result(30)
        _run_for(auditor, 6)
        events = read_back(role_env("sealer"), producer.results)

    assert not [t for t in _trail(events[:healthy]) if t[1] == "FAILURE"], "findings on the untouched stack"
    trail = _trail(events[healthy:])
    assert ("authorizer_log.level", "FAILURE") in trail and ("authorizer_log.silent", "FAILURE") in trail
    assert ("authorizer_log.level", "SUCCESS") in trail and ("authorizer_log.resumed", "SUCCESS") in trail
    level = next(e for e in events if e["action"] == "authorizer_log.level" and e["outcome"]["status"] == "FAILURE")
    assert "kafka.authorizer.logger is WARN (was DEBUG)" in level["outcome"]["reason"]
    assert any(e["action"] == "acl.create" and e["resource"]["id"] == GRANT.describe() for e in events)

    alerts = detector_alerts(events)
    rules = {(a.rule, a.severity) for a in alerts}
    assert ("trail_tampering", "CRITICAL") in rules and ("acl_change", "CRITICAL") in rules
    assert _check(admin_env)[0] == 0
