"""``auditseal reconcile`` (the service) and ``auditseal verify --reconcile`` (one window, a report)."""

from __future__ import annotations

import json
import os
import time

from pipeline.config import KafkaSettings
from pipeline.errors import ConfigError
from pipeline.wire.topics import RECONCILIATION_TOPIC, SOURCE_TOPICS, sealed_topic_of

KEY_VARIABLE = "AUDITSEAL_RECONCILER_KEY"


# the service leaves out its own output: attesting the sealing of its attestations would be an attestation per
# round forever; `verify --reconcile` (every source by default) checks it on demand
SERVICE_SOURCES = tuple(topic for topic in SOURCE_TOPICS if topic != RECONCILIATION_TOPIC)


def _pairs(sources: list[str] | None, default: tuple[str, ...] = SOURCE_TOPICS) -> list[tuple[str, str]]:
    # TOPIC (sealed into its twin, sealed_topic_of) or SOURCE=SEALED for topics of other names
    pairs = []
    for source in sources or default:
        raw, _, sealed = source.partition("=")
        if not raw or (source.endswith("=") and not sealed):
            raise ConfigError(f"--source {source!r}: expected TOPIC or SOURCE=SEALED")
        pairs.append((raw, sealed or sealed_topic_of(raw)))
    return pairs


def reconcile_command(args) -> int:
    """``auditseal reconcile``: run until stopped (``--once``: one round); exit 1 if a round found a mismatch."""
    from pipeline.integrity.keyring import load_signing_key
    from pipeline.metrics import serve_metrics
    from pipeline.preflight import check_kafka
    from pipeline.reconciler.daemon import run_reconciler

    key_path = args.signing_key or os.environ.get(KEY_VARIABLE)
    if not key_path:
        raise ConfigError(f"no signing key: pass --signing-key FILE (Ed25519 PEM) or set {KEY_VARIABLE}")
    if args.interval <= 0:
        raise ConfigError(f"--interval {args.interval:g}: must be more than 0 seconds")
    signer = load_signing_key(key_path)
    settings = KafkaSettings.from_env()
    pairs = _pairs(args.source, SERVICE_SOURCES)
    check_kafka(settings, [topic for pair in pairs for topic in pair] + [args.output_topic])
    serve_metrics(args.metrics_port, args.metrics_addr)
    found = run_reconciler(settings, signer, pairs=pairs, output_topic=args.output_topic, interval=args.interval,
                           once=args.once)
    return 1 if found else 0


def verify_reconcile_command(args) -> int:
    """``auditseal verify --reconcile``: every record sealed in the window compared with its source record, as the
    reconciler role; exit 0 when all match, 1 on any mismatch."""
    from pipeline.access.record import record_access
    from pipeline.preflight import check_kafka
    from pipeline.reconciler.reconciler import reconcile_window

    if args.s3 or args.dir:
        raise ConfigError("--reconcile compares the Kafka topics; give it without --s3/--dir (run verify twice)")
    if args.since is not None and args.since <= 0:
        raise ConfigError(f"--since {args.since:g}: must be more than 0 seconds")
    settings = KafkaSettings.from_env()
    pairs = _pairs(args.source)
    check_kafka(settings, [topic for pair in pairs for topic in pair])
    since = None if args.since is None else int((time.time() - args.since) * 1_000_000)
    rounds = [r for source, sealed in pairs
              for r in reconcile_window(settings, source_topic=source, sealed_topic=sealed, since_micros=since)]
    mismatches = [m for r in rounds for m in r.mismatches]
    entries = sum(r.entries for r in rounds)
    unverifiable = sum(r.unverifiable for r in rounds)
    record_access(action="topic.reconcile", resource={"type": "kafka.topics", "id": ",".join(s for s, _ in pairs)},
                  status="FAILURE" if mismatches else "SUCCESS",
                  reason=f"{len(mismatches)} mismatch(es)" if mismatches else None,
                  attributes={"entries": str(entries), "window_s": str(args.since)})
    if args.json:
        print(json.dumps({"reconciled": not mismatches, "entries": entries, "unverifiable": unverifiable,
                          "chains": sorted({r.chain_id for r in rounds}),
                          "mismatches": [{"chain_id": m.chain_id, "kind": m.kind, "source_offset": m.source_offset,
                                          "sealed_offset": m.sealed_offset, "detail": m.detail}
                                         for m in mismatches]}, indent=2))
    else:
        window = "everything retained" if args.since is None else f"the last {args.since:g} s"
        print(f"reconciled {entries} sealed entr{'y' if entries == 1 else 'ies'} of "
              f"{len({r.chain_id for r in rounds})} chain(s) ({window}) with "
              f"{', '.join(s for s, _ in pairs)}; {unverifiable} older than their source's retention")
        for mismatch in mismatches:
            print(f"  MISMATCH {mismatch.describe()}")
        print("RECONCILED: every sealed entry says what its source holds" if not mismatches
              else f"MISMATCHES: {len(mismatches)}")
    return 1 if mismatches else 0


def register(commands) -> None:
    """Add ``auditseal reconcile``."""
    reconcile = commands.add_parser("reconcile", help="check continuously that every source record is sealed with "
                                    "the same bytes at its offset; signed attestations to audit.reconciliation")
    reconcile.add_argument("--signing-key", help=f"the reconciler's own Ed25519 key (PEM); default ${KEY_VARIABLE}")
    reconcile.add_argument("--source", action="append", metavar="TOPIC",
                           help=f"a source topic to reconcile with its sealed twin, or SOURCE=SEALED (repeatable; "
                           f"default {', '.join(SERVICE_SOURCES)})")
    reconcile.add_argument("--output-topic", default=RECONCILIATION_TOPIC)
    reconcile.add_argument("--interval", type=float, default=5.0, help="seconds between rounds (default 5)")
    reconcile.add_argument("--once", action="store_true", help="one round, then exit")
    reconcile.add_argument("--metrics-port", type=int, default=9468, help="Prometheus endpoint port (0: off)")
    reconcile.add_argument("--metrics-addr", help="address of the endpoint (default $AUDITSEAL_METRICS_ADDR)")
    reconcile.set_defaults(handler=reconcile_command)
