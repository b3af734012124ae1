"""``auditseal reveal`` and ``auditseal erase``: the I/O around :mod:`pipeline.privacy`.

``reveal EVENT_ID... --reason CASE (--s3 URI | --dir PATH)``, as the ``investigator`` role: records the
access first (an ``privacy.reveal`` access event, sealed into the log through the access spool), then
reads the archive and prints each chosen event's personal fields decrypted; a field of an erased
subject says when and by whom it was erased. Exit 0 if every chosen event was found (erased fields
included: that is the expected answer), 1 if one was not found or a field did not decrypt, 2 on a usage
or configuration error.

``erase SUBJECT --reason TEXT [--certificate FILE]``, as the ``privacy`` role: seals an erasure record
into ``audit.raw`` (who, when, which pseudonym, why; never the subject's id), tombstones every key of
the subject in the key store, forces the compaction that removes the key records from disk, and writes
an erasure certificate. Exit 0 erased, 1 unknown or already erased subject (or the store did not
answer), 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

EXIT_OK, EXIT_FAILED = 0, 1
ERASE_ACTION = "privacy.subject.erase"
REVEAL_ACTION = "privacy.reveal"
DATA_SUBJECT = "data_subject"
CERTIFICATE_FORMAT = "auditseal erasure certificate v1"


@contextlib.contextmanager
def emit_protector(enabled: bool) -> Iterator[Any]:
    """A Protector over an open key store from the environment when ``enabled``, else None."""
    if not enabled:
        yield None
        return
    from pipeline.privacy.keystore import keystore_from_env
    from pipeline.privacy.protector import Protector

    with keystore_from_env() as store:
        yield Protector(store)


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``reveal`` and ``erase`` to the ``auditseal`` command parser."""
    reveal = commands.add_parser("reveal", help="decrypt the personal fields of chosen archived events for an "
                                 "investigation (recorded in the log; investigator role)")
    reveal.add_argument("event_ids", nargs="+", metavar="EVENT_ID", help="the AuditEvents' event_id (UUID)")
    reveal.add_argument("--reason", required=True, help="the investigation (case number), recorded with the access")
    reveal.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    reveal.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    reveal.add_argument("--master-key", action="append", help="master key file(s) of encrypted objects")
    reveal.add_argument("--json", action="store_true")
    reveal.set_defaults(handler=reveal_command)

    erase = commands.add_parser("erase", help="crypto-shred a data subject: destroy its keys, seal an erasure "
                                "record, write a certificate (privacy role)")
    erase.add_argument("subject", metavar="SUBJECT", help="the data subject's id (e.g. the user id in actor.id)")
    erase.add_argument("--reason", required=True, help="why (e.g. the GDPR Art. 17 request reference)")
    erase.add_argument("--certificate", metavar="FILE", help="where to write the erasure certificate "
                       "(default erasure-<pseudonym>.json)")
    erase.add_argument("--no-wait", action="store_true", help="do not wait for the key records to be compacted "
                       "off disk (they go within max.compaction.lag.ms)")
    erase.add_argument("--compaction-timeout", type=float, default=180.0, metavar="SECONDS")
    erase.add_argument("--raw-topic", default=None, help="where the erasure record goes (default audit.raw)")
    erase.set_defaults(handler=erase_command)

    keystore = commands.add_parser("keystore", help="back up and restore the key store (privacy role)")
    actions = keystore.add_subparsers(dest="keystore_command", required=True, metavar="ACTION")
    backup = actions.add_parser("backup", help="write every live record of the key store to a file (mode 600)")
    backup.add_argument("--out", required=True, metavar="FILE")
    backup.add_argument("--topic", default=None, help="the key store topic (default audit.keys)")
    backup.set_defaults(handler=keystore_backup_command)
    restore = actions.add_parser("restore", help="write a backup back into the key store (never an erased key)")
    restore.add_argument("backup_file", metavar="FILE")
    restore.add_argument("--topic", default=None, help="the key store topic (default audit.keys)")
    restore.set_defaults(handler=keystore_restore_command)


def keystore_backup_command(args: argparse.Namespace) -> int:
    """Run ``auditseal keystore backup``."""
    from pipeline.privacy.backup import backup
    from pipeline.privacy.keystore import keystore_settings
    from pipeline.wire.topics import KEYS_TOPIC

    topic = args.topic or KEYS_TOPIC
    count = backup(keystore_settings(os.environ), topic, Path(args.out))
    print(f"backed up {count} record(s) of {topic} to {args.out}; keep it apart from the KEK, and no longer than "
          "an erasure may take to be complete")
    return EXIT_OK


def keystore_restore_command(args: argparse.Namespace) -> int:
    """Run ``auditseal keystore restore``."""
    from pipeline.privacy.backup import restore
    from pipeline.privacy.keystore import keystore_from_env
    from pipeline.wire.topics import KEYS_TOPIC

    with keystore_from_env(topic=args.topic or KEYS_TOPIC) as store:
        written, erased = restore(store, Path(args.backup_file))
    print(f"restored {written} record(s) into {store.topic}; keys of {len(erased)} erased subject(s) left out"
          + (f": {', '.join(erased)}" if erased else "")
          + "; now erase again every subject erased in the log since the backup was taken")
    return EXIT_OK


# -- reveal ---------------------------------------------------------------------------------------


def _find_events(source, wanted: set[str], master_keys) -> dict[str, tuple[dict[str, Any], str]]:
    from pipeline.archive.container import read_archived_records
    from pipeline.wire.codec import default_codec
    from pipeline.wire.sealed import EVENT_KIND, sealed_codecs

    codecs, codec, found = sealed_codecs(), default_codec(), {}
    for entry in source.entries():
        if not entry.versions:
            continue
        data = entry.first_container(master_keys)
        for row in read_archived_records(data):
            if codecs.kind_of(row["value"]) != EVENT_KIND:
                continue
            _, record = codecs.decode(row["value"])
            event = codec.decode(record["event"])
            event_id = str(event["event_id"])
            if event_id in wanted and event_id not in found:
                found[event_id] = (event, f"{entry.name} offset {row['offset']}")
                if len(found) == len(wanted):
                    return found
    return found


def reveal_command(args: argparse.Namespace) -> int:
    """Run ``auditseal reveal``; returns the exit code."""
    from pipeline.access.record import record_access
    from pipeline.archive.encryption import load_master_key
    from pipeline.cli.verify import ACCESS_RECORD_USER_VARIABLE, _source, deliver_access_record
    from pipeline.privacy.keystore import keystore_from_env
    from pipeline.privacy.protector import reveal

    wanted = set(args.event_ids)
    source = _source(args)
    masters = {key.key_id: key for key in (load_master_key(Path(p)) for p in args.master_key or [])}
    with keystore_from_env() as store:
        # recorded before anything is decrypted: a reveal that leaves no trace never shows plaintext
        record = record_access(action=REVEAL_ACTION,
                               resource={"type": "audit.events", "id": ",".join(sorted(wanted))[:900]},
                               reason=args.reason, attributes={"event_count": str(len(wanted))})
        if os.environ.get(ACCESS_RECORD_USER_VARIABLE):
            # where no access auditor forwards the spool (a Kubernetes Job, a compose tmpfs), the record is
            # delivered to audit.access first, or nothing is revealed
            deliver_access_record(record)
        found = _find_events(source, wanted, masters)
        results = {}
        for event_id in args.event_ids:
            if event_id not in found:
                results[event_id] = {"error": f"no archived event {event_id} under {source.description}"}
                continue
            event, location = found[event_id]
            results[event_id] = {"location": location, "fields": reveal(event, store)}
    failed = any("error" in r or any("error" in f for f in r["fields"].values()) for r in results.values())
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    else:
        for event_id, result in results.items():
            if "error" in result:
                print(f"{event_id}: NOT FOUND: {result['error']}")
                continue
            print(f"{event_id} ({result['location']}):")
            if not result["fields"]:
                print("  no protected fields")
            for name, field in sorted(result["fields"].items()):
                text = field.get("value")
                shown = repr(text) if text is not None else ("ERASED: " + field["erased"] if "erased" in field
                                                             else "ERROR: " + field["error"])
                print(f"  {name:24} {shown}")
    return EXIT_FAILED if failed else EXIT_OK


# -- erase ----------------------------------------------------------------------------------------


def _operator() -> str:
    username = os.environ.get("AUDITSEAL_SASL_USERNAME")
    return f"User:{username}" if username else f"os:{getpass.getuser()}"


def erasure_event(pseudonym: str, pseudonym_version: int, key_ids: tuple[str, ...], reason: str) -> dict[str, Any]:
    """The erasure record sealed into the log: names the pseudonym, never the subject's id."""
    from pipeline.access.record import SOURCE_SERVICE
    from pipeline.producer.event import new_event

    operator = _operator()
    return new_event(
        actor={"id": operator, "type": "SERVICE" if operator.startswith("User:") else "USER"},
        action=ERASE_ACTION,
        resource={"type": DATA_SUBJECT, "id": pseudonym},
        outcome={"status": "SUCCESS", "reason": reason},
        source_service=SOURCE_SERVICE,
        # no command line here (unlike record_access): it holds the subject's id in plaintext
        attributes={"key_ids": ",".join(key_ids), "pseudonym_key_version": str(pseudonym_version),
                    "os_user": getpass.getuser(), "hostname": socket.gethostname()},
    )


def erase_command(args: argparse.Namespace) -> int:
    """Run ``auditseal erase``; returns the exit code."""
    from pipeline.privacy.keystore import FILE_DELETE_DELAY_MS, KEYS_TOPIC_CONFIGS, SEGMENT_MS, keystore_from_env
    from pipeline.producer.client import AuditProducer

    if not args.reason.strip():
        raise ConfigError("--reason must say why (e.g. the erasure request's reference)")
    with keystore_from_env() as store:
        pseudonym_key = store.pseudonym_key()
        pseudonym = pseudonym_key.subject_pseudonym(args.subject)
        key_ids = store.key_ids(pseudonym)
        wrapped = store.wrapped_keys(pseudonym)
        if not key_ids:
            store.erase(pseudonym, _operator(), "")  # raises: already erased, or unknown subject
        event = erasure_event(pseudonym, pseudonym_key.version, key_ids, args.reason)
        # sealed first: if destroying then fails, the log says so and a second run finishes it
        with AuditProducer(config={"log_level": 2}, **({"topic": args.raw_topic} if args.raw_topic else {})) as producer:
            result = producer.emit(event, key=pseudonym)
            producer.flush(60)
        erasure = store.erase(pseudonym, event["actor"]["id"], str(event["event_id"]))
        bound = f"max.compaction.lag.ms={KEYS_TOPIC_CONFIGS['max.compaction.lag.ms']}"
        compaction = {"state": "pending", "bound": bound}
        if not args.no_wait:
            seconds = store.force_compaction(pseudonym, key_ids, args.compaction_timeout)
            # what "done" covers, and what only a bound covers
            compaction = {"state": "done", "seconds": round(seconds, 1), "segment_ms": SEGMENT_MS,
                          "file_delete_delay_ms": FILE_DELETE_DELAY_MS,
                          "covers": "the partition leader's log, read back without the destroyed keys' records, "
                                    "and its replaced segment file, unlinked file.delete.delay.ms later (waited)",
                          "followers": f"each follower replica's cleaner rewrites its copy within {bound}"}
    body = {
        "format": CERTIFICATE_FORMAT,
        "subject_pseudonym": pseudonym,
        "pseudonym_key_version": pseudonym_key.version,
        "destroyed_key_ids": list(key_ids),
        # fingerprints of what was destroyed, so a later scan can prove it is gone without holding it
        "destroyed_wrapped_key_sha256": {k: hashlib.sha256(w).hexdigest() for k, w in sorted(wrapped.items())},
        "erased_at": erasure.erased_at,
        "erased_by": erasure.erased_by,
        "reason": args.reason,
        "erasure_event_id": str(event["event_id"]),
        "erasure_record": {"topic": producer.topic, "partition": result.partition, "offset": result.offset},
        "key_store": {"topic": store.topic, "tombstones": len(key_ids), "compaction": compaction},
        "prove_with": f"auditseal prove {event['event_id']}",
    }
    body["sha256"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    path = Path(args.certificate or f"erasure-{pseudonym}.json")
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    print(f"erased subject {pseudonym} ({len(key_ids)} key(s)) on {erasure.erased_at} by {erasure.erased_by}; "
          f"erasure record {event['event_id']} at {producer.topic}[{result.partition}]@{result.offset}; "
          f"key records compaction {compaction['state']}; certificate {path}", file=sys.stdout)
    return EXIT_OK
