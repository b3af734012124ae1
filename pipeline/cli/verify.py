"""``auditseal verify``: one command that says whether the archive is complete and untouched.

Output in the spirit of ``aws cloudtrail validate-logs``: what was checked, how much was valid, then
each violation with its kind, object, chain and sequence number. Exit 0 intact, 1 violations found,
2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

from pipeline.config import KafkaSettings, S3Settings
from pipeline.errors import ConfigError
from pipeline.integrity.keyring import load_keyring
from pipeline.verifier.archive import TAIL_TRUNCATED, ArchiveVerifier, BucketSource, DirectorySource, Report
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
    return BucketSource(settings.client(), parsed.netloc, parsed.path.lstrip("/"))


def _progress():
    if not sys.stderr.isatty():
        return None

    def show(count: int, name: str) -> None:
        print(f"\r\033[Kverifying object {count}: {name[-60:]}", end="", file=sys.stderr, flush=True)

    return show


def check_tail(report: Report, topic: str, timeout: float = 60.0) -> None:
    """Tail truncation: each chain of the sealed topic must not be ahead of the archive."""

    from pipeline.sealer.output import last_checkpoint, tail_consumer

    settings = KafkaSettings.from_env()
    consumer = tail_consumer(settings, f"auditseal-verifier-{os.getpid()}")
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        for partition in sorted(partitions):
            checkpoint = last_checkpoint(consumer, topic, partition, timeout)
            if checkpoint is None:
                continue
            archived = max((seq for chain, seq in report.last_seq.items()
                            if chain.endswith(":" + checkpoint["chain_id"])), default=-1)
            if archived < checkpoint["last_seq"]:
                report.add(Violation(
                    TAIL_TRUNCATED, checkpoint["chain_id"], archived + 1, f"{topic}[{partition}]",
                    f"the topic's last checkpoint covers seq {checkpoint['last_seq']}, the archive ends at seq "
                    f"{archived}: entries {archived + 1}..{checkpoint['last_seq']} are missing from the archive "
                    "(or the sink has not caught up)"))
    finally:
        consumer.close()


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


def verify_command(args) -> int:
    """Run ``auditseal verify``; returns the exit code."""
    from pipeline.keys.master import load_master_key_spec
    from pipeline.archive.retention import load_profiles

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
    verifier = ArchiveVerifier(keyring, profiles, masters, _progress())
    report = verifier.verify(source)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.kafka:
        check_tail(report, args.kafka_topic)
    _record_access(args, report)
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0 if report.intact else 1


def _record_access(args, report: Report) -> None:
    from pipeline.access.record import record_access

    record_access(
        action="archive.verify",
        resource={"type": "s3.prefix" if args.s3 else "archive.dir", "id": args.s3 or str(args.dir)},
        status="SUCCESS" if report.intact else "FAILURE",
        reason=None if report.intact else f"{report.violation_total} violation(s): "
        + ", ".join(sorted(report.violation_counts)),
        attributes={"objects": str(report.objects), "records": str(report.records)},
    )
