"""The local stack's process helpers: a long setup command shows its progress; stack folders are private."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from pipeline.dev.processes import StackError, make_private, run_with_progress


def test_progress_shows_what_how_far_and_when_done():
    lines: list[str] = []
    script = "import time\nfor n in range(1, 4):\n    print(f'item {n}', flush=True); time.sleep(1.2)\n"
    output = run_with_progress([sys.executable, "-c", script], "fetching things", log=lines.append,
                               progress=lambda line: f"{line.split()[1]}/3 items" if line.startswith("item") else None,
                               heartbeat=1.0)
    assert output.splitlines() == ["item 1", "item 2", "item 3"]
    assert lines[0] == "fetching things..."
    assert any("fetching things: " in line and "/3 items" in line for line in lines[1:-1]), lines
    assert lines[-1].startswith("  fetching things: done in ")


def test_a_failed_command_is_one_error_with_its_last_lines():
    with pytest.raises(StackError, match=r"building x failed \(exit 3\):\nboom"):
        run_with_progress([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], "building x",
                          log=lambda _line: None)


def test_a_hung_command_ends_at_its_timeout():
    with pytest.raises(StackError, match="no result after 1s"):
        run_with_progress([sys.executable, "-c", "import time; time.sleep(30)"], "waiting", log=lambda _line: None,
                          timeout=1)


def test_make_private_closes_an_existing_tree(tmp_path):
    folder = tmp_path / "data"
    (folder / "topic-0").mkdir(parents=True)
    segment = folder / "topic-0" / "00000000000000000000.log"
    segment.write_bytes(b"audit")
    os.chmod(folder / "topic-0", 0o755)
    os.chmod(segment, 0o644)
    make_private(folder)
    for path, mode in ((folder, 0o700), (folder / "topic-0", 0o700), (segment, 0o600)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
