"""The demo's witness step: an omniwitness cosigning the sealer's heads, and an offline truncation caught.

The demo runs a witness of its own (:func:`start_demo_witness`: the stack's omniwitness binary, a fresh key and
state per run, a port of the stack's range for extra services), because the demo rotates the sealer's key and
omniwitness keeps the log key it first saw for an origin: the stack's witness no longer cosigns a chain after a
rotation. A few hundred events are sealed; the sealer (run with that witness's ``--witness-policy``) submits each chain's
newest head to the witness and seals the cosignatures; once they are archived, the archive is exported to a
local folder, verified with ``verify --dir --policy`` (INTACT), then the newest object holding entries of one
partition is deleted from a copy, and ``verify --dir --policy --witnessed-head`` (the cosigned head an auditor
kept) reports the truncation as ``tail_truncated``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import KafkaSettings, S3Settings
from pipeline.dev.processes import ManagedProcess
from pipeline.errors import AuditSealError
from pipeline.wire.topics import SEALED_TOPIC

EVENTS = 300
WAIT_S = 120


class WitnessDemoError(AuditSealError):
    """The witness step did not do what it should; the message says which and why."""


@dataclass
class DemoWitness:
    """The demo's own witness: its process and the tlog-policy naming it."""

    process: ManagedProcess
    policy: Path


def start_demo_witness(stack, workdir: Path) -> DemoWitness:
    """Start a fresh omniwitness for the stack's chains under the sealer's current key (stop it with
    ``.process.stop()``); WitnessDemoError if no port of the stack's extra range is free."""
    from pipeline.dev import witness

    home = workdir / "witness"
    shutil.rmtree(home, ignore_errors=True)
    try:
        process, policy = witness.start_side_witness(stack, home, "demo-witness", "witness.demo.auditseal.localhost",
                                                     stack._witness_logs())
    except RuntimeError as exc:
        raise WitnessDemoError(str(exc)) from None
    return DemoWitness(process, policy)


def _newest_cosignatures(stack) -> dict[int, tuple[int, int, bytes]]:
    """Per partition of audit.sealed: (sealed offset, tree size, note) of its newest cosignature record."""
    from confluent_kafka import TopicPartition

    from pipeline.sealer.output import _read, tail_consumer
    from pipeline.wire.sealed import COSIGNATURE_KIND, sealed_codecs

    codecs = sealed_codecs()
    consumer = tail_consumer(KafkaSettings.from_env(stack.env("verifier")), "auditseal-verifier-demo-witness")
    found = {}
    try:
        partitions = consumer.list_topics(SEALED_TOPIC, timeout=30).topics[SEALED_TOPIC].partitions
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(SEALED_TOPIC, partition), timeout=30)
            for offset, value in _read(consumer, SEALED_TOPIC, partition, max(low, high - 400), 30):
                try:
                    kind, record = codecs.decode(value)
                except (AuditSealError, ValueError):
                    continue
                if kind == COSIGNATURE_KIND:
                    found[partition] = (offset, record["tree_size"], record["note"])
    finally:
        consumer.close()
    return found


def _archived_ends(s3, bucket: str, prefix: str) -> dict[int, int]:
    from pipeline.archive.layout import parse_key

    ends: dict[int, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = parse_key(item["Key"])
            if key is not None and key.prefix == "" and key.is_manifest:
                ends[key.partition] = max(ends.get(key.partition, -1), key.last_offset)
    return ends


def _export(s3, bucket: str, prefix: str, target: Path) -> int:
    # the archive as an auditor would download it: every current object and manifest, same keys
    shutil.rmtree(target, ignore_errors=True)
    count = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            path = target / item["Key"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
            count += 1
    return count


def _newest_object_with_entries(root: Path, partition: int) -> Path:
    from pipeline.archive.layout import Manifest, parse_key

    candidates = []
    for manifest_path in (root / SEALED_TOPIC / f"{partition:03d}").glob("*.manifest.json"):
        manifest = Manifest.from_bytes(manifest_path.read_bytes(), manifest_path.name)
        if manifest.chains:
            key = parse_key(f"{SEALED_TOPIC}/{partition:03d}/{manifest_path.name}")
            candidates.append((key.first_offset, manifest_path))
    if not candidates:
        raise WitnessDemoError(f"partition {partition} of the export holds no entry")
    return max(candidates)[1]


def show_witnessing(stack, run: Callable[..., subprocess.CompletedProcess], seal_wait: Callable[[str, Callable[[], bool]], None],
                    workdir: Path, policy_file: Path) -> None:
    """Run the witness step (module docstring); WitnessDemoError if the witness or the verifier misbehaves."""
    from pipeline.dev.demo import _end_offsets, _sealed_heads
    from pipeline.integrity.note import parse_note
    from pipeline.wire.topics import RAW_TOPIC

    reader = S3Settings.from_env(stack.env("verifier"))
    s3 = reader.client()
    prefix = f"{SEALED_TOPIC}/"
    heads: dict[int, dict] = {}
    cosigned: dict[int, tuple[int, int, bytes]] = {}
    # two rounds, each sealed, cosigned and archived before the next: the archive then holds at least two
    # objects with entries, so deleting the newest leaves an archive (else the export would just be empty)
    for round_ in (1, 2):
        emitted = run(stack, "producer", ["emit", "--generate", str(EVENTS // 2), "--seed",
                                          str(int(time.time()) + 7 + round_)])
        print("    " + emitted.stderr.strip().splitlines()[-1])
        raw_ends = _end_offsets(stack, RAW_TOPIC)

        def all_cosigned(raw_ends: dict[int, int] = raw_ends) -> bool:
            nonlocal heads, cosigned
            heads = _sealed_heads(stack)
            if not all(heads.get(p, {}).get("last_source_offset", -1) >= end - 1 for p, end in raw_ends.items() if end):
                return False  # not all sealed yet
            cosigned = _newest_cosignatures(stack)
            return bool(heads) and all(cosigned.get(p, (0, -1, b""))[1] >= c["last_seq"] + 1 for p, c in heads.items())

        seal_wait("the witness's cosignatures of every chain's newest head", all_cosigned)
        seal_wait("archiving the cosignatures", lambda: all(
            _archived_ends(s3, reader.bucket, prefix).get(p, -1) >= o for p, (o, _, _) in cosigned.items()))
    partition = max(heads, key=lambda p: heads[p]["last_seq"])
    offset, size, note = cosigned[partition]
    cosignature = parse_note(note).signatures[-1]
    print(f"    the sealer submitted each chain's newest tree head to the witness (C2SP tlog-witness, consistency "
          f"proof from the size it held); e.g. {heads[partition]['chain_id']} at size {size}, cosigned by "
          f"{cosignature.name} and sealed at {SEALED_TOPIC}[{partition}] offset {offset}")

    export = workdir / "export"
    objects = _export(s3, reader.bucket, prefix, export)
    policy = str(policy_file)
    result = run(stack, "verifier", ["verify", "--dir", str(export), "--policy", policy])
    print(f"    exported {objects} objects and manifests to {export}; verify --dir --policy: "
          f"{result.stdout.strip().splitlines()[-1]}")
    if result.returncode != 0:
        raise WitnessDemoError(f"the untouched export did not verify under the witness policy:\n{result.stdout}")

    # a partition with the most archived objects: removing its newest leaves the rest of its chain
    partition = max(cosigned, key=lambda p: (len(list((export / SEALED_TOPIC / f"{p:03d}").glob("*.manifest.json"))),
                                             heads.get(p, {}).get("last_seq", -1)))
    offset, size, note = cosigned[partition]
    kept = workdir / "witnessed-head.txt"
    kept.write_bytes(note)
    truncated = workdir / "export-truncated"
    shutil.rmtree(truncated, ignore_errors=True)
    shutil.copytree(export, truncated)
    manifest = _newest_object_with_entries(truncated, partition)
    victim = manifest.with_name(manifest.name.removesuffix(".manifest.json"))
    for path in (victim, manifest, victim.with_name(victim.name + ".enc")):
        path.unlink(missing_ok=True)
    result = run(stack, "verifier", ["verify", "--dir", str(truncated), "--policy", policy, "--witnessed-head", str(kept)])
    print(f"    in a copy, the newest object of partition {partition} is deleted ({victim.name}); "
          f"verify --dir --policy --witnessed-head {kept.name}: exit {result.returncode}")
    findings = [line for line in result.stdout.splitlines() if line.startswith("  ") and "tail_truncated" in line]
    for line in findings[:1]:
        print("    " + line.strip())
    if result.returncode != 1 or not findings:
        raise WitnessDemoError(f"the truncated export was not reported as tail_truncated:\n{result.stdout}")


def show_cosigned_after_rotation(stack, seal_wait: Callable[[str, Callable[[], bool]], None]) -> None:
    """After ``keys rotate`` and the emit that follows: every chain's newest head, signed by the new key alone,
    is cosigned by the witness (FORMAT.md 8b); seal_wait raises if that does not come."""
    from pipeline.dev.demo import _end_offsets, _sealed_heads
    from pipeline.integrity.keyring import load_keyring
    from pipeline.integrity.log_identity import log_verifier
    from pipeline.integrity.note import parse_note, verified_signatures
    from pipeline.wire.topics import RAW_TOPIC

    key = load_keyring(stack.keyring_file).active
    raw_ends = _end_offsets(stack, RAW_TOPIC)
    cosigned: dict[int, tuple[int, int, bytes]] = {}

    def new_key_cosigned() -> bool:
        nonlocal cosigned
        heads = _sealed_heads(stack)
        if not all(heads.get(p, {}).get("last_source_offset", -1) >= end - 1 for p, end in raw_ends.items() if end):
            return False
        # the chains that sealed entries after the switch (the others are idle: their newest cosigned head
        # is the one before it)
        sealing = {p for p, checkpoint in heads.items() if checkpoint["key_id"] == key.key_id}
        cosigned = {p: c for p, c in _newest_cosignatures(stack).items() if p in sealing}
        return bool(sealing) and all(
            p in cosigned and cosigned[p][1] >= heads[p]["last_seq"] + 1
            and verified_signatures(parse_note(cosigned[p][2]),
                                    [log_verifier(key.public_key, parse_note(cosigned[p][2]).text.split("\n")[0])])
            for p in sealing)

    seal_wait(f"the witness's cosignatures of heads signed by the new key {key.key_id}", new_key_cosigned)
    print(f"    after the switch the witness cosigned the newest head of each chain sealing under key {key.key_id} "
          f"({', '.join(f'{SEALED_TOPIC}[{p}] size {size}' for p, (_, size, _) in sorted(cosigned.items()))}), "
          "signed by that key: no head refused")
