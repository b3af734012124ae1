#!/usr/bin/env python3
"""Kafka alone: a deleted SCRAM user makes a restarted KRaft broker reject every SCRAM login.

Steps: format a single-node KRaft broker with a bootstrap SCRAM user (``kafka-storage format --add-scram``),
start it, log in, create user ``alice`` and delete it again, stop the broker, start it again, log in.
With Kafka 3.5 to 4.4 the last login is rejected: replaying the metadata log, ``ScramDelta.apply()``
removes an entry from the map it is iterating over when the deleted user comes first in hash order
(``alice`` hashes before ``bootstrap``), and the broker ends up with no SCRAM user at all.

Needs Java 17+ and the Kafka jars (``--libs``: a Kafka distribution's ``libs/`` folder, or AuditSeal's cache
``~/.cache/auditseal/kafka/<version>/libs``) and the Python package ``confluent-kafka`` for the client side.
``--snapshot-interval-ms N`` sets ``metadata.log.max.snapshot.interval.ms`` and waits for a snapshot that
includes the deletion before the restart: the mitigation, under which the login is accepted.

Exit code: 0 the login after the restart is accepted, 1 it is rejected (the bug), 2 the setup failed.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

BOOTSTRAP_USER, BOOTSTRAP_PASSWORD = "bootstrap", "bootstrap-secret"
DELETED_USER = "alice"
LOG4J = "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\nappender.file.type = File\n" \
        "appender.file.name = file\nappender.file.fileName = {log}\nappender.file.layout.type = PatternLayout\n" \
        "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"


class SetupError(Exception):
    """The broker could not be formatted, started or used before the restart."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def properties(data: Path, client: int, internal: int, controller: int, snapshot_ms: int | None) -> str:
    lines = {
        "process.roles": "broker,controller", "node.id": 1, "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"CLIENT://127.0.0.1:{client},INTERNAL://127.0.0.1:{internal}",
        "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "INTERNAL", "controller.listener.names": "CONTROLLER",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.client.scram-sha-512.sasl.jaas.config":
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "log.dirs": data, "offsets.topic.replication.factor": 1, "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
    }
    if snapshot_ms is not None:
        lines["metadata.log.max.snapshot.interval.ms"] = snapshot_ms
    return "".join(f"{k}={v}\n" for k, v in lines.items())


class Broker:
    """One KRaft combined broker/controller run from the jars."""

    def __init__(self, java: str, libs: Path, work: Path, snapshot_ms: int | None) -> None:
        self.java, self.libs, self.work = java, libs, work
        self.client = free_port()
        self.config = work / "server.properties"
        self.config.write_text(properties(work / "data", self.client, free_port(), free_port(), snapshot_ms))
        self.log4j = work / "log4j2.properties"
        self.log4j.write_text(LOG4J.format(log=work / "server.log"))
        self.process: subprocess.Popen | None = None

    def _java(self, main: str, *args: str) -> list[str]:
        return [self.java, f"-Dlog4j2.configurationFile={self.log4j}", "-cp", f"{self.libs}/*", main, *args]

    def format(self) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        scram = f"SCRAM-SHA-512=[name={BOOTSTRAP_USER},password={BOOTSTRAP_PASSWORD}]"
        done = subprocess.run(self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                                         "-c", str(self.config), "--add-scram", scram),
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SetupError(f"kafka-storage format failed: {(done.stdout + done.stderr)[-2000:]}")

    def start(self, timeout: float = 180) -> None:
        out = open(self.work / "broker.out", "ab")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(self.config)), stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise SetupError(f"the broker exited ({self.process.returncode}); see {self.work / 'server.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.client), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise SetupError(f"the broker did not open port {self.client} within {timeout:.0f}s") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def admin(self, errors: list[KafkaError]) -> AdminClient:
        return AdminClient({
            "bootstrap.servers": f"127.0.0.1:{self.client}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": BOOTSTRAP_USER, "sasl.password": BOOTSTRAP_PASSWORD,
            "error_cb": errors.append, "log_level": 0})

    def login(self, timeout: float = 60) -> str | None:
        """None if the bootstrap user logs in and gets metadata; the broker's refusal otherwise."""
        errors: list[KafkaError] = []
        admin = self.admin(errors)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                admin.list_topics(timeout=1)
                return None
            except KafkaException:
                admin.poll(0)
                refused = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
                if refused:
                    return refused[0].str()
        return f"no answer within {timeout:.0f}s"

    def snapshots(self) -> list[Path]:
        return sorted((self.work / "data" / "__cluster_metadata-0").glob("*.checkpoint"))


def run(java: str, libs: Path, work: Path, snapshot_ms: int | None, say) -> int:
    broker = Broker(java, libs, work, snapshot_ms)
    broker.format()
    say(f"formatted {work / 'data'} with SCRAM-SHA-512 user {BOOTSTRAP_USER!r}")
    broker.start()
    try:
        refused = broker.login()
        if refused:
            raise SetupError(f"the first login was refused: {refused}")
        admin = broker.admin([])
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
        admin.alter_user_scram_credentials([UserScramCredentialUpsertion(DELETED_USER, info, b"alice-secret")]
                                           )[DELETED_USER].result(timeout=30)
        admin.alter_user_scram_credentials([UserScramCredentialDeletion(DELETED_USER, ScramMechanism.SCRAM_SHA_512)]
                                           )[DELETED_USER].result(timeout=30)
        say(f"created and deleted user {DELETED_USER!r}; {BOOTSTRAP_USER!r} still logs in")
        if snapshot_ms is not None:
            before = len(broker.snapshots())
            deadline = time.monotonic() + max(60, 5 * snapshot_ms / 1000)
            while len(broker.snapshots()) <= before:
                if time.monotonic() > deadline:
                    raise SetupError("no metadata snapshot was written after the deletion")
                time.sleep(0.5)
            say(f"a metadata snapshot was written after the deletion ({broker.snapshots()[-1].name})")
    finally:
        broker.stop()
    say("broker stopped; starting it again")
    broker.start()
    try:
        refused = broker.login()
    finally:
        broker.stop()
    if refused:
        say(f"BUG: after the restart the broker rejects {BOOTSTRAP_USER!r}: {refused}")
        return 1
    say(f"after the restart {BOOTSTRAP_USER!r} logs in")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--libs", type=Path, required=True, help="folder of the Kafka jars (a distribution's libs/)")
    parser.add_argument("--java", default=shutil.which("java") or "java")
    parser.add_argument("--snapshot-interval-ms", type=int, help="the mitigation: snapshot before the restart")
    parser.add_argument("--keep", action="store_true", help="keep the broker's folder (its logs) afterwards")
    args = parser.parse_args(argv)
    if not any(args.libs.glob("kafka_*.jar")):
        print(f"repro: no kafka_*.jar in {args.libs}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="kafka-scram-repro-"))
    try:
        return run(args.java, args.libs, work, args.snapshot_interval_ms, lambda line: print(f"repro: {line}"))
    except SetupError as exc:
        print(f"repro: setup failed: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"repro: broker folder kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
