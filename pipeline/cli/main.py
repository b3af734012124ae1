"""The ``auditseal`` command line. Exit codes: 0 success, 1 failure found or operation failed, 2 usage/config error."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from pipeline.errors import AuditSealError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Commands another distribution adds (the S3 sink in connectors/): `pipeline` never imports them itself.
COMMANDS_ENTRY_POINT = "auditseal.commands"


def _dev_up(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack

    stack = LocalStack()
    stack.up()
    if not args.no_check:
        return _print_s3_check(stack.env("admin"), as_json=False)
    return EXIT_OK


def _dev_down(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack

    LocalStack().down(purge=args.purge)
    return EXIT_OK


def _dev_status(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack

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
    from pipeline.dev.stack import LocalStack

    for name, value in LocalStack().env(args.role).items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def _print_s3_check(env: dict[str, str] | None, as_json: bool, profile: str | None = None,
                    compliance_file: Path | None = None) -> int:
    from pipeline.archive.objectlock import check_bucket, with_exposure
    from pipeline.archive.retention import load_profiles
    from pipeline.config import S3Settings

    settings = S3Settings.from_env(env)
    chosen = load_profiles(compliance_file).get(profile)
    client = settings.client()
    report = with_exposure(check_bucket(client, settings.bucket), client, chosen)
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(f"Object Lock conformance of s3://{report.bucket} at {report.endpoint}")
        for result in report.results:
            print(f"  {'PASS' if result.holds else 'FAIL'}  {result.name}: {result.detail}")
        print("bucket enforces WORM" if report.passed else f"bucket FAILS: {', '.join(report.failed())}")
    return EXIT_OK if report.passed else EXIT_FAILED


def _s3_check(args: argparse.Namespace) -> int:
    return _print_s3_check(None, args.json, args.profile, args.compliance_file)


def _seal(args: argparse.Namespace) -> int:
    from pipeline.sealer.app import SealerConfig
    from pipeline.sealer.worker import run_worker

    config = SealerConfig(raw_topic=args.raw_topic, sealed_topic=args.sealed_topic, app_id=args.app_id,
                          max_batch=args.checkpoint_records, batch_interval=args.checkpoint_ms / 1000)
    run_worker(signing_key=args.signing_key, metrics_port=args.metrics_port, config=config, loglevel=args.loglevel,
               metrics_addr=args.metrics_addr)
    return EXIT_OK


def _detect(args: argparse.Namespace) -> int:
    from pipeline.cli.detect import run_detector

    return run_detector(rules=args.rules, raw_topic=args.raw_topic, alerts_topic=args.alerts_topic, app_id=args.app_id,
                        metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
                        replication_factor=args.replication_factor, loglevel=args.loglevel)


def _acl(args: argparse.Namespace) -> int:
    from pipeline.cli import acl as commands

    run = {"plan": commands.acl_plan, "apply": commands.acl_apply, "check": commands.acl_check}[args.acl_command]
    options = {"rotate": args.rotate, "prune_users": args.prune_users, "credentials": args.credentials} \
        if args.acl_command != "check" else {"server_properties": args.server_properties}
    return run(roles_path=args.roles, as_json=args.json, **options)


def _access_audit(args: argparse.Namespace) -> int:
    from pipeline.access.auditor import run_access_auditor

    return run_access_auditor(metadata_log=args.metadata_log, authentication_log=args.authentication_log,
                              log_file=args.log, spool_file=args.spool, state_file=args.state, once=args.once,
                              start_at_end=args.start_at_end, poll_interval=args.poll_interval,
                              trail_interval=args.trail_interval, trail_timeout=args.trail_timeout)


def _emit(args: argparse.Namespace) -> int:
    import logging

    from pipeline.producer.emit import emit_lines, event_from_options
    from pipeline.producer.synthetic import synthetic_events
    from pipeline.producer.client import AuditProducer, UndeliveredEventsError
    from pipeline.wire.validation import InvalidEventError

    required = ("actor_id", "action", "resource_type", "resource_id", "source_service")
    stdin = args.stdin or args.stdin_dash == "-"
    from_options = args.generate is None and not stdin
    given = [name for name in (*required, "reason", "attributes") if getattr(args, name)]
    if from_options and (missing := [name for name in required if not getattr(args, name)]):
        raise ConfigError(f"one event needs --{', --'.join(m.replace('_', '-') for m in missing)} "
                          "(or use --stdin / --generate N)")
    if not from_options and given:
        raise ConfigError("event options cannot be combined with --stdin or --generate")
    # Every failure ends in one message and the exit code below: the client's own log lines
    # (librdkafka's and the producer's) would only repeat it.
    logging.getLogger("pipeline.producer.client").setLevel(logging.CRITICAL)
    sent, invalid, undelivered = 0, [], 0
    with AuditProducer(config={"log_level": 2}) as producer:  # AUDITSEAL_* variables
        producer.check()  # a wrong password or a missing topic fails here, in seconds
        if args.generate is not None:
            for event in synthetic_events(args.generate, args.seed):
                producer.emit(event)
                sent += 1
        elif stdin:
            sent, invalid = emit_lines(sys.stdin, producer)
        else:
            event = event_from_options(**{name: getattr(args, name) for name in (*required, "reason")},
                                       actor_type=args.actor_type, outcome=args.outcome,
                                       attributes=args.attributes)
            try:
                producer.emit(event)
                sent = 1
                print(event["event_id"])
            except InvalidEventError as exc:
                invalid = [(1, f"{exc.path}: {exc.problem}" if exc.path else exc.problem)]
        for number, reason in invalid:
            print(f"line {number}: {reason}" if not from_options else f"invalid event: {reason}", file=sys.stderr)
        try:
            producer.flush()
        except UndeliveredEventsError as exc:
            undelivered = exc.failed + exc.pending
            print(f"auditseal emit: {exc}", file=sys.stderr)
    print(f"auditseal emit: sent {sent}, invalid {len(invalid)}, delivered {sent - undelivered} to {producer.topic}",
          file=sys.stderr)
    return EXIT_FAILED if invalid or undelivered else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from pipeline.cli.verify import verify_command

    return verify_command(args)


def _demo(args: argparse.Namespace) -> int:
    from pipeline.dev.demo import run_demo

    return run_demo()


def _prove(args: argparse.Namespace) -> int:
    from pipeline.cli.prove import prove_command

    return prove_command(args)


def _verify_proof(args: argparse.Namespace) -> int:
    from pipeline.cli.prove import verify_proof_command

    return verify_proof_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from pipeline.permissions.topology import role_names

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
    env.add_argument("--role", required=True, choices=role_names())
    env.set_defaults(handler=_dev_env)

    seal = commands.add_parser("seal", help="run a sealer worker (Faust): audit.raw -> audit.sealed")
    seal.add_argument("--signing-key", help="Ed25519 private key (PEM); default $AUDITSEAL_SIGNING_KEY")
    seal.add_argument("--checkpoint-records", type=int, default=2000,
                      help="at most this many raw records per batch and checkpoint (default 2000)")
    seal.add_argument("--checkpoint-ms", type=int, default=100,
                      help="close a batch with a checkpoint at least this often, in ms (default 100)")
    seal.add_argument("--metrics-port", type=int, default=9464, help="Prometheus endpoint port (0: off)")
    seal.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    seal.add_argument("--raw-topic", default="audit.raw")
    seal.add_argument("--sealed-topic", default="audit.sealed")
    seal.add_argument("--app-id", default="auditseal-sealer", help="Faust app id = consumer group")
    seal.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    seal.set_defaults(handler=_seal)

    detect = commands.add_parser("detect", help="run the anomalous-access detector (Faust): access events in "
                                 "audit.raw -> alerts on audit.alerts, sealed as events in audit.raw")
    detect.add_argument("--rules", type=Path,
                        help="rules file (default $AUDITSEAL_DETECTOR_RULES or config/detector.yaml)")
    detect.add_argument("--metrics-port", type=int, default=9466, help="Prometheus endpoint port (0: off)")
    detect.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    detect.add_argument("--raw-topic", default="audit.raw")
    detect.add_argument("--alerts-topic", default="audit.alerts")
    detect.add_argument("--app-id", default="auditseal-detector",
                        help="Faust app id = consumer group and table topic prefix (must start with auditseal-detector)")
    detect.add_argument("--replication-factor", type=int, default=1,
                        help="of the tables' changelog topics created on first start (3 in production)")
    detect.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    detect.set_defaults(handler=_detect)

    for plugin in entry_points(group=COMMANDS_ENTRY_POINT):
        plugin.load()(commands)

    acl = commands.add_parser("acl", help="roles file -> SCRAM users + Kafka ACLs, and separation-of-duties checks")
    acl_commands = acl.add_subparsers(dest="acl_command", required=True, metavar="ACTION")
    for action, text in (("plan", "show the users and ACLs apply would add or remove"),
                         ("apply", "make the broker match the roles file (idempotent)"),
                         ("check", "prove the separation-of-duties rules on the live broker (exit 1 on a breach)")):
        sub = acl_commands.add_parser(action, help=text)
        sub.add_argument("--roles", type=Path, help="roles file (default $AUDITSEAL_ROLES_FILE or config/roles.yaml)")
        sub.add_argument("--json", action="store_true")
        if action != "check":
            sub.add_argument("--credentials", type=Path,
                             help="SCRAM passwords of the users to create (default: the local stack's credentials)")
            sub.add_argument("--rotate", action="append", default=[], metavar="USER",
                             help="set USER's password from the credentials file again (repeatable)")
            sub.add_argument("--prune-users", action="store_true", help="also delete users not in the roles file")
        else:
            sub.add_argument("--server-properties", type=Path,
                             help="the broker's server.properties, to prove super.users (hidden from the admin API) "
                                  "is the roles file's (default: the local stack's, when it exists)")
        sub.set_defaults(handler=_acl)

    access = commands.add_parser("access-audit",
                                 help="turn the broker's authorizer decisions into access events in audit.raw")
    access.add_argument("--log", type=Path, help="authorizer log (default: the local stack's kafka-authorizer.log)")
    access.add_argument("--authentication-log", type=Path,
                        help="the broker's failed-authentication log (default: the local stack's "
                             "kafka-authentication.log)")
    access.add_argument("--metadata-log", type=Path,
                        help="the controller's __cluster_metadata-0 folder, whose changes (credentials, ACLs, configs, "
                             "topics) become events with their details (default: the local stack's)")
    access.add_argument("--spool", type=Path, help="access records of our own commands (default $AUDITSEAL_ACCESS_SPOOL)")
    access.add_argument("--state", type=Path, help="durable position file (default: next to the spool)")
    access.add_argument("--once", action="store_true", help="forward what is there now, then exit")
    access.add_argument("--start-at-end", action="store_true",
                        help="without a saved position, start at the end of the log instead of its oldest entry")
    access.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS")
    access.add_argument("--trail-interval", type=float, default=10.0, metavar="SECONDS",
                        help="how often to check the authorizer logger's level and probe the log (default 10)")
    access.add_argument("--trail-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="a probe not logged within this long is an authorizer_log.silent event (default 30)")
    access.set_defaults(handler=_access_audit)

    from pipeline.producer.emit import attribute

    emit = commands.add_parser("emit", help="emit audit events to audit.raw (options, JSON lines or --generate)",
                               description="Emit audit events as the role in the AUDITSEAL_* variables. Exit 0 if "
                               "every event was valid and delivered, 1 otherwise, 2 on a configuration error.")
    source = emit.add_mutually_exclusive_group()
    source.add_argument("--stdin", action="store_true", help="one JSON event per line on stdin (also: -)")
    source.add_argument("stdin_dash", nargs="?", choices=["-"], metavar="-", help=argparse.SUPPRESS)
    source.add_argument("--generate", type=int, metavar="N", help="N realistic synthetic events")
    emit.add_argument("--seed", type=int, help="with --generate: reproducible events (fixed ids, from 2025-01-01)")
    for option, text in (("--actor-id", "who acted (user id, service account)"), ("--action", "e.g. document.read"),
                         ("--resource-type", "e.g. document"), ("--resource-id", "e.g. doc-42"),
                         ("--source-service", "the service emitting the event"),
                         ("--reason", "why it failed or was denied")):
        emit.add_argument(option, help=text)
    emit.add_argument("--actor-type", default="USER", help="USER (default), SERVICE, SYSTEM or UNKNOWN")
    emit.add_argument("--outcome", default="SUCCESS", help="SUCCESS (default), FAILURE, DENIED or UNKNOWN")
    emit.add_argument("--attr", dest="attributes", action="append", default=[], metavar="KEY=VALUE",
                      type=attribute, help="an extra attribute (repeatable)")
    emit.set_defaults(handler=_emit)

    verify = commands.add_parser("verify", help="prove the archive is complete and untouched (exit 0 intact, "
                                 "1 violations, 2 usage error)")
    verify.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    verify.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    verify.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    verify.add_argument("--master-key", action="append", help="master key file(s) of encrypted objects")
    verify.add_argument("--compliance-file", help="compliance profiles (default config/compliance.yaml)")
    verify.add_argument("--kafka", action="store_true",
                        help="also check the archive reaches the sealed topic's head (AUDITSEAL_* variables)")
    verify.add_argument("--kafka-topic", default="audit.sealed")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=_verify)

    prove = commands.add_parser("prove", help="print an inclusion proof of one archived event against its signed "
                                "checkpoint (exit 1 if not found)")
    prove.add_argument("event_id", metavar="EVENT_ID", help="the AuditEvent's event_id (UUID)")
    prove.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    prove.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    prove.add_argument("--master-key", action="append", help="master key file(s) of encrypted objects")
    prove.add_argument("--out", metavar="FILE", help="write the proof here instead of stdout")
    prove.set_defaults(handler=_prove)

    verify_proof = commands.add_parser("verify-proof", help="check an inclusion proof offline with the public "
                                       "keyring (exit 0 valid, 1 invalid, 2 usage error)")
    verify_proof.add_argument("proof", metavar="FILE", help="a proof written by auditseal prove")
    verify_proof.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    verify_proof.set_defaults(handler=_verify_proof)

    demo = commands.add_parser("demo", help="the whole pipeline end to end on the local stack")
    demo.set_defaults(handler=_demo)

    s3 = commands.add_parser("s3", help="object storage")
    s3_commands = s3.add_subparsers(dest="s3_command", required=True, metavar="ACTION")
    check = s3_commands.add_parser("check", help="prove the bucket enforces WORM (Object Lock COMPLIANCE) and its "
                                                 "policy and default retention open nothing")
    check.add_argument("--json", action="store_true")
    check.add_argument("--profile", help="compliance profile the default retention must match (default: the file's)")
    check.add_argument("--compliance-file", type=Path,
                       help="profiles file (default $AUDITSEAL_COMPLIANCE_FILE or config/compliance.yaml)")
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
