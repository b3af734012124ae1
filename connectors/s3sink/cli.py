"""``auditseal sink`` on the command line: the options only, importable without the sink's dependencies.

Registered through the ``auditseal.commands`` entry point, so ``pipeline`` never imports ``connectors``; the
sink itself (:mod:`connectors.s3sink.command`, with boto3, prometheus-client and the worker) is imported when
the command runs, so ``auditseal --help`` works where only the producer library is installed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RECHECK_INTERVAL_S = 3600.0  # how often the running sink re-proves its bucket (--recheck-interval)


def _sink(args: argparse.Namespace) -> int:
    from connectors.s3sink.command import sink_command

    return sink_command(args)


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
    sink.add_argument("--recheck-interval", type=float, default=RECHECK_INTERVAL_S, metavar="SECONDS",
                      help="re-prove the bucket (WORM, policy, default retention) this often; a failure is an event "
                           "and stops the sink (default 3600)")
    sink.set_defaults(handler=_sink)
