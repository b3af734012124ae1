"""The independent verifier of tests/support/c2spcheck (Go, transparency-dev/formats v0.1.1 + merkle v0.0.2).

Built once per source version with ``go build`` from the Go module proxy into ``<cache>/tools/c2spcheck-<hash>``,
under the same lock and Go caches as every other Go tool of the project (:mod:`pipeline.dev.gotools`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from pipeline.dev.cache import cache_dir
from pipeline.dev.gotools import cache_lock
from pipeline.dev.processes import StackError

SOURCE = Path(__file__).with_name("c2spcheck")


def c2spcheck_binary() -> Path:
    """The built checker, rebuilt when main.go, go.mod or go.sum change; StackError if Go cannot build it."""
    digest = hashlib.sha256(b"".join((SOURCE / name).read_bytes() for name in ("main.go", "go.mod", "go.sum")))
    cache = cache_dir()
    target = cache / "tools" / f"c2spcheck-{digest.hexdigest()[:12]}"
    if target.exists():
        return target
    go = shutil.which("go") or "/usr/local/go/bin/go"
    if not Path(go).exists():
        raise StackError("Go is needed once to build the c2spcheck interop checker; install Go 1.25+")
    with cache_lock(cache / "tools"):
        if target.exists():
            return target
        env = dict(os.environ, GOMODCACHE=str(cache / "go" / "mod"), GOCACHE=str(cache / "go" / "build"),
                   GOFLAGS="-mod=readonly")
        staging = target.with_name(target.name + ".partial")
        built = subprocess.run([go, "build", "-o", str(staging), "."], cwd=SOURCE, env=env,
                               capture_output=True, text=True, timeout=900)
        if built.returncode != 0:
            raise StackError(f"building c2spcheck failed:\n{built.stderr[-2000:]}")
        staging.rename(target)
    return target


def run_c2spcheck(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run the checker; the caller asserts on returncode and stdout ("ok ..." or "FAIL: ...")."""
    return subprocess.run([str(c2spcheck_binary()), *map(str, args)], capture_output=True, text=True, timeout=120)
