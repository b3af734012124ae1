"""``auditseal demo``: the whole pipeline end to end on the local stack, ending in a verification report.

Brings the stack up and proves its bucket enforces WORM, applies the roles, starts the sealer (its key in
the stack's SoftHSM2 token), the sink and the access auditor, emits a realistic mix of events from several
simulated services (with denied accesses and invalid records), rotating the signing key once mid-stream,
waits until all of it is sealed and archived, verifies the archive across the rotation, then shows that
tampering is refused. Each step prints what it did; the services' logs
are kept in ``.stack/demo/``.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from botocore.exceptions import ClientError
from confluent_kafka import Consumer, Producer, TopicPartition

from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev.stack import LocalStack
from pipeline.errors import AuditSealError
from pipeline.wire.topics import RAW_TOPIC, SEALED_TOPIC

DEMO_EVENTS = 3000
ARCHIVE_PREFIX = f"{SEALED_TOPIC}/"
WAIT_S = 180


class DemoError(AuditSealError):
    """A step of the demo did not do what it should; the message says which and why."""


def _step(number: int | str, title: str) -> None:
    print(f"\n[{number}] {title}", flush=True)


def _service(stack: LocalStack, role: str, argv: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, **stack.env(role))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipeline.cli.main", *argv], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _run(stack: LocalStack, role: str, argv: list[str], stdin: str | None = None,
         extra_env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env(role), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.main", *argv], env=env, input=stdin, text=True,
                          capture_output=True, timeout=timeout)


def _end_offsets(stack: LocalStack, topic: str) -> dict[int, int]:
    consumer = Consumer(KafkaSettings.from_env(stack.env("admin")).client_config(**{"group.id": "auditseal-admin-demo"}))
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
    finally:
        consumer.close()


def _sealed_heads(stack: LocalStack) -> dict[int, dict]:
    """The last committed checkpoint of every chain (read as the verifier)."""
    from pipeline.sealer.output import last_checkpoint, tail_consumer

    consumer = tail_consumer(KafkaSettings.from_env(stack.env("verifier")), f"auditseal-verifier-demo-{os.getpid()}")
    try:
        partitions = consumer.list_topics(SEALED_TOPIC, timeout=30).topics[SEALED_TOPIC].partitions
        heads = {}
        for partition in partitions:
            checkpoint = last_checkpoint(consumer, SEALED_TOPIC, partition)
            if checkpoint is not None:
                heads[partition] = checkpoint
        return heads
    finally:
        consumer.close()


def _archived_heads(s3, bucket: str) -> dict[str, int]:
    """The last archived seq of each chain, from the manifest of each partition's newest object holding entries
    (newer ones may hold only tree heads or witness cosignatures)."""
    from pipeline.archive.layout import Manifest, parse_key

    manifests: dict[int, list[tuple[int, str]]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ARCHIVE_PREFIX):
        for item in page.get("Contents", []):
            key = parse_key(item["Key"])
            if key is not None and key.is_manifest and key.prefix == "":
                manifests.setdefault(key.partition, []).append((key.last_offset, item["Key"]))
    heads: dict[str, int] = {}
    for keys in manifests.values():
        for _, manifest_key in sorted(keys, reverse=True):
            body = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
            manifest = Manifest.from_bytes(body, manifest_key)
            for chain in manifest.chains:
                heads[chain.chain_id] = max(heads.get(chain.chain_id, -1), chain.last_seq)
            if manifest.chains:
                break
    return heads


def _manifests_complete(s3, bucket: str) -> bool:
    """Whether every archived object under the demo's prefix has its manifest (none is being written)."""
    names = {item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=ARCHIVE_PREFIX)
             for item in page.get("Contents", [])}
    return all(f"{name}.manifest.json" in names for name in names if name.endswith((".avro", ".avro.enc")))


def _wait(what: str, done: Callable[[], bool], services: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        for service in services:
            if service.poll() is not None:
                raise DemoError(f"waiting for {what}: a service exited with {service.returncode} "
                                f"(logs in .stack/demo/)")
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {WAIT_S}s (logs in .stack/demo/)")
        time.sleep(1)


def _rotate_mid_stream(stack: LocalStack, services: list[subprocess.Popen], witness_policy: Path) -> None:
    """Seal what was emitted so far under the current key, then rotate (``auditseal keys rotate``) while the
    sealer runs; it switches at the rotation instant without a restart. The witness policy gains the new key
    first, the sealer co-signs heads with both keys until the switch, and the demo's witness is given the new
    key inside that window (FORMAT.md 8b): it goes on cosigning across the switch."""
    from pipeline.dev.witness import set_log_keys
    from pipeline.integrity.keyring import load_keyring
    from pipeline.integrity.log_identity import log_verifier

    raw_ends = _end_offsets(stack, RAW_TOPIC)
    _wait("sealing before the rotation",
          lambda: all(_sealed_heads(stack).get(p, {}).get("last_source_offset", -1) >= end - 1
                      for p, end in raw_ends.items() if end), services)
    before = load_keyring(stack.keyring_file).active.key_id
    lead = 3
    rotated = _run(stack, "producer", ["keys", "rotate", "--lead", str(lead), "--witness-policy", str(witness_policy)],
                   extra_env=stack.custody_env())
    if rotated.returncode != 0:
        raise DemoError(f"auditseal keys rotate failed: {rotated.stderr.strip()}")
    keyring = load_keyring(stack.keyring_file)
    new_key = max(keyring, key=lambda entry: entry.valid_from_micros)
    origins = list(stack._witness_logs())
    changed = set_log_keys(witness_policy.parent,  # the witness's home holds its policy (start_side_witness)
                           {origin: log_verifier(new_key.public_key, origin).vkey for origin in origins})
    print(f"    sealed so far under key {before}, in SoftHSM2 token auditseal-sealer")
    print(f"    auditseal keys rotate --lead {lead}: " + rotated.stdout.strip().replace("\n", "\n      "))
    print(f"      ({rotated.stderr.strip().splitlines()[-1]})")
    print(f"    the witness now checks key {new_key.key_id} for {len(changed)} chain(s); until the switch each "
          "head carries both keys' signatures")
    time.sleep(lead + 1)  # past the switch: what follows is signed by the new key
    after = load_keyring(stack.keyring_file).active.key_id
    print(f"    the running sealer signs with key {after} from now on (no restart)")


def _refused(action: Callable[[], object]) -> str:
    try:
        action()
    except (ClientError, AuditSealError) as exc:
        return f"refused: {exc}".splitlines()[0][:160]
    raise DemoError("an action that must be refused was allowed")


def _privileged_acts(stack: LocalStack) -> None:
    """The admin tries to become a super user, then grants itself the right to silence the authorizer log:
    the first gives it nothing, the second is caught by ``acl check`` (and recorded by the access auditor)."""
    import json
    import secrets

    from confluent_kafka.admin import (
        AdminClient,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialDeletion,
        UserScramCredentialUpsertion,
    )

    from pipeline.dev.provision import acl_lock
    from pipeline.permissions.acls import AclEntry

    admin_env = stack.env("admin")
    admin = AdminClient(KafkaSettings.from_env(admin_env).client_config())
    password = secrets.token_urlsafe(24)
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    grant = AclEntry("cluster", "kafka-cluster", "literal", "User:admin", "alter_configs")
    with acl_lock(stack.root):
        try:
            admin.alter_user_scram_credentials([UserScramCredentialUpsertion("broker", info, password.encode())])[
                "broker"].result(30)
            time.sleep(1.0)
            intruder = Producer(KafkaSettings.from_env(dict(admin_env, AUDITSEAL_SASL_USERNAME="broker",
                                                            AUDITSEAL_SASL_PASSWORD=password)).client_config(
                **{"message.timeout.ms": 10000}))
            outcome: list[str] = []
            intruder.produce(SEALED_TOPIC, b"forged by a would-be super user",
                             on_delivery=lambda err, _m: outcome.append(err.str() if err else "DELIVERED"))
            intruder.flush(15)
            print(f"    admin sets a password for super user name `broker`, logs in, writes {SEALED_TOPIC}: "
                  f"{outcome[0] if outcome else 'no answer'} (super users are certificates: Cert:broker)")
            if outcome and outcome[0] == "DELIVERED":
                raise DemoError("a SCRAM login named like a super user wrote to audit.sealed")
            for future in admin.create_acls([grant.to_binding()]).values():
                future.result(30)
            time.sleep(1.0)
            check = _run(stack, "admin", ["acl", "check", "--json"])
            broken = {r["name"]: r["breaches"] for r in json.loads(check.stdout)["rules"] if not r["holds"]}
            print(f"    admin grants itself {grant.describe()}: acl check exit {check.returncode}, broken: "
                  f"{', '.join(sorted(broken))}")
            if check.returncode != 1 or "cluster_rights_as_declared" not in broken:
                raise DemoError("acl check did not catch the admin's ALTER_CONFIGS grant")
            print("    (the running access auditor records both with their details, user.credential_set broker and "
                  "acl.create; `auditseal detect` raises CRITICAL alerts on them)")
        finally:
            for future in admin.delete_acls([grant.to_filter()]).values():
                future.result(30)
            deletion = UserScramCredentialDeletion("broker", ScramMechanism.SCRAM_SHA_512)
            admin.alter_user_scram_credentials([deletion])["broker"].result(30)


def _show_ocsf_record(stack: LocalStack, services: list[subprocess.Popen]) -> None:
    """Read one OCSF record from audit.ocsf as the siem role, print it, and re-verify its integrity fields."""
    from pipeline.integrity.keyring import load_keyring
    from pipeline.siem.evidence import verify_record
    from pipeline.wire.topics import OCSF_TOPIC

    consumer = Consumer(KafkaSettings.from_env(stack.env("siem")).client_config(**{
        "group.id": "auditseal-siem-demo", "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    consumer.subscribe([OCSF_TOPIC])
    found: list[dict] = []

    def one_api_activity() -> bool:
        for message in consumer.consume(500, 1.0):
            if message.error() is None:
                document = json.loads(message.value())
                if document["class_uid"] == 6003 and document["unmapped"]["auditseal"]["seq"] > 0:
                    found.append(document)
        return bool(found)

    try:
        _wait("the SIEM bridge", one_api_activity, services)
    finally:
        consumer.close()
    document = found[0]
    shown = copy.deepcopy(document)
    path = shown["unmapped"]["auditseal"]["inclusion"]["audit_path"]
    shown["unmapped"]["auditseal"]["inclusion"]["audit_path"] = path[:2] + [f"... {len(path) - 2} more"]
    print(f"    one OCSF record from {OCSF_TOPIC} (as the siem role), integrity evidence attached:")
    print("\n".join("      " + line[:150] for line in json.dumps(shown, indent=2).splitlines()))
    verified = verify_record(document, load_keyring(stack.keyring_file))
    print(f"    its integrity fields re-verify against the keyring: {verified.chain_id} seq {verified.seq}, "
          f"checkpoint {verified.checkpoint_first_seq}..{verified.checkpoint_last_seq} signed by key {verified.key_id}")


def run_demo() -> int:
    """Run every step; returns the exit code (0 when the archive verified intact and tampering was refused)."""
    stack = LocalStack()
    logs = stack.root / "demo"
    _step(1, "bring the secured stack up (Kafka SASL_SSL + ACLs, S3 with Object Lock)")
    stack.up(log=lambda line: print("    " + line))
    from pipeline.archive.objectlock import check_bucket

    admin_s3 = S3Settings.from_env(stack.env("admin"))
    conformance = check_bucket(admin_s3.client(), admin_s3.bucket)
    print(f"    s3 check: {'bucket enforces WORM' if conformance.passed else 'FAILED ' + ', '.join(conformance.failed())}")
    if not conformance.passed:
        return 1

    _step(2, "prove the permission invariants on the live broker (acl check)")
    check = _run(stack, "admin", ["acl", "check"])
    print("    " + (check.stdout.strip().splitlines() or ["(no output)"])[-1])

    _step(3, "start a witness, the sealers (audit.raw, audit.access), the S3 sinks, the access auditor and the SIEM "
             "bridge")
    from pipeline.dev.demo_witness import start_demo_witness

    witness = start_demo_witness(stack, logs)
    services = [
        # its heads go to the witness of the policy, every 2 s per chain at most
        _service(stack, "sealer", ["seal", "--metrics-port", "0", "--witness-policy", str(witness.policy),
                                   "--witness-interval", "2"], logs / "sealer.log"),
        _service(stack, "siem-bridge", ["siem-bridge", "--metrics-port", "0"], logs / "siem-bridge.log"),
        _service(stack, "sink", ["sink", "--metrics-port", "0", "--max-age-ms", "2000"], logs / "sink.log"),
        # the access events' chains are archived too: the report's review and access checks read them there
        _service(stack, "sink", ["sink", "--topic", "audit.sealed.access", "--group", "auditseal-sink-access",
                                 "--metrics-port", "0", "--max-age-ms", "2000"], logs / "sink-access.log"),
        _service(stack, "access-auditor", ["access-audit"], logs / "access-auditor.log"),
        # the access auditor's events travel on audit.access (only it may write there), sealed by their own sealer
        # ... and witnessed like audit.raw's: the policy lists every origin's chains
        _service(stack, "sealer", ["seal", "--raw-topic", "audit.access", "--sealed-topic", "audit.sealed.access",
                                   "--app-id", "auditseal-sealer-access", "--metrics-port", "0",
                                   "--witness-policy", str(witness.policy), "--witness-interval", "2"],
                 logs / "sealer-access.log"),
    ]
    try:
        return _pipeline(stack, services, admin_s3, witness.policy, witness.process.stop)
    finally:
        for service in services:
            service.terminate()
        for service in services:
            try:
                service.wait(30)
            except subprocess.TimeoutExpired:
                service.kill()
        witness.process.stop()


def _pipeline(stack: LocalStack, services: list[subprocess.Popen], admin_s3: S3Settings, witness_policy: Path,
              stop_witness: Callable[[], object]) -> int:
    _step("3b", "a witness cosigns the chains' heads, and catches a truncated export offline")
    from pipeline.dev.demo_witness import show_witnessing

    show_witnessing(stack, _run, lambda what, done: _wait(what, done, services), stack.root / "demo", witness_policy)

    _step(4, f"emit {DEMO_EVENTS} events from simulated services, denied accesses and invalid records, "
             "rotating the signing key half-way")
    half = DEMO_EVENTS // 2
    emitted = _run(stack, "producer", ["emit", "--generate", str(half), "--seed", str(int(time.time()))])
    print("    " + emitted.stderr.strip().splitlines()[-1])
    _rotate_mid_stream(stack, services, witness_policy)
    emitted = _run(stack, "producer", ["emit", "--generate", str(DEMO_EVENTS - half),
                                       "--seed", str(int(time.time()) + 1)])
    print("    " + emitted.stderr.strip().splitlines()[-1])
    from pipeline.dev.demo_witness import show_cosigned_after_rotation

    show_cosigned_after_rotation(stack, lambda what, done: _wait(what, done, services))
    # a witness cosigns every new head (heartbeats too), each cosignature a record the sink archives within 2 s:
    # with it gone the archive settles for the checks below (the sealer goes on; its witness lag grows)
    stop_witness()
    print("    the demo's witness is stopped now, so the archive settles for the verification below")
    lines = ('{"action": "document.read"}\n'
             '{"actor": {"id": "mallory", "type": "USER"}, "action": "payroll.export", "resource": '
             '{"type": "report", "id": "q3"}, "outcome": {"status": "DENIED", "reason": "not in group hr"}, '
             '"source_service": "payroll"}\nnot json at all\n')
    partial = _run(stack, "producer", ["emit", "--stdin"], stdin=lines)
    print(f"    JSON lines with 2 invalid of 3: exit {partial.returncode}")
    for line in partial.stderr.strip().splitlines()[:3]:
        print("      " + line[:150])
    garbage = Producer(KafkaSettings.from_env(stack.env("producer")).client_config())
    garbage.produce(RAW_TOPIC, b"\x00\x01 a buggy service's bytes")
    garbage.flush(30)
    print("    1 undecodable record produced straight to audit.raw (it will be sealed as a rejection)")
    for role, topic in (("producer", SEALED_TOPIC), ("siem", RAW_TOPIC)):
        consumer = Consumer(KafkaSettings.from_env(stack.env(role)).client_config(**{
            "group.id": f"auditseal-{role}-demo-probe", "auto.offset.reset": "earliest"}))
        consumer.subscribe([topic])
        message = consumer.poll(5)
        consumer.close()
        outcome = message.error().str() if message is not None and message.error() else "no error within 5 s"
        print(f"    {role} tries to read {topic}: {outcome}")

    _step(5, "wait until every raw event is sealed and every sealed record archived")
    reader = S3Settings.from_env(stack.env("verifier"))
    s3_reader = reader.client()

    def settle() -> tuple[dict[int, int], dict[int, dict]]:
        raw_ends = _end_offsets(stack, RAW_TOPIC)
        _wait("sealing", lambda: all(_sealed_heads(stack).get(p, {}).get("last_source_offset", -1) >= end - 1
                                     for p, end in raw_ends.items() if end), services)
        heads = _sealed_heads(stack)

        def archived() -> bool:
            reached = _archived_heads(s3_reader, reader.bucket)
            return all(reached.get(c["chain_id"], -1) >= c["last_seq"] for c in heads.values())

        _wait("archiving", archived, services)
        # witness cosignatures arrive after their batches: let the sink finish every object it started (an object
        # is written before its manifest), so the verification below reads a settled archive
        _wait("the sink's manifests", lambda: _manifests_complete(s3_reader, reader.bucket), services)
        return raw_ends, heads

    raw_ends, heads = settle()
    from pipeline.integrity.keyring import load_keyring

    active = load_keyring(stack.keyring_file).active
    if active is None or not any(c["key_id"] == active.key_id for c in heads.values()):
        raise DemoError("after the rotation, the chains' new heads should be signed by the new key")
    head_list = ", ".join(f"{c['chain_id']}@{c['last_seq']}" for c in heads.values())
    print(f"    sealed: {sum(raw_ends.values())} raw records in {len(heads)} chains, heads {head_list}")

    _step(6, f"verify the archive: auditseal verify --s3 s3://{reader.bucket}/{ARCHIVE_PREFIX}")
    result = _run(stack, "verifier", ["verify", "--s3", f"s3://{reader.bucket}/{ARCHIVE_PREFIX}"])
    print("\n".join("    " + line for line in result.stdout.strip().splitlines() if "  chain " not in line))
    if result.returncode != 0:
        print(result.stderr)
        return 1
    _show_ocsf_record(stack, services)

    _step(7, "tampering is refused")
    raw_producer = Producer(KafkaSettings.from_env(stack.env("producer")).client_config(**{
        "message.timeout.ms": 10000}))
    outcome: list[str] = []
    raw_producer.produce(SEALED_TOPIC, b"forged", on_delivery=lambda err, _m: outcome.append(
        err.str() if err else "DELIVERED"))
    raw_producer.flush(15)
    print(f"    producer writes to {SEALED_TOPIC}: {outcome[0] if outcome else 'no answer'}")
    if outcome and outcome[0] == "DELIVERED":
        raise DemoError("the producer role wrote to audit.sealed")
    s3 = admin_s3.client()
    listing = s3.list_object_versions(Bucket=admin_s3.bucket, Prefix=ARCHIVE_PREFIX)
    victim = next(v for v in listing["Versions"] if v["Key"].endswith(".avro"))
    key, version = victim["Key"], victim["VersionId"]
    print(f"    admin deletes locked {key}: "
          + _refused(lambda: s3.delete_object(Bucket=admin_s3.bucket, Key=key, VersionId=version,
                                              BypassGovernanceRetention=True)))
    shorter = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    print("    admin shortens its retention to one day: "
          + _refused(lambda: s3.put_object_retention(Bucket=admin_s3.bucket, Key=key, VersionId=version,
                                                     Retention={"Mode": "COMPLIANCE", "RetainUntilDate": shorter})))

    _privileged_acts(stack)

    _step(8, "erase a simulated user from the immutable log (crypto-shredding, GDPR Art. 17)")
    from pipeline.privacy.demo import erase_demo_user

    erase_demo_user(stack, _run, settle, f"s3://{reader.bucket}/{ARCHIVE_PREFIX}", stack.root / "demo")

    _step(9, "investigate and report: a verified timeline and an evidence report")
    from pipeline.report.demo import timeline_and_report

    timeline_and_report(stack, _run, f"s3://{reader.bucket}/{ARCHIVE_PREFIX}", stack.root / "demo")

    _step(10, "summary")
    print(f"""    {DEMO_EVENTS} generated events and the demo's extra records were sealed into {len(heads)} hash chains
    with Ed25519-signed Merkle checkpoints, archived under COMPLIANCE Object Lock, and verified intact.
    The signing keys live in SoftHSM2 (PKCS#11, non-extractable); the key was rotated mid-stream without
    stopping the sealer, and the checkpoints of both keys verify, each inside its key's validity window.
    Invalid input was refused at the producer with the line and reason, or sealed as a rejection.
    One user was erased by destroying its key: the archive still verifies, its data is unreadable and gone.
    Where to look next:
      auditseal verify --s3 s3://{reader.bucket}/{ARCHIVE_PREFIX} --json   (as the verifier role)
      auditseal acl check                                  (as the admin role)
      service logs: {stack.root / 'demo'}
      README.md: how ops verify, compliance profiles; docs/SIEM.md: OCSF JSON on audit.ocsf for a SIEM""")
    return 0
