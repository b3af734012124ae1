"""The sealer's witnessing: each chain's tree heads cosigned by the witnesses of a C2SP tlog-policy, off the
sealing path, and the cosignatures sealed into the chain's partition of ``audit.sealed``.

A chain's lane hands each committed head over with :meth:`SealerWitnessing.head_written` (a list append: no
hashing, no I/O) and goes on sealing. A thread of its own merges the heads' history-tree subtrees (hashed once, by the lane
for its own tree) and runs the :class:`~pipeline.witness.submitter.HeadSubmitter`, which submits each chain's newest head
to every witness of the policy at most once per ``interval_s`` with a consistency proof from the size that
witness holds (following a 409). Cosigned heads wait in :meth:`SealerWitnessing.take` until the chain's next
transaction (its next batch, or a write of their own when the chain is idle) seals them as ``cosignature``
records. So a slow or dead witness delays cosigning, never sealing; the delay is the metric
``auditseal_sealer_witness_lag_seconds``, and a witness's refusal of a chain's history (a rewritten, forked or
truncated history re-signed with the real key) is logged as an error and counted in
``auditseal_sealer_witness_refusals_total``: both have alert rules. What the sealer holds for a witness that lags
or is down stays bounded: O(log n) hashes per chain and witness (``auditseal_sealer_witness_held_hashes``), the
newest head, and the heads handed over since the last round.

After a restart the sealer knows its history tree at its last head only; a witness may hold an older size.
The proof from there needs the entries between, which are re-read from the chain's sealed partition
(:func:`reread_history`), from the head record of that size whose frontier gives the tree at it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from pipeline.config import KafkaSettings
from pipeline.errors import AuditSealError, ConfigError
from pipeline.integrity.history_tree import HistoryTree
from pipeline.integrity.merkle import record_leaf_hash
from pipeline.integrity.note import Note
from pipeline.integrity.policy import WitnessPolicy
from pipeline.integrity.tree_head import parse_tree_head
from pipeline.sealer.chain_sealer import SealedRecord, history_of_head
from pipeline.wire.sealed import COSIGNATURE_KIND, ENTRY_KINDS, HEAD_KIND, SealedCodecs, sealed_codecs
from pipeline.witness.client import Witness, WitnessError
from pipeline.witness.submitter import HeadSubmitter

log = logging.getLogger(__name__)

WITNESS_LAG = Gauge("auditseal_sealer_witness_lag_seconds",
                    "Age of the chain's oldest tree head not yet cosigned by every witness of the policy (0: none waits)",
                    ["chain"])
WITNESS_HELD = Gauge("auditseal_sealer_witness_held_hashes",
                     "Hashes the sealer holds to prove the chain's consistency to its witnesses: O(log n) per witness, "
                     "however far behind a witness is (a bounded backlog, not one hash per entry)", ["chain"])
WITNESS_BEHIND = Gauge("auditseal_sealer_witness_behind_entries",
                       "Entries of the chain's newest head beyond the smallest size a witness of the policy cosigned",
                       ["chain"])
COSIGNATURES = Counter("auditseal_sealer_witness_cosignatures_total",
                       "Cosigned tree heads sealed into the chain (cosignature records)", ["chain"])
REFUSALS = Counter("auditseal_sealer_witness_refusals_total",
                   "Witness refusals of a chain's history (its head does not extend what the witness cosigned: a "
                   "rewritten, forked or truncated history, or a forged head); that witness is not asked again for "
                   "the chain until the sealer restarts", ["chain", "witness"])

DEFAULT_WITNESS_INTERVAL_S = 10.0
"""How often at most a chain's newest head is submitted to the witnesses (``auditseal seal --witness-interval``)."""


@dataclass
class _Chain:
    chain_id: str
    partition: int
    origin: str
    offered: int  # the tree size of the newest head handed to the submitter
    heads: list[tuple[bytes, int, list[tuple[int, bytes]]]] = field(default_factory=list)  # (note, size, chunks)
    cosigned: list[SealedRecord] = field(default_factory=list)  # to seal with the chain's next transaction


class SealerWitnessing:
    """Runs witnessing for the chains of one sealer worker (see the module docstring)."""

    def __init__(self, policy: WitnessPolicy, *, interval_s: float = DEFAULT_WITNESS_INTERVAL_S,
                 timeout_s: float = 5.0, poll_s: float = 0.2,
                 reread: Callable[[str, int, int, int], tuple[HistoryTree, list[bytes]]] | None = None,
                 codecs: SealedCodecs | None = None) -> None:
        witnesses = [Witness(w.name, w.verifier, w.url, timeout_s) for w in policy.witnesses.values() if w.url]
        if not witnesses:
            raise ConfigError("the witness policy names no witness with a URL to submit heads to")
        self.policy = policy
        self.poll_s = poll_s
        self.codecs = codecs or sealed_codecs()
        # (chain id, partition, old size, size) -> the tree at the old size and the leaves up to size
        self.reread = reread
        self.submitter = HeadSubmitter(witnesses, min_interval_s=interval_s, on_cosigned=self._cosigned,
                                       on_refused=self._refused,
                                       history_from=self._history_from if reread is not None else None)
        self._chains: dict[str, _Chain] = {}  # origin -> chain
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unlisted: set[str] = set()

    # ---- called by the sealer (its lanes and timers): never blocks on a witness --------------------------
    def open_chain(self, chain_id: str, partition: int, origin: str | None, history: HistoryTree | None) -> None:
        """Start witnessing a chain just opened at ``history`` (nothing if it has no tree heads, or its origin is
        not a log of the policy)."""
        if origin is None or history is None:
            log.warning("%s: no history tree (a chain resumed from a version 1 checkpoint): its heads are not "
                        "witnessed", chain_id)
            return
        if origin not in self.policy.logs:
            if origin not in self._unlisted:
                self._unlisted.add(origin)
                log.warning("%s: origin %s is not a log of the witness policy: its heads are not witnessed (list every "
                            "chain of every sealed topic in the policy)", chain_id,
                         origin)
            return
        with self._lock:
            self._chains[origin] = _Chain(chain_id, partition, origin, history.size)
        self.submitter.track(origin, history)

    def close_chain(self, origin: str | None) -> None:
        """Stop witnessing a chain this worker gave up (its next owner witnesses it)."""
        with self._lock:
            chain = self._chains.pop(origin or "", None)
        if chain is not None:
            self.submitter.untrack(chain.origin)
            WITNESS_LAG.labels(chain.chain_id).set(0)

    def head_written(self, origin: str | None, head: SealedRecord, chunks: list[tuple[int, bytes]]) -> None:
        """A head record was committed; ``chunks`` are the history tree's aligned subtrees (width, root) of the
        entries since the previous head, as the chain's sealer hashed them for its own tree."""
        with self._lock:
            chain = self._chains.get(origin or "")
            if chain is None:
                return
            record = self.codecs.head.decode(head.value)
            chain.heads.append((record["note"], record["tree_size"], chunks))

    def take(self, origin: str | None) -> list[SealedRecord]:
        """The cosignature records waiting to be sealed into the chain (the caller writes them)."""
        with self._lock:
            chain = self._chains.get(origin or "")
            if chain is None or not chain.cosigned:
                return []
            taken, chain.cosigned = chain.cosigned, []
        return taken

    def waiting(self, origin: str | None) -> bool:
        """Whether cosignature records wait for the chain's next transaction."""
        with self._lock:
            chain = self._chains.get(origin or "")
            return chain is not None and bool(chain.cosigned)

    # ---- the thread ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the submission rounds in a daemon thread until :meth:`stop`."""
        def run() -> None:
            while not self._stop.wait(self.poll_s):
                try:
                    self.round()
                except Exception:  # a bug must not stop witnessing silently: logged, and the next round goes on
                    log.exception("witness submission round failed")

        self._thread = threading.Thread(target=run, name="sealer-witnessing", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a submission under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def round(self) -> None:
        """Offer the heads written since the last round, submit what is due, refresh the lag gauges."""
        with self._lock:
            work = [(chain, chain.heads) for chain in self._chains.values() if chain.heads]
            for chain, _ in work:
                chain.heads = []
        for chain, heads in work:
            self._offer(chain, heads)
        self.submitter.submit_due()
        with self._lock:
            chains = list(self._chains.values())
        for chain in chains:
            try:
                WITNESS_LAG.labels(chain.chain_id).set(self.submitter.lag_seconds(chain.origin))
                WITNESS_HELD.labels(chain.chain_id).set(self.submitter.held_hashes(chain.origin))
                WITNESS_BEHIND.labels(chain.chain_id).set(self.submitter.behind(chain.origin))
            except KeyError:
                pass  # given up meanwhile

    def _offer(self, chain: _Chain, heads: list[tuple[bytes, int, list[tuple[int, bytes]]]]) -> None:
        chunks: list[tuple[int, bytes]] = []
        for _, _, head_chunks in heads:
            chunks.extend(head_chunks)
        note, size, _ = heads[-1]
        try:
            # no hashing of entries here: the sealer's own subtree roots are merged into the witnesses' ranges
            self.submitter.offer_chunks(chain.origin, note, chunks)
        except (KeyError, ValueError) as exc:
            # not the size the submitter expects (a head the lane did not hand over): start again from this head,
            # re-reading the chain for a witness that holds an older size
            log.warning("%s: witnessing restarts at tree size %d: %s", chain.chain_id, size, exc)
            return
        chain.offered = size

    def _history_from(self, origin: str, old: int, size: int) -> tuple[HistoryTree, list[bytes]]:
        with self._lock:
            chain = self._chains.get(origin)
        if chain is None or self.reread is None:
            raise AuditSealError(f"{origin}: no longer witnessed by this worker")
        log.info("%s: a witness holds tree size %d, before this worker's %d: re-reading the chain from there",
                 chain.chain_id, old, size)
        return self.reread(chain.chain_id, chain.partition, old, size)

    def _cosigned(self, origin: str, note: Note) -> None:
        head = parse_tree_head(note.text)
        with self._lock:
            chain = self._chains.get(origin)
            if chain is None:
                return
            value = self.codecs.cosignature.encode({
                "chain_id": chain.chain_id, "tree_size": head.size, "root_hash": head.root_hash,
                "received_at_micros": time.time_ns() // 1000, "note": note.to_bytes(),
            })
            # only the newest cosigned head of the chain needs sealing: it covers every smaller size
            chain.cosigned = [SealedRecord(COSIGNATURE_KIND, value)]
            chain_id = chain.chain_id
        COSIGNATURES.labels(chain_id).inc()

    def _refused(self, origin: str, error: WitnessError) -> None:
        with self._lock:
            chain = self._chains.get(origin)
        chain_id = chain.chain_id if chain is not None else origin
        REFUSALS.labels(chain_id, error.witness).inc()
        log.error("%s: WITNESS REFUSED the chain's history: %s. The head the sealer signed does not extend what "
                  "the witness cosigned before (a rewritten, forked or truncated history, or a forged head); it is "
                  "not submitted to that witness again", chain_id, error)


def reread_history(settings: KafkaSettings, topic: str, partition: int, chain_id: str, group_id: str,
                   timeout: float = 60.0) -> Callable[[int, int], tuple[HistoryTree, list[bytes]]]:
    """How to re-read one chain: ``(old, size) -> (tree at old, leaf hashes of seq old..size-1)``, from the head
    record of size ``old`` on the chain's partition (its frontier, checked against its root) and the entries
    after it. AuditSealError if that head or those entries are not on the partition."""
    from confluent_kafka import KafkaException, TopicPartition

    from pipeline.sealer.output import _read, tail_consumer

    codecs = sealed_codecs()

    def read(old: int, size: int) -> tuple[HistoryTree, list[bytes]]:
        consumer = tail_consumer(settings, group_id)
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            window = 1024
            while True:
                start = max(low, high - window)
                records = _read(consumer, topic, partition, start, timeout)
                found = _history_in(records, codecs, chain_id, old, size)
                if found is not None:
                    return found
                if start == low:
                    raise AuditSealError(f"{chain_id}: no head record of tree size {old} with the entries after it "
                                         f"on {topic}[{partition}]")
                window *= 4
        except KafkaException as exc:
            raise AuditSealError(f"{chain_id}: re-reading {topic}[{partition}] failed: {exc.args[0].str()}") from None
        finally:
            consumer.close()

    return read


def _history_in(records, codecs: SealedCodecs, chain_id: str, old: int, size: int):
    tree, hashes = None, []
    for _, value in records:
        try:
            kind, record = codecs.decode(value)
        except (AuditSealError, ValueError, TypeError, IndexError, EOFError):
            continue  # a stray: the sealer reported it when it opened the chain
        if record.get("chain_id") != chain_id:
            continue
        if tree is None:
            if kind == HEAD_KIND and record["tree_size"] == old:
                tree = history_of_head(record, old)
            continue
        if kind in ENTRY_KINDS and old + len(hashes) == record["seq"] < size:
            hashes.append(record["hash"])
    if tree is None or len(hashes) != size - old:
        return None
    return tree, [record_leaf_hash(value) for value in hashes]
