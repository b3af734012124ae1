"""``auditseal keys init | rotate | retire | revoke | export``: the signing keys' lifecycle.

Keys live where the sealer finds them (:mod:`pipeline.keys.store`: a PKCS#11 token, or a directory of key
files); the keyring (``--keyring`` or ``$AUDITSEAL_KEYRING``) says which key signs when, and is replaced
atomically. Every operation is recorded as an event in ``audit.raw`` (:mod:`pipeline.keys.events`), with
the Kafka identity of the ``AUDITSEAL_*`` variables, checked before anything changes.

Rotation without downtime: ``rotate`` makes the new key in the store, then gives the keyring the new key
with a window opening ``--lead`` seconds later (default 10) and the old key's window closing at the same
instant. Running sealers re-read the keyring at each checkpoint and switch at that instant; verifiers
given the new keyring before then accept both keys' checkpoints, each inside its own window.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.errors import AuditSealError, ConfigError

EXIT_OK = 0
DEFAULT_LEAD_S = 10.0
DEFAULT_NOTE_NAME = "auditseal-sealer"


class KeyOperationError(AuditSealError):
    """A key operation that was refused (exit 1): it would break the keyring's rules, or could not be recorded."""


def parse_time(text: str) -> int:
    """Microseconds since the epoch from ``now``, an ISO 8601 time with a zone (``2026-12-01T19:00:00Z``)
    or an integer of microseconds; ConfigError otherwise."""
    if text == "now":
        return time.time_ns() // 1000
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"expected a time like 2026-12-01T19:00:00Z, 'now' or microseconds, found {text!r}") from None
    if moment.tzinfo is None:
        raise ConfigError(f"time {text!r} has no time zone: add Z or +HH:MM")
    return int(moment.timestamp() * 1_000_000)


def _format_time(micros: int | None) -> str:
    if micros is None:
        return "open"
    return datetime.fromtimestamp(micros / 1_000_000, UTC).isoformat(timespec="milliseconds")


def _keyring_path(args: argparse.Namespace) -> Path:
    path = args.keyring or os.environ.get("AUDITSEAL_KEYRING")
    if not path:
        raise ConfigError("no keyring: pass --keyring or set AUDITSEAL_KEYRING")
    return Path(path)


def _load(path: Path, *, may_be_missing: bool = False):
    from pipeline.integrity.keyring import Keyring, load_keyring

    if may_be_missing and not path.exists():
        return Keyring()
    return load_keyring(path)


def _recorder():
    from pipeline.keys.events import KeyEventRecorder

    # checked before the operation: a refused identity changes nothing
    return KeyEventRecorder()


def _finish(recorder, action: str, resource_type: str, key_id: str, attributes: dict[str, str]) -> None:
    try:
        event_id = recorder.record(action, resource_type, key_id, attributes)
    except AuditSealError as exc:
        raise KeyOperationError(f"{action} {key_id} was applied but its event could not be recorded "
                                f"in the log: {exc}; record it by hand") from None
    finally:
        try:
            recorder.close()
        except AuditSealError:
            pass  # the flush above already reported the delivery of the one event that matters
    print(f"recorded as event {event_id}", file=sys.stderr)


def _init(args: argparse.Namespace) -> int:
    if args.master:
        return _init_master(args)
    from pipeline.integrity.keyring import save_keyring
    from pipeline.keys.store import SigningKeyStore

    path = _keyring_path(args)
    keyring = _load(path, may_be_missing=True)
    if keyring.active is not None:
        raise KeyOperationError(f"the keyring {path} already has an active key {keyring.active.key_id}: "
                                "use `auditseal keys rotate` to replace it")
    store = SigningKeyStore()
    recorder = _recorder()
    at = parse_time(args.at) if args.at else time.time_ns() // 1000
    key = store.generate()
    save_keyring(keyring.rotate(key.public_key, at), path)
    print(f"key {key.key_id} created in {store.describe()}; it signs from {_format_time(at)}")
    _finish(recorder, "key.init", "signing_key", key.key_id,
            {"store": store.describe(), "valid_from": _format_time(at), "keyring": str(path)})
    return EXIT_OK


def _init_master(args: argparse.Namespace) -> int:
    import secrets

    from pipeline.keys.pkcs11 import DEFAULT_MASTER_LABEL, Pkcs11Config, open_token

    config = Pkcs11Config.from_env()
    if config is None:
        raise ConfigError("keys init --master makes the master key in a PKCS#11 token: set AUDITSEAL_PKCS11_MODULE "
                          "and the token variables (for a master key file: auditseal sink --generate-master-key)")
    recorder = _recorder()
    label = args.label or DEFAULT_MASTER_LABEL
    key_id = args.key_id or "mk-" + secrets.token_hex(8)
    master = open_token(config).generate_master_key(label, key_id)
    print(f"master key {master.key_id} created in token {config.token!r} (label {label!r}); "
          f"use it with --master-key pkcs11:{label}")
    _finish(recorder, "master_key.init", "master_key", master.key_id, {"token": config.token, "label": label})
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    from pipeline.integrity.errors import KeyringError
    from pipeline.integrity.keyring import save_keyring
    from pipeline.keys.store import SigningKeyStore

    path = _keyring_path(args)
    keyring = _load(path)
    previous = keyring.active
    if previous is None:
        raise KeyOperationError(f"the keyring {path} has no active key to rotate from: use `auditseal keys init`")
    explicit = parse_time(args.at) if args.at else None
    if explicit is not None:
        _check_future(explicit)
    store = SigningKeyStore()
    recorder = _recorder()
    key = store.generate()
    # the switch is timed from the moment the keyring is written, not from the start of the command: the
    # token login, the key generation and the log's check can take seconds on a busy machine, and a
    # switch that passed before the keyring said so would make every sealer's checkpoints signed with
    # the old key since then fall outside its window
    def timed() -> int:
        return explicit if explicit is not None else time.time_ns() // 1000 + int(args.lead * 1_000_000)

    policy_path = args.witness_policy or os.environ.get("AUDITSEAL_WITNESS_POLICY")
    try:
        _check_future(timed())
        keyring.rotate(key.public_key, timed())  # refused here, before the policy changes, if it breaks a rule
        # the witness policy gains the new key before the keyring does (and so before any sealer co-signs with
        # it, let alone switches): a verifier or submitter reading it never meets a head of a key it lacks
        added = _add_to_policy(Path(policy_path), previous.public_key, key.public_key) if policy_path else 0
        at = timed()
        _check_future(at)
        rotated = keyring.rotate(key.public_key, at)
    except (KeyringError, KeyOperationError) as exc:
        store.destroy(key.key_id)  # never used, never published
        raise KeyOperationError(str(exc)) from None
    except AuditSealError:
        store.destroy(key.key_id)
        raise
    save_keyring(rotated, path)
    print(f"key {key.key_id} created in {store.describe()}; it signs from {_format_time(at)}, "
          f"when key {previous.key_id} stops; until then it co-signs tree heads")
    if policy_path:
        print(f"witness policy {policy_path}: {added} log(s) gained the new key beside the old one"
              + ("" if added else " (none listed the old key)"))
    attributes = {"previous_key_id": previous.key_id, "switch_at": _format_time(at), "keyring": str(path)}
    if policy_path:
        attributes |= {"witness_policy": str(policy_path), "witness_policy_logs_added": str(added)}
    _finish(recorder, "key.rotate", "signing_key", key.key_id, attributes)
    return EXIT_OK


def _add_to_policy(path: Path, old_key, new_key) -> int:
    """Add a log line of ``new_key`` beside each of ``old_key`` in the tlog-policy ``path`` (replaced
    atomically); the number of lines added. PolicyError (exit 2) if it cannot be read or parsed."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from pipeline.integrity.errors import PolicyError
    from pipeline.integrity.policy import with_log_key_added

    raw = PublicFormat.Raw
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"{path}: cannot read the witness policy: {error}") from None
    updated, added = with_log_key_added(text, old_key.public_bytes(Encoding.Raw, raw),
                                        new_key.public_bytes(Encoding.Raw, raw), str(path))
    if added:
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(updated, encoding="utf-8")
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    return added


def _check_future(at: int) -> None:
    if at <= time.time_ns() // 1000:
        raise KeyOperationError(f"rotation time {_format_time(at)} is not in the future: a sealer could already "
                                "have signed with the old key after it")


def _retire(args: argparse.Namespace) -> int:
    from pipeline.integrity.errors import KeyringError
    from pipeline.integrity.keyring import save_keyring
    from pipeline.keys.store import SigningKeyStore

    path = _keyring_path(args)
    keyring = _load(path)
    now = time.time_ns() // 1000
    at = parse_time(args.at) if args.at else now
    try:
        retired = keyring.retire(args.key_id, at)
    except KeyringError as exc:
        raise KeyOperationError(str(exc)) from None
    until = retired.get(args.key_id).valid_until_micros
    if args.destroy and until > now:
        raise KeyOperationError(f"key {args.key_id} may sign until {_format_time(until)}: destroy it after that")
    store = SigningKeyStore() if args.destroy else None
    recorder = _recorder()
    save_keyring(retired, path)
    print(f"key {args.key_id} signs nothing from {_format_time(until)}")
    attributes = {"valid_until": _format_time(until), "keyring": str(path)}
    if store is not None:
        outcome = store.destroy(args.key_id)
        print(outcome)
        attributes["destroyed"] = outcome
    _finish(recorder, "key.retire", "signing_key", args.key_id, attributes)
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from pipeline.integrity.errors import KeyringError
    from pipeline.integrity.keyring import save_keyring

    path = _keyring_path(args)
    keyring = _load(path)
    since = parse_time(args.compromised_since)
    try:
        revoked = keyring.revoke(args.key_id, since)
    except KeyringError as exc:
        raise KeyOperationError(str(exc)) from None
    recorder = _recorder()
    save_keyring(revoked, path)
    entry = revoked.get(args.key_id)
    print(f"key {args.key_id} revoked: verifiers flag every checkpoint it signed from "
          f"{_format_time(entry.compromised_since_micros)}")
    if revoked.active is not None and revoked.active.key_id == args.key_id:
        print(f"warning: key {args.key_id} is the active key; sealers refuse to sign with it from now on, "
              "so rotate to a new key (auditseal keys rotate)", file=sys.stderr)
    _finish(recorder, "key.revoke", "signing_key", args.key_id,
            {"compromised_since": _format_time(entry.compromised_since_micros), "keyring": str(path)})
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from pipeline.keys.export import keyring_export

    path = _keyring_path(args)
    document = keyring_export(_load(path), args.name)
    recorder = _recorder()
    text = json.dumps(document, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    elif args.json:
        sys.stdout.write(text)
    else:
        for item in document["keys"]:
            state = "compromised since " + _format_time(item["compromised_since_micros"]) \
                if item["compromised_since_micros"] is not None else "ok"
            print(f"{item['key_id']}  [{_format_time(item['valid_from_micros'])}, "
                  f"{_format_time(item['valid_until_micros'])})  {state}")
            print(f"    {item['verifier_key']}")
    _finish(recorder, "key.export", "keyring", str(path), {"keys": ",".join(i["key_id"] for i in document["keys"])})
    return EXIT_OK


def register(commands) -> None:
    """Add ``keys`` and its actions to the ``auditseal`` subcommands."""
    keys = commands.add_parser("keys", help="create, rotate, retire, revoke and export the sealer's signing keys "
                               "(PKCS#11 token or files)")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def action(name: str, text: str, handler) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--keyring", help="public keyring (JSON); default $AUDITSEAL_KEYRING")
        sub.set_defaults(handler=handler)
        return sub

    init = action("init", "create the first signing key (or, with --master, the archive's master key)", _init)
    init.add_argument("--at", metavar="TIME", help="when the key starts signing (default now)")
    init.add_argument("--master", action="store_true", help="create an AES-256 master key in the token instead")
    init.add_argument("--label", help="with --master: its label (default auditseal-master)")
    init.add_argument("--key-id", help="with --master: the id manifests name (default mk-<random>)")
    rotate = action("rotate", "create a new key and switch to it at a given instant, without downtime", _rotate)
    when = rotate.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="the switch instant (ISO 8601 with zone, or microseconds)")
    when.add_argument("--lead", type=float, default=DEFAULT_LEAD_S, metavar="SECONDS",
                      help=f"switch this long from now (default {DEFAULT_LEAD_S:g}): time for every sealer "
                           "and verifier to get the new keyring")
    rotate.add_argument("--witness-policy", metavar="FILE",
                        help="tlog-policy to give the new key, beside the old one, for each log the old key signs "
                             "(default $AUDITSEAL_WITNESS_POLICY; written before the keyring)")
    retire = action("retire", "close a key's window (and optionally destroy its private half)", _retire)
    retire.add_argument("key_id", metavar="KEY_ID")
    retire.add_argument("--at", metavar="TIME", help="when it stops signing (default now)")
    retire.add_argument("--destroy", action="store_true", help="also destroy the private key in the token or file")
    revoke = action("revoke", "record that a key was compromised: verifiers flag what it signed from then on",
                    _revoke)
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.add_argument("--compromised-since", required=True, metavar="TIME",
                        help="the earliest time the key may have been in other hands")
    export = action("export", "print the public keyring and each key's C2SP verifier key", _export)
    export.add_argument("--name", default=DEFAULT_NOTE_NAME, help="key name of the C2SP verifier keys "
                        f"(default {DEFAULT_NOTE_NAME})")
    export.add_argument("--json", action="store_true")
    export.add_argument("--out", metavar="FILE", help="write the JSON export here")
