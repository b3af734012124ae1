"""Back up and restore the key store topic: losing it would make every protected field unreadable.

A backup is JSON lines: a header ``{format, topic, taken_at, records}``, then one ``{key, value}`` per
live record of the compacted topic (value base64; subject keys and the pseudonym key stay wrapped by
the KEK, so the file is as sensitive as the topic, not more; keep the KEK elsewhere). Tombstones are
not copied. Restoring writes the records back into the topic (new or existing), except keys of subjects
that are erased, in the backup or in the topic as it is now: a restore never resurrects an erased key.

What a backup cannot know: an erasure made *after* it was taken. After restoring an older backup, erase
again every subject whose ``privacy.subject.erase`` record the sealed log holds since the backup was taken
(the restore lists the erasures it honoured), and keep backups no longer than the time you promise an
erasure to take effect (README "Personal data").
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.privacy.crypto import PrivacyError
from pipeline.privacy.keystore import KeyStore, KeyStoreUnavailableError
from pipeline.privacy.records import ERASED_PREFIX, SUBJECT_PREFIX

BACKUP_FORMAT = "auditseal key store backup v1"


class BackupFileError(PrivacyError, ConfigError):
    """A backup file is missing, unreadable or not in this format."""


def read_topic(settings: KafkaSettings, topic: str, timeout: float = 60.0) -> dict[str, bytes | None]:
    """The newest value of every key of ``topic`` (None for a tombstone), read from the start to its end."""
    consumer = Consumer(settings.client_config(**{"group.id": "auditseal-keystore-backup", "enable.auto.commit": False,
                                                  "client.id": "auditseal-keystore"}))
    latest: dict[str, bytes | None] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise KeyStoreUnavailableError(f"key store {topic}: {metadata.error.str() if metadata else 'no such topic'}")
        for partition in sorted(metadata.partitions):
            tp = TopicPartition(topic, partition, OFFSET_BEGINNING)
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            consumer.assign([tp])
            position, deadline = 0, time.monotonic() + timeout
            while position < high:
                if time.monotonic() > deadline:
                    raise KeyStoreUnavailableError(f"key store {topic}[{partition}] not read to its end in {timeout}s")
                for message in consumer.consume(10_000, timeout=0.5):
                    if message.error() is None:
                        latest[message.key().decode()] = message.value()
                        position = message.offset() + 1
    finally:
        consumer.close()
    return latest


def backup(settings: KafkaSettings, topic: str, path: Path) -> int:
    """Write every live record of ``topic`` to ``path`` (mode 600); returns how many."""
    records = {k: v for k, v in read_topic(settings, topic).items() if v is not None}
    header = {"format": BACKUP_FORMAT, "topic": topic, "records": len(records),
              "taken_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    lines = [json.dumps(header, sort_keys=True)] + [
        json.dumps({"key": k, "value": base64.b64encode(v).decode()}, sort_keys=True) for k, v in sorted(records.items())]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
        os.fsync(out.fileno())
    return len(records)


def _load(path: Path) -> tuple[dict, dict[str, bytes]]:
    try:
        lines = path.read_text().splitlines()
        header = json.loads(lines[0])
        if header.get("format") != BACKUP_FORMAT:
            raise ValueError(f"format {header.get('format')!r}, expected {BACKUP_FORMAT!r}")
        records = {}
        for number, line in enumerate(lines[1:], start=2):
            item = json.loads(line)
            records[item["key"]] = base64.b64decode(item["value"], validate=True)
        if len(records) != header["records"]:
            raise ValueError(f"the header says {header['records']} records, the file holds {len(records)} (truncated?)")
        return header, records
    except (OSError, IndexError, KeyError, TypeError, ValueError) as exc:
        raise BackupFileError(f"{path}: not a readable key store backup: {exc}") from None


def restore(store: KeyStore, path: Path) -> tuple[int, list[str]]:
    """Write the records of the backup at ``path`` into ``store``'s topic; returns (records written, erased
    subjects whose keys were left out). ``store`` must be open (its view says what is erased now)."""
    _, records = _load(path)
    erased = {k[len(ERASED_PREFIX):] for k in records if k.startswith(ERASED_PREFIX)}
    erased |= {p for p in {k[len(SUBJECT_PREFIX):].rpartition("/")[0] for k in records if k.startswith(SUBJECT_PREFIX)}
               if store.erasure(p) is not None}
    kept = [(k, v) for k, v in records.items()
            if not (k.startswith(SUBJECT_PREFIX) and k[len(SUBJECT_PREFIX):].rpartition("/")[0] in erased)]
    store.write_records(kept)
    return len(kept), sorted(erased)
