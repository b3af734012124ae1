"""``auditseal report`` over an archive the real pipeline made, its live checks against the real bucket and
broker, and the page seen in headless Chromium (Debian's ``chromium``, installed by
:func:`pipeline.report.browser.ensure_chromium`).

The attack first: an offline copy with a dropped object must give a report that says FAILED on its first
screen with the violations listed there, never a green page. Then the live checks: WORM conformance with the
bucket admin's keys, every object's lock, separation of duties with the admin role, all PASS, measured; the
page loads with no console error, holds every control section and chart, and is saved as a screenshot and
printed to PDF.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
from pathlib import Path

import pytest

from pipeline.archive.layout import manifest_key
from pipeline.cli.main import main
from pipeline.config import KafkaSettings, S3Settings
from pipeline.producer.client import AuditProducer
from pipeline.producer.synthetic import synthetic_events
from pipeline.report.browser import ensure_chromium, print_pdf, run_chromium
from pipeline.report.frameworks import FRAMEWORKS
from tests.support.archive import wait_for_archive
from tests.support.sealing import create_topics, delete_topics, start_sealer, start_sink, wait_until_sealed

pytestmark = pytest.mark.stack
EVENTS = 600


@pytest.fixture(scope="module")
def archived(stack, tmp_path_factory):
    """(s3 uri, local copy, period): EVENTS synthetic events of now through the real sealer and sink (soc2 profile)."""
    work = tmp_path_factory.mktemp("report")
    topics = create_topics(stack, partitions=2)
    prefix = f"report-{secrets.token_hex(4)}/"
    with AuditProducer(KafkaSettings.from_env(stack.env("producer")), topic=topics.raw) as producer:
        for event in synthetic_events(EVENTS):  # no seed: events of now, so the clock skew is real
            producer.emit(event)
    sealer = start_sealer(stack, topics, checkpoint_records=50, checkpoint_ms=100, log=work / "sealer.log")
    try:
        sealed = wait_until_sealed(stack, topics)
    finally:
        sealer.send_signal(signal.SIGTERM)
        sealer.wait(60)
    sink = start_sink(stack, topics, "--prefix", prefix, "--max-records", "100", "--max-age-ms", "300",
                      "--metrics-port", "0", group=f"auditseal-sink-test-{secrets.token_hex(4)}", log=work / "sink.log")
    try:
        archive = wait_for_archive(stack, topics.sealed, {p: [o for o, _, _ in r] for p, r in sealed.items()}, prefix)
    finally:
        sink.send_signal(signal.SIGTERM)
        assert sink.wait(60) == 0, (work / "sink.log").read_text()
    root = work / "copy"
    for key, versions in {**archive.objects, **{manifest_key(k): v for k, v in archive.manifests.items()}}.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(versions[-1])
    bucket = S3Settings.from_env(stack.env("verifier")).bucket
    import datetime

    today = datetime.datetime.now(datetime.UTC).date()
    period = (today.isoformat(), (today + datetime.timedelta(days=1)).isoformat())
    yield f"s3://{bucket}/{prefix}", root, period
    delete_topics(stack, topics)


@pytest.fixture(autouse=True)
def access_spool(monkeypatch, tmp_path):
    spool = tmp_path / "access.jsonl"
    monkeypatch.setenv("AUDITSEAL_ACCESS_SPOOL", str(spool))
    return spool


def _report(capsys, monkeypatch, stack, out: Path, *args: str) -> tuple[int, dict]:
    for name, value in stack.env("verifier").items():
        monkeypatch.setenv(name, value)
    out.mkdir(exist_ok=True)
    capsys.readouterr()
    code = main(["report", "--keyring", str(stack.keyring_file), "--out-dir", str(out), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def test_a_damaged_copy_gives_a_failed_report_on_its_first_screen(stack, archived, capsys, monkeypatch, tmp_path):
    _, root, (start, end) = archived
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    victim = sorted(copy.rglob("*.avro"))[1]
    victim.unlink()
    (copy / manifest_key(victim.relative_to(copy).as_posix())).unlink()
    code, data = _report(capsys, monkeypatch, stack, tmp_path / "out", "--framework", "pci-dss", "--from", start,
                         "--until", end, "--dir", str(copy))
    assert code == 1 and data["verdict"] == "FAILED"
    checks = {check["id"]: check for check in data["checks"]}
    assert checks["verification"]["status"] == "FAIL" and checks["continuity"]["status"] == "FAIL"
    page = (tmp_path / "out" / data["html"]["file"]).read_text()
    header = page[:page.index('<h2>Controls</h2>')]  # the first screen, before any control
    assert 'class="verdict failed">FAILED<' in header and 'id="violations"' in header and "gap" in header


def test_the_live_checks_pass_and_the_page_renders_in_chromium(stack, archived, capsys, monkeypatch, tmp_path,
                                                               access_spool):
    uri, _, (start, end) = archived
    admin_s3, admin_kafka = S3Settings.from_env(stack.env("admin")), KafkaSettings.from_env(stack.env("admin"))
    monkeypatch.setenv("AUDITSEAL_S3_CHECK_ACCESS_KEY_ID", admin_s3.access_key_id)
    monkeypatch.setenv("AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY", admin_s3.secret_access_key)
    monkeypatch.setenv("AUDITSEAL_REPORT_ADMIN_SASL_USERNAME", admin_kafka.username)
    monkeypatch.setenv("AUDITSEAL_REPORT_ADMIN_SASL_PASSWORD", admin_kafka.password)
    out = tmp_path / "out"
    code, data = _report(capsys, monkeypatch, stack, out, "--framework", "soc2", "--from", start, "--until", end,
                         "--s3", uri)
    checks = {check["id"]: check for check in data["checks"]}
    for measured in ("verification", "continuity", "object_locks", "worm_conformance", "separation_of_duties",
                     "retention", "clock_skew"):
        assert checks[measured]["status"] == "PASS", (measured, checks[measured]["summary"])
    assert checks["object_locks"]["summary"].startswith(f"{data['verification']['objects']['checked']} objects")
    assert data["series"]["coverage"]["events"] == data["series"]["coverage"]["events_verified"] == EVENTS
    # no verification run of this test's chains was sealed into them: the review check says so, and fails the report
    assert checks["review"]["status"] == "FAIL" and code == 1 and data["verdict"] == "FAILED"
    page = out / data["html"]["file"]
    import hashlib

    assert data["html"]["sha256"] == hashlib.sha256(page.read_bytes()).hexdigest()
    sealed = json.loads(access_spool.read_text().splitlines()[-1])
    assert (sealed["action"], sealed["resource"]) == ("report.issue", {"type": "evidence.report",
                                                                       "id": data["html"]["sha256"]})

    ensure_chromium(log=lambda line: print(line))
    rendering = run_chromium(page, "--dump-dom")
    assert rendering.console == (), rendering.console
    dom = rendering.stdout
    for control in FRAMEWORKS["soc2"].controls:
        assert f'id="control-{control.id}"' in dom
    for chart in ("chart-events-per-day", "chart-denials", "chart-gaps", "chart-coverage"):
        assert re.search(f'<svg id="{chart}"[^>]*>.*?<rect', dom, re.S), chart
    assert "FAILED" in dom and "Full verification of the archive" in dom
    screenshot = out / "report.png"
    run_chromium(page, f"--screenshot={screenshot}", "--window-size=1280,2400")
    assert screenshot.stat().st_size > 20_000
    print(f"\nscreenshot of the report: {screenshot}")
    print_pdf(page, out / "report.pdf")
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("args, message", [
    (["--framework", "hipaa", "--from", "2026-01-01", "--until", "2026-02-01"], "invalid choice"),
    (["--framework", "soc2", "--from", "2026-02-01", "--until", "2026-01-01"], "the period is empty"),
])
def test_bad_input_is_one_clear_line_and_exit_2(stack, archived, capsys, args, message, tmp_path):
    _, root, _ = archived
    with pytest.raises(SystemExit) if "hipaa" in args else _nothing():
        code = main(["report", "--keyring", str(stack.keyring_file), "--dir", str(root), "--out-dir", str(tmp_path),
                     *args])
        assert code == 2
    assert message in capsys.readouterr().err


def test_a_period_before_the_archive_began_is_a_failed_report(stack, archived, capsys, monkeypatch, tmp_path):
    _, root, _ = archived
    code, data = _report(capsys, monkeypatch, stack, tmp_path / "out", "--framework", "iso27001", "--from",
                         "2020-01-01", "--until", "2020-02-01", "--dir", str(root))
    checks = {check["id"]: check for check in data["checks"]}
    assert code == 1 and data["verdict"] == "FAILED"
    assert "before the archive began" in checks["continuity"]["summary"]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
