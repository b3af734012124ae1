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

import dataclasses
import logging
import os
import threading

from botocore.exceptions import BotoCoreError, ClientError

from connectors.s3sink import metrics
from connectors.s3sink.bucket import ArchiveBucket
from connectors.s3sink.cli import RECHECK_INTERVAL_S
from connectors.s3sink.worker import S3Sink, SinkConfig, install_stop_handlers
from pipeline.archive.encryption import MASTER_KEY_VARIABLE, KeyEncryptionKey
from pipeline.archive.objectlock import ConformanceReport, check_bucket, check_bucket_as_writer, with_exposure
from pipeline.config import KafkaSettings, S3Settings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.keys.master import load_master_key_spec
from pipeline.metrics import serve_metrics
from pipeline.preflight import check_kafka

log = logging.getLogger("connectors.s3sink")

CHECK_KEY_VARIABLES = ("AUDITSEAL_S3_CHECK_ACCESS_KEY_ID", "AUDITSEAL_S3_CHECK_SECRET_ACCESS_KEY")
CRASH_VARIABLE = "AUDITSEAL_SINK_CRASH_BEFORE_COMMIT"

CHECK_ACTION = "bucket.check"


class BucketRefusedError(AuditSealError):
    """The bucket failed the WORM check; the sink does not start."""


def master_key_from(spec: str | None) -> KeyEncryptionKey | None:
    """The master key of ``--master-key`` or ``$AUDITSEAL_MASTER_KEY`` (a file, or ``pkcs11:LABEL`` in the
    token); None: objects are not encrypted."""
    chosen = spec or os.environ.get(MASTER_KEY_VARIABLE)
    return load_master_key_spec(chosen) if chosen else None


def check_archive_bucket(settings: S3Settings, env: dict[str, str] | None = None, *,
                         profile=None) -> ConformanceReport:
    """The WORM check the sink runs before it starts and every hour (module docstring); with the compliance
    ``profile`` also the bucket policy and default retention (:func:`~pipeline.archive.objectlock.check_exposure`).
    BucketRefusedError if it fails."""
    env = dict(os.environ) if env is None else env
    if all(env.get(name) for name in CHECK_KEY_VARIABLES):
        admin = dataclasses.replace(settings, access_key_id=env[CHECK_KEY_VARIABLES[0]],
                                    secret_access_key=env[CHECK_KEY_VARIABLES[1]])
        report = check_bucket(admin.client(), settings.bucket)
        how = "full check with the admin keys"
    else:
        report = check_bucket_as_writer(settings.client(), settings.bucket)
        how = "writer check with the sink's keys"
    if profile is not None:
        report = with_exposure(report, settings.client(), profile)
    if not report.passed:
        details = "; ".join(f"{r.name}: {r.detail}" for r in report.results if not r.holds)
        raise BucketRefusedError(f"s3://{settings.bucket} at {settings.endpoint_url} fails the WORM check "
                                 f"({how}): {details}. Refusing to archive to it.")
    log.info("s3://%s enforces WORM (%s)", settings.bucket, how)
    return report


def record_bucket_check(settings: S3Settings, *, failure: str | None) -> None:
    """Leave the check's outcome in the access spool (the access auditor seals it; the detector alerts on a
    FAILURE), so a bucket opened behind the sink's back is an event, not only a log line."""
    from pipeline.access.record import record_access

    record_access(action=CHECK_ACTION, resource={"type": "s3.bucket", "id": f"s3://{settings.bucket}"},
                  status="FAILURE" if failure else "SUCCESS", reason=failure[:1000] if failure else None,
                  attributes={"endpoint": settings.endpoint_url})


def checked_bucket(settings: S3Settings, profile) -> None:
    """:func:`check_archive_bucket` with its outcome recorded (:func:`record_bucket_check`)."""
    try:
        check_archive_bucket(settings, profile=profile)
    except BucketRefusedError as exc:
        record_bucket_check(settings, failure=str(exc))
        raise
    record_bucket_check(settings, failure=None)


def watch_bucket(settings: S3Settings, profile, stop: threading.Event, interval: float,
                 failures: list[BaseException]) -> threading.Thread:
    """Re-check the bucket every ``interval`` seconds until ``stop``; a failed check is recorded, logged, kept in
    ``failures`` and stops the sink (it archives into a proven bucket or not at all)."""
    def run() -> None:
        while not stop.wait(interval):
            try:
                checked_bucket(settings, profile)
            except BucketRefusedError as exc:
                log.error("%s", exc)
                failures.append(exc)
                stop.set()

    thread = threading.Thread(target=run, name="bucket-recheck", daemon=True)
    thread.start()
    return thread


def run_sink(config: SinkConfig, *, metrics_port: int, metrics_addr: str | None = None,
             recheck_interval: float = RECHECK_INTERVAL_S) -> int:
    """Check the bucket, serve metrics on ``metrics_addr:metrics_port`` (0: none), archive until stopped,
    re-checking the bucket every ``recheck_interval`` seconds (exit 1 if a re-check fails)."""
    kafka = KafkaSettings.from_env()
    s3 = S3Settings.from_env()
    check_kafka(kafka, [config.topic])  # librdkafka would retry a bad login or a dead broker forever
    try:
        checked_bucket(s3, config.profile)
    except (BotoCoreError, ClientError) as exc:
        # an unreachable endpoint, a missing bucket, a wrong key: the sink cannot start with this configuration
        raise ConfigError(f"s3://{s3.bucket} at {s3.endpoint_url}: {exc}") from None
    serve_metrics(metrics_port, metrics_addr)
    bucket = ArchiveBucket(s3.client(), s3.bucket,
                           on_retry=lambda operation, _exc: metrics.RETRIES.labels(operation).inc())
    stop = threading.Event()
    install_stop_handlers(stop)
    failures: list[BaseException] = []
    watch_bucket(s3, config.profile, stop, recheck_interval, failures)
    log.info("archiving %s as %s (group %s) to s3://%s/%s, profile %s (%s), codec %s, %s", config.topic,
             kafka.username, config.group_id, s3.bucket, config.prefix, config.profile.name, config.profile.retention,
             config.codec, f"encrypted with master key {config.master_key.key_id}" if config.master_key else "unencrypted")
    S3Sink(kafka, bucket, config).run(stop)
    return 1 if failures else 0


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
    if args.recheck_interval <= 0:
        raise ConfigError("--recheck-interval must be positive")
    return run_sink(config, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
                    recheck_interval=args.recheck_interval)
