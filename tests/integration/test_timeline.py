"""``auditseal timeline`` over an archive the real pipeline made (producer -> sealer -> sink -> S3 bucket).

The archive is made once per module: synthetic events plus a known investigation target (one actor's
events at chosen times) go through the real sealer and the real sink into the real Object Lock bucket.
The attacks come first: an event planted in the bucket under a new key (the sink role can write new
keys, never overwrite a locked one) must be reported and never listed as verified; an object dropped
from an offline copy makes the answer INCOMPLETE with the gap named. Then the honest answers: the
target's events, in time order, every one verified, with and without the query index, and the
evidence bundle checked offline by ``auditseal verify-proof``.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import time

import pytest

from pipeline.archive.container import build_object
from pipeline.archive.layout import manifest_key, parse_key
from pipeline.archive.retention import ComplianceProfile
from pipeline.cli.main import main
from pipeline.config import S3Settings
from pipeline.integrity.chain import ChainHead
from pipeline.integrity.keyring import generate_signing_key
from pipeline.producer.event import new_event
from pipeline.producer.synthetic import synthetic_events
from pipeline.sealer.chain_sealer import ChainSealer
from pipeline.wire.codec import default_codec
from tests.support.archive import wait_for_archive
from tests.support.sealing import create_topics, delete_topics, seal_events, start_sink

pytestmark = pytest.mark.stack

BACKGROUND = 900
DAY = 86_400_000_000
START = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, in micros


def _target_events(actor: str) -> list[dict]:
    # ten events of the actor, one every 6 hours from START, alternating resources and outcomes
    events = []
    for n in range(10):
        event = new_event(actor={"id": actor, "type": "USER"}, action="document.read" if n % 2 else "document.write",
                          resource={"type": "document", "id": f"doc-{n % 3}"},
                          outcome={"status": "DENIED" if n == 7 else "SUCCESS", "reason": "policy" if n == 7 else None},
                          source_service="storage")
        event["occurred_at"] = START + n * DAY // 4
        events.append(event)
    return events


@pytest.fixture(scope="module")
def archived(stack, tmp_path_factory):
    """(prefix, local copy root, actor, target events): the target's events mixed into BACKGROUND synthetic
    events spread over the same days, on 2 chains, a checkpoint per <= 40 entries, objects of <= 60 records."""
    work = tmp_path_factory.mktemp("timeline")
    profile = work / "compliance.yaml"
    profile.write_text("version: 1\ndefault: test\nprofiles:\n  test: {retention: 1d, why: tests}\n")
    topics = create_topics(stack, partitions=2)
    prefix = f"timeline-{secrets.token_hex(4)}/"
    actor = f"alice-{secrets.token_hex(3)}"
    targets = _target_events(actor)
    background = list(synthetic_events(BACKGROUND, seed=91))
    for n, event in enumerate(background):
        event["occurred_at"] = START + n * (3 * DAY // BACKGROUND)
    mixed = sorted(background + targets, key=lambda event: event["occurred_at"])
    sealed = seal_events(stack, topics, mixed, work / "sealer.log")
    sink = start_sink(stack, topics, "--prefix", prefix, "--compliance-file", str(profile), "--max-records", "60",
                      "--max-age-ms", "300", "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}",
                      log=work / "sink.log")
    try:
        archive = wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (work / "sink.log").read_text()
    root = work / "copy"
    for key, versions in {**archive.objects, **{manifest_key(k): v for k, v in archive.manifests.items()}}.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(versions[-1])
    yield prefix, root, actor, targets, topics
    delete_topics(stack, topics)


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    """Each run's access record goes to the test's own spool, where the test can read it."""
    spool = tmp_path / "access.jsonl"
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(spool))
    return spool


def _timeline(capsys, monkeypatch, stack, *args, role="verifier"):
    for name, value in stack.env(role).items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    code = main(["timeline", "--keyring", str(stack.keyring_file), "--json", *args])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return code, [line for line in lines if line["type"] == "event"], lines[-1]


def test_the_actors_events_in_time_order_all_verified(stack, archived, capsys, monkeypatch, access_spool):
    """(Runs before the planting attack below, whose object stays locked under the prefix.)
    The honest answer from the bucket: exactly the target's ten events, in time order, each verified, with
    its chain position; the same answer with and without the index, the index reading fewer objects."""
    prefix, _, actor, targets, _ = archived
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    uri = f"s3://{bucket}/{prefix}"
    code, events, summary = _timeline(capsys, monkeypatch, stack, "--s3", uri, "--actor", actor,
                                      "--until", "2026-01-04")
    assert code == 0, summary["problems"]
    assert summary["complete"] is True
    assert [e["event_id"] for e in events] == [str(t["event_id"]) for t in targets]
    assert [e["occurred_at_micros"] for e in events] == sorted(e["occurred_at_micros"] for e in events)
    assert all(e["status"] == "verified" and e["checkpoint"]["first_seq"] <= e["seq"] <= e["checkpoint"]["last_seq"]
               for e in events)
    code, full, full_summary = _timeline(capsys, monkeypatch, stack, "--s3", uri, "--actor", actor, "--no-index")
    assert code == 0 and [e["event_id"] for e in full] == [e["event_id"] for e in events]
    assert summary["objects"]["read"] < full_summary["objects"]["read"] == full_summary["objects"]["total"]
    record = json.loads(access_spool.read_text().splitlines()[-1])
    assert record["action"] == "archive.timeline" and record["outcome"]["status"] == "SUCCESS"


def test_an_event_planted_in_the_bucket_is_reported_and_never_verified(stack, archived, capsys, monkeypatch, tmp_path):
    """The attack: with the sink's own keys (write, no delete), plant an object holding a forged event by the
    actor, sealed with a key the keyring does not know, at offsets after the real ones of partition 0. The
    timeline must list it UNVERIFIED, name the finding, and exit 1."""
    prefix, root, actor, targets, topics = archived
    forged = new_event(actor={"id": actor, "type": "USER"}, action="document.delete",
                       resource={"type": "document", "id": "doc-0"}, outcome={"status": "SUCCESS"},
                       source_service="storage")
    forged["occurred_at"] = START + DAY // 8
    chain_id = f"{topics.raw}/0"
    sealer = ChainSealer(chain_id, 0, generate_signing_key(), ChainHead.genesis(chain_id))
    entry = sealer.seal(default_codec().encode(forged), 0, START)
    now_ms = int(time.time() * 1000)  # the Kafka timestamps: the lock's retain-until date must be in the future
    records = [(10_000_000, now_ms, entry.value), (10_000_001, now_ms, sealer.checkpoint(START).value)]
    planted = build_object(topics.sealed, 0, records, profile=ComplianceProfile("test", days=1), prefix=prefix)
    sink = S3Settings.from_env(stack.env("sink"))
    s3 = sink.client()
    for key, body in ((planted.key, planted.body), (planted.manifest_key, planted.manifest_bytes)):
        s3.put_object(Bucket=sink.bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
                      ObjectLockRetainUntilDate=planted.retain_until)
    code, events, summary = _timeline(capsys, monkeypatch, stack, "--s3", f"s3://{sink.bucket}/{prefix}",
                                      "--actor", actor)
    assert code == 1
    assert summary["complete"] is False
    found = {event["event_id"]: event for event in events}
    assert found[str(forged["event_id"])]["status"] == "UNVERIFIED"
    assert all(found[str(t["event_id"])]["status"] == "verified" for t in targets)
    kinds = {problem["kind"] for problem in summary["problems"]}
    assert kinds & {"unknown_key", "overlapping_objects", "reorder"}, summary["problems"]


def test_an_object_missing_from_a_copy_makes_the_answer_incomplete(stack, archived, capsys, monkeypatch, tmp_path):
    """The attack on an offline copy: delete one object (and its manifest). The answer says INCOMPLETE and
    names the gap (chain and first missing seq) next to the results; an event whose batch lost entries is
    UNVERIFIED saying why, and the events of the other chain still verify."""
    _, root, actor, _, _ = archived
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    objects = sorted(p for p in copy.rglob("*.avro") if parse_key(p.relative_to(copy).as_posix()).partition == 0)
    victim = objects[len(objects) // 2]
    victim.unlink()
    (copy / manifest_key(victim.relative_to(copy).as_posix())).unlink()
    code, events, summary = _timeline(capsys, monkeypatch, stack, "--dir", str(copy), "--actor", actor)
    assert code == 1 and summary["complete"] is False
    gaps = [p for p in summary["problems"] if p["kind"] == "gap"]
    assert gaps and gaps[0]["chain_id"].endswith("/0"), summary["problems"]
    assert all(event["status"] == "verified" or event["problem"] for event in events)
    assert all(event["status"] == "verified" for event in events if event["chain_id"].endswith("/1"))
    capsys.readouterr()
    assert main(["timeline", "--keyring", str(stack.keyring_file), "--dir", str(copy), "--actor", actor]) == 1
    table = capsys.readouterr().out
    assert "INCOMPLETE" in table and "gap" in table


def test_filters_combine(stack, archived, capsys, monkeypatch):
    """--resource, --action, --outcome, --since/--until narrow the same answer, on the local copy."""
    _, root, actor, targets, _ = archived
    want = [t for t in targets if t["resource"]["id"] == "doc-1" and t["action"] == "document.read"]
    code, events, _ = _timeline(capsys, monkeypatch, stack, "--dir", str(root), "--actor", actor,
                                "--resource", "document:doc-1", "--action", "document.read")
    assert code == 0 and [e["event_id"] for e in events] == [str(t["event_id"]) for t in want]
    code, events, _ = _timeline(capsys, monkeypatch, stack, "--dir", str(root), "--actor", actor, "--outcome", "denied")
    assert [e["event_id"] for e in events] == [str(targets[7]["event_id"])]
    code, events, _ = _timeline(capsys, monkeypatch, stack, "--dir", str(root), "--actor", actor,
                                "--since", "2026-01-01T12:00:00Z", "--until", "2026-01-02T00:00:00Z")
    assert [e["event_id"] for e in events] == [str(t["event_id"]) for t in targets[2:4]]


def test_the_evidence_bundle_verifies_offline_and_a_doctored_one_does_not(stack, archived, capsys, monkeypatch,
                                                                          tmp_path):
    """``--bundle`` writes the events with their inclusion proofs; verify-proof checks it with the keyring
    alone (exit 0). A bundle whose listed time is moved, or whose query is widened after the fact, fails."""
    _, root, actor, targets, _ = archived
    bundle = tmp_path / "bundle.json"
    code, events, _ = _timeline(capsys, monkeypatch, stack, "--dir", str(root), "--actor", actor,
                                "--bundle", str(bundle))
    assert code == 0
    capsys.readouterr()
    assert main(["verify-proof", str(bundle), "--keyring", str(stack.keyring_file)]) == 0
    assert capsys.readouterr().out.startswith(f"VALID: {len(targets)} of {len(targets)} events proven")
    document = json.loads(bundle.read_text())
    document["events"][0]["occurred_at_micros"] += 1
    (tmp_path / "moved.json").write_text(json.dumps(document))
    assert main(["verify-proof", str(tmp_path / "moved.json"), "--keyring", str(stack.keyring_file)]) == 1
    document = json.loads(bundle.read_text())
    document["query"]["actor"] = "someone-else"
    (tmp_path / "other.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["verify-proof", str(tmp_path / "other.json"), "--keyring", str(stack.keyring_file)]) == 1
    assert "does not match the bundle's query" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--outcome", "MAYBE"], "--outcome"),
    (["--since", "2026-01-02", "--until", "2026-01-01"], "--until must be after --since"),
    (["--resource", "document:"], "TYPE:ID"),
])
def test_bad_input_is_one_line_and_exit_2(stack, archived, capsys, args, message):
    _, root, _, _, _ = archived
    assert main(["timeline", "--keyring", str(stack.keyring_file), "--dir", str(root), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_an_empty_prefix_is_never_a_complete_answer(stack, capsys, monkeypatch, tmp_path):
    code, events, summary = _timeline(capsys, monkeypatch, stack, "--dir", str(tmp_path), "--actor", "x")
    assert code == 1 and not events and summary["problems"][0]["kind"] == "no_archive"



def test_the_sealed_topic_gives_the_same_verified_answer(stack, archived, capsys, monkeypatch, tmp_path):
    """--kafka reads audit.sealed itself (here the test's sealed topic) as the verifier role: the same ten events,
    each verified, and their bundle checks offline."""
    _, _, actor, targets, topics = archived
    bundle = tmp_path / "topic-bundle.json"
    code, events, summary = _timeline(capsys, monkeypatch, stack, "--kafka", "--kafka-topic", topics.sealed,
                                      "--actor", actor, "--bundle", str(bundle))
    assert code == 0 and summary["complete"], summary["problems"]
    assert [e["event_id"] for e in events] == [str(t["event_id"]) for t in targets]
    assert all(e["status"] == "verified" and e["location"].startswith(topics.sealed) for e in events)
    capsys.readouterr()
    assert main(["verify-proof", str(bundle), "--keyring", str(stack.keyring_file)]) == 0
