"""Kafka 3.5-4.4 loses every SCRAM user when a restarted broker replays a metadata log that deletes a user
(README, "SCRAM users lost on a restart"). On the real stack: the trigger (create and delete a user, restart
the broker) leaves every role able to log in; a role that lost its credential anyway is reported by
``dev status`` and ``acl check`` and set again by ``dev up``."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from pipeline.config import KafkaSettings
from pipeline.dev.kafka import SNAPSHOT_INTERVAL_MS
from pipeline.permissions.topology import roles
from pipeline.preflight import check_kafka
from pipeline.wire.topics import RAW_TOPIC

pytestmark = pytest.mark.stack


def _setup_admin(stack) -> AdminClient:
    return AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())


def _snapshots(stack) -> list[str]:
    return sorted(p.name for p in (stack.root / "kafka" / "data" / "__cluster_metadata-0").glob("*.checkpoint"))


def _every_role_logs_in(stack) -> None:
    for role in roles():
        # a metadata request needs a login; the topic is only there so the check names something
        check_kafka(KafkaSettings.from_env(stack.env(role.name)), timeout=30)
    check_kafka(KafkaSettings.from_env(stack.setup_env("kafka")), [RAW_TOPIC], timeout=30)


def _auditseal(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *args], env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=180)


def test_a_deleted_user_and_a_broker_restart_leave_every_login_working(stack):
    admin = _setup_admin(stack)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    before = _snapshots(stack)
    # "alice" hashes before "bootstrap" in Java's HashMap: the order that makes ScramDelta.apply() drop them all
    admin.alter_user_scram_credentials([UserScramCredentialUpsertion("alice", info, b"alice-secret")]
                                       )["alice"].result(timeout=30)
    admin.alter_user_scram_credentials([UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_512)]
                                       )["alice"].result(timeout=30)
    # the mitigation: a snapshot holding the deletion is written within the interval, before any restart
    deadline = time.monotonic() + SNAPSHOT_INTERVAL_MS / 1000 * 6
    while _snapshots(stack) == before:
        assert time.monotonic() < deadline, "no metadata snapshot after the user's deletion"
        time.sleep(0.5)

    lines: list[str] = []
    stack.kafka_process.stop()
    stack.up(log=lines.append)
    assert not [line for line in lines if "REPAIRED" in line], lines  # nothing was lost
    _every_role_logs_in(stack)
    assert stack.status()["healthy"], stack.status()


def test_a_role_without_credential_is_reported_and_dev_up_repairs_it(stack):
    admin = _setup_admin(stack)
    admin.alter_user_scram_credentials([UserScramCredentialDeletion("siem", ScramMechanism.SCRAM_SHA_512)]
                                       )["siem"].result(timeout=30)
    deadline = time.monotonic() + 30
    while (kafka := stack.status()["parts"]["kafka"])["healthy"]:
        assert time.monotonic() < deadline, "dev status never noticed the missing credential"
        time.sleep(0.5)
    assert "no SCRAM credential on the broker for siem" in kafka["detail"], kafka

    check = _auditseal("acl", "check", env=stack.env("admin"))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "FAIL  every_role_has_credential" in check.stdout and "User:siem has no SCRAM credential" in check.stdout

    lines: list[str] = []
    stack.up(log=lines.append)
    assert any("REPAIRED" in line and "siem" in line for line in lines), lines
    _every_role_logs_in(stack)
    assert stack.status()["healthy"]
    assert _auditseal("acl", "check", env=stack.env("admin")).returncode == 0
