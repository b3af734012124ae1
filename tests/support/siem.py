"""Helpers for tests and benchmarks of the SIEM path on topics of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.config import KafkaSettings
from pipeline.dev.provision import acl_binding
from pipeline.permissions.topology import Grant
from tests.support.sealing import REPO, Topics


def create_ocsf_topic(stack, topics: Topics, suffix: str = "") -> str:
    """An OCSF topic beside a test's sealed topic (same partitions), and the siem-bridge and siem roles'
    grants on both (``suffix``: a second one)."""
    ocsf_topic = topics.sealed.replace("test.sealed.", "test.ocsf.") + suffix
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.create_topics([NewTopic(ocsf_topic, num_partitions=topics.partitions,
                                                replication_factor=1)]).values():
        future.result(timeout=30)
    grants = [("User:siem-bridge", Grant("topic", topics.sealed, "read")),
              ("User:siem-bridge", Grant("topic", topics.sealed, "describe")),
              ("User:siem-bridge", Grant("topic", ocsf_topic, "write")),
              ("User:siem-bridge", Grant("topic", ocsf_topic, "describe")),
              ("User:siem", Grant("topic", ocsf_topic, "read")),
              ("User:siem", Grant("topic", ocsf_topic, "describe")),
              ("User:siem", Grant("topic", topics.sealed, "read")),
              ("User:siem", Grant("topic", topics.sealed, "describe"))]
    for future in admin.create_acls([acl_binding(p, g) for p, g in grants]).values():
        future.result(timeout=30)
    return ocsf_topic


def delete_ocsf_topic(stack, ocsf_topic: str) -> None:
    """Remove an OCSF topic made by create_ocsf_topic (its ACLs go with the test's other topics' cleanup)."""
    admin = AdminClient(KafkaSettings.from_env(stack.setup_env("kafka")).client_config())
    for future in admin.delete_topics([ocsf_topic]).values():
        future.result(timeout=30)


def start_bridge(stack, topics: Topics, ocsf_topic: str, app_id: str, log: Path | None = None) -> subprocess.Popen:
    """A real bridge process (``auditseal siem-bridge``) as the siem-bridge role on the test's topics."""
    env = dict(os.environ, **stack.env("siem-bridge"))
    argv = [sys.executable, "-m", "pipeline.cli.main", "siem-bridge", "--sealed-topic", topics.sealed,
            "--ocsf-topic", ocsf_topic, "--app-id", app_id, "--metrics-port", "0"]
    output = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
