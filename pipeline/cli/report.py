"""``auditseal report``: the per-control evidence report for auditors, as HTML, JSON and (``--pdf``) PDF.

Runs every check of :mod:`pipeline.report.evidence` over the archive and the live systems, writes
``<out>/auditseal-report-<framework>-<from>-<until>.html`` and ``.json`` (and ``.pdf``, Chromium's print of
the page), then seals the HTML file's SHA-256 into the log: a ``report.issue`` access record (through the
access spool, forwarded and sealed by the access auditor; written to ``audit.raw`` directly where
``AUDITSEAL_ACCESS_RECORD_SASL_*`` is set, as ``verify`` does). Exit 0 PASSED, 1 FAILED or INCOMPLETE,
2 usage or configuration error (an unknown framework, an empty period, a missing keyring).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import sys
from pathlib import Path

from pipeline.errors import ConfigError


def register(commands) -> None:
    """Add ``report`` to the ``auditseal`` subcommands."""
    from pipeline.report.frameworks import FRAMEWORKS

    report = commands.add_parser(
        "report", help="the per-control evidence report of a period for auditors: HTML, JSON, PDF (exit 0 PASSED, "
        "1 FAILED or INCOMPLETE, 2 usage error)",
        description="Measure, for one framework and period, that logging was complete, protected, reviewed and "
        "retained, and write the evidence per control. The bucket's WORM check needs the bucket admin's keys "
        "(AUDITSEAL_S3_CHECK_ACCESS_KEY_ID/_SECRET_ACCESS_KEY) and the separation-of-duties check the admin role "
        "(AUDITSEAL_REPORT_ADMIN_SASL_USERNAME/_PASSWORD); without them those checks are NOT_RUN.")
    report.add_argument("--framework", required=True, choices=sorted(FRAMEWORKS))
    report.add_argument("--from", dest="period_from", required=True, metavar="TIME",
                        help="start of the period (ISO 8601, e.g. 2026-11-01)")
    report.add_argument("--until", dest="period_until", required=True, metavar="TIME",
                        help="end of the period, exclusive (ISO 8601)")
    report.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    report.add_argument("--dir", metavar="PATH", help="a local copy of the bucket (no locks to check)")
    report.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    report.add_argument("--master-key", action="append",
                        help="master key(s) of encrypted objects: a file, or pkcs11:LABEL in the AUDITSEAL_PKCS11_* token")
    report.add_argument("--compliance-file", help="compliance profiles (default config/compliance.yaml)")
    report.add_argument("--max-skew", type=float, default=300.0, metavar="SECONDS",
                        help="largest p99 clock skew between producers and the broker that passes (default 300)")
    report.add_argument("--head-tolerance", type=float, metavar="SECONDS",
                        help="as verify --head-tolerance: tree heads further apart than this (or the newest older "
                        "than this before the period's end) are a gap in logging (default 300)")
    report.add_argument("--out-dir", default=".", metavar="DIR", help="where the files go (default .)")
    report.add_argument("--pdf", action="store_true", help="also print the page to PDF with headless Chromium")
    report.add_argument("--json", action="store_true", help="print the report's data as JSON on stdout")
    report.set_defaults(handler=report_command)


def _micros(text: str, option: str) -> int:
    from pipeline.cli.siem import parse_time

    try:
        return parse_time(text) * 1000
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{option}: {exc}") from None


def report_command(args: argparse.Namespace) -> int:
    """Run ``auditseal report``; returns the exit code."""
    from pipeline.access.record import record_access
    from pipeline.archive.retention import load_profiles
    from pipeline.cli.verify import (
        ACCESS_RECORD_USER_VARIABLE,
        KEYRING_VARIABLE,
        _source,
        _tolerance,
        deliver_access_record,
    )
    from pipeline.integrity.keyring import load_keyring
    from pipeline.keys.master import load_master_key_spec
    from pipeline.report.document import PASSED, render_html, report_data
    from pipeline.report.evidence import EvidenceInputs, Period, gather
    from pipeline.report.frameworks import framework

    chosen = framework(args.framework)
    period = Period(_micros(args.period_from, "--from"), _micros(args.period_until, "--until"))
    keyring_path = args.keyring or os.environ.get(KEYRING_VARIABLE)
    if not keyring_path:
        raise ConfigError(f"no keyring: pass --keyring FILE or set {KEYRING_VARIABLE}")
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise ConfigError(f"--out-dir {out_dir}: not a directory")
    keyring = load_keyring(keyring_path)
    masters = {key.key_id: key for key in (load_master_key_spec(p) for p in args.master_key or [])}
    profiles = load_profiles(Path(args.compliance_file) if args.compliance_file else None)
    profiles.get(chosen.retention_profile)  # a compliance file without the framework's profile: a config error
    tolerance = _tolerance(args.head_tolerance)
    source = _source(args)
    bucket = args.s3[len("s3://"):].split("/", 1)[0] if args.s3 else None
    progress = (lambda text: print(f"auditseal report: {text}", file=sys.stderr)) if sys.stderr.isatty() else None
    evidence = gather(EvidenceInputs(source, keyring, period, chosen, profiles, masters, bucket, args.max_skew,
                                     dict(os.environ), progress, head_tolerance_s=tolerance))
    generated = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    data = report_data(evidence, chosen, period, source.description, generated)
    stem = f"auditseal-report-{chosen.name}-{data['period']['from'][:10]}-{data['period']['until'][:10]}"
    page = out_dir / f"{stem}.html"
    page.write_text(render_html(data), encoding="utf-8")
    digest = hashlib.sha256(page.read_bytes()).hexdigest()
    event = record_access(action="report.issue", resource={"type": "evidence.report", "id": digest},
                          status="SUCCESS" if data["verdict"] == PASSED else "FAILURE",
                          reason=None if data["verdict"] == PASSED else f"report {data['verdict']}",
                          attributes={"framework": chosen.name, "period_from": data["period"]["from"],
                                      "period_until": data["period"]["until"], "file": page.name})
    if os.environ.get(ACCESS_RECORD_USER_VARIABLE):
        deliver_access_record(event)
    data["html"] = {"file": page.name, "sha256": digest, "sealed_as_event": event["event_id"]}
    (out_dir / f"{stem}.json").write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    if args.pdf:
        from pipeline.report.browser import print_pdf

        print_pdf(page, out_dir / f"{stem}.pdf")
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True, default=str))
    else:
        print(f"{data['verdict']}: {chosen.title}, {data['period']['from']} to {data['period']['until']}")
        for check in evidence.checks:
            print(f"  {check.status:8} {check.title}: {check.summary}")
        print(f"report: {page} (sha256 {digest}, sealed as event {event['event_id']}), data: {stem}.json"
              + (f", PDF: {stem}.pdf" if args.pdf else ""))
    return 0 if data["verdict"] == PASSED else 1
