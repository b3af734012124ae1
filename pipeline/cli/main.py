"""The ``auditseal`` command line: one harness for every command and daemon.

Every command takes the same global options (``--version``, ``-v``/``--log-level``, also
``$AUDITSEAL_LOG_LEVEL``); logging is set up once, here, before any command runs; and errors become
exit codes in one place (:func:`main`): 0 success, 1 violations found or operation refused/failed,
2 usage or configuration error (including a part of AuditSeal that is not installed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

import pipeline
from pipeline.errors import AuditSealError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# Commands another distribution adds (the S3 sink in connectors/): `pipeline` never imports them itself.
COMMANDS_ENTRY_POINT = "auditseal.commands"
LOG_LEVEL_VARIABLE = "AUDITSEAL_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")
# daemons report what they do; one-shot commands speak only through their output unless asked
DAEMONS = frozenset({"seal", "sink", "detect", "access-audit", "siem-bridge", "reconcile"})
# the optional dependencies of `pip install 'auditseal[pipeline]'`: a missing one is an installation
# problem the user can fix (exit 2), not a crash
PIPELINE_EXTRA_MODULES = frozenset({"faust", "mode", "boto3", "botocore", "yaml", "cryptography", "prometheus_client",
                                    "psutil", "cramjam", "aiokafka", "orjson", "tqdm", "pkcs11"})


def log_level(value: str) -> str:
    """A ``--log-level`` / ``$AUDITSEAL_LOG_LEVEL`` value, lower case; ArgumentTypeError otherwise."""
    level = value.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"log level must be one of {', '.join(LOG_LEVELS)}, found {value!r}")
    return level


def resolved_log_level(args: argparse.Namespace, env: dict[str, str] | None = None) -> str:
    """The level of this run: ``--log-level``, else ``-v`` (info) / ``-vv`` (debug), else
    ``$AUDITSEAL_LOG_LEVEL``, else ``info`` for a daemon and ``warning`` for a one-shot command."""
    explicit = getattr(args, "log_level", None)
    if explicit:
        return explicit
    verbose = getattr(args, "verbose", 0)
    if verbose:
        return "debug" if verbose > 1 else "info"
    configured = (os.environ if env is None else env).get(LOG_LEVEL_VARIABLE)
    if configured:
        try:
            return log_level(configured)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{LOG_LEVEL_VARIABLE}: {exc}") from None
    return "info" if args.command in DAEMONS else "warning"


def setup_logging(level: str) -> None:
    """Logging for the whole process, once: one line per record on stderr."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("botocore", "boto3", "urllib3", "s3transfer"):  # their debug output includes signed requests
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _dev_up(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack

    stack = LocalStack()
    if not args.json:
        stack.up(brokers=args.brokers)
        return EXIT_OK if args.no_check else _print_s3_check(stack.env("admin"), as_json=False)
    # progress on stderr, one JSON document on stdout: the stack's health and the bucket's WORM check
    stack.up(brokers=args.brokers, log=lambda line: print(line, file=sys.stderr))
    check = None if args.no_check else _s3_check_report(stack.env("admin"))
    status = stack.status()
    print(json.dumps({**status, "credentials_file": str(stack.credentials_file), "s3_check": check and check.as_dict(),
                      "healthy": status["healthy"] and (check is None or check.passed)}, indent=2))
    return EXIT_OK if status["healthy"] and (check is None or check.passed) else EXIT_FAILED


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
            print(f"{name:7} {state:8} pid={part['pid']} port={part['port']}  {part['detail']}")
        print(f"stack folder: {report['stack_dir']}")
    return EXIT_OK if report["healthy"] else EXIT_FAILED


def _dev_witness_rekey(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack

    changed = LocalStack().rekey_witness()
    print(f"witness: {len(changed)} log(s) now verified under the keyring's newest key"
          + (f" ({', '.join(changed)})" if changed else " (they already were)"))
    return EXIT_OK


def _dev_env(args: argparse.Namespace) -> int:
    from pipeline.dev.stack import LocalStack
    from pipeline.permissions.topology import role_names

    if args.role not in role_names():
        raise ConfigError(f"unknown role {args.role!r}; expected one of {', '.join(role_names())}")

    stack = LocalStack()
    variables = {**stack.env(args.role), **(stack.custody_env() if args.keys else {})}
    for name, value in variables.items():
        print(f"export {name}={shlex.quote(value)}")
    return EXIT_OK


def _s3_check_report(env: dict[str, str] | None, profile: str | None = None,
                     compliance_file: Path | None = None):  # -> ConformanceReport; botocore is imported lazily
    from pipeline.archive.objectlock import check_bucket, with_exposure
    from pipeline.archive.retention import load_profiles
    from pipeline.config import S3Settings

    settings = S3Settings.from_env(env)
    chosen = load_profiles(compliance_file).get(profile)
    client = settings.client()
    return with_exposure(check_bucket(client, settings.bucket), client, chosen)


def _print_s3_check(env: dict[str, str] | None, as_json: bool, profile: str | None = None,
                    compliance_file: Path | None = None) -> int:
    report = _s3_check_report(env, profile, compliance_file)
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
                          max_batch=args.checkpoint_records, batch_interval=args.checkpoint_ms / 1000,
                          log_name=args.log_name, heartbeat_interval=args.heartbeat_interval,
                          witness_policy=args.witness_policy, witness_interval=args.witness_interval,
                          **({"max_message_bytes": args.sealed_max_message_bytes}
                             if args.sealed_max_message_bytes is not None else {}))
    if not 0 <= args.metrics_port <= 65535:
        raise ConfigError(f"--metrics-port {args.metrics_port}: must be 0 (off) to 65535")
    run_worker(signing_key=args.signing_key, metrics_port=args.metrics_port, config=config, loglevel=args.loglevel,
               metrics_addr=args.metrics_addr, state=args.state_dir)
    return EXIT_OK


def _detect(args: argparse.Namespace) -> int:
    from pipeline.cli.detect import run_detector

    return run_detector(rules=args.rules, access_topic=args.access_topic, verification_topic=args.verification_topic,
                        reconciliation_topic=args.reconciliation_topic,
                        detection_topic=args.detection_topic, alerts_topic=args.alerts_topic, app_id=args.app_id,
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

    from pipeline.producer.client import AuditProducer, UndeliveredEventsError
    from pipeline.producer.emit import emit_lines, event_from_options
    from pipeline.producer.synthetic import synthetic_events
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
    sent, invalid, undelivered, event_ids = 0, [], 0, []
    from pipeline.cli.privacy import emit_protector

    with emit_protector(args.protect) as protector, \
            AuditProducer(config={"log_level": 2}, protector=protector) as producer:  # AUDITSEAL_* variables
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
            if args.personal_attributes:
                event["personal_attributes"] = dict(args.personal_attributes)
            try:
                producer.emit(event)
                sent = 1
                event_ids.append(event["event_id"])
                if not args.json:
                    print(event["event_id"])
            except InvalidEventError as exc:
                invalid = [(1, f"{exc.path}: {exc.problem}" if exc.path else exc.problem)]
        for number, reason in invalid:
            print(f"line {number}: {reason}" if not from_options else f"invalid event: {reason}", file=sys.stderr)
        problem = None
        try:
            producer.flush()
        except UndeliveredEventsError as exc:
            undelivered, problem = exc.failed + exc.pending, str(exc)
            print(f"auditseal emit: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps({"topic": producer.topic, "sent": sent, "delivered": sent - undelivered,
                          "undelivered": undelivered, "undelivered_reason": problem, "event_ids": event_ids,
                          "invalid": [{"line": number, "reason": reason} for number, reason in invalid]}, indent=2))
    else:
        print(f"auditseal emit: sent {sent}, invalid {len(invalid)}, delivered {sent - undelivered} to {producer.topic}",
              file=sys.stderr)
    return EXIT_FAILED if invalid or undelivered else EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from pipeline.cli.verify import verify_command

    if args.reconcile:
        from pipeline.cli.reconcile import verify_reconcile_command

        return verify_reconcile_command(args)
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


def add_common_options(parser: argparse.ArgumentParser) -> None:
    """The options every command takes, wherever they are written (before or after the command's name)."""
    # SUPPRESS: a subcommand that does not see the option must not reset what the top level parsed
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (-v info, -vv debug)")
    parser.add_argument("--log-level", "--loglevel", dest="log_level", type=log_level, default=argparse.SUPPRESS,
                        metavar="LEVEL", help=f"{', '.join(LOG_LEVELS)} (default ${LOG_LEVEL_VARIABLE}, else info for "
                        "daemons and warning for commands)")


class _CommonOptionsSubparsers:
    """``add_subparsers()``'s action, giving every (nested) command the common options."""

    def __init__(self, action: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
        self._action = action

    def add_parser(self, name: str, **kwargs: object) -> argparse.ArgumentParser:
        sub = self._action.add_parser(name, **kwargs)  # type: ignore[arg-type]
        add_common_options(sub)
        original = sub.add_subparsers

        def add_subparsers(**options: object) -> _CommonOptionsSubparsers:
            return _CommonOptionsSubparsers(original(**options))  # type: ignore[arg-type]

        sub.add_subparsers = add_subparsers  # type: ignore[method-assign,assignment]
        return sub


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    # allow_abbrev=False: a command's own option (access-audit --log) must not read as an abbreviation of
    # the top level's --log-level/--loglevel ("ambiguous option")
    parser = argparse.ArgumentParser(prog="auditseal", description="Immutable, signed audit logs on Kafka.",
                                     allow_abbrev=False, epilog="exit codes: 0 ok, 1 violations found or refused, 2 usage or configuration "
                                     "error. Log level: -v, --log-level or $AUDITSEAL_LOG_LEVEL.")
    parser.add_argument("--version", action="version", version=f"auditseal {pipeline.__version__}")
    add_common_options(parser)
    commands = _CommonOptionsSubparsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))

    dev = commands.add_parser("dev", help="the local secured stack (Kafka + S3)")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True, metavar="ACTION")
    up = dev_commands.add_parser("up", help="start the stack (idempotent)")
    up.add_argument("--no-check", action="store_true", help="skip the Object Lock conformance check")
    up.add_argument("--json", action="store_true", help="progress on stderr, the stack's health as JSON on stdout")
    up.add_argument("--brokers", type=int, choices=[1, 3],
                    help="Kafka nodes of a new stack: 1 (default) or a 3-node KRaft cluster (replication 3, min ISR 2)")
    up.set_defaults(handler=_dev_up)
    down = dev_commands.add_parser("down", help="stop the processes the stack started")
    down.add_argument("--purge", action="store_true", help="also delete data, certificates and credentials")
    down.set_defaults(handler=_dev_down)
    status = dev_commands.add_parser("status", help="health of each part")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_dev_status)
    env = dev_commands.add_parser("env", help="print export lines for one role")
    env.add_argument("--role", required=True, help="a role of the roles file (producer, sealer, sink, ...)")
    env.add_argument("--keys", action="store_true",
                     help="also the sealer's token and keyring variables (for `auditseal keys`)")
    env.set_defaults(handler=_dev_env)
    rekey = dev_commands.add_parser("witness-rekey", help="give the stack's witness the keyring's newest sealer key "
                                    "(after `auditseal keys rotate`, before its switch)")
    rekey.set_defaults(handler=_dev_witness_rekey)

    seal = commands.add_parser("seal", help="run a sealer worker (Faust): audit.raw -> audit.sealed")
    seal.add_argument("--signing-key", help="Ed25519 private key (PEM) or a directory of them; default "
                      "$AUDITSEAL_SIGNING_KEY (unset when the key is in a PKCS#11 token: AUDITSEAL_PKCS11_*)")
    seal.add_argument("--checkpoint-records", type=int, default=2000,
                      help="at most this many raw records per batch and checkpoint (default 2000)")
    seal.add_argument("--checkpoint-ms", type=int, default=100,
                      help="close a batch with a checkpoint at least this often, in ms (default 100)")
    seal.add_argument("--metrics-port", type=int, default=9464, help="Prometheus endpoint port (0: off)")
    seal.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    seal.add_argument("--raw-topic", default="audit.raw")
    seal.add_argument("--sealed-topic", default="audit.sealed")
    seal.add_argument("--app-id", default="auditseal-sealer", help="Faust app id = consumer group")
    seal.add_argument("--heartbeat-interval", type=float, default=60.0, metavar="SECONDS",
                      help="every chain signs a tree head at least this often, alone while idle (default 60; "
                      "0: no tree heads)")
    seal.add_argument("--witness-policy", metavar="FILE",
                      help="C2SP tlog-policy: its witnesses (with URLs) cosign the heads of the chains it lists as logs; "
                      "the cosignatures are sealed as cosignature records (default: no witnessing)")
    seal.add_argument("--witness-interval", type=float, default=10.0, metavar="SECONDS",
                      help="submit a chain's newest head to the witnesses at most this often (default 10)")
    seal.add_argument("--log-name", help="the deployment-unique log name every checkpoint signs as its origin "
                      "(<log name>/<chain id>; default auditseal/<Kafka cluster id>)")
    seal.add_argument("--sealed-max-message-bytes", type=int,
                      help="the sealed topic's max.message.bytes: a larger sealed event is sealed as a rejection "
                      "(default: the audit topics' 1048576)")
    seal.add_argument("--state-dir", help="local state folder (default $AUDITSEAL_STATE_DIR or "
                      "$XDG_STATE_HOME/auditseal, i.e. ~/.local/state/auditseal)")
    seal.set_defaults(handler=_seal)

    detect = commands.add_parser("detect", help="run the anomalous-access detector (Faust): access events of "
                                 "audit.access, audit.verification and audit.reconciliation -> alerts on audit.alerts, sealed as events "
                                 "via audit.detection")
    detect.add_argument("--rules", type=Path,
                        help="rules file (default $AUDITSEAL_DETECTOR_RULES or config/detector.yaml)")
    detect.add_argument("--metrics-port", type=int, default=9466, help="Prometheus endpoint port (0: off)")
    detect.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR or 127.0.0.1)")
    detect.add_argument("--access-topic", default="audit.access",
                        help="the access auditor's events (only it may write this topic)")
    detect.add_argument("--verification-topic", default="audit.verification",
                        help="the verifier's records (only it may write this topic)")
    detect.add_argument("--reconciliation-topic", default="audit.reconciliation",
                        help="the reconciler's attestations and mismatches (only it may write this topic)")
    detect.add_argument("--detection-topic", default="audit.detection",
                        help="where each alert is written as an alert.raised event, to be sealed")
    detect.add_argument("--alerts-topic", default="audit.alerts")
    detect.add_argument("--app-id", default="auditseal-detector",
                        help="Faust app id = consumer group and table topic prefix (must start with auditseal-detector)")
    detect.add_argument("--replication-factor", type=int, default=1,
                        help="of the tables' changelog topics created on first start (3 in production)")
    detect.set_defaults(handler=_detect)

    for plugin in entry_points(group=COMMANDS_ENTRY_POINT):
        plugin.load()(commands)

    from pipeline.cli.siem import register as register_siem

    register_siem(commands)  # export, siem-bridge
    from pipeline.cli import keys

    keys.register(commands)
    from pipeline.cli import report, timeline

    timeline.register(commands)
    report.register(commands)

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
    emit.add_argument("--json", action="store_true", help="the summary (and event ids) as one JSON object on stdout")
    emit.add_argument("--protect", action="store_true", help="encrypt personal fields under their subjects' keys "
                      "(key store as AUDITSEAL_KEYSTORE_USERNAME, KEK in AUDITSEAL_KEK_FILE or AUDITSEAL_KEK=pkcs11:LABEL)")
    emit.add_argument("--personal-attr", dest="personal_attributes", action="append", default=[],
                      metavar="KEY=SUBJECT", type=attribute, help="with --protect: attribute KEY is personal data "
                      "of SUBJECT (repeatable)")
    emit.set_defaults(handler=_emit)

    from pipeline.cli.privacy import register as register_privacy

    register_privacy(commands)

    verify = commands.add_parser("verify", help="prove the archive is complete and untouched (exit 0 intact, "
                                 "1 violations, 2 usage error)")
    verify.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    verify.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    verify.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    verify.add_argument("--master-key", action="append", help="master key(s) of encrypted objects: a file, or pkcs11:LABEL in the AUDITSEAL_PKCS11_* token")
    verify.add_argument("--compliance-file", help="compliance profiles (default config/compliance.yaml)")
    verify.add_argument("--kafka", action="store_true",
                        help="also check the archive reaches the sealed topic's head (AUDITSEAL_* variables)")
    verify.add_argument("--kafka-topic", default="audit.sealed")
    verify.add_argument("--kafka-grace", type=float, metavar="SECONDS",
                        help="with --kafka: entries sealed less than this long ago may be missing from the archive "
                        "(the sink's lag, a notice); older ones missing are a truncated tail (default 300)")
    verify.add_argument("--reconcile", action="store_true",
                        help="instead: compare every sealed entry with its source record on Kafka (reconciler role)")
    verify.add_argument("--since", type=float, metavar="SECONDS", help="with --reconcile: only what was sealed "
                        "in the last SECONDS (default: everything the sealed topics retain)")
    verify.add_argument("--source", action="append", metavar="TOPIC",
                        help="with --reconcile: a source topic (repeatable; default every sealed source)")
    verify.add_argument("--as-of", metavar="TIME",
                        help="ISO 8601 time the archive is judged at (default now): a chain whose newest tree head is "
                        "older than this minus --head-tolerance is a stale_head")
    verify.add_argument("--policy", metavar="FILE",
                        help="C2SP tlog-policy (log keys, witnesses, quorum): report heads no quorum cosigned "
                        "(unwitnessed_head) and histories the witnesses' heads contradict (witness_fork)")
    verify.add_argument("--witnessed-head", action="append", metavar="FILE",
                        help="with --policy: a cosigned head kept elsewhere (a signed note) the archive must agree with "
                        "(repeatable)")
    verify.add_argument("--witness-tolerance", type=float, metavar="SECONDS",
                        help="with --policy: how old a head may be and still wait for its cosignature (default: "
                        "--head-tolerance)")
    verify.add_argument("--head-tolerance", type=float, metavar="SECONDS",
                        help="how old the newest tree head, and how far apart two heads, may be (default 300)")
    verify.add_argument("--since-state", metavar="FILE", help="start from the state file of an earlier intact run: "
                        "read only the objects archived since, prove the new tree heads extend the verified ones")
    verify.add_argument("--state-out", metavar="FILE", help="if the archive is intact, write the state file a later "
                        "--since-state run starts from (may be the --since-state file)")
    verify.add_argument("--jobs", type=int, default=1, metavar="N", help="verify partitions in N processes (default 1)")
    verify.add_argument("--reconciler-keyring", metavar="FILE",
                        help="also check the reconciler's archived attestations against its own public keyring "
                        "(default $AUDITSEAL_RECONCILER_KEYRING): forged ones, mismatches, ranges never attested")
    verify.add_argument("--attestation-topic", metavar="TOPIC",
                        help="with --reconciler-keyring: the sealed topic of the attestations "
                        "(default audit.sealed.reconciliation)")
    verify.add_argument("--attestation-grace", type=float, metavar="SECONDS",
                        help="with --reconciler-keyring: archived ranges newer than this may lack their attestation "
                        "(a notice); older ones are unattested_range (default 900)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=_verify)

    from pipeline.cli.reconcile import register as register_reconcile

    register_reconcile(commands)

    prove = commands.add_parser("prove", help="print an inclusion proof of one archived event against its signed "
                                "checkpoint (exit 1 if not found)")
    prove.add_argument("event_id", metavar="EVENT_ID", help="the AuditEvent's event_id (UUID)")
    prove.add_argument("--s3", metavar="URI", help="s3://bucket/prefix, read with the AWS_* variables")
    prove.add_argument("--dir", metavar="PATH", help="a local copy of the bucket with the same key layout")
    prove.add_argument("--master-key", action="append", help="master key(s) of encrypted objects: a file, or pkcs11:LABEL in the AUDITSEAL_PKCS11_* token")
    prove.add_argument("--out", metavar="FILE", help="write the proof here instead of stdout")
    prove.add_argument("--format", choices=("json", "tlog"), default="json",
                       help="json: the v1 proof against its batch checkpoint (default); tlog: a C2SP tlog-proof "
                       "against the newest witness-cosigned tree head of its chain")
    prove.set_defaults(handler=_prove)

    verify_proof = commands.add_parser("verify-proof", help="check an inclusion proof offline with the public "
                                       "keyring (exit 0 valid, 1 invalid, 2 usage error)")
    verify_proof.add_argument("proof", metavar="FILE", help="a proof written by auditseal prove, or an evidence bundle "
                              "written by auditseal timeline --bundle")
    verify_proof.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
    verify_proof.add_argument("--json", action="store_true")
    verify_proof.add_argument("--policy", help="C2SP tlog-policy for a tlog-proof file; default $AUDITSEAL_WITNESS_POLICY")
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
        args.loglevel = resolved_log_level(args)
        setup_logging(args.loglevel)
        return args.handler(args)
    except ConfigError as exc:
        print(f"auditseal: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in PIPELINE_EXTRA_MODULES:
            raise
        print(f"auditseal {args.command}: needs the pipeline's dependencies ({exc.name} is not installed): "
              "pip install 'auditseal[pipeline]'", file=sys.stderr)
        return EXIT_USAGE
    except AuditSealError as exc:
        print(f"auditseal: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
