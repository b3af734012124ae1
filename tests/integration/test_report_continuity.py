"""An evidence report that reaches PASSED on the real stack, and the attacks that must turn it FAILED.

One chain pair of the test's own topics is sealed by a real sealer signing heartbeats every second and
archived by the real sink while the test runs: events, a recorded ``auditseal verify`` run (its access
record forwarded by the access auditor's own code), then the report. Over that period, with the bucket
admin's keys and the admin role, every control must PASS: the archive verifies, tree heads cover the period,
the bucket is WORM, every object is locked, ``acl check`` holds, the review is recorded. The page is seen in
headless Chromium (no console error, each control section and chart in the DOM, a screenshot). The report's
SHA-256, sealed into the same log, is found by ``timeline`` and its proof checked by ``verify-proof``.

The attacks, first in each test: a manifest's query index narrowed (events hidden from a timeline) is an
``index_mismatch`` of verify at that manifest; a stopped sealer is a logging gap listed with its interval,
and the report's first screen says FAILED with the violations listed.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import secrets
import signal
import time
from pathlib import Path

import pytest

from pipeline.access.auditor import AccessAuditor
from pipeline.archive.layout import manifest_key
from pipeline.archive.query_index import ACTOR_FIELD, BloomFilter
from pipeline.cli.main import main
from pipeline.config import KafkaSettings, S3Settings
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.report.browser import ensure_chromium, run_chromium
from pipeline.report.frameworks import FRAMEWORKS
from pipeline.wire.topics import AUDIT_TOPICS
from tests.support.archive import read_archive, wait_for_archive
from tests.support.sealing import create_topics, delete_topics, start_sealer, start_sink, wait_until_sealed

pytestmark = pytest.mark.stack
EVENTS = 300
ACTOR = "carol-report-test"


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


class Pipeline:
    """The test's topics with a heartbeat sealer and a sink running on them, and helpers to wait for both."""

    def __init__(self, stack, work: Path) -> None:
        self.stack, self.work = stack, work
        self.topics = create_topics(stack, partitions=1)
        self.prefix = f"report-pass-{secrets.token_hex(4)}/"
        self.bucket = S3Settings.from_env(stack.env("verifier")).bucket
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        self.sealer = self.start_sealer()
        self.sink = start_sink(stack, self.topics, "--prefix", self.prefix, "--max-records", "200", "--max-age-ms",
                               "300", "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}",
                               log=work / "sink.log")
        self.spool = work / "access.jsonl"
        authorizer_log = work / "authorizer.log"
        authorizer_log.touch()
        self.forwarder = AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=self.topics.raw)
        # the access auditor's own forwarding code, delivering to the test's raw topic instead of audit.access
        self.auditor = AccessAuditor(self.forwarder, authorizer_log=authorizer_log, spool=self.spool,
                                     state_file=work / "auditor.position.json", own_principal="User:producer",
                                     audit_topics=AUDIT_TOPICS)

    def start_sealer(self):
        return start_sealer(self.stack, self.topics, checkpoint_records=50, checkpoint_ms=100,
                            log=self.work / "sealer.log", extra=("--heartbeat-interval", "1"))

    def settle(self) -> None:
        """Every raw record sealed and every sealed record (up to now) archived."""
        sealed = wait_until_sealed(self.stack, self.topics)
        wait_for_archive(self.stack, self.topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()},
                         self.prefix, timeout=120)

    def forward_spool(self) -> int:
        """Forward the access records spooled so far, as the access auditor does; returns how many."""
        total = 0
        while True:
            _, sent, drained = self.auditor.step()
            total += sent
            if drained:
                return total

    def stop(self) -> None:
        self.forwarder.close(30)
        for process in (self.sealer, self.sink):
            process.send_signal(signal.SIGTERM)
        for process in (self.sealer, self.sink):
            process.wait(60)
        delete_topics(self.stack, self.topics)


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory):
    work = tmp_path_factory.mktemp("report-pass")
    running = Pipeline(stack, work)
    try:
        yield running
    finally:
        running.stop()


def _role(monkeypatch, stack, role: str, spool: Path) -> None:
    for name, value in stack.env(role).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(spool))


def _live_checks(monkeypatch, stack) -> None:
    admin_s3, admin_kafka = S3Settings.from_env(stack.env("admin")), KafkaSettings.from_env(stack.env("admin"))
    monkeypatch.setenv("AUDITSEAL_S3_CHECK_ACCESS_KEY_ID", admin_s3.access_key_id)
    monkeypatch.setenv("AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY", admin_s3.secret_access_key)
    monkeypatch.setenv("AUDITSEAL_REPORT_ADMIN_SASL_USERNAME", admin_kafka.username)
    monkeypatch.setenv("AUDITSEAL_REPORT_ADMIN_SASL_PASSWORD", admin_kafka.password)


def _report(capsys, stack, out: Path, *args: str) -> tuple[int, dict, float]:
    out.mkdir(exist_ok=True)
    capsys.readouterr()
    started = time.monotonic()
    code = main(["report", "--keyring", str(stack.keyring_file), "--out-dir", str(out), "--json", *args])
    elapsed = time.monotonic() - started
    return code, json.loads(capsys.readouterr().out), elapsed


@pytest.fixture(scope="module")
def period_start():
    return _now() - datetime.timedelta(seconds=1)


def test_every_control_passes_over_a_clean_period_with_heartbeats(stack, pipeline, period_start, capsys,
                                                                  monkeypatch, tmp_path):
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=pipeline.topics.raw) as producer:
        for n, event in enumerate(synthetic_events(EVENTS)):  # events of now: the clock skew is measured
            if n % 30 == 0:
                event["actor"] = dict(event["actor"], id=ACTOR)
            producer.emit(event)
    pipeline.settle()
    _role(monkeypatch, stack, "verifier", pipeline.spool)
    capsys.readouterr()
    assert main(["verify", "--s3", pipeline.uri, "--keyring", str(stack.keyring_file)]) == 0, capsys.readouterr().out
    assert pipeline.forward_spool() == 1  # the run's archive.verify record, sealed into the chain it verified
    pipeline.settle()
    time.sleep(3)  # heartbeats archived after the last event: the heads cover the period to its end
    pipeline.settle()

    _live_checks(monkeypatch, stack)
    until = _now()
    out = tmp_path / "out"
    code, data, elapsed = _report(capsys, stack, out, "--framework", "soc2", "--from", _iso(period_start),
                                  "--until", _iso(until), "--s3", pipeline.uri)
    checks = {check["id"]: check for check in data["checks"]}
    with capsys.disabled():
        print(f"\nreport over {data['verification']['objects']['checked']} objects, "
              f"{data['verification']['records']['checked']} records: generated in {elapsed:.1f} s")
    assert {c: checks[c]["status"] for c in checks if checks[c]["status"] not in ("PASS", "INFO")} == {}, \
        {c: checks[c]["summary"] for c in checks}
    assert code == 0 and data["verdict"] == "PASSED"
    assert all(control["status"] == "PASSED" for control in data["controls"]), data["controls"]
    continuity = checks["continuity"]["evidence"]
    assert continuity["silent_intervals"] == [] and continuity["chains_without_heads"] == []
    assert [h["chain_id"] for h in continuity["heads"]] == [f"{pipeline.prefix}{pipeline.topics.sealed}:"
                                                           f"{pipeline.topics.raw}/0"]
    assert continuity["heads"][0]["newest_head"] >= _iso(until - datetime.timedelta(seconds=60))
    assert data["series"]["coverage"]["events"] == data["series"]["coverage"]["events_verified"] == EVENTS + 1
    assert checks["review"]["summary"] == "1 verification run(s) recorded, 0 failed"

    page = out / data["html"]["file"]
    digest = hashlib.sha256(page.read_bytes()).hexdigest()
    assert data["html"]["sha256"] == digest
    first_screen = page.read_text()[:page.read_text().index("<h2>Controls</h2>")]
    assert 'class="verdict passed">PASSED<' in first_screen and 'id="violations"' not in first_screen

    with capsys.disabled():
        ensure_chromium(log=print)
    rendering = run_chromium(page, "--dump-dom")
    assert rendering.console == (), rendering.console
    dom = rendering.stdout
    for control in FRAMEWORKS["soc2"].controls:
        assert f'id="control-{control.id}"' in dom
    for check in data["checks"]:
        assert f'id="check-{check["id"]}"' in dom
    for chart in ("chart-events-per-day", "chart-denials", "chart-gaps", "chart-coverage"):
        assert re.search(f'<svg id="{chart}"[^>]*>.*?<rect', dom, re.S), chart
    assert 'id="check-this-report"' in dom
    screenshot = out / "report-passed.png"
    run_chromium(page, f"--screenshot={screenshot}", "--window-size=1280,2400")
    assert screenshot.stat().st_size > 20_000
    with capsys.disabled():
        print(f"screenshot of the PASSED report: {screenshot}")

    # the report's digest, sealed into the log it reports on: found and proved as the page says
    assert pipeline.forward_spool() == 1
    pipeline.settle()
    bundle = tmp_path / "report.proof.json"
    capsys.readouterr()
    assert main(["timeline", "--s3", pipeline.uri, "--action", "report.issue", "--resource",
                 f"evidence.report:{digest}", "--bundle", str(bundle), "--keyring", str(stack.keyring_file),
                 "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    issued = [line for line in lines if line.get("type") == "event"]
    assert [(e["action"], e["event_id"], e["status"]) for e in issued] == [
        ("report.issue", data["html"]["sealed_as_event"], "verified")], lines
    assert main(["verify-proof", str(bundle), "--keyring", str(stack.keyring_file)]) == 0
    altered = hashlib.sha256(page.read_bytes().replace(b"PASSED", b"PASSEd", 1)).hexdigest()
    capsys.readouterr()
    main(["timeline", "--s3", pipeline.uri, "--action", "report.issue", "--resource", f"evidence.report:{altered}",
          "--keyring", str(stack.keyring_file), "--json"])
    assert not [line for line in capsys.readouterr().out.splitlines() if '"type": "event"' in line]


def _copy(stack, pipeline, root: Path) -> Path:
    archive = read_archive(stack, pipeline.topics.sealed, pipeline.prefix)
    for key, versions in {**archive.objects, **{manifest_key(k): v for k, v in archive.manifests.items()}}.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(versions[-1])
    return root


def _actor_events(capsys, stack, root: Path) -> int:
    capsys.readouterr()
    main(["timeline", "--dir", str(root), "--actor", ACTOR, "--keyring", str(stack.keyring_file), "--json"])
    return sum(1 for line in capsys.readouterr().out.splitlines() if '"type": "event"' in line)


def test_a_narrowed_query_index_is_a_violation_of_verify_at_its_manifest(stack, pipeline, capsys, monkeypatch,
                                                                         tmp_path):
    _role(monkeypatch, stack, "verifier", tmp_path / "spool.jsonl")
    root = _copy(stack, pipeline, tmp_path / "copy")
    found = _actor_events(capsys, stack, root)
    assert found == EVENTS // 30
    manifests = [m for m in sorted(root.rglob("*.manifest.json"))
                 if json.loads(m.read_bytes()).get("index", {}).get("events")]
    for manifest in manifests:  # the tamperer takes the actor out of every object's filter
        raw = json.loads(manifest.read_bytes())
        raw["index"]["actors"] = BloomFilter.of(ACTOR_FIELD, ["someone-else"]).as_dict()
        manifest.write_bytes(json.dumps(raw, sort_keys=True, separators=(",", ":")).encode())
    assert _actor_events(capsys, stack, root) == 0  # the attack: the timeline skips every object

    capsys.readouterr()
    assert main(["verify", "--dir", str(root), "--keyring", str(stack.keyring_file), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    mismatches = [v for v in result["violations"] if v["kind"] == "index_mismatch"]
    assert set(result["violation_counts"]) == {"index_mismatch"}, result["violation_counts"]
    assert sorted(v["location"] for v in mismatches) == [m.relative_to(root).as_posix() for m in manifests]
    assert all("actor filter" in v["detail"] for v in mismatches)


def test_a_stopped_sealer_is_a_logging_gap_and_the_report_says_failed_first(stack, pipeline, period_start, capsys,
                                                                             monkeypatch, tmp_path):
    pipeline.settle()
    pipeline.sealer.send_signal(signal.SIGTERM)
    pipeline.sealer.wait(60)
    stopped = _now()
    time.sleep(12)  # logging stops: no head is signed while the sealer is down
    pipeline.sealer = pipeline.start_sealer()
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=pipeline.topics.raw) as producer:
        for event in synthetic_events(5):
            producer.emit(event)
    pipeline.settle()
    time.sleep(3)
    pipeline.settle()

    _role(monkeypatch, stack, "verifier", tmp_path / "spool.jsonl")
    code, data, _ = _report(capsys, stack, tmp_path / "out", "--framework", "pci-dss", "--from", _iso(period_start),
                            "--until", _iso(_now()), "--s3", pipeline.uri, "--head-tolerance", "8")
    assert code == 1 and data["verdict"] == "FAILED"
    checks = {check["id"]: check for check in data["checks"]}
    assert checks["continuity"]["status"] == "FAIL" and checks["verification"]["status"] == "FAIL"
    silent = checks["continuity"]["evidence"]["silent_intervals"]
    assert any(i["kind"] == "logging_gap" and i["start"] <= _iso(stopped + datetime.timedelta(seconds=2))
               and i["seconds"] >= 10 for i in silent), silent
    assert "without tree heads" in checks["continuity"]["summary"]
    stops = {c["id"]: c["status"] for c in data["controls"]}
    assert stops["10.2.1.6"] == stops["10.7"] == "FAILED"
    page = (tmp_path / "out" / data["html"]["file"]).read_text()
    first_screen = page[:page.index("<h2>Controls</h2>")]
    assert 'class="verdict failed">FAILED<' in first_screen
    assert 'id="violations"' in first_screen and "logging_gap" in first_screen
    assert re.search(r'<svg id="chart-gaps".*?logging_gap chain .*? from ', page, re.S)
