"""``auditseal sink``: check the bucket, then run the sink until SIGTERM/SIGINT.

The sink refuses to start against a bucket that does not enforce WORM. With its own keys (it may
write locked objects and their retention, never delete) it proves what those keys can prove
(:func:`pipeline.archive.objectlock.check_bucket_as_writer`): Object Lock and versioning on, a locked
probe reads back COMPLIANCE, its retention can be extended but neither shortened nor downgraded.
Given the bucket admin's keys in ``AUDITSEAL_S3_CHECK_ACCESS_KEY_ID`` /
``AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY``, it runs the full ``auditseal s3 check``
(:func:`pipeline.archive.objectlock.check_bucket`) with them first, then forgets them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import threading
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from connectors.s3sink import metrics
from connectors.s3sink.bucket import ArchiveBucket
from pipeline.archive.encryption import MASTER_KEY_VARIABLE, KeyEncryptionKey
from pipeline.keys.master import load_master_key_spec
from connectors.s3sink.worker import S3Sink, SinkConfig, install_stop_handlers
from pipeline.config import KafkaSettings, S3Settings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.metrics import serve_metrics
from pipeline.preflight import check_kafka
from pipeline.archive.objectlock import ConformanceReport, check_bucket, check_bucket_as_writer

log = logging.getLogger("connectors.s3sink")

CHECK_KEY_VARIABLES = ("AUDITSEAL_S3_CHECK_ACCESS_KEY_ID", "AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY")
CRASH_VARIABLE = "AUDITSEAL_SINK_CRASH_BEFORE_COMMIT"


class BucketRefusedError(AuditSealError):
    """The bucket failed the WORM check; the sink does not start."""


def master_key_from(spec: str | None) -> KeyEncryptionKey | None:
    """The master key of ``--master-key`` or ``$AUDITSEAL_MASTER_KEY`` (a file, or ``pkcs11:LABEL`` in the
    token); None: objects are not encrypted."""
    chosen = spec or os.environ.get(MASTER_KEY_VARIABLE)
    return load_master_key_spec(chosen) if chosen else None


def check_archive_bucket(settings: S3Settings, env: dict[str, str] | None = None) -> ConformanceReport:
    """The WORM check the sink runs before it starts (module docstring); BucketRefusedError if it fails."""
    env = dict(os.environ) if env is None else env
    if all(env.get(name) for name in CHECK_KEY_VARIABLES):
        admin = dataclasses.replace(settings, access_key_id=env[CHECK_KEY_VARIABLES[0]],
                                    secret_access_key=env[CHECK_KEY_VARIABLES[1]])
        report = check_bucket(admin.client(), settings.bucket)
        how = "full check with the admin keys"
    else:
        report = check_bucket_as_writer(settings.client(), settings.bucket)
        how = "writer check with the sink's keys"
    if not report.passed:
        details = "; ".join(f"{r.name}: {r.detail}" for r in report.results if not r.holds)
        raise BucketRefusedError(f"s3://{settings.bucket} at {settings.endpoint_url} fails the WORM check "
                                 f"({how}): {details}. Refusing to archive to it.")
    log.info("s3://%s enforces WORM (%s)", settings.bucket, how)
    return report


def run_sink(config: SinkConfig, *, metrics_port: int, metrics_addr: str | None = None) -> int:
    """Check the bucket, serve metrics on ``metrics_addr:metrics_port`` (0: none), archive until stopped."""
    kafka = KafkaSettings.from_env()
    s3 = S3Settings.from_env()
    check_kafka(kafka, [config.topic])  # librdkafka would retry a bad login or a dead broker forever
    try:
        check_archive_bucket(s3)
    except (BotoCoreError, ClientError) as exc:
        # an unreachable endpoint, a missing bucket, a wrong key: the sink cannot start with this configuration
        raise ConfigError(f"s3://{s3.bucket} at {s3.endpoint_url}: {exc}") from None
    serve_metrics(metrics_port, metrics_addr)
    bucket = ArchiveBucket(s3.client(), s3.bucket,
                           on_retry=lambda operation, _exc: metrics.RETRIES.labels(operation).inc())
    stop = threading.Event()
    install_stop_handlers(stop)
    log.info("archiving %s as %s (group %s) to s3://%s/%s, profile %s (%s), codec %s, %s", config.topic,
             kafka.username, config.group_id, s3.bucket, config.prefix, config.profile.name, config.profile.retention,
             config.codec, f"encrypted with master key {config.master_key.key_id}" if config.master_key else "unencrypted")
    S3Sink(kafka, bucket, config).run(stop)
    return 0


def sink_command(args) -> int:
    """``auditseal sink`` from its parsed options (see ``pipeline/cli/main.py``)."""
    from connectors.s3sink.batching import BatchLimits
    from pipeline.archive.encryption import generate_master_key
    from pipeline.archive.retention import load_profiles

    if args.generate_master_key:
        key = generate_master_key(args.generate_master_key, args.key_id)
        print(f"wrote master key {key.key_id} to {args.generate_master_key} (mode 600); keep a copy in a safe "
              "place: objects encrypted with it cannot be read without it")
        return 0
    try:
        limits = BatchLimits(args.max_records, args.max_bytes, args.max_age_ms / 1000)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    crash = os.environ.get(CRASH_VARIABLE)
    config = SinkConfig(
        profile=load_profiles(args.compliance_file).get(args.profile), topic=args.topic, group_id=args.group,
        prefix=args.prefix, codec=args.codec, limits=limits, workers=args.workers,
        master_key=master_key_from(args.master_key), instance_id=args.instance_id,
        crash_before_commit=int(crash) if crash else None,
    )
    return run_sink(config, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr)


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``auditseal sink`` to the command line (entry point ``auditseal.commands``)."""
    sink = commands.add_parser("sink", help="run the S3 sink: audit.sealed -> Object Lock COMPLIANCE objects",
                               description="Archive audit.sealed to the bucket in the AWS_*/AUDITSEAL_BUCKET "
                               "variables as the role in the AUDITSEAL_* variables (README, 'The S3 sink').")
    sink.add_argument("--profile", help="compliance profile (default: the compliance file's default)")
    sink.add_argument("--compliance-file", type=Path,
                      help="profiles file (default $AUDITSEAL_COMPLIANCE_FILE or config/compliance.yaml)")
    sink.add_argument("--prefix", default="", help="key prefix ending in '/', e.g. archive/ (default: none)")
    sink.add_argument("--master-key", help="encrypt objects with this master key: a file, or pkcs11:LABEL for a key in the "
                      "AUDITSEAL_PKCS11_* token (default $AUDITSEAL_MASTER_KEY)")
    sink.add_argument("--generate-master-key", type=Path, metavar="PATH", help="write a new master key file and exit")
    sink.add_argument("--key-id", help="with --generate-master-key: its id (default: derived from the key)")
    sink.add_argument("--max-records", type=int, default=20_000, help="records per object at most (default 20000)")
    sink.add_argument("--max-bytes", type=int, default=16 * 1024 * 1024,
                      help="record value bytes per object at most (default 16 MiB)")
    sink.add_argument("--max-age-ms", type=int, default=10_000,
                      help="close an object this long after its first record arrived (default 10000)")
    sink.add_argument("--codec", default="deflate", choices=["deflate", "null"], help="OCF block codec (default deflate)")
    sink.add_argument("--workers", type=int, default=4, help="objects written in parallel (one per partition)")
    sink.add_argument("--topic", default="audit.sealed")
    sink.add_argument("--group", default="auditseal-sink", help="consumer group (must start with auditseal-sink)")
    sink.add_argument("--instance-id", help="static group membership id: a restart resumes at once")
    sink.add_argument("--metrics-port", type=int, default=9465, help="Prometheus endpoint port (0: off)")
    sink.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    sink.set_defaults(handler=sink_command)
