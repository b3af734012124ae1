"""``auditseal timeline``: the I/O around :mod:`pipeline.timeline`.

Reads the archive (``--s3`` or ``--dir``, as ``auditseal verify`` does), prints the matching events in time
order as a table (``--json``: one JSON line per event, then one summary line), and with ``--bundle FILE``
writes the evidence bundle that ``auditseal verify-proof FILE`` checks offline. Whatever makes the answer
incomplete (a gap, a violation, an unreadable object in the objects read or in the manifests) is printed
before the events and in the summary. Exit 0 complete and every event verified, 1 otherwise, 2 usage.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

from pipeline.errors import ConfigError


def _time_micros(text: str) -> int:
    from pipeline.cli.siem import parse_time

    return parse_time(text) * 1000


def register(commands) -> None:
    """Add ``timeline`` to the ``auditseal`` subcommands."""
    timeline = commands.add_parser(
        "timeline", help="the archived events matching filters, in time order, each with its chain position and "
        "verification status (exit 0 complete and verified, 1 incomplete or unverified, 2 usage error)",
        description="Every archived event matching all the filters given, in occurred_at order, each with its chain "
        "position and whether a valid signed checkpoint covers it. Where personal data is protected, actor.id "
        "holds the subject's pseudonym: pass it, or --pseudonymize to compute it from the key store.")
    timeline.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    timeline.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    timeline.add_argument("--kafka", action="store_true", help="read the sealed topic itself (AUDITSEAL_* variables, "
                          "as the verifier role) instead of the archive: every retained record is read")
    timeline.add_argument("--kafka-topic", default="audit.sealed", help="with --kafka (default audit.sealed)")
    timeline.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    timeline.add_argument("--master-key", action="append",
                          help="master key(s) of encrypted objects: a file, or pkcs11:LABEL in the AUDITSEAL_PKCS11_* token")
    timeline.add_argument("--actor", help="actor.id (a user id, a service account, or a pseudonym p1.…)")
    timeline.add_argument("--pseudonymize", action="store_true",
                          help="also match --actor's pseudonym, computed with the key store's pseudonym key "
                          "(AUDITSEAL_KEYSTORE_* and AUDITSEAL_KEK_FILE: the investigator role)")
    timeline.add_argument("--resource", help="resource.id, or TYPE:ID")
    timeline.add_argument("--action", help="e.g. document.read")
    timeline.add_argument("--outcome", help="SUCCESS, FAILURE, DENIED or UNKNOWN")
    timeline.add_argument("--since", type=_time_micros, metavar="TIME",
                          help="occurred_at at or after (ISO 8601, e.g. 2026-12-01 or 2026-12-01T10:00:00Z)")
    timeline.add_argument("--until", type=_time_micros, metavar="TIME", help="occurred_at before (ISO 8601)")
    timeline.add_argument("--no-index", action="store_true",
                          help="read every object instead of skipping those the manifests' query index rules out")
    timeline.add_argument("--bundle", metavar="FILE", help="also write the evidence bundle (the events with their "
                          "inclusion proofs) for auditseal verify-proof")
    timeline.add_argument("--json", action="store_true", help="one JSON line per event, then a summary line")
    timeline.set_defaults(handler=timeline_command)


def _pseudonym(actor: str) -> str:
    from pipeline.privacy.keystore import keystore_from_env

    with keystore_from_env() as store:
        return store.pseudonym_key().subject_pseudonym(actor)


TOPIC_GROUP = "auditseal-verifier-timeline"


def _topic_timeline(args: argparse.Namespace, query, keyring):
    from pipeline.config import KafkaSettings
    from pipeline.preflight import check_kafka
    from pipeline.siem.export import ExportSourceError, kafka_records
    from pipeline.timeline.scan import build_topic_timeline

    if args.s3 or args.dir or args.no_index:
        raise ConfigError("--kafka reads the sealed topic (AUDITSEAL_* variables): --s3, --dir and --no-index do not apply")
    settings = KafkaSettings.from_env()
    check_kafka(settings, [args.kafka_topic])  # a bad login or a missing topic ends here, in seconds
    records = kafka_records(args.kafka_topic, settings, group_id=f"{TOPIC_GROUP}-{os.getpid()}")
    try:
        return build_topic_timeline(records, f"kafka {args.kafka_topic}", query, keyring, proofs=bool(args.bundle))
    except ExportSourceError as exc:
        raise ConfigError(f"--kafka: {exc}") from None


def timeline_command(args: argparse.Namespace) -> int:
    """Run ``auditseal timeline``; returns the exit code."""
    from pipeline.access.record import record_access
    from pipeline.cli.verify import KEYRING_VARIABLE, _progress, _source
    from pipeline.integrity.keyring import load_keyring
    from pipeline.keys.master import load_master_key_spec
    from pipeline.privacy.crypto import is_pseudonym
    from pipeline.timeline.bundle import make_bundle
    from pipeline.timeline.query import TimelineQuery
    from pipeline.timeline.scan import build_timeline
    from pipeline.timeline.source import without_locks

    query = TimelineQuery.of(actor=args.actor, resource=args.resource, action=args.action, outcome=args.outcome,
                             since_micros=args.since, until_micros=args.until)
    if args.pseudonymize:
        if not args.actor:
            raise ConfigError("--pseudonymize needs --actor")
        if is_pseudonym(args.actor):
            raise ConfigError(f"--actor {args.actor} is already a pseudonym; drop --pseudonymize")
        query = query.with_pseudonym(_pseudonym(args.actor))
    keyring_path = args.keyring or os.environ.get(KEYRING_VARIABLE)
    if not keyring_path:
        raise ConfigError(f"no keyring: pass --keyring FILE or set {KEYRING_VARIABLE}")
    keyring = load_keyring(keyring_path)
    masters = {key.key_id: key for key in (load_master_key_spec(p) for p in args.master_key or [])}
    if args.kafka:
        timeline = _topic_timeline(args, query, keyring)
        resource = {"type": "kafka.topic", "id": args.kafka_topic}
    else:
        timeline = build_timeline(without_locks(_source(args)), query, keyring, master_keys=masters, use_index=not args.no_index,
                                  proofs=bool(args.bundle), progress=_progress())
        resource = {"type": "s3.prefix" if args.s3 else "archive.dir", "id": args.s3 or str(args.dir)}
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.bundle:
        Path(args.bundle).write_text(json.dumps(make_bundle(timeline), indent=1) + "\n")
    record_access(action="topic.timeline" if args.kafka else "archive.timeline", resource=resource,
                  status="SUCCESS" if timeline.complete else "FAILURE",
                  attributes={"query": json.dumps({k: v for k, v in query.as_dict().items() if v is not None},
                                                  sort_keys=True),
                              "events": str(len(timeline.events)), "objects_read": str(timeline.objects_read)})
    if args.json:
        for event in timeline.events:
            print(json.dumps(event.as_dict(), sort_keys=True))
        print(json.dumps(timeline.summary(), sort_keys=True))
    else:
        print(render(timeline, args.bundle))
    return 0 if timeline.complete else 1


def _time(micros: int) -> str:
    moment = datetime.datetime.fromtimestamp(micros / 1_000_000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def render(timeline, bundle: str | None = None) -> str:
    """The terminal form: what was asked and read, whether the answer is complete, then the events."""
    from pipeline.timeline.scan import VERIFIED

    summary = timeline.summary()
    asked = ", ".join(f"{name}={value}" for name, value in summary["query"].items() if value is not None) or "everything"
    objects = summary["objects"]
    lines = [f"Timeline of {timeline.source} for {asked}",
             f"{len(timeline.events)} events ({summary['verified']} verified); read {objects['read']} of "
             f"{objects['total']} objects ({objects['skipped']} ruled out by their query index, "
             f"{objects['with_index']} indexed), {timeline.records_read} records"]
    if timeline.complete:
        lines.append("COMPLETE: no gap, violation or unreadable object in what was read; every event's batch "
                     "verified against its signed checkpoint")
    else:
        unverified = len(timeline.events) - summary["verified"]
        lines.append(f"INCOMPLETE: {len(timeline.problems)} problem(s) in the archive, {unverified} event(s) "
                     "unverified; the answer may miss or misstate events:")
        for problem in timeline.problems[:20]:
            where = " ".join(part for part in (f"chain={problem.chain_id}" if problem.chain_id else "",
                                               f"seq={problem.seq}" if problem.seq is not None else "") if part)
            lines.append(f"  {problem.kind:24} {problem.location}  {where}\n      {problem.detail}")
        if len(timeline.problems) > 20:
            lines.append(f"  ... and {len(timeline.problems) - 20} more (--json lists them all)")
    if timeline.events:
        header = f"{'OCCURRED AT':24}  {'ACTOR':24}  {'ACTION':20}  {'RESOURCE':32}  {'OUTCOME':8}  {'CHAIN:SEQ':18}  STATUS"
        lines += ["", header, "-" * len(header)]
        for event in timeline.events:
            head = event.head
            status = "verified" if event.status == VERIFIED else f"UNVERIFIED: {event.problem}"
            lines.append(f"{_time(head.occurred_at_micros):24}  {_shorten(head.actor_id, 24):24}  "
                         f"{_shorten(head.action, 20):20}  {_shorten(head.resource_type + '/' + head.resource_id, 32):32}  "
                         f"{head.outcome:8}  {_shorten(f'{event.chain_id}:{event.seq}', 18):18}  {status}")
    else:
        lines.append("no archived event matches")
    if bundle:
        lines.append(f"evidence bundle written to {bundle}: check it with auditseal verify-proof {bundle} --keyring KEYRING")
    return "\n".join(lines)
