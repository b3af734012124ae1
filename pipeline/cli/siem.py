"""``auditseal export`` and ``auditseal siem-bridge``: the I/O around :mod:`pipeline.siem`.

``export`` exits 0 when every record was read and written (unmapped records included: they are
documents, not failures), 1 if the source could not be read, 2 on a usage error. The summary goes to
stderr; on a terminal a progress bar too.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from pipeline.errors import ConfigError

EXPORT_SOURCES = ("dir", "s3", "kafka")


def parse_time(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 time (``2026-12-01``, ``2026-12-01T10:00:00Z``) or a number
    of milliseconds."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time or epoch milliseconds, found {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def register(commands) -> None:
    """Add ``export`` and ``siem-bridge`` to the ``auditseal`` subcommands."""
    export = commands.add_parser(
        "export", help="sealed records as JSON lines: OCSF with their integrity evidence, or the records' own fields",
        description="Stream every sealed record of an archive or of audit.sealed as one JSON document per line. "
                    "Exit 0 all read and written, 1 the source could not be read, 2 usage error.")
    export.add_argument("--format", choices=("ocsf", "json"), default="ocsf")
    export.add_argument("--from", dest="source", choices=EXPORT_SOURCES, default="dir",
                        help="dir (a local copy of the bucket, --dir), s3 (--s3 URI, AWS_* variables) or kafka "
                             "(audit.sealed, AUDITSEAL_* variables)")
    export.add_argument("--dir", metavar="PATH", help="with --from dir: the archive copy")
    export.add_argument("--s3", metavar="URI", help="with --from s3: s3://bucket/prefix")
    export.add_argument("--topic", default="audit.sealed", help="with --from kafka (default audit.sealed)")
    export.add_argument("--master-key", action="append", help="master key file(s) of encrypted objects")
    export.add_argument("--since", type=parse_time, metavar="TIME", help="keep documents whose time is at or after")
    export.add_argument("--until", type=parse_time, metavar="TIME", help="keep documents whose time is before")
    export.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=export_command)

    bridge = commands.add_parser("siem-bridge", help="run the SIEM bridge (Faust): audit.sealed -> OCSF JSON on "
                                 "audit.ocsf, once per sealed record, in chain order")
    bridge.add_argument("--sealed-topic", default="audit.sealed")
    bridge.add_argument("--ocsf-topic", default="audit.ocsf")
    bridge.add_argument("--app-id", default="auditseal-ocsf-bridge",
                        help="consumer group and transactional-id prefix (must start with auditseal-ocsf-bridge)")
    bridge.add_argument("--instance-id", default="0",
                        help="unique per running worker: transactional id = APP_ID-INSTANCE_ID (default 0)")
    bridge.add_argument("--metrics-port", type=int, default=9467, help="Prometheus endpoint port (0: off)")
    bridge.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    bridge.set_defaults(handler=bridge_command)


def export_command(args) -> int:
    """Run ``auditseal export``; returns the exit code."""
    from pipeline.access.record import record_access
    from pipeline.archive.encryption import load_master_key
    from pipeline.siem.bridge import _product_version
    from pipeline.siem.export import archive_records, export_documents, kafka_records, open_output

    if args.since is not None and args.until is not None and args.until <= args.since:
        raise ConfigError("--until must be after --since")
    bar = _progress_bar()
    masters = {key.key_id: key for key in (load_master_key(Path(p)) for p in args.master_key or [])}
    if args.source == "kafka":
        if args.dir or args.s3:
            raise ConfigError("--from kafka reads the AUDITSEAL_* variables; --dir and --s3 do not apply")
        from pipeline.config import KafkaSettings

        records = kafka_records(args.topic, KafkaSettings.from_env(),
                                on_total=(lambda total: setattr(bar, "total", total)) if bar else None)
        resource = {"type": "kafka.topic", "id": args.topic}
    else:
        from pipeline.cli.verify import _source

        if args.source == "dir" and args.s3 or args.source == "s3" and args.dir:
            raise ConfigError(f"--from {args.source} takes --{args.source} only")
        if args.source == "dir" and not args.dir or args.source == "s3" and not args.s3:
            raise ConfigError(f"--from {args.source} needs --{args.source}")
        source = _source(args)
        records = archive_records(source, masters)
        resource = {"type": "s3.prefix" if args.s3 else "archive.dir", "id": args.s3 or str(args.dir)}
    out = open_output(args.out)
    try:
        summary = export_documents(records, out, format=args.format, since_ms=args.since, until_ms=args.until,
                                   progress=bar.update if bar else None, product_version=_product_version())
    finally:
        out.flush()
        if bar:
            bar.close()
        if out is not sys.stdout.buffer:
            out.close()
    print(summary.line(), file=sys.stderr)
    record_access(action="archive.export" if args.source != "kafka" else "topic.export", resource=resource,
                  attributes={"format": args.format, "records": str(summary.read)})
    return 0


def _progress_bar():
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=None, unit=" records", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                desc="export")


def bridge_command(args) -> int:
    """Run ``auditseal siem-bridge`` until stopped."""
    from pipeline.siem.bridge import APP_ID, BridgeConfig, run_bridge

    if not args.app_id.startswith(APP_ID):
        raise ConfigError(f"--app-id must start with {APP_ID} (the siem-bridge role's group and transactional ids)")
    config = BridgeConfig(sealed_topic=args.sealed_topic, ocsf_topic=args.ocsf_topic, app_id=args.app_id,
                          instance_id=args.instance_id)
    run_bridge(config=config, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr, loglevel=args.loglevel)
    return 0
