"""The init jobs of docker-compose.yml: the compose stack made the way ``auditseal dev up`` makes the local one.

    python provision.py files STACK_DIR   # the `init` service, as root: CA, certificates, credentials,
                                          # keys, broker config, one env file per role, file ownership
    python provision.py setup STACK_DIR   # the `setup` service, once Kafka and S3 answer: users, ACLs,
                                          # topics, bucket and policy, then the Object Lock check

Everything that decides *what* is created comes from the same code as ``dev up``: the roles and topics
(:mod:`pipeline.permissions.topology`), fresh credentials (:class:`~pipeline.dev.stack.Credentials`), the broker
configuration (:func:`pipeline.dev.kafka.server_properties`), and the provisioning itself
(:func:`~pipeline.dev.provision.provision_kafka`, :func:`~pipeline.dev.provision.provision_s3`).
What differs is only where things run: each service in its own container, reached by its compose name,
so certificates also name ``kafka`` and ``s3`` and listeners bind every interface of the container.

As in ``dev up``, the super users are certificate principals only (``Cert:broker``, ``Cert:bootstrap``; the
broker image carries the principal builder, deploy/compose/kafka.Dockerfile): the setup job provisions with the
``bootstrap`` client certificate over the INTERNAL mutual-TLS listener, and no SCRAM user is made for it.

Each step is idempotent: existing files are kept, so ``docker compose up`` again reuses the stack.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from pipeline.dev import kafka
from pipeline.dev.pki import Pki, create_ca, issue_certificate, write_private
from pipeline.dev.stack import DEFAULT_PORTS, Credentials
from pipeline.permissions.topology import BUCKET, roles

# Where each container sees its part of the stack volume (docker-compose.yml mounts these sub-paths).
KAFKA_HOME = Path("/var/lib/auditseal-kafka")  # kafka: sub-path kafka/
S3_HOME = Path("/var/lib/auditseal-s3")  # s3: sub-path s3/
ROLE_HOME = Path("/run/auditseal")  # every pipeline service: sub-path roles/<role>/, read-only
VERSITYGW = Path("/opt/versitygw/versitygw")  # copied out of the versitygw image by the s3-tools service

KAFKA_HOST, S3_HOST = "kafka", "s3"
SERVICE_NAMES = (KAFKA_HOST, S3_HOST, "localhost")

# Container users: apache/kafka runs as appuser (1000); versitygw runs as 1001 here; the pipeline image's
# user is 10001 (Dockerfile).
KAFKA_UID, S3_UID, PIPELINE_UID = 1000, 1001, 10001


def kafka_properties() -> str:
    """The broker's server.properties: ``dev up``'s configuration, with listeners on every interface of the
    container and advertised under the compose service name. The quorum stays on 127.0.0.1 (one node)."""
    ports = kafka.KafkaPorts(DEFAULT_PORTS["kafka_client"], DEFAULT_PORTS["kafka_internal"],
                             DEFAULT_PORTS["kafka_controller"])
    properties = dict(line.split("=", 1) for line in
                      kafka.server_properties(data_dir=KAFKA_HOME / "data", pki_dir=KAFKA_HOME, ports=ports).splitlines())
    properties["listeners"] = (f"CLIENT://0.0.0.0:{ports.client},INTERNAL://0.0.0.0:{ports.internal},"
                               f"CONTROLLER://0.0.0.0:{ports.controller}")
    properties["advertised.listeners"] = f"CLIENT://{KAFKA_HOST}:{ports.client},INTERNAL://{KAFKA_HOST}:{ports.internal}"
    return "".join(f"{key}={value}\n" for key, value in properties.items())


def role_env(role_name: str, creds: Credentials) -> dict[str, str]:
    """The environment contract of one role inside the compose network (what ``dev env`` prints locally)."""
    return {
        "AUDITSEAL_BOOTSTRAP": f"{KAFKA_HOST}:{DEFAULT_PORTS['kafka_client']}",
        "AUDITSEAL_SASL_USERNAME": role_name,
        "AUDITSEAL_SASL_PASSWORD": creds.kafka[role_name],
        "AUDITSEAL_CA_FILE": str(ROLE_HOME / "ca.pem"),
        "AWS_ENDPOINT_URL": f"https://{S3_HOST}:{DEFAULT_PORTS['s3']}",
        "AWS_ACCESS_KEY_ID": creds.s3[role_name]["access"],
        "AWS_SECRET_ACCESS_KEY": creds.s3[role_name]["secret"],
        "AWS_CA_BUNDLE": str(ROLE_HOME / "ca.pem"),
        "AUDITSEAL_BUCKET": BUCKET,
        "AUDITSEAL_KEYRING": str(ROLE_HOME / "keyring.json"),
        **({"AUDITSEAL_SIGNING_KEY": str(ROLE_HOME / "signing-key.pem")} if role_name == "sealer" else {}),
        # the reconciler signs its attestations with a key of its own, never the sealer's
        **({"AUDITSEAL_RECONCILER_KEY": str(ROLE_HOME / "reconciler-key.pem")} if role_name == "reconciler" else {}),
        # no access auditor reads the verifier's spool (a tmpfs): it writes its record to audit.verification,
        # its own origin topic, as itself
        **({"AUDITSEAL_VERIFICATION_RECORD": "kafka"} if role_name == "verifier" else {}),
        # the verifier checks the reconciler's archived attestations under the reconciler's public keyring
        **({"AUDITSEAL_RECONCILER_KEYRING": str(ROLE_HOME / "reconciler-keyring.json")}
           if role_name == "verifier" else {}),
        **privacy_role_env(role_name, creds),
    }


def privacy_role_env(role_name: str, creds: Credentials) -> dict[str, str]:
    """Personal-data protection (README, "Personal data"): the roles that need the key store's KEK get the
    KEK file in their folder (the producer also the privacy role's key-store identity); the investigator,
    whose access spool nobody forwards (a tmpfs), delivers its reveal records to audit.access itself with the access
    auditor's credential (a stated limit: two services hold it; the verifier has its own origin topic).
    A KEK in an HSM instead: AUDITSEAL_KEK=pkcs11:LABEL and the AUDITSEAL_PKCS11_* variables (override file)."""
    from pipeline.privacy.provision import privacy_env

    env = privacy_env(role_name, ROLE_HOME, creds.kafka)  # dev up's: the KEK file, the key-store identity
    if role_name == "investigator":
        env["AUDITSEAL_ACCESS_RECORD_SASL_USERNAME"] = "access-auditor"
        env["AUDITSEAL_ACCESS_RECORD_SASL_PASSWORD"] = creds.kafka["access-auditor"]
    return env


def issue_service_certificate(pki: Pki, name: str, *, client_auth: bool = False) -> None:
    """A certificate for ``name`` that also names the compose services (``kafka``, ``s3``)."""
    issue_certificate(pki, name, client_auth=client_auth, extra_names=(KAFKA_HOST, S3_HOST),
                      organization="AuditSeal compose stack")


def _write(path: Path, data: str | bytes, mode: int = 0o644, *, keep: bool = True) -> None:
    """Write ``path`` with ``mode`` (never readable by others before the chmod); ``keep`` an existing file."""
    if keep and path.exists():
        return
    path.unlink(missing_ok=True)
    write_private(path, data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _own(path: Path, uid: int) -> None:
    """Hand ``path`` (recursively) to the container user ``uid``; only root can, and only root needs to."""
    if os.geteuid() != 0:
        return
    for folder, _dirs, files in os.walk(path):
        os.chown(folder, uid, uid)
        for name in files:
            os.chown(os.path.join(folder, name), uid, uid)


def _env_file(values: dict[str, str]) -> str:
    # values are URL-safe tokens, host:port pairs and paths: nothing a POSIX shell would expand
    return "".join(f"export {name}={value}\n" for name, value in values.items())


def make_files(stack: Path) -> None:
    """Everything the containers need before they start, created once (existing files are kept)."""
    stack.mkdir(parents=True, exist_ok=True)
    pki = Pki(stack / "pki")
    if not pki.ca_cert.exists():
        pki.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(pki.directory, 0o700)
        create_ca(pki.directory, common_name="AuditSeal compose CA")
    # bootstrap: the setup job's client certificate (Cert:bootstrap), as `dev up` issues it
    for name, client_auth in (("broker", True), ("s3", False), (kafka.BOOTSTRAP_USER, True)):
        if not pki.keystore(name).exists():
            issue_service_certificate(pki, name, client_auth=client_auth)
    credentials = stack / "credentials.json"
    if not credentials.exists():
        write_private(credentials, json.dumps(asdict(Credentials.generate()), indent=2).encode())
    creds = Credentials(**json.loads(credentials.read_text()))
    keys = stack / "keys"
    if not (keys / "sealer-signing-key.pem").exists():
        from pipeline.integrity.keyring import Keyring, generate_signing_key, save_keyring, save_signing_key

        keys.mkdir(parents=True, exist_ok=True)
        os.chmod(keys, 0o700)
        key = generate_signing_key()
        save_signing_key(key, keys / "sealer-signing-key.pem")
        save_keyring(Keyring().rotate(key.public_key, time.time_ns() // 1000), keys / "keyring.json")
    if not (keys / "reconciler-key.pem").exists():
        from pipeline.integrity.keyring import generate_signing_key, save_signing_key

        save_signing_key(generate_signing_key(), keys / "reconciler-key.pem")
    if not (keys / "reconciler-keyring.json").exists():
        # its public half, published like the sealer's keys: a keyring of its own (verify --reconciler-keyring)
        from pipeline.integrity.keyring import Keyring, load_signing_key, save_keyring

        reconciler = load_signing_key(keys / "reconciler-key.pem")
        made = os.stat(keys / "reconciler-key.pem").st_mtime_ns // 1000
        save_keyring(Keyring().rotate(reconciler.public_key, made), keys / "reconciler-keyring.json")
    from pipeline.privacy.provision import KEK_FILE_NAME, KEK_ROLES, ensure_kek

    ensure_kek(keys)  # the key store's KEK (the setup job creates audit.keys and its pseudonym key with it)

    home = stack / "kafka"
    for folder in ("data", "logs"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    _write(home / "server.properties", kafka_properties(), keep=False)
    _write(home / "log4j2.properties", kafka.log4j_properties(KAFKA_HOME / "logs"), keep=False)
    _write(home / "broker.keystore.pem", pki.keystore("broker").read_bytes(), 0o600, keep=False)
    _write(home / "ca.pem", pki.ca_cert.read_bytes(), keep=False)
    _write(home / "cluster-id", base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=") + "\n")
    _own(home, KAFKA_UID)

    s3 = stack / "s3"
    for folder in ("data", "versions", "iam"):
        (s3 / folder).mkdir(parents=True, exist_ok=True)
    _write(s3 / "cert.pem", pki.cert("s3").read_bytes(), keep=False)
    _write(s3 / "key.pem", pki.key("s3").read_bytes(), 0o600, keep=False)
    _write(s3 / "root.env", _env_file({"ROOT_ACCESS_KEY": creds.s3_root_access,
                                        "ROOT_SECRET_KEY": creds.s3_root_secret}), 0o600, keep=False)
    _own(s3, S3_UID)

    for role in roles():
        folder = stack / "roles" / role.name
        _write(folder / "auditseal.env", _env_file(role_env(role.name, creds)), 0o400, keep=False)
        _write(folder / "ca.pem", pki.ca_cert.read_bytes(), keep=False)
        _write(folder / "keyring.json", (keys / "keyring.json").read_bytes(), keep=False)
        _write(folder / "reconciler-keyring.json", (keys / "reconciler-keyring.json").read_bytes(), keep=False)
        if role.name == "sealer":
            _write(folder / "signing-key.pem", (keys / "sealer-signing-key.pem").read_bytes(), 0o400, keep=False)
        if role.name == "reconciler":
            _write(folder / "reconciler-key.pem", (keys / "reconciler-key.pem").read_bytes(), 0o400, keep=False)
        if role.name in KEK_ROLES:
            _write(folder / KEK_FILE_NAME, (keys / KEK_FILE_NAME).read_bytes(), 0o400, keep=False)
        _own(folder, PIPELINE_UID)
    # the setup job (as the pipeline user) reads every credential and takes dev up's ACL lock in run/
    (stack / "run").mkdir(exist_ok=True)
    _own(stack / "run", PIPELINE_UID)
    if os.geteuid() == 0:
        os.chown(credentials, PIPELINE_UID, PIPELINE_UID)
        os.chown(pki.ca_cert, PIPELINE_UID, PIPELINE_UID)
        # the setup identity's certificate and key: the setup job's alone (it runs as the pipeline user); the
        # CA's private key stays root's
        for path in (pki.directory, pki.cert(kafka.BOOTSTRAP_USER), pki.key(kafka.BOOTSTRAP_USER)):
            os.chown(path, PIPELINE_UID, PIPELINE_UID)
        # the setup job provisions the key store with the KEK (keys/kek.json)
        os.chown(keys, PIPELINE_UID, PIPELINE_UID)
        os.chown(keys / KEK_FILE_NAME, PIPELINE_UID, PIPELINE_UID)
    print(f"compose stack files in {stack}: CA, certificates for {', '.join(SERVICE_NAMES)}, "
          f"{len(roles())} roles ({', '.join(r.name for r in roles())})")


def setup(stack: Path) -> int:
    """Users, ACLs and topics in Kafka, users, bucket and policy in S3 (``dev up``'s code), then the
    Object Lock conformance check; exit 0 only if the bucket enforces WORM."""
    from pipeline.archive.objectlock import check_bucket
    from pipeline.config import S3Settings
    from pipeline.dev.provision import provision_kafka, provision_s3

    creds = Credentials(**json.loads((stack / "credentials.json").read_text()))
    ca = str(stack / "pki" / "ca.pem")
    # the setup super user has no password: its certificate (Cert:bootstrap), on the internal mTLS listener
    pki = Pki(stack / "pki")
    kafka_env = {"AUDITSEAL_BOOTSTRAP": f"{KAFKA_HOST}:{DEFAULT_PORTS['kafka_internal']}", "AUDITSEAL_CA_FILE": ca,
                 "AUDITSEAL_SSL_CERT_FILE": str(pki.cert(kafka.BOOTSTRAP_USER)),
                 "AUDITSEAL_SSL_KEY_FILE": str(pki.key(kafka.BOOTSTRAP_USER))}
    s3_env = {"AWS_ENDPOINT_URL": f"https://{S3_HOST}:{DEFAULT_PORTS['s3']}", "AWS_CA_BUNDLE": ca,
              "AUDITSEAL_BUCKET": BUCKET}
    provision_kafka(kafka_env, creds)
    provision_s3(VERSITYGW, {**s3_env, "AWS_ACCESS_KEY_ID": creds.s3_root_access,
                             "AWS_SECRET_ACCESS_KEY": creds.s3_root_secret}, creds)
    admin = S3Settings.from_env({**s3_env, "AWS_ACCESS_KEY_ID": creds.s3["admin"]["access"],
                                 "AWS_SECRET_ACCESS_KEY": creds.s3["admin"]["secret"]})
    report = check_bucket(admin.client(), admin.bucket)
    for result in report.results:
        print(f"  {'PASS' if result.holds else 'FAIL'}  {result.name}: {result.detail}")
    print("bucket enforces WORM" if report.passed else f"bucket FAILS: {', '.join(report.failed())}")
    return 0 if report.passed else 1


def main(argv: list[str]) -> int:
    """``provision.py files|setup STACK_DIR``."""
    if len(argv) != 2 or argv[0] not in ("files", "setup"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    stack = Path(argv[1])
    if argv[0] == "files":
        make_files(stack)
        return 0
    return setup(stack)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
