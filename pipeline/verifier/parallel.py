"""``verify --jobs N``: the objects of an archive verified by N processes, merged into one report.

A chain is a state machine fed in order, so the unit of work is one partition of one archive (its
objects in offset order: the chain of that partition, as the sealer writes it). The parent lists the
source once (as a one-job run does, incremental checks of already verified objects included), then
forks N workers (``fork``: they inherit the listing, nothing is pickled on the way in); each verifies
whole partitions, one object at a time, so its memory stays flat, and sends back its partial report and
its chain auditor's state without finishing it. The parent merges them in archive order, then judges
each archive's chains (unsigned tails, stale heads) and accounts for the source exactly as one job does:
the report is the one a one-job run gives (same counts, same violations in the same order; the tests
compare them). A chain found in two partitions of an archive (records moved between partitions) cannot
be split: that archive is verified again in the parent, in one pass, so the report stays the same.
"""

from __future__ import annotations

import gc
import itertools
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from pipeline.errors import ConfigError
from pipeline.verifier.archive import MAX_EXAMPLES_PER_KIND, ArchiveEntry, ArchiveVerifier, Report
from pipeline.verifier.chains import ChainAuditor
from pipeline.wire.sealed import sealed_codecs

# what a forked worker inherits: the verifier, the source and the units (set just before the pool forks)
_WORK: tuple[ArchiveVerifier, Any, list[tuple[str, list[ArchiveEntry]]]] | None = None


def verify_parallel(verifier: ArchiveVerifier, source, jobs: int, stats: dict[str, Any] | None = None) -> Report:
    """:meth:`ArchiveVerifier.verify` over ``jobs`` processes; the same report. ``stats``, if given, gets
    the CPU seconds each worker process spent (``worker_cpu_s``, by pid) and the number of units."""
    global _WORK
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be 1 or more")
    if jobs == 1:
        return verifier.verify(source)
    report = Report(source.description)
    archives = [(scope, list(entries)) for scope, entries in verifier._archives(source, report)]
    units = [(scope, list(group)) for scope, entries in archives
             for _, group in itertools.groupby(entries, key=lambda entry: entry.key.partition)]
    # the largest partitions first, so the last one to finish is a small one
    order = sorted(range(len(units)), key=lambda index: -len(units[index][1]))
    _WORK = (verifier, source, units)
    # The workers are forked from this process, whose other threads (Kafka clients, a test runner's leftovers)
    # do not exist in them: a worker's garbage collector running the finalizer of an inherited object could
    # touch that native state (a worker segfaulted so in make test). The garbage is collected here, where its
    # finalizers are safe, and the rest frozen, so a worker's collector never looks at what it inherited.
    gc.collect()
    gc.freeze()
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"),
                                 initializer=_start_worker) as pool:
            done = dict(zip(order, pool.map(_verify_unit, order), strict=True))
    finally:
        gc.unfreeze()
        _WORK = None
    if stats is not None:
        stats["units"] = len(units)
        stats["worker_cpu_s"] = {}
        for part in done.values():
            stats["worker_cpu_s"][part["pid"]] = stats["worker_cpu_s"].get(part["pid"], 0.0) + part["cpu_s"]
    codecs = sealed_codecs()
    position = 0
    for scope, entries in archives:
        count = sum(1 for _ in itertools.groupby(entries, key=lambda entry: entry.key.partition))
        parts = [done[index] for index in range(position, position + count)]
        position += count
        auditor = verifier._auditor(scope)
        if _merge_chains(auditor, parts):
            for part in parts:
                _merge_report(report, part["report"])
                if hasattr(verifier, "add_collected"):
                    verifier.add_collected(part["collected"])
            ends = verifier._last_ends(scope)
            for part in parts:
                ends.update(part["ends"])
        else:  # a chain across partitions: this archive in one pass, as one job reads it
            auditor = verifier._auditor(scope)
            verifier._verify_objects(entries, report, auditor, verifier._last_ends(scope), codecs)
        verifier._close(scope, auditor, report)
    verifier._account_for_everything(source, report)
    return report


def _start_worker() -> None:
    # a forked worker: no progress line of its own, and its own S3 connections (never the parent's sockets)
    assert _WORK is not None
    verifier, source, _ = _WORK
    verifier.progress = None
    factory = getattr(source, "client_factory", None)
    if factory is not None:
        source.s3 = factory()


def _verify_unit(index: int) -> dict[str, Any]:
    # one partition of one archive, verified into a partial report and an unfinished auditor's state
    assert _WORK is not None
    verifier, source, units = _WORK
    started = time.process_time()
    scope, entries = units[index]
    report = Report(source.description)
    auditor = verifier._auditor(scope)
    take = getattr(verifier, "take_collected", None)
    if take is not None:
        take()  # what an earlier unit of this worker collected was sent with it
    ends = verifier._last_ends(scope)
    before = dict(ends)
    verifier._verify_objects(entries, report, auditor, ends, sealed_codecs())
    return {"report": report, "auditor": _auditor_state(auditor),
            "ends": {key: end for key, end in ends.items() if before.get(key) != end},
            "collected": take() if take is not None else {}, "pid": os.getpid(), "cpu_s": time.process_time() - started}


_COUNTERS = ("entries_checked", "checkpoints_checked", "checkpoints_valid", "heads_checked")
_EXTRA = ("head_records", "anchors", "proofs")  # an AnchoredAuditor's (pipeline.verifier.incremental)


def _auditor_state(auditor: ChainAuditor) -> dict[str, Any]:
    # what the parent needs of a worker's auditor (its keyring's keys do not pickle, and are the parent's)
    state = {"chains": auditor.chains, "heads": auditor.heads, "notices": auditor.notices,
             "violations": auditor.violations, "logging": auditor.logging}
    state.update({name: getattr(auditor, name) for name in _COUNTERS})
    state.update({name: getattr(auditor, name) for name in _EXTRA if hasattr(auditor, name)})
    return state


def _merge_chains(auditor: ChainAuditor, parts: list[dict[str, Any]]) -> bool:
    """Fold the workers' auditors of one archive into ``auditor`` in archive order; False if a chain
    was met in two partitions (then ``auditor`` is not to be used)."""
    for part in parts:
        state = part["auditor"]
        if state["chains"].keys() & auditor.chains.keys():
            return False
        auditor.chains.update(state["chains"])
        auditor.heads.update({chain_id: state["heads"][chain_id] for chain_id in state["chains"]
                              if chain_id in state["heads"]})
        auditor.notices.extend(state["notices"])
        auditor.violations.extend(state["violations"])
        auditor.logging.absorb(state["logging"], "")  # heads' times and logging gaps (the report's continuity)
        for name in _COUNTERS:
            setattr(auditor, name, getattr(auditor, name) + state[name])
        if hasattr(auditor, "pending_anchors"):
            for chain_id in state["chains"]:
                auditor.pending_anchors.pop(chain_id, None)
                auditor.anchors.pop(chain_id, None)
                if chain_id in state["anchors"]:
                    auditor.anchors[chain_id] = state["anchors"][chain_id]
                if chain_id in state["head_records"]:
                    auditor.head_records[chain_id] = state["head_records"][chain_id]
            auditor.proofs.update(state["proofs"])
    return True


def _merge_report(report: Report, part: Report) -> None:
    # a worker's partial report after the ones before it: its examples are its first of each kind, in order
    report.objects += part.objects
    report.objects_valid += part.objects_valid
    report.retries += part.retries
    report.records += part.records
    kept: dict[str, int] = {}
    for violation in report.violations:
        kept[violation.kind] = kept.get(violation.kind, 0) + 1
    for violation in part.violations:
        if kept.get(violation.kind, 0) < MAX_EXAMPLES_PER_KIND:
            report.violations.append(violation)
            kept[violation.kind] = kept.get(violation.kind, 0) + 1
    for kind, count in part.violation_counts.items():
        report.violation_counts[kind] = report.violation_counts.get(kind, 0) + count
    report.notices.extend(part.notices)
