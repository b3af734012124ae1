"""Hypothesis strategies the differential suites share."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from pipeline.wire.validation import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP

_text = st.text(max_size=40)
_optional_text = st.none() | _text
_timestamps = st.integers(
    min_value=(EARLIEST_TIMESTAMP - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1),
    max_value=(LATEST_TIMESTAMP - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) - 1,
)
_aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)
)
valid_events = st.fixed_dictionaries(
    {
        "event_id": st.uuids().map(str) | st.uuids() | st.uuids().map(lambda u: str(u).upper()),
        "occurred_at": _timestamps | _aware_datetimes,
        "actor": st.fixed_dictionaries(
            {"id": _text, "type": st.sampled_from(["USER", "SERVICE", "SYSTEM", "UNKNOWN"])},
            optional={"source_ip": _optional_text, "user_agent": _optional_text, "session_id": _optional_text},
        ),
        "action": _text,
        "resource": st.fixed_dictionaries({"type": _text, "id": _text}),
        "outcome": st.fixed_dictionaries(
            {"status": st.sampled_from(["SUCCESS", "FAILURE", "DENIED", "UNKNOWN"])}, optional={"reason": _optional_text}
        ),
        "source_service": _text,
    },
    optional={
        "request_id": _optional_text,
        "trace_id": _optional_text,
        "attributes": st.dictionaries(_text, st.text(max_size=5000), max_size=5),
    },
)
