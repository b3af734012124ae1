"""The stack's Kafka data and logs and the S3 server's archive objects are its owner's alone: the servers run
with umask 077, so every folder is 0700 and every file 0600 (they were world-readable before)."""

from __future__ import annotations

import os
import stat

import pytest

from pipeline.config import S3Settings
from pipeline.permissions.topology import BUCKET

pytestmark = pytest.mark.stack


def _open_to_others(root) -> list[str]:
    found = []
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                continue
            if stat.S_IMODE(os.stat(path).st_mode) & 0o077:
                found.append(f"{path} ({stat.filemode(os.stat(path).st_mode)})")
    return found


def test_kafka_data_logs_and_archive_objects_are_private(stack, tmp_path):
    # an object written now, through the server, as the archive's objects are
    s3 = S3Settings.from_env(stack.setup_env("s3")).client()
    s3.put_object(Bucket=BUCKET, Key=f"permissions-probe/{tmp_path.name}", Body=b"probe")
    assert stat.S_IMODE(stack.root.stat().st_mode) == 0o700
    for part in ("kafka", "s3"):
        folder = stack.root / part
        assert any(folder.rglob("*")), f"{folder} is empty"
        assert _open_to_others(folder) == [], f"readable by others under {folder}"
    assert any(p.name.endswith(".log") for p in (stack.root / "kafka" / "data").rglob("*.log")), "no log segment"
    assert list((stack.root / "s3").rglob(tmp_path.name)), "the probe object is not under the S3 data folder"
