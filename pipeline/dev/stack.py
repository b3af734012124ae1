"""``auditseal dev up | down | status | env``: the local secured stack, started and stopped by pid.

State lives in the stack folder (``.stack/`` by default): the CA and certificates, the credentials
file (mode 0600), broker and S3 data, logs and pid files. Downloads and builds live in the cache.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.dev import kafka, s3server
from pipeline.dev.cache import cache_dir, stack_dir
from pipeline.dev.pki import Pki, ensure_pki, write_private
from pipeline.dev.processes import ManagedProcess, StackError, port_is_free, port_is_open
from pipeline.permissions.topology import BUCKET, role as role_named, roles

DEFAULT_PORTS = {"kafka_client": 19092, "kafka_internal": 19093, "kafka_controller": 19094, "s3": 17070}
_PORT_PURPOSE = {
    "kafka_client": "Kafka client listener (SASL_SSL)",
    "kafka_internal": "Kafka inter-broker listener",
    "kafka_controller": "Kafka KRaft controller listener",
    "s3": "S3 server (versitygw)",
}
READY_TIMEOUT_S = 90.0


@dataclass
class Credentials:
    """Fresh random secrets for one stack: Kafka SCRAM passwords and S3 keys per role, plus the setup users."""

    kafka_bootstrap_password: str
    s3_root_access: str
    s3_root_secret: str
    kafka: dict[str, str]
    s3: dict[str, dict[str, str]]

    @classmethod
    def generate(cls) -> Credentials:
        """New random credentials for every role (``secrets``, 192 bits each)."""
        return cls(
            kafka_bootstrap_password=secrets.token_urlsafe(24),
            s3_root_access="root-" + secrets.token_hex(6),
            s3_root_secret=secrets.token_urlsafe(30),
            kafka={r.name: secrets.token_urlsafe(24) for r in roles()},
            s3={r.name: {"access": f"{r.name}-{secrets.token_hex(6)}", "secret": secrets.token_urlsafe(30)}
                for r in roles()},
        )


class LocalStack:
    """The local stack rooted at ``root``; every method is safe to call again (idempotent)."""

    def __init__(self, root: Path | None = None, cache: Path | None = None) -> None:
        self.root = root or stack_dir()
        self.cache = cache or cache_dir()
        self.pki = Pki(self.root / "pki")
        self.kafka_process = ManagedProcess(
            "kafka", self.root / "run" / "kafka.pid", self.root / "kafka" / "logs" / "kafka.out", str(self.root)
        )
        self.s3_process = ManagedProcess(
            "s3", self.root / "run" / "s3.pid", self.root / "s3" / "s3.log", str(self.root / "s3")
        )

    # ---- files -------------------------------------------------------------------------------
    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    @property
    def settings_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def signing_key_file(self) -> Path:
        """The sealer's Ed25519 private key (mode 0600); never leaves the sealer's env."""
        return self.root / "keys" / "sealer-signing-key.pem"

    @property
    def keyring_file(self) -> Path:
        """The public keyring verifiers and SIEMs check checkpoints against."""
        return self.root / "keys" / "keyring.json"

    def _ensure_keys(self) -> None:
        from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring, save_signing_key

        if self.signing_key_file.exists():
            return
        self.signing_key_file.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.signing_key_file.parent, 0o700)
        key = generate_signing_key()
        save_signing_key(key, self.signing_key_file)
        save_keyring(Keyring().rotate(key.public_key, time.time_ns() // 1000), self.keyring_file)

    @property
    def authorizer_log(self) -> Path:
        """The broker's log of authorization decisions (input of the access auditor)."""
        return self.root / "kafka" / "logs" / "kafka-authorizer.log"

    def ports(self) -> dict[str, int]:
        """Ports in use by this stack: saved at first ``up``, from ``AUDITSEAL_DEV_PORT_BASE`` or the defaults."""
        if self.settings_file.exists():
            return json.loads(self.settings_file.read_text())["ports"]
        base = os.environ.get("AUDITSEAL_DEV_PORT_BASE")
        if base:
            try:
                start = int(base)
            except ValueError:
                raise StackError(f"AUDITSEAL_DEV_PORT_BASE must be a port number, found {base!r}") from None
            return {name: start + i for i, name in enumerate(DEFAULT_PORTS)}
        return dict(DEFAULT_PORTS)

    def credentials(self) -> Credentials:
        """The stack's credentials; StackError if the stack was never brought up."""
        try:
            return Credentials(**json.loads(self.credentials_file.read_text()))
        except FileNotFoundError:
            raise StackError(f"no local stack at {self.root}; run `auditseal dev up` first") from None

    def _ensure_credentials(self) -> Credentials:
        if not self.credentials_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_private(self.credentials_file, json.dumps(asdict(Credentials.generate()), indent=2).encode())
        creds = self.credentials()
        # a role or service added to the roles file since the stack was created gets its own fresh secrets
        fresh = Credentials.generate()
        missing = [r.name for r in roles() if r.name not in creds.kafka or r.name not in creds.s3]
        if missing:
            for name in missing:
                creds.kafka.setdefault(name, fresh.kafka[name])
                creds.s3.setdefault(name, fresh.s3[name])
            write_private(self.credentials_file, json.dumps(asdict(creds), indent=2).encode())
        return creds

    # ---- env ---------------------------------------------------------------------------------
    def env(self, role_name: str) -> dict[str, str]:
        """The variables every AuditSeal command reads, for ``role_name`` on this stack."""
        from pipeline.privacy.provision import privacy_env

        role_named(role_name)
        creds = self.credentials()
        ports = self.ports()
        return {
            "AUDITSEAL_BOOTSTRAP": f"localhost:{ports['kafka_client']}",
            "AUDITSEAL_SASL_USERNAME": role_name,
            "AUDITSEAL_SASL_PASSWORD": creds.kafka[role_name],
            "AUDITSEAL_CA_FILE": str(self.pki.ca_cert),
            "AWS_ENDPOINT_URL": f"https://localhost:{ports['s3']}",
            "AWS_ACCESS_KEY_ID": creds.s3[role_name]["access"],
            "AWS_SECRET_ACCESS_KEY": creds.s3[role_name]["secret"],
            "AWS_CA_BUNDLE": str(self.pki.ca_cert),
            "AUDITSEAL_BUCKET": BUCKET,
            "AUDITSEAL_KEYRING": str(self.keyring_file),
            **({"AUDITSEAL_SIGNING_KEY": str(self.signing_key_file)} if role_name == "sealer" else {}),
            **privacy_env(role_name, self.signing_key_file.parent, creds.kafka),
        }

    def broker_tls_config(self) -> dict[str, str]:
        """librdkafka settings that log in as the broker itself (``User:broker``, a super user) with its
        certificate, on the internal mutual-TLS listener: for repairing the stack, never for a role."""
        return {
            "bootstrap.servers": f"localhost:{self.ports()['kafka_internal']}",
            "security.protocol": "SSL",
            "ssl.ca.location": str(self.pki.ca_cert),
            "ssl.certificate.location": str(self.pki.cert("broker")),
            "ssl.key.location": str(self.pki.key("broker")),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def setup_env(self, kind: str) -> dict[str, str]:
        """The super users' variables (``kind`` is "kafka" or "s3"), for provisioning and tests only;
        no role's env ever carries them."""
        creds = self.credentials()
        ports = self.ports()
        if kind == "kafka":
            return {
                "AUDITSEAL_BOOTSTRAP": f"localhost:{ports['kafka_client']}",
                "AUDITSEAL_SASL_USERNAME": kafka.BOOTSTRAP_USER,
                "AUDITSEAL_SASL_PASSWORD": creds.kafka_bootstrap_password,
                "AUDITSEAL_CA_FILE": str(self.pki.ca_cert),
            }
        return {
            "AWS_ENDPOINT_URL": f"https://localhost:{ports['s3']}",
            "AWS_ACCESS_KEY_ID": creds.s3_root_access,
            "AWS_SECRET_ACCESS_KEY": creds.s3_root_secret,
            "AWS_CA_BUNDLE": str(self.pki.ca_cert),
            "AUDITSEAL_BUCKET": BUCKET,
        }

    # ---- up ----------------------------------------------------------------------------------
    def up(self, log=print) -> None:
        """Bring the stack up (downloads, certificates, credentials, Kafka, S3, users, ACLs, topics, bucket).

        If anything fails, the processes this call started are stopped again: nothing is left half-started.
        """
        kafka_running = self.kafka_process.pid() is not None
        s3_running = self.s3_process.pid() is not None
        ports = self.ports()
        self._check_ports(ports, kafka_running, s3_running)
        java = kafka.java_executable() if not kafka_running else None
        log(f"cache: {self.cache}")
        libs = kafka.ensure_jars(self.cache)
        binary = s3server.ensure_binary(self.cache)
        self.root.mkdir(parents=True, exist_ok=True)
        self.settings_file.write_text(json.dumps({"ports": ports}, indent=2) + "\n")
        ensure_pki(self.pki.directory, {"broker": True, "s3": False})
        creds = self._ensure_credentials()
        self._ensure_keys()
        started: list[ManagedProcess] = []
        try:
            if not kafka_running:
                assert java is not None
                self._start_kafka(java, libs, ports, creds)
                started.append(self.kafka_process)
            if not s3_running:
                self._start_s3(binary, ports, creds)
                started.append(self.s3_process)
            self._wait_ready(ports)
            from pipeline.dev.provision import provision_kafka, provision_s3, reassert_setup_user

            reassert_setup_user(self.broker_tls_config(), creds)
            provision_kafka(self.setup_env("kafka"), creds, log=log)
            provision_s3(binary, self.setup_env("s3"), creds, log=log)
        except BaseException:
            for process in started:
                process.stop()
            raise
        log(f"stack up: Kafka on localhost:{ports['kafka_client']} (SASL_SSL), S3 on https://localhost:{ports['s3']}")
        log(f"connection profiles: `auditseal dev env --role ROLE` (credentials in {self.credentials_file})")

    def _check_ports(self, ports: dict[str, int], kafka_running: bool, s3_running: bool) -> None:
        for name, port in ports.items():
            ours = s3_running if name == "s3" else kafka_running
            if not ours and not port_is_free("127.0.0.1", port):
                raise StackError(
                    f"port {port} ({_PORT_PURPOSE[name]}) is already in use by another program; "
                    "stop it, or choose other ports with AUDITSEAL_DEV_PORT_BASE=N (uses N..N+3) "
                    "on a stack that was never started (or after `auditseal dev down --purge`)"
                )

    def _start_kafka(self, java: str, libs: Path, ports: dict[str, int], creds: Credentials) -> None:
        home = self.root / "kafka"
        (home / "logs").mkdir(parents=True, exist_ok=True)
        properties = home / "server.properties"
        log4j = home / "log4j2.properties"
        kafka_ports = kafka.KafkaPorts(ports["kafka_client"], ports["kafka_internal"], ports["kafka_controller"])
        properties.write_text(kafka.server_properties(data_dir=home / "data", pki_dir=self.pki.directory, ports=kafka_ports))
        log4j.write_text(kafka.log4j_properties(home / "logs"))
        if not (home / "data" / "meta.properties").exists():
            kafka.format_storage(java, libs, properties, creds.kafka_bootstrap_password, log4j)
        kafka.start_broker(self.kafka_process, java, libs, properties, log4j)

    def _start_s3(self, binary: Path, ports: dict[str, int], creds: Credentials) -> None:
        home = self.root / "s3"
        s3server.start_server(
            self.s3_process, binary, port=ports["s3"], root_access=creds.s3_root_access,
            root_secret=creds.s3_root_secret, cert=self.pki.cert("s3"), key=self.pki.key("s3"),
            data=home / "data", versions=home / "versions", iam=home / "iam",
        )

    def _wait_ready(self, ports: dict[str, int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = {"kafka": (self.kafka_process, ports["kafka_client"]), "s3": (self.s3_process, ports["s3"])}
        while waiting:
            for name, (process, port) in list(waiting.items()):
                if process.pid() is None:
                    raise StackError(f"{name} exited during start-up ({process.exit_description()}); last lines of {process.log_file}:\n"
                                     f"{process.log_tail()}")
                if port_is_open("127.0.0.1", port):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                raise StackError(f"{', '.join(waiting)} did not open its port within {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.2)

    # ---- down / status -----------------------------------------------------------------------
    def down(self, purge: bool = False, log=print) -> None:
        """Stop the processes this stack started (by pid); with ``purge`` also delete its state."""
        for process in (self.s3_process, self.kafka_process):
            if process.stop():
                log(f"stopped {process.name}")
        if purge and self.root.exists():
            import shutil

            shutil.rmtree(self.root)
            log(f"purged {self.root}")

    def status(self) -> dict[str, Any]:
        """Health of each part: process alive, port open, and a real authenticated request answered."""
        ports = self.ports()
        report: dict[str, Any] = {"stack_dir": str(self.root), "cache_dir": str(self.cache), "parts": {}}
        for name, process, port in (("kafka", self.kafka_process, ports["kafka_client"]),
                                    ("s3", self.s3_process, ports["s3"])):
            pid = process.pid()
            part = {"pid": pid, "port": port, "listening": port_is_open("127.0.0.1", port) if pid else False}
            part["healthy"], part["detail"] = self._probe(name) if part["listening"] else (False, "not running")
            report["parts"][name] = part
        report["healthy"] = all(p["healthy"] for p in report["parts"].values())
        return report

    def _probe(self, name: str) -> tuple[bool, str]:
        try:
            if name == "kafka":
                from confluent_kafka.admin import AdminClient

                from pipeline.config import KafkaSettings

                admin = AdminClient(KafkaSettings.from_env(self.setup_env("kafka")).client_config())
                metadata = admin.list_topics(timeout=5)
                return True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"
            from pipeline.config import S3Settings

            s3 = S3Settings.from_env(self.setup_env("s3")).client()
            lock = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]
            return True, f"bucket {BUCKET}: Object Lock {lock.get('ObjectLockEnabled')}"
        except Exception as exc:  # a status probe reports any failure as unhealthy, with its reason
            return False, f"{type(exc).__name__}: {exc}"
