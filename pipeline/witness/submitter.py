"""Getting each chain's newest tree head cosigned, off the sealing path.

The sealer hands a head over with :meth:`HeadSubmitter.offer` (no I/O: it only records the head and the
leaves appended since the previous one) and goes on sealing; a background thread (or a caller of
:meth:`HeadSubmitter.submit_due`) submits the newest head of each chain to every witness at most once per
``min_interval_s``. So a witness that is down or slow delays cosigning, never sealing: the delay is
:meth:`HeadSubmitter.lag_seconds`, the age of the oldest head no witness quorum has cosigned yet.

Per chain and witness the submitter keeps the history tree's compact range at the size the witness holds and
the compact range of the leaves since (:class:`pipeline.integrity.history_tree.AppendedRange`): O(log n) hashes,
however many heads a witness that lags or is down has missed, and all a consistency proof from that size needs.
Only a witness that holds a size the submitter has no state for (after a sealer restart) needs the chain
re-read (``history_from``). A witness that refuses a head (422: the
history does not extend what it cosigned; or it holds a larger tree than the head) is reported through
``on_refused`` and not asked again for that chain: that is an alarm for a human, not a retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.errors import AuditSealError
from pipeline.integrity.history_tree import (
    AppendedRange,
    HistoryTree,
    consistency_proof_from,
    leaf_chunks,
)
from pipeline.integrity.note import Note, parse_note
from pipeline.integrity.tree_head import parse_tree_head
from pipeline.witness.client import (
    Witness,
    WitnessError,
    WitnessRefusedError,
    WitnessUnavailableError,
    cosign_head,
)

log = logging.getLogger(__name__)


@dataclass
class _WitnessView:
    """What one witness holds of a chain, as far as the submitter knows, and what it lacks since: O(log n)."""

    at: HistoryTree  # the chain's tree at the size the witness holds (or, before it answered, the size tracked at)
    since: AppendedRange  # the compact range of the leaves after at.size, up to the chain's newest head
    confirmed: bool = False  # the witness answered for this size (it may hold an older one until then)


@dataclass
class _ChainHeads:
    views: dict[str, _WitnessView]
    latest: bytes | None = None
    latest_size: int = 0
    waiting_since: float | None = None  # when the oldest head not yet cosigned by every witness was offered
    refused: dict[str, str] = field(default_factory=dict)  # witness name -> why it refused this chain
    last_attempt: float = float("-inf")
    cosigned: Note | None = None  # the newest head with the cosignatures gathered for it
    tail: AppendedRange | None = None  # while a head is being submitted: the leaves offered after it


class HeadSubmitter:
    """Submits each chain's newest head to `witnesses`, at most once per `min_interval_s` per chain."""

    def __init__(self, witnesses: Sequence[Witness], *, min_interval_s: float = 1.0,
                 on_cosigned: Callable[[str, Note], None] | None = None,
                 on_refused: Callable[[str, WitnessError], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 history_from: Callable[[str, int, int], tuple[HistoryTree, list[bytes]]] | None = None) -> None:
        self.witnesses = list(witnesses)
        self.min_interval_s = min_interval_s
        self.on_cosigned = on_cosigned
        self.on_refused = on_refused
        self.clock = clock
        # (origin, old size, size) -> the tree at the old size and the leaves from it to size: how to prove from a
        # size this submitter holds no state for (a witness ahead of or behind the size it started at after a
        # restart; the sealer re-reads its chain)
        self.history_from = history_from
        self._chains: dict[str, _ChainHeads] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def track(self, origin: str, tree: HistoryTree) -> None:
        """Start a chain at the tree it has now (after a restart: the frontier of its last head)."""
        with self._lock:
            self._chains[origin] = _ChainHeads(
                views={w.name: _WitnessView(tree, AppendedRange(tree.size)) for w in self.witnesses},
                latest_size=tree.size)

    def offer(self, origin: str, signed_head: bytes, new_leaves: Sequence[bytes]) -> None:
        """Record the chain's newest signed head and the leaf hashes appended since the previous offer.

        No I/O, never blocks on a witness; the leaves are folded into one compact range per witness (O(log n)
        hashes each), so a witness that is down for any number of heads costs no more memory. Raises
        ValueError if the head's size is not the tree's.
        """
        self._offer(origin, signed_head, len(new_leaves), lambda position: leaf_chunks(position, new_leaves))

    def offer_chunks(self, origin: str, signed_head: bytes, chunks: Sequence[tuple[int, bytes]]) -> None:
        """:meth:`offer` with the new entries as (width, root) of the history tree's aligned perfect subtrees
        from the previous head's size (`history_tree.record_chunks`), as the sealer already hashed them for its
        own tree: no hashing here at all."""
        self._offer(origin, signed_head, sum(width for width, _ in chunks), lambda position: list(chunks))

    def _offer(self, origin: str, signed_head: bytes, count: int,
               chunks_at: Callable[[int], list[tuple[int, bytes]]]) -> None:
        size = parse_tree_head(parse_note(signed_head).text).size
        with self._lock:
            latest_size = self._chains[origin].latest_size
        if size != latest_size + count:
            raise ValueError(f"{origin}: a head of size {size} after size {latest_size} "
                             f"needs {size - latest_size} new leaves, found {count}")
        chunks = chunks_at(latest_size) if count else []  # hashed outside the lock, once for every witness
        with self._lock:
            chain = self._chains[origin]
            if chain.latest_size != latest_size:
                raise ValueError(f"{origin}: offered concurrently at size {latest_size}")
            if chunks:
                for view in chain.views.values():
                    view.since = view.since.with_chunks(chunks)
                if chain.tail is not None:
                    chain.tail = chain.tail.with_chunks(chunks)
            chain.latest, chain.latest_size = signed_head, size
            # a heartbeat of a size every witness already holds waits for nothing (it is not submitted)
            if chain.waiting_since is None and any(self._wants(chain, w) for w in self.witnesses):
                chain.waiting_since = self.clock()

    def untrack(self, origin: str) -> None:
        """Forget a chain (its sealer gave it up): nothing more is submitted for it."""
        with self._lock:
            self._chains.pop(origin, None)

    def origins(self) -> list[str]:
        """The chains tracked now."""
        with self._lock:
            return list(self._chains)

    def lag_seconds(self, origin: str) -> float:
        """How long the oldest head not yet cosigned by every witness has waited (0 if none waits)."""
        with self._lock:
            since = self._chains[origin].waiting_since
        return 0.0 if since is None else self.clock() - since

    def held_hashes(self, origin: str) -> int:
        """How many 32-byte hashes the submitter holds for the chain: O(log n) per witness, however far behind."""
        with self._lock:
            chain = self._chains[origin]
            held = sum(len(v.at.frontier) + len(v.since.nodes) for v in chain.views.values())
            return held + (len(chain.tail.nodes) if chain.tail is not None else 0)

    def behind(self, origin: str) -> int:
        """How many entries the chain's newest head holds beyond the smallest size a witness cosigned."""
        with self._lock:
            chain = self._chains[origin]
            sizes = [v.at.size for name, v in chain.views.items() if name not in chain.refused]
            return chain.latest_size - min(sizes, default=chain.latest_size)

    def cosigned_head(self, origin: str) -> Note | None:
        """The newest head with the cosignatures gathered for it so far (None before the first)."""
        with self._lock:
            return self._chains[origin].cosigned

    def refusals(self, origin: str) -> dict[str, str]:
        """Witness name -> why it refused this chain's history."""
        with self._lock:
            return dict(self._chains[origin].refused)

    def submit_due(self) -> None:
        """Submit every chain's newest head whose interval has passed to the witnesses that lack it."""
        now = self.clock()
        with self._lock:
            due = [(origin, chain) for origin, chain in self._chains.items()
                   if chain.latest is not None and now - chain.last_attempt >= self.min_interval_s
                   and any(self._wants(chain, w) for w in self.witnesses)]
            for _, chain in due:
                chain.last_attempt = now
        for origin, chain in due:
            self._submit(origin, chain)

    @staticmethod
    def _wants(chain: _ChainHeads, witness: Witness) -> bool:
        view = chain.views[witness.name]
        return witness.name not in chain.refused and (not view.confirmed or view.at.size != chain.latest_size)

    def _submit(self, origin: str, chain: _ChainHeads) -> None:
        with self._lock:  # a consistent snapshot: offer() may add leaves meanwhile, which `tail` gathers too
            head, size = chain.latest, chain.latest_size
            views = {name: (view.at, view.since) for name, view in chain.views.items()}
            chain.tail = AppendedRange(size)
        assert head is not None
        note = parse_note(head)
        answered: list[str] = []
        try:
            for witness in self.witnesses:
                if witness.name in chain.refused or (chain.views[witness.name].confirmed and
                                                     views[witness.name][0].size == size):
                    continue
                at, since = views[witness.name]

                def proof_from(old: int, witness: Witness = witness, at: HistoryTree = at,
                               since: AppendedRange = since) -> list[bytes]:
                    if old == 0:
                        return []  # the empty tree is a prefix of every tree
                    if old == at.size:
                        return since.consistency_proof(at)
                    if self.history_from is None:
                        raise WitnessRefusedError(witness.name, 409, "Conflict", f"it holds size {old}, not the size "
                                                  f"{at.size} this sealer can prove from: re-read the chain")
                    try:
                        older, between = self.history_from(origin, old, size)
                    except AuditSealError as exc:  # the chain could not be re-read now: retried, the lag grows
                        raise WitnessUnavailableError(witness.name, f"it holds size {old}, and the history from "
                                                      f"there could not be re-read: {exc}") from None
                    return consistency_proof_from(older, between)

                try:
                    cosigned, _ = cosign_head(witness, head, at.size, proof_from)
                except WitnessUnavailableError as exc:
                    log.warning("%s: %s; cosigning is delayed, sealing goes on", origin, exc)
                    continue
                except WitnessError as exc:
                    log.error("%s: %s", origin, exc)
                    with self._lock:
                        chain.refused[witness.name] = str(exc)
                    if self.on_refused:
                        self.on_refused(origin, exc)
                    continue
                answered.append(witness.name)
                with self._lock:
                    merged = cosigned if chain.cosigned is None or chain.cosigned.text != note.text else Note(
                        note.text, chain.cosigned.signatures + tuple(s for s in cosigned.signatures
                                                                     if s not in chain.cosigned.signatures))
                    chain.cosigned = merged
                if self.on_cosigned:
                    self.on_cosigned(origin, merged)
        finally:
            self._settle(chain, views, answered, size)

    def _settle(self, chain: _ChainHeads, views: dict[str, tuple[HistoryTree, AppendedRange]], answered: list[str],
                size: int) -> None:
        # A witness that cosigned `size` now holds the tree at it, and lacks only the leaves offered since.
        with self._lock:
            tail, chain.tail = chain.tail, None
            if answered and tail is not None:
                at, since = views[answered[0]]
                tree = since.applied_to(at)
                for name in answered:
                    chain.views[name] = _WitnessView(tree, tail, confirmed=True)
            # a chain every witness refused keeps lagging: the lag alert fires beside the refusal's
            active = [view for name, view in chain.views.items() if name not in chain.refused]
            if active and all(view.confirmed and view.at.size == chain.latest_size for view in active):
                chain.waiting_since = None

    # ---- the background thread --------------------------------------------------------------------------
    def start(self, poll_s: float = 0.2) -> None:
        """Run :meth:`submit_due` every `poll_s` seconds in a daemon thread until :meth:`stop`."""
        def run() -> None:
            while not self._stop.wait(poll_s):
                try:
                    self.submit_due()
                except Exception:  # a bug must not stop cosigning silently: log it and go on with the next round
                    log.exception("witness submission round failed")

        self._thread = threading.Thread(target=run, name="witness-submitter", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread (a submission under way finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
