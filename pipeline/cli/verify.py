"""``auditseal verify``: one command that says whether the archive is complete and untouched.

Output in the spirit of ``aws cloudtrail validate-logs``: what was checked, how much was valid, then
each violation with its kind, object, chain and sequence number. Exit 0 intact, 1 violations found,
2 usage or configuration error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from pipeline.config import KafkaSettings, S3Settings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.integrity.keyring import load_keyring
from pipeline.verifier.archive import (
    NOT_YET_ARCHIVED,
    STRAY_RECORD,
    TAIL_TRUNCATED,
    ArchiveVerifier,
    BucketSource,
    DirectorySource,
    Report,
)
from pipeline.verifier.chains import Violation

KEYRING_VARIABLE = "AUDITSEAL_KEYRING"


def _source(args):
    if bool(args.s3) == bool(args.dir):
        raise ConfigError("give exactly one of --s3 s3://bucket/prefix or --dir PATH")
    if args.dir:
        root = Path(args.dir)
        if not root.is_dir():
            raise ConfigError(f"--dir {root}: not a directory")
        return DirectorySource(root)
    parsed = urlparse(args.s3)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(f"--s3 {args.s3!r}: expected s3://bucket or s3://bucket/prefix")
    settings = S3Settings.from_env({**os.environ, "AUDITSEAL_BUCKET": parsed.netloc})
    s3 = settings.client()
    _check_bucket_readable(s3, parsed.netloc, settings.endpoint_url)
    source = BucketSource(s3, parsed.netloc, parsed.path.lstrip("/"))
    source.client_factory = settings.client
    return source


def _check_bucket_readable(s3, bucket: str, endpoint: str) -> None:
    # a missing bucket, a wrong key or an unreachable endpoint is a configuration error, named in one line
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.list_object_versions(Bucket=bucket, MaxKeys=1)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ConfigError(f"--s3 s3://{bucket} at {endpoint}: {error.get('Code')}: {error.get('Message')}") from None
    except BotoCoreError as exc:
        raise ConfigError(f"--s3 s3://{bucket}: {exc}") from None


def _progress():
    if not sys.stderr.isatty():
        return None

    def show(count: int, name: str) -> None:
        print(f"\r\033[Kverifying object {count}: {name[-60:]}", end="", file=sys.stderr, flush=True)

    return show


DEFAULT_KAFKA_GRACE_S = 300.0
"""How long after its checkpoint was written a sealed entry may still be missing from the archive
(the sink's lag: it closes an object every ``--max-age-ms``, 10 s by default, then writes and
locks it) before ``verify --kafka`` calls it a truncated tail."""


def check_tail(report: Report, topic: str, timeout: float = 60.0, grace_s: float = DEFAULT_KAFKA_GRACE_S) -> None:
    """Tail truncation: each chain of the sealed topic must be archived up to its last checkpoint
    written more than ``grace_s`` seconds ago (a violation, ``tail_truncated``). Entries sealed
    since are the sink's lag: a notice (``not_yet_archived``), not a violation. A stray record on
    the topic is a violation at its offset (``stray_record``)."""
    from confluent_kafka import KafkaException

    from pipeline.sealer.chain_sealer import SealerStateError
    from pipeline.sealer.output import last_checkpoint, tail_consumer

    settings = KafkaSettings.from_env()
    consumer = tail_consumer(settings, f"auditseal-verifier-{os.getpid()}")
    cutoff_ms = int((time.time() - grace_s) * 1000)
    try:
        try:
            partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        except KafkaException as exc:
            raise ConfigError(f"--kafka-topic {topic}: cannot read its metadata: {exc.args[0].str()}") from None
        for partition in sorted(partitions):
            where = f"{topic}[{partition}]"

            def stray(offset: int, why: str, where: str = where) -> None:
                report.add(Violation(STRAY_RECORD, None, None, f"{where} offset {offset}", why))

            try:
                checkpoint = last_checkpoint(consumer, topic, partition, timeout, on_stray=stray)
                if checkpoint is None:
                    continue
                archived = max((seq for chain, seq in report.last_seq.items()
                                if chain.endswith(":" + checkpoint["chain_id"])), default=-1)
                if archived >= checkpoint["last_seq"]:
                    continue
                due = _checkpoint_written_before(consumer, topic, partition, checkpoint["chain_id"], cutoff_ms,
                                                 timeout)
            except (SealerStateError, KafkaException) as exc:
                raise ConfigError(f"--kafka: reading {where} failed: {exc}") from None
            if due is not None and archived < due["last_seq"]:
                report.add(Violation(
                    TAIL_TRUNCATED, checkpoint["chain_id"], archived + 1, where,
                    f"truncated: entries {archived + 1}..{due['last_seq']} were sealed more than {grace_s:g}s ago "
                    f"and are missing from the archive, which ends at seq {archived}"))
            else:
                report.notice(Violation(
                    NOT_YET_ARCHIVED, checkpoint["chain_id"], archived + 1, where,
                    f"not yet archived (lag): entries {archived + 1}..{checkpoint['last_seq']} were sealed within "
                    f"the last {grace_s:g}s; the sink archives them"))
    finally:
        consumer.close()


def _checkpoint_written_before(consumer, topic: str, partition: int, chain_id: str, cutoff_ms: int,
                               timeout: float) -> dict | None:
    """The chain's last checkpoint record written to the partition before ``cutoff_ms`` (None if none)."""
    from confluent_kafka import KafkaError, TopicPartition

    from pipeline.wire.sealed import CHECKPOINT_KIND, sealed_codecs

    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    found = consumer.offsets_for_times([TopicPartition(topic, partition, cutoff_ms)], timeout=timeout)[0].offset
    end = high if found < 0 else found  # the first offset written at or after the cutoff
    codecs, window = sealed_codecs(), 256
    while end > low:
        start = max(low, end - window)
        consumer.assign([TopicPartition(topic, partition, start)])
        last, deadline = None, time.monotonic() + timeout
        while True:
            message = consumer.poll(0.5)
            if message is None:
                if time.monotonic() > deadline:
                    raise ConfigError(f"--kafka: timed out reading {topic}[{partition}]")
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise ConfigError(f"--kafka: reading {topic}[{partition}] failed: {message.error().str()}")
            if message.offset() >= end:
                break
            try:
                kind, record = codecs.decode(message.value())
            except (AuditSealError, ValueError, TypeError):
                continue  # a stray: reported by last_checkpoint
            if kind == CHECKPOINT_KIND and record["chain_id"] == chain_id:
                last = record
        if last is not None or start == low:
            return last
        window *= 4
    return None


def render(report: Report) -> str:
    """The human report."""
    data = report.as_dict()
    lines = [
        f"Results requested for {report.source}",
        f"Results found: {data['objects']['checked']} objects ({data['objects']['identical_retries']} identical "
        f"retried writes counted once), {data['records']['checked']} records, "
        f"{data['checkpoints']['checked']} checkpoints, {len(data['chains'])} chains",
        f"{data['objects']['valid']}/{data['objects']['checked']} objects valid",
        f"{data['checkpoints']['valid']}/{data['checkpoints']['checked']} checkpoints valid (Merkle root, Ed25519 "
        "signature under a key valid at the time, chained to the previous one)",
    ]
    for chain_id, chain in data["chains"].items():
        lines.append(f"  chain {chain_id}: seq 0..{chain['last_seq']}")
    if report.incremental is not None:
        since = report.incremental
        lines.append(f"Incremental: {since['objects_new']} new objects read; {since['objects_covered']} objects "
                     f"verified before (state file) listed, not read ({since['objects_covered_reread']} read again: "
                     "their listing changed)")
        for chain_id, proof in since["consistency"].items():
            lines.append(f"  chain {chain_id}: {proof}")
    for n in report.notices:
        lines.append(f"  NOTICE {n.kind:17} {n.location}  chain={n.chain_id}\n      {n.detail}")
    if report.intact:
        lines.append("INTACT: no record altered, dropped, inserted, reordered or forged")
    else:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(report.violation_counts.items()))
        lines.append(f"VIOLATIONS: {report.violation_total} ({counts}); the first of each kind:")
        for v in report.violations:
            where = " ".join(part for part in (f"chain={v.chain_id}" if v.chain_id else "",
                                               f"seq={v.seq}" if v.seq is not None else "") if part)
            lines.append(f"  {v.kind:24} {v.location}  {where}\n      {v.detail}")
    return "\n".join(lines)


def _as_of(text: str | None) -> int | None:
    # --as-of: an ISO 8601 instant (UTC if it names no zone); None: now
    if text is None:
        return None
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--as-of {text!r}: expected an ISO 8601 time such as 2026-12-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1_000_000)


def _tolerance(value: float | None) -> float:
    from pipeline.verifier.chains import DEFAULT_HEAD_TOLERANCE_S

    if value is None:
        return DEFAULT_HEAD_TOLERANCE_S
    if value <= 0:
        raise ConfigError(f"--head-tolerance {value:g}: must be more than 0 seconds")
    return value


def _witness_audit(args, keyring):
    # verify --policy FILE [--witnessed-head FILE ...]: a factory of one WitnessAudit per archive, or None
    from pipeline.integrity.errors import IntegrityError
    from pipeline.integrity.note import parse_note
    from pipeline.integrity.policy import load_policy
    from pipeline.verifier.witnessing import WitnessAudit, WitnessedHeadError, witnessed_head

    heads = getattr(args, "witnessed_head", None) or []
    if not args.policy:
        if heads:
            raise ConfigError("--witnessed-head needs --policy: a cosigned head is checked against the witness policy")
        return None
    policy = load_policy(args.policy)
    external = []
    for path in heads:
        try:
            external.append(witnessed_head(parse_note(Path(path).read_bytes()), policy, path, keyring))
        except OSError as exc:
            raise ConfigError(f"--witnessed-head {path}: {exc.strerror}") from None
        except (IntegrityError, WitnessedHeadError) as exc:
            raise ConfigError(f"--witnessed-head {path}: not a head cosigned under the policy: {exc}") from None

    tolerance = getattr(args, "witness_tolerance", None)
    if tolerance is not None and tolerance < 0:
        raise ConfigError(f"--witness-tolerance {tolerance:g}: must be 0 or more seconds")

    def audit(as_of_micros: int, head_tolerance_micros: int) -> WitnessAudit:
        wait = head_tolerance_micros if tolerance is None else int(tolerance * 1_000_000)
        return WitnessAudit(policy, keyring, as_of_micros, wait, list(external))

    return audit


def verify_command(args) -> int:
    """Run ``auditseal verify``; returns the exit code."""
    from pipeline.archive.retention import load_profiles
    from pipeline.keys.master import load_master_key_spec

    if args.kafka_grace is None:
        args.kafka_grace = DEFAULT_KAFKA_GRACE_S
    if args.kafka_grace < 0:
        raise ConfigError(f"--kafka-grace {args.kafka_grace:g}: must be 0 or more seconds")
    keyring_path = args.keyring or os.environ.get(KEYRING_VARIABLE)
    if not keyring_path:
        raise ConfigError(f"no keyring: pass --keyring FILE or set {KEYRING_VARIABLE}")
    keyring = load_keyring(keyring_path)
    source = _source(args)
    if args.kafka:  # before the scan: a bad login or a dead broker ends here in seconds, not after it
        from pipeline.preflight import check_kafka

        check_kafka(KafkaSettings.from_env(), [args.kafka_topic])
    masters = {key.key_id: key for key in (load_master_key_spec(p) for p in args.master_key or [])}
    profiles = load_profiles(Path(args.compliance_file) if args.compliance_file else None)
    options = {"as_of_micros": _as_of(args.as_of), "head_tolerance_s": _tolerance(args.head_tolerance),
               "witness_audit": _witness_audit(args, keyring)}
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: must be 1 or more")
    if options["witness_audit"] is not None and (args.jobs > 1 or args.since_state):
        # the witness audit follows every head of an archive in one process, from the archive's start
        raise ConfigError("--policy checks the whole archive in one process: drop --jobs and --since-state")
    if args.since_state or args.state_out:
        from pipeline.verifier.incremental import IncrementalVerifier, load_state

        verifier: ArchiveVerifier = IncrementalVerifier(keyring, profiles, masters, _progress(), **options)
        if args.since_state:  # before the scan: a state file that cannot be trusted ends here
            verifier.since = load_state(Path(args.since_state), keyring, source.description)
    else:
        verifier = ArchiveVerifier(keyring, profiles, masters, _progress(), **options)
    attestations = attestation_audit(args, verifier)
    if args.jobs > 1:
        if attestations is not None:
            # the audit observes every archived entry in this process; forked workers would not report back
            raise ConfigError("--jobs with a reconciler keyring: check the attestations with --jobs 1 "
                              "(unset $AUDITSEAL_RECONCILER_KEYRING or drop --reconciler-keyring to use --jobs)")
        from pipeline.verifier.parallel import verify_parallel

        report = verify_parallel(verifier, source, args.jobs)
    else:
        report = verifier.verify(source)
    if attestations is not None:
        attestations.finish()
        for violation in attestations.violations:
            report.add(violation)
        report.notices.extend(attestations.notices)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.kafka:
        check_tail(report, args.kafka_topic, grace_s=args.kafka_grace)
    _record_access(args, report)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    if args.state_out:
        _write_state(verifier, report, Path(args.state_out))
    return 0 if report.intact else 1


def _write_state(verifier, report: Report, path: Path) -> None:
    # --state-out: only an intact run is a state to start from; otherwise say so (the exit code stays 1)
    from pipeline.verifier.incremental import write_state

    if not report.intact:
        print(f"--state-out {path}: not written: {report.violation_total} violation(s) found; a state file "
              "records only an intact archive", file=sys.stderr)
        return
    write_state(path, verifier.state(report))


RECONCILER_KEYRING_VARIABLE = "AUDITSEAL_RECONCILER_KEYRING"


def attestation_audit(args, verifier: ArchiveVerifier):
    """With ``--reconciler-keyring`` (or ``$AUDITSEAL_RECONCILER_KEYRING``): the audit of the reconciler's
    attestations, observing ``verifier``'s objects (None without a reconciler keyring)."""
    from pipeline.verifier.attestations import DEFAULT_ATTESTATION_GRACE_S, AttestationAudit

    path = getattr(args, "reconciler_keyring", None) or os.environ.get(RECONCILER_KEYRING_VARIABLE)
    grace = getattr(args, "attestation_grace", None)
    topic = getattr(args, "attestation_topic", None)
    if not path:
        if grace is not None or topic is not None:
            raise ConfigError("--attestation-grace and --attestation-topic need --reconciler-keyring FILE")
        return None
    if grace is not None and grace < 0:
        raise ConfigError(f"--attestation-grace {grace:g}: must be 0 or more seconds")
    as_of = verifier.as_of_micros if verifier.as_of_micros is not None else time.time_ns() // 1000
    audit = AttestationAudit(load_keyring(path), as_of, DEFAULT_ATTESTATION_GRACE_S if grace is None else grace,
                             **({"attestation_topic": topic} if topic else {}))
    verifier.observers.append(audit.observe)
    return audit


VERIFICATION_RECORD_VARIABLE = "AUDITSEAL_VERIFICATION_RECORD"
"""Set to ``kafka``: the run's record is also written to ``audit.verification`` as the verifier itself."""


def _record_access(args, report: Report) -> None:
    # The run's access record goes to the access spool (the access auditor forwards it to audit.access); a
    # deployment where no auditor reads the spool (a Kubernetes Job's scratch folder, a compose tmpfs) sets
    # AUDITSEAL_VERIFICATION_RECORD=kafka and the verifier delivers the record to its own origin topic,
    # audit.verification, as its own principal (only it may write there), or fails saying so.
    from pipeline.access.record import record_access

    event = record_access(
        action="archive.verify",
        resource={"type": "s3.prefix" if args.s3 else "archive.dir", "id": args.s3 or str(args.dir)},
        status="SUCCESS" if report.intact else "FAILURE",
        reason=None if report.intact else f"{report.violation_total} violation(s): "
        + ", ".join(sorted(report.violation_counts)),
        attributes={"objects": str(report.objects), "records": str(report.records)},
    )
    wanted = os.environ.get(VERIFICATION_RECORD_VARIABLE)
    if wanted and wanted != "kafka":
        raise ConfigError(f"{VERIFICATION_RECORD_VARIABLE}={wanted!r}: expected kafka (or unset)")
    if wanted:
        deliver_verification_record(event)


def deliver_verification_record(event: dict) -> None:
    """Write one verification record to ``audit.verification`` as the verifier (the role in the
    ``AUDITSEAL_*`` variables); AuditSealError if it is not delivered."""
    from pipeline.wire.topics import VERIFICATION_TOPIC

    deliver_record(event, KafkaSettings.from_env(), VERIFICATION_TOPIC, f"the record of this verification "
                   f"({event['event_id']})")


ACCESS_RECORD_USER_VARIABLE = "AUDITSEAL_ACCESS_RECORD_SASL_USERNAME"
ACCESS_RECORD_PASSWORD_VARIABLE = "AUDITSEAL_ACCESS_RECORD_SASL_PASSWORD"


def deliver_access_record(event: dict) -> None:
    """Write one access record of a command (a reveal) to ``audit.access`` as
    ``$AUDITSEAL_ACCESS_RECORD_SASL_USERNAME`` (password in ``$AUDITSEAL_ACCESS_RECORD_SASL_PASSWORD``; broker and
    CA as for the command's own role): where no access auditor forwards the command's spool, the deployment
    lends it the auditor's credential, the one principal that may write ``audit.access``. AuditSealError if it
    is not delivered."""
    from pipeline.wire.topics import ACCESS_TOPIC

    password = os.environ.get(ACCESS_RECORD_PASSWORD_VARIABLE)
    if not password:
        raise ConfigError(f"{ACCESS_RECORD_USER_VARIABLE} is set but {ACCESS_RECORD_PASSWORD_VARIABLE} is not")
    own = KafkaSettings.from_env()
    settings = KafkaSettings(own.bootstrap, os.environ[ACCESS_RECORD_USER_VARIABLE], password, own.ca_file)
    deliver_record(event, settings, ACCESS_TOPIC, f"the access record ({event['action']} {event['event_id']})")


def deliver_record(event: dict, settings: KafkaSettings, topic: str, what: str) -> None:
    """Write one record of this command to ``topic`` as ``settings``' principal; AuditSealError naming ``what``
    if it is not delivered."""
    from pipeline.producer.client import AuditProducer

    # one message on failure, below: the client's own log lines (librdkafka's, the producer's) would repeat it
    logging.getLogger("pipeline.producer.client").setLevel(logging.CRITICAL)
    producer = AuditProducer(settings, topic=topic, config={"log_level": 2, "message.timeout.ms": 30_000})
    try:
        producer.emit(event, key=event["actor"]["id"])
        producer.close(30)  # flushes: raises unless delivered
    except AuditSealError as exc:
        with contextlib.suppress(AuditSealError):
            producer.close(0)  # stops its thread; it raises the failure reported below again
        raise AuditSealError(f"{what} was not delivered to {topic} as {settings.username}: {exc}") from None
