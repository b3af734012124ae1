"""SIEM path throughput, side by side in one run: the sealer, the bridge behind it, and export.

1. N events are produced to a fresh raw topic (6 partitions); one sealer worker seals the backlog
   (events/s = N / time from its first sealed event to its last, as ``bench.sealer`` measures it).
2. One bridge worker (``auditseal siem-bridge``) then publishes that sealed backlog as OCSF JSON:
   records/s = sealed records / time from the first OCSF document committed to the last.
   Target: at least 0.5 of the sealer's rate. It runs twice on the same backlog, to two OCSF topics:
   first with the compiled writer record by record (``AUDITSEAL_SIEM_NATIVE=records``, the path before
   whole batches), then as production runs it (whole batches in one call).
3. The sealed records are archived to a local folder in the sink's layout (20,000 records an object),
   and ``auditseal export --from dir`` writes them to /dev/null, as production runs it (OCSF, whole
   batches; and ``--format json``) and with the two baselines (``AUDITSEAL_SIEM_NATIVE=records``, and
   ``0``: the readable mapping alone): records/s as the command reports them (wall clock), and per CPU
   second of the command (its user + system time, what a loaded machine distorts least).
   Target: 100,000 records/s.
4. The by-reference evidence (a proposal, not implemented): the same archive exported in this process
   with each entry's copy of its covering checkpoint (evidence and signature) replaced by a reference
   to the checkpoint's own document, beside the same export as it is: records/s and bytes per document.

``--synthetic N`` skips the stack: steps 3 and 4 on an archive of N records synthesised as
``bench.verify`` does (v2 checkpoints every 2,000 entries, a tree head before each).

Runs on the local stack (``auditseal dev up``) on throwaway topics: ``python -m bench.siem``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.sealer import PARTITIONS, produce, throughput
from pipeline.archive.container import build_object
from pipeline.archive.retention import load_profiles
from pipeline.config import KafkaSettings
from pipeline.dev.stack import LocalStack
from pipeline.wire.codec import HEADER_SIZE
from pipeline.wire.sealed import sealed_codecs
from tests.support.sealing import REPO, create_topics, delete_topics
from tests.support.siem import create_ocsf_topic, delete_ocsf_topic, start_bridge

OBJECT_RECORDS = 20_000


def _read_all(stack: LocalStack, topic: str, role: str, on_record=None, target: int | None = None,
              timeout: float = 900) -> tuple[int, float | None, float | None]:
    """(records, first seen, last seen) of a topic read as ``role`` from the start: to its end, or to ``target``."""
    consumer = Consumer(KafkaSettings.from_env(stack.env(role)).client_config(**{
        "group.id": f"auditseal-{role}-bench-{os.getpid()}-{time.monotonic_ns()}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": target is None}))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen, first, last, done = 0, None, None, set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if target is None and len(done) == PARTITIONS or target is not None and seen >= target:
                break
            for message in consumer.consume(10_000, 0.5):
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        done.add(message.partition())
                        continue
                    raise RuntimeError(message.error().str())
                seen += 1
                first = first or time.monotonic()
                last = time.monotonic()
                if on_record is not None:
                    on_record(message)
    finally:
        consumer.close()
    if target is not None and seen < target:
        raise TimeoutError(f"{topic}: {seen} of {target} records within {timeout}s")
    return seen, first, last


def _archive(stack: LocalStack, sealed_topic: str, folder: Path) -> int:
    """Write the sealed topic to ``folder`` in the sink's key layout; the number of records."""
    by_partition: dict[int, list] = {}
    total, _, _ = _read_all(stack, sealed_topic, "verifier", on_record=lambda m: by_partition.setdefault(
        m.partition(), []).append((m.offset(), m.timestamp()[1], m.value())))
    profile = load_profiles(None).get("soc2")
    for partition, records in by_partition.items():
        for start in range(0, len(records), OBJECT_RECORDS):
            archived = build_object(sealed_topic, partition, records[start:start + OBJECT_RECORDS], profile=profile)
            path = folder / archived.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archived.body)
            (folder / archived.manifest_key).write_bytes(archived.manifest_bytes)
    return total


def _export(folder: Path, format: str, native: str = "1") -> tuple[float, float, str]:
    """(records/s by the command's own summary, records per CPU second of the command, summary) of one export."""
    env = dict(os.environ, AUDITSEAL_ACCESS_SPOOL=str(folder / "spool"), AUDITSEAL_SIEM_NATIVE=native)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "pipeline.cli.main", "export", "--from", "dir", "--dir",
                             str(folder), "--format", format, "--out", os.devnull], cwd=REPO, capture_output=True,
                            text=True, timeout=1800, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    summary = result.stderr.strip().splitlines()[-1]
    records = int(re.search(r"read (\d+) sealed records", summary).group(1))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return float(re.search(r"\(([\d,]+) records/s\)", summary).group(1).replace(",", "")), records / cpu, summary


EXPORTS = (("ocsf", "1", "whole batches, as production runs it"),
           ("ocsf", "records", "baseline: compiled writer record by record"),
           ("ocsf", "0", "baseline: readable mapping alone"),
           ("json", "1", "the records' own fields"))


def _exports(folder: Path, archived: int) -> None:
    """Step 3: every export of EXPORTS, then the ratios to the baselines."""
    rates = {}
    for format, native, what in EXPORTS:
        rate, cpu_rate, summary = _export(folder, format, native)
        rates[format, native] = rate, cpu_rate
        print(f"export --format {format} ({what}), {archived} archived records: {rate:10,.0f} records/s, "
              f"{cpu_rate:10,.0f} per CPU second (target >= 100,000)\n    {summary}")
    new, records, readable = rates["ocsf", "1"], rates["ocsf", "records"], rates["ocsf", "0"]
    print(f"ratio export ocsf whole batches / record by record: {new[0] / records[0]:.2f} (per CPU second "
          f"{new[1] / records[1]:.2f}); / readable mapping: {new[0] / readable[0]:.1f} ({new[1] / readable[1]:.1f})")


class _CountingSink(io.RawIOBase):
    """A binary stream that keeps only the number of bytes written to it."""

    size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.size += len(data)
        return len(data)


def _by_reference(folder: Path) -> None:
    """Step 4: the export in this process as it is, and with the checkpoint's evidence by reference (proposal)."""
    from pipeline.siem import ocsf
    from pipeline.siem.export import archive_records, export_documents
    from pipeline.verifier.archive import DirectorySource

    def by_reference(checkpoint, position):
        # what an entry would carry instead of the checkpoint: its document's uid and where it was sealed
        uid = ocsf.checkpoint_uid(checkpoint["chain_id"], checkpoint["last_seq"])
        return ocsf.CoveringCheckpoint({"ref": uid, "sealed": position.as_dict()},
                                       {"algorithm_id": ocsf.OTHER_ID, "algorithm": "Ed25519", "uid": uid})

    original = ocsf.covering_checkpoint
    for label, covering in (("evidence attached (as today)", original),
                            ("checkpoint by reference (proposal)", by_reference)):
        ocsf.covering_checkpoint = covering
        try:
            out = _CountingSink()
            cpu, started = time.process_time(), time.perf_counter()
            summary = export_documents(archive_records(DirectorySource(folder)), out)  # type: ignore[arg-type]
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        finally:
            ocsf.covering_checkpoint = original
        print(f"export in process, {label}: {summary.read / wall:10,.0f} records/s, {summary.read / cpu:10,.0f} per "
              f"CPU second, {out.size / max(1, summary.written):,.0f} bytes a document")


def _bridges(stack: LocalStack, topics, ocsf_topics: tuple[str, str], sealed: int, sealer_rate: float) -> None:
    """Step 2: the bridge record by record, then with whole batches, each to its own OCSF topic."""
    rates = {}
    for native, ocsf_topic in zip(("records", "1"), ocsf_topics, strict=True):
        os.environ["AUDITSEAL_SIEM_NATIVE"] = native  # the bridge process inherits it
        try:
            bridge = start_bridge(stack, topics, ocsf_topic, f"auditseal-ocsf-bridge-bench-{os.getpid()}-{native}")
        finally:
            del os.environ["AUDITSEAL_SIEM_NATIVE"]
        try:
            published, first, last = _read_all(stack, ocsf_topic, "siem", target=sealed)
        finally:
            bridge.send_signal(signal.SIGTERM)
            bridge.wait(60)
        seconds = max(last - first, 1e-9)
        rates[native] = published / seconds
        what = "whole batches, as production runs it" if native == "1" else "baseline: record by record"
        print(f"bridge ({what}): {rates[native]:10,.0f} records/s ({published} sealed records in {seconds:.1f}s), "
              f"ratio to the sealer {rates[native] / sealer_rate:.2f} (target >= 0.5); "
              f"load average {os.getloadavg()[0]:.1f}")
    print(f"ratio bridge whole batches / record by record: {rates['1'] / rates['records']:.2f}")


def main() -> None:
    """Run the measurements and print their figures beside their targets and baselines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--synthetic", type=int, metavar="N", help="exports only, of N synthesised records, no stack")
    args = parser.parse_args()
    print(f"load average at the start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    with tempfile.TemporaryDirectory(prefix="auditseal-bench-siem-") as folder:
        if args.synthetic:
            from bench.verify import synthesise_archive

            _, archived = synthesise_archive(Path(folder), args.synthetic, heads=True)
            _exports(Path(folder) / "archive", archived)
            _by_reference(Path(folder) / "archive")
        else:
            _on_the_stack(args.events, Path(folder))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


def _on_the_stack(events: int, folder: Path) -> None:
    stack = LocalStack()
    topics = create_topics(stack, partitions=PARTITIONS)
    ocsf_topics = (create_ocsf_topic(stack, topics), create_ocsf_topic(stack, topics, suffix=".2"))
    try:
        started = time.monotonic()
        produce(stack, topics.raw, events)
        print(f"produced {events} events in {time.monotonic() - started:.1f}s")
        seal_argv = [sys.executable, "-m", "pipeline.cli.main", "seal", "--raw-topic", topics.raw,
                     "--sealed-topic", topics.sealed, "--app-id", topics.app_id, "--metrics-port", "0"]
        sealer_rate, sealer_rss, sealer_s = throughput(stack, topics, events, seal_argv, topics.sealed, "verifier")
        print(f"sealer:  {sealer_rate:10,.0f} events/s  ({events} in {sealer_s:.1f}s)  peak RSS {sealer_rss:.0f} MB; "
              f"load average {os.getloadavg()[0]:.1f}")
        # the bridge publishes every sealed record but tree heads and cosignatures (integrity metadata)
        codecs, forwarded = sealed_codecs(), [0]
        not_forwarded = {codecs.head.header, codecs.cosignature.header}

        def count(message) -> None:
            forwarded[0] += message.value()[:HEADER_SIZE] not in not_forwarded

        sealed, _, _ = _read_all(stack, topics.sealed, "verifier", on_record=count)
        print(f"sealed records: {sealed}, of which the bridge publishes {forwarded[0]}")
        _bridges(stack, topics, ocsf_topics, forwarded[0], sealer_rate)
        archived = _archive(stack, topics.sealed, folder)
        _exports(folder, archived)
        _by_reference(folder)
    finally:
        for ocsf_topic in ocsf_topics:
            delete_ocsf_topic(stack, ocsf_topic)
        delete_topics(stack, topics)


if __name__ == "__main__":
    main()
