"""Every benchmark module imports: they share helpers (bench.sealer's, bench.steady's), and a helper renamed in
one bench broke another (bench.witness importing bench.sealer's old _median) with nothing to notice it."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "bench").glob("*.py") if p.stem != "__init__")


def test_the_benches_are_found():
    assert {"pipeline", "sealer", "verify", "witness", "steady"} <= set(BENCHES)


@pytest.mark.parametrize("name", BENCHES)
def test_a_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")
