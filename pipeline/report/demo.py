"""The demo's last step: a verified timeline (with its evidence bundle checked offline) and an evidence report,
run as the verifier role with the ``auditseal`` commands themselves (``pipeline.dev.demo`` calls it)."""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.config import KafkaSettings, S3Settings

REPORT_EVENT_WAIT_S = 90


def timeline_and_report(stack, run: Callable, uri: str, folder: Path) -> None:
    """Print the day's events of the privacy role (the erasure) with their chain positions, check their bundle
    offline, write a SOC 2 report of the day."""
    folder.mkdir(parents=True, exist_ok=True)
    today = datetime.datetime.now(datetime.UTC).date()
    start, end = today.isoformat(), (today + datetime.timedelta(days=1)).isoformat()
    bundle = folder / "timeline-privacy.json"
    shown = run(stack, "verifier", ["timeline", "--s3", uri, "--actor", "User:privacy", "--since", start, "--until", end,
                                    "--bundle", str(bundle), "--keyring", str(stack.keyring_file)], timeout=900)
    lines = shown.stdout.strip().splitlines()
    print(f"    auditseal timeline --s3 {uri} --actor User:privacy --since {start} (exit {shown.returncode}):")
    for line in lines[:10] + (["      ..."] if len(lines) > 10 else []):
        print("      " + line[:150])
    if shown.returncode == 2:
        print("      " + shown.stderr.strip())
    checked = run(stack, "verifier", ["verify-proof", str(bundle), "--keyring", str(stack.keyring_file)])
    print(f"    auditseal verify-proof {bundle.name} (offline, keyring only): {checked.stdout.strip()[:220]}")
    admin_s3, admin_kafka = S3Settings.from_env(stack.env("admin")), KafkaSettings.from_env(stack.env("admin"))
    live = {"AUDITSEAL_S3_CHECK_ACCESS_KEY_ID": admin_s3.access_key_id,
            "AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY": admin_s3.secret_access_key,
            "AUDITSEAL_REPORT_ADMIN_SASL_USERNAME": admin_kafka.username or "",
            "AUDITSEAL_REPORT_ADMIN_SASL_PASSWORD": admin_kafka.password or ""}
    # s3://bucket/audit.sealed also lists audit.sealed.access/: the access events' archive, where the review
    # (the demo's verify runs) and the report's own sealed digest are found
    everything = uri.rstrip("/")
    report = run(stack, "verifier", ["report", "--framework", "soc2", "--from", start, "--until", end, "--s3", everything,
                                     "--keyring", str(stack.keyring_file), "--out-dir", str(folder), "--json"],
                 extra_env=live, timeout=1200)  # a full verification of the archive, then the day's events
    if report.returncode == 2:
        print("    auditseal report: " + report.stderr.strip())
        return
    data = json.loads(report.stdout)
    print(f"    auditseal report --framework soc2 --from {start} --until {end}: {data['verdict']}")
    for check in data["checks"]:
        print(f"      {check['status']:8} {check['title']}: {check['summary'][:110]}")
    if data["verdict"] != "PASSED":
        print("      (a failed verification run in the period fails the review, for an auditor to look at: this demo"
              "\n       records one itself, step 3b's verify of a truncated export, which must fail)")
    print(f"    report: {folder / data['html']['file']} (sha256 {data['html']['sha256'][:16]}…, sealed as event "
          f"{data['html']['sealed_as_event']}), data beside it as JSON")
    _check_report(stack, run, everything, folder, data)


def _check_report(stack, run: Callable, uri: str, folder: Path, data: dict) -> None:
    # what the report's last section tells a reader to do: find the digest's sealed event, check its proof
    digest = data["html"]["sha256"]
    page = folder / data["html"]["file"]
    computed = hashlib.sha256(page.read_bytes()).hexdigest()
    proof = folder / "report.proof.json"
    query = ["timeline", "--s3", uri, "--action", "report.issue", "--resource", f"evidence.report:{digest}",
             "--bundle", str(proof), "--keyring", str(stack.keyring_file), "--json"]
    deadline = time.monotonic() + REPORT_EVENT_WAIT_S
    while True:  # the access auditor forwards it, its sealer seals it, the sink archives it: seconds
        found = run(stack, "verifier", query, timeout=600)
        events = [line for line in found.stdout.splitlines() if '"type": "event"' in line]
        if events or time.monotonic() > deadline:
            break
        time.sleep(2)
    print(f"    sha256sum {page.name}: {'the digest sealed' if computed == digest else 'ANOTHER digest'}; "
          f"auditseal timeline --action report.issue --resource evidence.report:{digest[:12]}…: "
          f"{len(events)} sealed event(s)")
    if events:
        checked = run(stack, "verifier", ["verify-proof", str(proof), "--keyring", str(stack.keyring_file)])
        print(f"    auditseal verify-proof {proof.name}: {checked.stdout.strip()[:200]}")
    else:
        print(f"    the report's event was not archived within {REPORT_EVENT_WAIT_S}s: check it later with the "
              "commands of the report's last section")
