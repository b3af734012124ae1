"""BatchHistogram exposes what prometheus_client's Histogram exposes for the same observations."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from pipeline.metrics import BatchHistogram

BUCKETS = (0.01, 0.05, 0.1, 1)


def exposition(registry: CollectorRegistry) -> list[str]:
    # _created is the time each was made: equal in shape, not in value
    return [line for line in generate_latest(registry).decode().splitlines() if "_created " not in line]


@pytest.mark.parametrize("values", [
    [],
    [0.0, 0.01, 0.02, 0.05, 0.3, 2.0, 0.1, 0.0999],  # on, between and past the bounds
    [-1.0, 1e9, 0.01000001],
])
def test_same_exposition_as_a_histogram(values: list[float]) -> None:
    reference, batched = CollectorRegistry(), CollectorRegistry()
    histogram = Histogram("x_seconds", "help", buckets=BUCKETS, registry=reference)
    for value in values:
        histogram.observe(value)
    batch = BatchHistogram("x_seconds", "help", BUCKETS, registry=batched)
    batch.observe_many(values[:2])
    batch.observe_many(iter(values[2:]))  # any iterable, in several batches
    assert exposition(batched) == exposition(reference)
    assert any(line.startswith("x_seconds_created ") for line in generate_latest(batched).decode().splitlines())


def test_bad_buckets_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct and increasing"):
        BatchHistogram("y_seconds", "help", (1, 0.5), registry=None)
