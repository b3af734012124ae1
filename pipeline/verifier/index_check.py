"""The verifier's check of each manifest's query index against its object's events.

The query index (:mod:`pipeline.archive.query_index`) lets ``auditseal timeline`` skip the objects that
cannot hold a match. The manifest is not signed: whoever can write the archive's manifests could narrow an
object's time range or replace its actor or resource filter, and a timeline would then skip the object
and never show its events. ``verify`` therefore rebuilds each object's index from its events, with the
sink's own builder (:func:`pipeline.archive.container.object_query_index`), and reports a manifest whose index is
not that one as ``index_mismatch`` at the manifest, naming the fields that differ. A manifest without an
index (written before the index existed) is not a finding: its object is always read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipeline.archive.container import object_query_index
from pipeline.archive.query_index import QueryIndex

INDEX_MISMATCH = "index_mismatch"
"""A manifest's query index that is not its object's: a query skipping on it may miss events."""


def index_differences(claimed: QueryIndex, actual: QueryIndex) -> list[str]:
    """What differs between a manifest's index (``claimed``) and the one rebuilt from its object (``actual``),
    one phrase per field, empty if they are the same (pure)."""
    found = []
    if (claimed.events, claimed.undecoded) != (actual.events, actual.undecoded):
        found.append(f"counts {claimed.events} events ({claimed.undecoded} undecoded), the object holds "
                     f"{actual.events} ({actual.undecoded} undecoded)")
    if (claimed.occurred_min_micros, claimed.occurred_max_micros) != (actual.occurred_min_micros,
                                                                      actual.occurred_max_micros):
        found.append(f"occurred_at range {claimed.occurred_min_micros}..{claimed.occurred_max_micros}, the events' is "
                     f"{actual.occurred_min_micros}..{actual.occurred_max_micros}")
    for name, mine, theirs in (("actor", claimed.actors, actual.actors), ("resource", claimed.resources,
                                                                          actual.resources)):
        if mine != theirs:
            found.append(f"the {name} filter is not that of the object's {name} ids")
    if claimed.version != actual.version:
        found.append(f"version {claimed.version}, rebuilt as {actual.version}")
    return found


def object_index(values: Iterable[tuple[int, bytes]]) -> QueryIndex:
    """The query index the sink writes for an object whose records are ``values`` ((offset, value), in order)."""
    return object_query_index([(offset, 0, value) for offset, value in values])


def index_mismatch(claimed: QueryIndex, read_values: Callable[[], Iterable[tuple[int, bytes]]]) -> str | None:
    """The detail of an ``index_mismatch`` if the manifest's index (``claimed``) is not that of the object whose
    records ``read_values()`` gives ((offset, value) of each, in order); else None.

    The verifier passes the blocks it already inflated for the chain checks, so an object is decoded
    once; it does not call this for an object it found unreadable (reported as ``unreadable_object``)."""
    try:
        actual = object_index(read_values())
    except Exception:  # a record the index builder cannot read is damaged: the chain checks report it already
        return None
    differences = index_differences(claimed, actual)
    if not differences:
        return None
    return ("the manifest's query index does not describe its object: " + "; ".join(differences)
            + "; a timeline skipping on it may miss the object's events")
