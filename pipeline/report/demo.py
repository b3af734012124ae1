"""The demo's last step: a verified timeline (with its evidence bundle checked offline) and an evidence report,
run as the verifier role with the ``auditseal`` commands themselves (``pipeline.dev.demo`` calls it)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from pathlib import Path

from pipeline.config import KafkaSettings, S3Settings


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
    report = run(stack, "verifier", ["report", "--framework", "soc2", "--from", start, "--until", end, "--s3", uri,
                                     "--keyring", str(stack.keyring_file), "--out-dir", str(folder), "--json"],
                 extra_env=live, timeout=1200)  # a full verification of the archive, then the day's events
    if report.returncode == 2:
        print("    auditseal report: " + report.stderr.strip())
        return
    data = json.loads(report.stdout)
    print(f"    auditseal report --framework soc2 --from {start} --until {end}: {data['verdict']}")
    for check in data["checks"]:
        print(f"      {check['status']:8} {check['title']}: {check['summary'][:110]}")
    print(f"    report: {folder / data['html']['file']} (sha256 {data['html']['sha256'][:16]}…, sealed as event "
          f"{data['html']['sealed_as_event']}), data beside it as JSON")
