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

from pipeline.dev import cluster, kafka, s3server
from pipeline.dev.cache import cache_dir, stack_dir
from pipeline.dev.hsm import ARCHIVE_TOKEN, KEYSTORE_TOKEN, SIGNING_TOKEN, DevHsm
from pipeline.dev.pki import Pki, ensure_pki, write_private
from pipeline.dev.processes import ManagedProcess, StackError, make_private, port_is_free, port_is_open
from pipeline.permissions.topology import BUCKET, roles
from pipeline.permissions.topology import role as role_named

# With AUDITSEAL_DEV_PORT_BASE=N a part takes N + its position here; new parts go at the end.
DEFAULT_PORTS = {"kafka_client": 19092, "kafka_internal": 19093, "kafka_controller": 19094, "s3": 17070,
                 "witness": 17074}
_PORT_PURPOSE = {
    "kafka_client": "Kafka client listener (SASL_SSL)",
    "kafka_internal": "Kafka inter-broker listener",
    "kafka_controller": "Kafka KRaft controller listener",
    "s3": "S3 server (versitygw)",
    "witness": "tlog witness (omniwitness)",
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
        self._formatted_now = False  # set when this object formats the broker's storage (a new cluster)
        self.s3_process = ManagedProcess(
            "s3", self.root / "run" / "s3.pid", self.root / "s3" / "s3.log", str(self.root / "s3")
        )
        self.witness_process = ManagedProcess(
            "witness", self.root / "run" / "witness.pid", self.root / "witness" / "witness.log",
            str(self.root / "witness"),
        )

    # ---- files -------------------------------------------------------------------------------
    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    @property
    def settings_file(self) -> Path:
        return self.root / "stack.json"

    @property
    def hsm(self) -> DevHsm:
        """The stack's SoftHSM2 tokens (``hsm/``): the sealer's signing keys and the archive's master key."""
        return DevHsm(self.root / "hsm")

    @property
    def keyring_file(self) -> Path:
        """The public keyring verifiers and SIEMs check checkpoints against."""
        return self.root / "keys" / "keyring.json"

    def custody_env(self, token: str = SIGNING_TOKEN) -> dict[str, str]:
        """The variables that reach one of the stack's tokens (the sealer's by default) and the keyring:
        what the sealer and ``auditseal keys`` read."""
        return {**self.hsm.env(token), "AUDITSEAL_KEYRING": str(self.keyring_file)}

    def signer(self):
        """The sealer's signer of the keyring's active key, in the stack's token (for tests and benchmarks)."""
        from pipeline.integrity.keyring import load_keyring
        from pipeline.keys.store import SigningKeyStore

        self.hsm.use_conf()
        active = load_keyring(self.keyring_file).active
        if active is None:
            raise StackError(f"the keyring {self.keyring_file} has no active key: run `auditseal keys rotate`")
        return SigningKeyStore(self.custody_env()).require_signers()[active.key_id]

    def _ensure_keys(self, log=print) -> None:
        # dev up creates the sealer's key in the token (and, for a stack made before the token existed,
        # rotates the keyring from its key file to it) and the archive's master key in the other token
        from pipeline.integrity.keyring import Keyring, load_keyring, save_keyring
        from pipeline.keys.pkcs11 import DEFAULT_MASTER_LABEL, Pkcs11Config, open_token
        from pipeline.keys.store import SigningKeyStore

        self.hsm.ensure(log)
        self.hsm.use_conf()
        self.keyring_file.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keyring_file.parent, 0o700)
        store = SigningKeyStore(self.custody_env())
        held = store.signers()
        keyring = load_keyring(self.keyring_file) if self.keyring_file.exists() else Keyring()
        active = keyring.active
        if active is None or active.key_id not in held:
            signer = next((key for key_id, key in held.items() if key_id not in keyring), None) or store.generate()
            save_keyring(keyring.rotate(signer.public_key, time.time_ns() // 1000), self.keyring_file)
            log(f"sealer signing key {signer.key_id} created in SoftHSM2 token {SIGNING_TOKEN}")
        archive = open_token(Pkcs11Config.from_env(self.hsm.env(ARCHIVE_TOKEN)))
        if archive.master_key_count(DEFAULT_MASTER_LABEL) == 0:
            archive.generate_master_key(DEFAULT_MASTER_LABEL, "mk-dev-" + secrets.token_hex(6))
        from pipeline.privacy.provision import ensure_token_kek

        ensure_token_kek(open_token(Pkcs11Config.from_env(self.hsm.env(KEYSTORE_TOKEN))))

    @property
    def witness_policy_file(self) -> Path:
        """The C2SP tlog-policy of this stack: its chains' log keys, the witness, quorum = that witness."""
        return self.root / "witness" / "policy.txt"

    def log_name(self) -> str:
        """This deployment's log name, ``auditseal/<Kafka cluster id>`` (see pipeline.integrity.log_identity)."""
        from pipeline.integrity.log_identity import default_log_name

        meta = self.root / "kafka" / "data" / "meta.properties"
        try:
            lines = meta.read_text().splitlines()
        except FileNotFoundError:
            raise StackError(f"no Kafka storage at {meta.parent}; run `auditseal dev up` first") from None
        for line in lines:
            if line.startswith("cluster.id="):
                return default_log_name(line.split("=", 1)[1].strip())
        raise StackError(f"{meta} names no cluster.id")

    def _witness_logs(self, newest: bool = False) -> dict[str, str]:
        """origin -> log vkey for every chain the stack's sealers write (audit.raw's and each origin topic's:
        audit.access, audit.verification, ...), under the sealer's key: what the witness accepts and the policy
        lists, so a sealer of any origin run with the stack's policy has its heads cosigned. ``newest``: under
        the keyring's newest key that is not revoked (a rotation's next key)."""
        from pipeline.integrity.keyring import load_keyring
        from pipeline.integrity.log_identity import chain_origin, log_verifier
        from pipeline.wire.topics import SOURCE_TOPICS, TOPICS

        keyring = load_keyring(self.keyring_file)
        key = keyring.active  # the sealer's key in its token (public half)
        if newest:
            key = max((e for e in keyring if e.compromised_since_micros is None),
                      key=lambda e: e.valid_from_micros, default=None)
        if key is None:
            raise StackError(f"the keyring {self.keyring_file} has no active key; `auditseal dev up` creates it")
        partitions = {spec.name: spec.partitions for spec in TOPICS}
        origins = [chain_origin(self.log_name(), f"{topic}/{n}") for topic in SOURCE_TOPICS
                   for n in range(partitions[topic])]
        return {origin: log_verifier(key.public_key, origin).vkey for origin in origins}

    def rekey_witness(self) -> list[str]:
        """Give the stack's witness the keyring's newest key for each chain the stack's sealers write (the
        witness operator's half of a key change-over; the sealer co-signs heads with both keys until its
        switch); the origins changed."""
        from pipeline.dev import witness

        return witness.set_log_keys(self.root / "witness", self._witness_logs(newest=True))

    def _witness_lists_every_chain(self) -> bool:
        from pipeline.dev import witness

        try:
            listed = (self.root / "witness" / "logs.yaml").read_text()
        except FileNotFoundError:
            return False
        return listed == witness.logs_yaml(self._witness_logs())

    def _start_witness(self, binary: Path, ports: dict[str, int]) -> None:
        from pipeline.dev import witness
        from pipeline.integrity.note import NoteVerifier
        from pipeline.integrity.policy import PolicyWitness, format_policy

        home = self.root / "witness"
        verifier = witness.ensure_witness_key(home)
        logs = self._witness_logs()
        url = f"http://127.0.0.1:{ports['witness']}"
        policy = format_policy([NoteVerifier.from_vkey(v) for v in logs.values()],
                               [PolicyWitness("dev-witness", verifier, url)], "dev-witness")
        self.witness_policy_file.write_text(policy)
        witness.start_witness(self.witness_process, binary, home=home, port=ports["witness"], logs=logs)

    @property
    def authorizer_log(self) -> Path:
        """The broker's log of authorization decisions (input of the access auditor)."""
        return self.root / "kafka" / "logs" / "kafka-authorizer.log"

    def brokers(self) -> int:
        """The number of Kafka nodes of this stack (1, or 3 after ``dev up --brokers 3``), saved at first ``up``."""
        if self.settings_file.exists():
            return json.loads(self.settings_file.read_text()).get("brokers", 1)
        return 1

    def kafka_nodes(self, brokers: int | None = None) -> list[cluster.Node]:
        """The stack's Kafka nodes (node 1 first; it is the only one of a single-broker stack)."""
        count = brokers or self.brokers()
        return cluster.nodes(self.root, cluster.cluster_ports(self.ports(), count), count, self.kafka_process)

    def ports(self) -> dict[str, int]:
        """Ports in use by this stack: saved at first ``up``, from ``AUDITSEAL_DEV_PORT_BASE`` or the defaults."""
        if self.settings_file.exists():
            saved = json.loads(self.settings_file.read_text())["ports"]
            # a stack made before a part existed gives the new part the port its base implies
            base = saved["kafka_client"] - list(DEFAULT_PORTS).index("kafka_client")
            offset = base - DEFAULT_PORTS["kafka_client"]
            for position, name in enumerate(DEFAULT_PORTS):
                saved.setdefault(name, DEFAULT_PORTS[name] if offset == 0 else base + position)
            return saved
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
            "AUDITSEAL_BOOTSTRAP": cluster.bootstrap(self.kafka_nodes()),
            "AUDITSEAL_SASL_USERNAME": role_name,
            "AUDITSEAL_SASL_PASSWORD": creds.kafka[role_name],
            "AUDITSEAL_CA_FILE": str(self.pki.ca_cert),
            "AWS_ENDPOINT_URL": f"https://localhost:{ports['s3']}",
            "AWS_ACCESS_KEY_ID": creds.s3[role_name]["access"],
            "AWS_SECRET_ACCESS_KEY": creds.s3[role_name]["secret"],
            "AWS_CA_BUNDLE": str(self.pki.ca_cert),
            "AUDITSEAL_BUCKET": BUCKET,
            "AUDITSEAL_KEYRING": str(self.keyring_file),
            "AUDITSEAL_WITNESS_POLICY": str(self.witness_policy_file),
            "AUDITSEAL_LOG_NAME": self.log_name(),
            # the sealer signs in its token; the sink and the verifier reach the master key in theirs
            **(self.hsm.env(SIGNING_TOKEN) if role_name == "sealer" else {}),
            **(self.hsm.env(ARCHIVE_TOKEN) if role_name in ("sink", "verifier") else {}),
            **privacy_env(role_name, self.keyring_file.parent, creds.kafka),
        }

    def broker_tls_config(self) -> dict[str, str]:
        """librdkafka settings that connect as the broker itself (``Cert:broker``, a super user) with its
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
            # the setup super user has no password at all: its certificate, on the internal mTLS listener
            return {
                "AUDITSEAL_BOOTSTRAP": ",".join(f"localhost:{node.ports.internal}" for node in self.kafka_nodes()),
                "AUDITSEAL_CA_FILE": str(self.pki.ca_cert),
                "AUDITSEAL_SSL_CERT_FILE": str(self.pki.cert(kafka.BOOTSTRAP_USER)),
                "AUDITSEAL_SSL_KEY_FILE": str(self.pki.key(kafka.BOOTSTRAP_USER)),
            }
        return {
            "AWS_ENDPOINT_URL": f"https://localhost:{ports['s3']}",
            "AWS_ACCESS_KEY_ID": creds.s3_root_access,
            "AWS_SECRET_ACCESS_KEY": creds.s3_root_secret,
            "AWS_CA_BUNDLE": str(self.pki.ca_cert),
            "AUDITSEAL_BUCKET": BUCKET,
        }

    # ---- up ----------------------------------------------------------------------------------
    def up(self, log=print, brokers: int | None = None) -> None:
        """Bring the stack up (downloads, certificates, credentials, Kafka, S3, users, ACLs, topics, bucket).

        ``brokers`` (1 or 3) is the number of Kafka nodes of a new stack (default 1); an existing stack
        keeps its own. If anything fails, the processes this call started are stopped again: nothing is
        left half-started.
        """
        saved = self.brokers() if self.settings_file.exists() else None
        count = cluster.check_brokers(brokers or saved or 1)
        if saved is not None and count != saved:
            raise StackError(f"this stack has {saved} Kafka node(s); `auditseal dev down --purge` first to "
                             f"start one with {count}")
        nodes = self.kafka_nodes(count)
        kafka_running = all(node.process.pid() is not None for node in nodes)
        s3_running = self.s3_process.pid() is not None
        ports = cluster.cluster_ports(self.ports(), count)
        self._check_ports(ports, nodes, s3_running)
        java = kafka.java_executable() if not kafka_running else None
        log(f"cache: {self.cache}")
        libs = kafka.ensure_jars(self.cache, log=log)
        binary = s3server.ensure_binary(self.cache, log=log)
        from pipeline.dev import witness

        witness_binary = witness.ensure_binary(self.cache)
        witness_running = self.witness_process.pid() is not None
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.settings_file.write_text(json.dumps({"ports": ports, "brokers": count}, indent=2) + "\n")
        ensure_pki(self.pki.directory, {"broker": True, "s3": False, kafka.BOOTSTRAP_USER: True})
        creds = self._ensure_credentials()
        self._ensure_keys(log)
        started: list[ManagedProcess] = []
        try:
            if not kafka_running:
                assert java is not None
                new, self._formatted_now = cluster.start_nodes(
                    nodes, java=java, libs=libs, pki_dir=self.pki.directory,
                    principal_builder=kafka.ensure_principal_builder(self.cache, libs), log=log)
                started += new
            if not s3_running:
                self._start_s3(binary, ports, creds)
                started.append(self.s3_process)
            if witness_running and not self._witness_lists_every_chain():
                # a witness started before the stack's chains changed (an origin topic added): start it again
                log("witness: its log list lacks chains of the stack; restarting it")
                self.witness_process.stop()
                witness_running = False
            if not witness_running:
                # after Kafka: the log name comes from the cluster id its storage was formatted with
                self._start_witness(witness_binary, ports)
                started.append(self.witness_process)
            self._wait_ready(nodes, ports)
            from pipeline.dev.provision import provision_kafka, provision_s3, reassert_users

            reassert_users(self.broker_tls_config(), creds, new_cluster=self._formatted_now, log=log)
            provision_kafka(self.setup_env("kafka"), creds, log=log,
                            replicas=cluster.CLUSTER_REPLICATION if count > 1 else None)
            provision_s3(binary, self.setup_env("s3"), creds, log=log)
        except BaseException:
            for process in started:
                process.stop()
            raise
        log(f"stack up: Kafka on {cluster.bootstrap(nodes)} (SASL_SSL{f', {count} nodes' if count > 1 else ''}), "
            f"S3 on https://localhost:{ports['s3']}, witness on http://127.0.0.1:{ports['witness']} "
            f"(policy {self.witness_policy_file})")
        log(f"connection profiles: `auditseal dev env --role ROLE` (credentials in {self.credentials_file})")

    def _check_ports(self, ports: dict[str, int], nodes: list[cluster.Node], s3_running: bool) -> None:
        running = {port for node in nodes if node.process.pid() is not None
                   for port in (node.ports.client, node.ports.internal, node.ports.controller)}
        witness_running = self.witness_process.pid() is not None
        for name, port in ports.items():
            ours = {"s3": s3_running, "witness": witness_running}.get(name, port in running)
            if not ours and not port_is_free("127.0.0.1", port):
                purpose = _PORT_PURPOSE.get(name) or cluster.port_purpose(name) or name
                raise StackError(
                    f"port {port} ({purpose}) is already in use by another program; "
                    "stop it, or choose other ports with AUDITSEAL_DEV_PORT_BASE=N (uses N..N+3) "
                    "on a stack that was never started (or after `auditseal dev down --purge`)"
                )

    def _start_s3(self, binary: Path, ports: dict[str, int], creds: Credentials) -> None:
        home = self.root / "s3"
        make_private(home)
        s3server.start_server(
            self.s3_process, binary, port=ports["s3"], root_access=creds.s3_root_access,
            root_secret=creds.s3_root_secret, cert=self.pki.cert("s3"), key=self.pki.key("s3"),
            data=home / "data", versions=home / "versions", iam=home / "iam",
        )

    def _wait_ready(self, nodes: list[cluster.Node], ports: dict[str, int]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S * (1 if len(nodes) == 1 else 2)
        waiting = {node.name: (node.process, node.ports.client) for node in nodes}
        waiting["s3"] = (self.s3_process, ports["s3"])
        waiting["witness"] = (self.witness_process, ports["witness"])
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
        for process in (self.witness_process, self.s3_process,
                        *(node.process for node in reversed(self.kafka_nodes()))):
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
        parts = [(node.name, node.process, node.ports.client, node) for node in self.kafka_nodes()]
        for name, process, port, node in (*parts, ("s3", self.s3_process, ports["s3"], None),
                                          ("witness", self.witness_process, ports["witness"], "witness")):
            pid = process.pid()
            part = {"pid": pid, "port": port, "listening": port_is_open("127.0.0.1", port) if pid else False}
            part["healthy"], part["detail"] = self._probe(node) if part["listening"] else (False, "not running")
            report["parts"][name] = part
        report["healthy"] = all(p["healthy"] for p in report["parts"].values())
        return report

    def _probe(self, node: cluster.Node | str | None) -> tuple[bool, str]:
        """A Kafka node (this one alone: its own listeners), the witness (``"witness"``), or the S3 server
        when ``node`` is None."""
        try:
            if node == "witness":
                return self._probe_witness()
            if isinstance(node, cluster.Node):
                from confluent_kafka.admin import AdminClient

                from pipeline.config import KafkaSettings
                from pipeline.dev.provision import expected_users, users_without_credential

                # as the broker itself first: it needs no SCRAM credential, so it can tell which are missing
                broker = AdminClient(dict(self.broker_tls_config(),
                                          **{"bootstrap.servers": f"localhost:{node.ports.internal}"}))
                missing = users_without_credential(broker, expected_users(self.credentials()))
                if missing:  # those roles cannot log in (README, "SCRAM users lost on a restart")
                    return False, f"no SCRAM credential on the broker for {', '.join(missing)} " \
                                  "(`auditseal dev up` sets them again)"
                admin = AdminClient(KafkaSettings.from_env(self.setup_env("kafka")).client_config(
                    **{"bootstrap.servers": f"localhost:{node.ports.internal}"}))
                metadata = admin.list_topics(timeout=5)
                return True, f"{len(metadata.brokers)} broker(s), {len(metadata.topics)} topic(s)"
            from pipeline.config import S3Settings

            s3 = S3Settings.from_env(self.setup_env("s3")).client()
            lock = s3.get_object_lock_configuration(Bucket=BUCKET)["ObjectLockConfiguration"]
            return True, f"bucket {BUCKET}: Object Lock {lock.get('ObjectLockEnabled')}"
        except Exception as exc:  # a status probe reports any failure as unhealthy, with its reason
            return False, f"{type(exc).__name__}: {exc}"

    def _probe_witness(self) -> tuple[bool, str]:
        """A real tlog-witness request: an empty add-checkpoint must be refused with 400 Bad Request."""
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.ports()["witness"], timeout=5)
        try:
            connection.request("POST", "/add-checkpoint", body=b"")
            status = connection.getresponse().status
        finally:
            connection.close()
        return status == 400, f"add-checkpoint of nothing answered {status} (expected 400)"
