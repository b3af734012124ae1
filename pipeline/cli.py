"""The ``auditseal`` command line. Exit codes: 0 success, 1 failure found or operation failed, 2 usage/config error."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from pipeline.errors import AuditSealError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _dev_up(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import LocalStack

    stack = LocalStack()
    stack.up()
    if not args.no_check:
        return _print_s3_check(stack.env("admin"), as_json=False)
    return EXIT_OK


def _dev_down(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import LocalStack

    LocalStack().down(purge=args.purge)
    return EXIT_OK


def _dev_status(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import LocalStack

    report = LocalStack().status()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, part in report["parts"].items():
            state = "healthy" if part["healthy"] else "DOWN"
            print(f"{name:6} {state:8} pid={part['pid']} port={part['port']}  {part['detail']}")
        print(f"stack folder: {report['stack_dir']}")
    return EXIT_OK if report["healthy"] else EXIT_FAILED


def _dev_env(args: argparse.Namespace) -> int:
    from pipeline.devstack.stack import LocalStack

    for name, value in LocalStack().env(args.role).items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def _print_s3_check(env: dict[str, str] | None, as_json: bool) -> int:
    from pipeline.config import S3Settings
    from pipeline.objectlock import check_bucket

    settings = S3Settings.from_env(env)
    report = check_bucket(settings.client(), settings.bucket)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"Object Lock conformance of s3://{report.bucket} at {report.endpoint}")
        for result in report.results:
            print(f"  {'PASS' if result.holds else 'FAIL'}  {result.name}: {result.detail}")
        print("bucket enforces WORM" if report.passed else f"bucket FAILS: {', '.join(report.failed())}")
    return EXIT_OK if report.passed else EXIT_FAILED


def _s3_check(args: argparse.Namespace) -> int:
    return _print_s3_check(None, args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from pipeline.topology import ROLE_NAMES

    parser = argparse.ArgumentParser(prog="auditseal", description="Immutable, signed audit logs on Kafka.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="the local secured stack (Kafka + S3)")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--no-check", action="store_true", help="skip the Object Lock conformance check")
    up.set_defaults(handler=_dev_up)
    down = dev_commands.add_parser("down", help="stop the processes the stack started")
    down.add_argument("--purge", action="store_true", help="also delete data, certificates and credentials")
    down.set_defaults(handler=_dev_down)
    status = dev_commands.add_parser("status", help="health of each part")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_dev_status)
    env = dev_commands.add_parser("env", help="print export lines for one role")
    env.add_argument("--role", required=True, choices=ROLE_NAMES)
    env.set_defaults(handler=_dev_env)

    s3 = commands.add_parser("s3", help="object storage")
    s3_commands = s3.add_subparsers(dest="s3_command", required=True, metavar="ACTION")
    check = s3_commands.add_parser("check", help="prove the bucket enforces WORM (Object Lock COMPLIANCE)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=_s3_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``auditseal`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"auditseal: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuditSealError as exc:
        print(f"auditseal: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
