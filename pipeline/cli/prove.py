"""``auditseal prove`` and ``auditseal verify-proof``: the I/O around :mod:`pipeline.verifier.proofs`.

``prove`` reads the archive (``--s3`` or ``--dir``, as ``auditseal verify`` does) object by object in
chain order until the checkpoint covering the event has been read, and prints or writes the proof;
exit 0, 1 if no archived event has the id (or no checkpoint covers it yet), 2 on a usage error.
``verify-proof`` needs only the proof file and the public keyring; exit 0 valid, 1 invalid (saying
why), 2 on a usage error. A C2SP tlog-proof file (first line ``c2sp.org/tlog-proof@v1``) is checked
against a C2SP tlog-policy instead (``--policy`` or ``$AUDITSEAL_WITNESS_POLICY``): log signature,
witness quorum and inclusion in the chain's whole-history tree (:mod:`pipeline.verifier.tlog_proofs`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pipeline.archive.container import read_archived_records
from pipeline.cli.verify import KEYRING_VARIABLE, _source
from pipeline.errors import ConfigError
from pipeline.integrity.keyring import load_keyring
from pipeline.keys.master import load_master_key_spec
from pipeline.timeline.bundle import is_bundle, verify_bundle
from pipeline.verifier.proofs import InvalidProofError, ProofFinder, ProofNotFoundError, VerifiedProof, verify_proof
from pipeline.wire.sealed import CHECKPOINT_KIND, ENTRY_KINDS, sealed_codecs


def find_proof(source, event_id: str, master_keys=None) -> dict:
    """The proof of ``event_id`` in an archive source (DirectorySource or BucketSource);
    ProofNotFoundError if it is not there or not yet covered by a checkpoint."""
    codecs = sealed_codecs()
    scope, finder, unproven = None, None, None
    for entry in source.entries():
        entry_scope = (entry.key.prefix, entry.key.topic)
        if entry_scope != scope:
            if finder is not None and finder.found_at is not None:
                unproven = finder
            scope, finder = entry_scope, ProofFinder(event_id)
        if not entry.versions:
            continue
        data = entry.first_container(master_keys)
        for row in read_archived_records(data):
            kind, record = codecs.decode(row["value"])
            location = f"{entry.name} offset {row['offset']}"
            if kind == CHECKPOINT_KIND:
                finder.checkpoint(record, location)
                if finder.done:
                    return finder.result()
            elif kind in ENTRY_KINDS:  # a tree head is no entry of the chain
                finder.entry(kind, record, location)
    if finder is not None and finder.found_at is None and unproven is not None:
        finder = unproven
    if finder is None:
        raise ProofNotFoundError(f"no archived object under {source.description}")
    return finder.result()


def _archived_values(source, master_keys):
    # (scope, location, value) of every archived record, in chain order
    for entry in source.entries():
        if not entry.versions:
            continue
        data = entry.first_container(master_keys)
        for row in read_archived_records(data):
            yield (entry.key.prefix, entry.key.topic), f"{entry.name} offset {row['offset']}", row["value"]


def find_tlog_proof(source, event_id: str, master_keys=None) -> tuple[bytes, str, int]:
    """The C2SP tlog-proof of ``event_id`` against the newest cosigned head of its chain in the archive that
    includes it (its cosignature record): (proof bytes, chain id, seq). ProofNotFoundError if the event is not
    archived, or no cosigned head of its chain covers it yet."""
    from pipeline.verifier.proofs import event_id_of
    from pipeline.verifier.tlog_proofs import build_tlog_proof
    from pipeline.wire.sealed import COSIGNATURE_KIND, EVENT_KIND

    codecs = sealed_codecs()
    hashes: dict[tuple, list[bytes]] = {}  # (scope, chain id) -> chain hashes by seq, as archived
    found: tuple[tuple, bytes, int] | None = None  # (chain key, entry value, seq)
    cosigned: tuple[bytes, int] | None = None  # the newest cosigned head covering it: (note, size)
    for scope, _, value in _archived_values(source, master_keys):
        kind, record = codecs.decode(value)
        chain = (scope, record.get("chain_id"))
        if kind in ENTRY_KINDS:
            held = hashes.setdefault(chain, [])
            if record["seq"] == len(held):
                held.append(record["hash"])
            if found is None and kind == EVENT_KIND and str(event_id_of(record["event"])) == event_id:
                found = (chain, value, record["seq"])
        elif kind == COSIGNATURE_KIND and found is not None and chain == found[0] and record["tree_size"] > found[2]:
            if cosigned is None or record["tree_size"] > cosigned[1]:
                cosigned = (record["note"], record["tree_size"])
    if found is None:
        raise ProofNotFoundError(f"no archived event has id {event_id} under {source.description}")
    chain, value, seq = found
    if cosigned is None:
        raise ProofNotFoundError(f"event {event_id} (chain {chain[1]} seq {seq}) is archived, but no cosigned tree "
                                 "head of its chain covers it yet: run the sealer with --witness-policy, or wait")
    note, size = cosigned
    if len(hashes[chain]) < size:
        raise ProofNotFoundError(f"chain {chain[1]}: the archive holds {len(hashes[chain])} contiguous entries from "
                                 f"seq 0, fewer than the cosigned head's {size}")
    proof = build_tlog_proof(value, hashes[chain][:size], note)
    return proof.to_bytes(), chain[1], seq


def prove_command(args) -> int:
    """Run ``auditseal prove``; returns the exit code."""
    masters = {key.key_id: key for key in (load_master_key_spec(p) for p in args.master_key or [])}
    if getattr(args, "format", "json") == "tlog":
        try:
            data, chain_id, seq = find_tlog_proof(_source(args), args.event_id, masters)
        except ProofNotFoundError as exc:
            print(f"auditseal prove: {exc}", file=sys.stderr)
            return 1
        if args.out:
            Path(args.out).write_bytes(data)
            print(f"auditseal prove: tlog-proof of event {args.event_id} (chain {chain_id} seq {seq}) written to "
                  f"{args.out}", file=sys.stderr)
        else:
            sys.stdout.buffer.write(data)
        return 0
    try:
        proof = find_proof(_source(args), args.event_id, masters)
    except ProofNotFoundError as exc:
        print(f"auditseal prove: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(proof, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"auditseal prove: proof of event {args.event_id} (chain {proof['entry']['chain_id']} seq "
              f"{proof['entry']['seq']}) written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


POLICY_VARIABLE = "AUDITSEAL_WITNESS_POLICY"


def verify_tlog_proof_command(args, data: bytes) -> int:
    """``auditseal verify-proof`` of a C2SP tlog-proof file; returns the exit code."""
    from pipeline.integrity.policy import load_policy
    from pipeline.verifier.tlog_proofs import verify_tlog_proof

    policy_path = getattr(args, "policy", None) or os.environ.get(POLICY_VARIABLE)
    if not policy_path:
        raise ConfigError(f"a tlog-proof is checked against a witness policy: pass --policy FILE or set {POLICY_VARIABLE}")
    policy = load_policy(policy_path)
    keyring_path = args.keyring or os.environ.get(KEYRING_VARIABLE)
    key_id = None
    try:
        verified = verify_tlog_proof(data, policy)
        if keyring_path:  # and the keyring: the head's key valid, not compromised, at the head's time
            from pipeline.verifier.tlog_proofs import check_head_key

            key_id = check_head_key(data, load_keyring(keyring_path))
    except InvalidProofError as exc:
        print(f"INVALID: {exc}")
        return 1
    what = f"event {verified.event_id}" if verified.event_id else f"{verified.kind}"
    print(f"VALID: {what} is entry seq {verified.seq} of chain {verified.chain_id}, included in the tree head of "
          f"{verified.origin} size {verified.tree_size}, cosigned by {', '.join(verified.cosigners) or 'no witness'} "
          f"(policy quorum {policy.quorum})" + (f", signed by key {key_id} of the keyring" if key_id else ""))
    return 0


def verify_proof_command(args) -> int:
    """Run ``auditseal verify-proof``; returns the exit code."""
    from pipeline.integrity.tlog_proof import TLOG_PROOF_HEADER

    try:
        data = Path(args.proof).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the proof {args.proof}: {exc.strerror}") from None
    if data.startswith(TLOG_PROOF_HEADER.encode() + b"\n"):
        return verify_tlog_proof_command(args, data)
    keyring_path = args.keyring or os.environ.get(KEYRING_VARIABLE)
    if not keyring_path:
        raise ConfigError(f"no keyring: pass --keyring FILE or set {KEYRING_VARIABLE}")
    keyring = load_keyring(keyring_path)
    try:
        document = json.loads(data)
        if is_bundle(document):
            return verify_bundle_command(args, document, keyring)
        verified = verify_proof(document, keyring)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _print_proof_verdict(args, None, f"{args.proof} is not JSON: {exc}")
    except InvalidProofError as exc:
        return _print_proof_verdict(args, None, str(exc))
    return _print_proof_verdict(args, verified, None)


def verify_bundle_command(args, bundle, keyring) -> int:
    """``auditseal verify-proof`` of a timeline's evidence bundle (:mod:`pipeline.timeline.bundle`)."""
    verdict = verify_bundle(bundle, keyring)
    if args.json:
        print(json.dumps({"proof": args.proof, **verdict.as_dict()}, indent=2))
    else:
        claim = ("the timeline found the answer complete" if verdict.complete_claimed else
                 f"the timeline found the answer INCOMPLETE ({verdict.problems_claimed} problem(s) recorded in the bundle)")
        if verdict.valid:
            print(f"VALID: {verdict.proven} of {verdict.events} events proven included in signed checkpoints, in time "
                  f"order, each matching the bundle's query; {claim} (a bundle cannot prove completeness: "
                  "auditseal verify over the archive does)")
        else:
            print(f"INVALID: {len(verdict.failures)} of {verdict.events} events fail:")
            for failure in verdict.failures[:50]:
                print(f"  {failure}")
    return 0 if verdict.valid else 1


def _print_proof_verdict(args, verified: VerifiedProof | None, problem: str | None) -> int:
    """VALID or INVALID, as a line or (``--json``) one JSON object; the exit code."""
    if args.json:
        verdict: dict[str, object] = {"proof": args.proof, "valid": verified is not None, "problem": problem}
        if verified is not None:
            checkpoint = verified.checkpoint
            verdict.update(event_id=verified.event_id, chain_id=verified.chain_id, seq=verified.seq,
                           checkpoint={"first_seq": checkpoint.first_seq, "last_seq": checkpoint.last_seq,
                                       "merkle_root": checkpoint.merkle_root.hex()},
                           key_id=verified.key.key_id)
        print(json.dumps(verdict, indent=2))
    elif verified is None:
        print(f"INVALID: {problem}")
    else:
        checkpoint = verified.checkpoint
        print(f"VALID: event {verified.event_id} is entry seq {verified.seq} of chain {verified.chain_id}, "
              f"included in checkpoint seq {checkpoint.first_seq}..{checkpoint.last_seq} "
              f"(Merkle root {checkpoint.merkle_root.hex()[:16]}…) signed by key {verified.key.key_id}")
    return 0 if verified is not None else 1
