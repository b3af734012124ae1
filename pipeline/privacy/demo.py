"""The demo's erasure step: a simulated user's protected events, revealed, erased, and shown gone.

Run by ``auditseal demo`` (:mod:`pipeline.dev.demo`) once the archive has verified: it needs the
demo's running sealer, sink and access auditor, and the demo's helpers to run commands and to wait
until everything is sealed and archived.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import AuditSealError

USER_EVENTS = 20


class PrivacyDemoError(AuditSealError):
    """A step of the erasure demo did not do what it should."""


def erase_demo_user(stack, run: Callable, settle: Callable[[], None], archive_uri: str, out: Path) -> None:
    """Emit protected events of one simulated user, reveal one, erase the user, verify, reveal again, and
    scan the stack folder for the user's values and destroyed key; PrivacyDemoError if any step fails."""
    from pipeline.archive.encryption import load_master_key
    from pipeline.privacy.crypto import unwrap_key
    from pipeline.privacy.keystore import keystore_from_env
    from pipeline.privacy.residue import scan

    stamp = int(time.time())
    user = {"id": f"demo-user-{stamp}@example.org", "type": "USER", "source_ip": f"2001:db8::de:{stamp % 65536:x}",
            "user_agent": f"DemoBrowser/{stamp}", "session_id": f"demo-session-{stamp}"}
    lines = "".join(json.dumps({"actor": user, "action": "profile.read", "resource": {"type": "profile", "id": f"p-{n}"},
                                "outcome": {"status": "SUCCESS"}, "source_service": "accounts"}) + "\n"
                    for n in range(USER_EVENTS))
    emitted = run(stack, "producer", ["emit", "--protect", "--stdin"], stdin=lines)
    if emitted.returncode != 0:
        raise PrivacyDemoError(f"emit --protect failed: {emitted.stderr.strip()}")
    print(f"    {USER_EVENTS} events of {user['id']} emitted with --protect (actor id, IP, user agent, session "
          "encrypted under the user's own key, pseudonyms in their place)")
    settle()
    with keystore_from_env(stack.env("investigator")) as store:
        pseudonym = store.pseudonym_key().subject_pseudonym(user["id"])
        wrapped = list(store.wrapped_keys(pseudonym).values())
    kek = load_master_key(Path(stack.env("investigator")["AUDITSEAL_KEK_FILE"]))
    destroyed = wrapped + [unwrap_key(kek.key, w, "demo key", kek.key_id) for w in wrapped]
    import base64

    destroyed += [base64.b64encode(d) for d in destroyed]
    event_id = _an_event_of(stack, pseudonym, archive_uri)
    shown = run(stack, "investigator", ["reveal", event_id, "--reason", "demo case 1", "--s3", archive_uri])
    print("    investigator reveals one of them (the reveal is recorded in the log first):")
    print("\n".join("      " + line for line in shown.stdout.strip().splitlines()))
    if shown.returncode != 0:
        raise PrivacyDemoError(f"reveal failed: {shown.stderr.strip()}")

    certificate = out / f"erasure-{pseudonym}.json"
    erased = run(stack, "privacy", ["erase", user["id"], "--reason", "GDPR Art. 17 request (demo)",
                                    "--certificate", str(certificate)])
    if erased.returncode != 0:
        raise PrivacyDemoError(f"erase failed: {erased.stderr.strip()}")
    print("    " + erased.stdout.strip())
    settle()  # the erasure record is sealed and archived like any event
    verified = run(stack, "verifier", ["verify", "--s3", archive_uri])
    last = verified.stdout.strip().splitlines()[-1] if verified.stdout.strip() else verified.stderr.strip()
    print(f"    verify after the erasure: {last}")
    if verified.returncode != 0:
        raise PrivacyDemoError("the archive does not verify after the erasure")
    again = run(stack, "investigator", ["reveal", event_id, "--reason", "demo case 1", "--s3", archive_uri])
    print("    reveal again:")
    print("\n".join("      " + line for line in again.stdout.strip().splitlines()[:3]))
    values = [v.encode() for k, v in user.items() if k != "type"]
    damaged: list[str] = []  # objects tests damaged on purpose, if `make test` ran on this stack
    found = scan([stack.root], values + destroyed, damaged)
    print(f"    scan of every file under {stack.root} (Kafka segments decompressed, archive blocks inflated): "
          f"{'NOTHING of the user and its key is left' if not found else 'FOUND ' + str(sorted(found))[:200]}")
    if found:
        raise PrivacyDemoError(f"the erased user's data is still on disk: {found}")
    bucket, _, prefix = archive_uri.removeprefix("s3://").partition("/")
    ours = [path for path in damaged if f"/{bucket}/{prefix}" in path]
    if ours:
        raise PrivacyDemoError(f"archived objects of the demo that do not read whole, so the scan cannot vouch "
                               f"for them: {ours}")
    if damaged:
        print(f"    ({len(damaged)} damaged objects of earlier test runs on this stack searched as far as they read)")


def _an_event_of(stack, pseudonym: str, archive_uri: str) -> str:
    """The id of one archived event whose actor is ``pseudonym`` (read as the investigator)."""
    import os
    from argparse import Namespace

    from pipeline.archive.container import read_archived_records
    from pipeline.cli.verify import _source
    from pipeline.wire.codec import default_codec
    from pipeline.wire.sealed import EVENT_KIND, sealed_codecs

    saved = dict(os.environ)
    os.environ.update(stack.env("investigator"))
    try:
        source = _source(Namespace(s3=archive_uri, dir=None))
        codecs, codec = sealed_codecs(), default_codec()
        for entry in source.entries():
            if not entry.versions:
                continue
            for row in read_archived_records(entry.versions[0].read()):
                if codecs.kind_of(row["value"]) == EVENT_KIND:
                    event = codec.decode(codecs.decode(row["value"])[1]["event"])
                    if event["actor"]["id"] == pseudonym:
                        return str(event["event_id"])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    raise PrivacyDemoError(f"no archived event of {pseudonym}")
