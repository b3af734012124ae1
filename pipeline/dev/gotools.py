"""Go programs the project builds once from the Go module proxy into the per-user cache.

One way to do it for every tool (the S3 server, and helm and promtool for the deployment checks): a pinned
``go install module/cmd@version`` into ``<cache>/<folder>/<name>-<version>/``, with Go's module and build
caches inside our cache too, under a file lock so concurrent runs build once, into a staging folder that
is renamed only when the build succeeded, so a failed or interrupted build never leaves a half binary.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.dev.processes import StackError, run_with_progress

_GO_FALLBACK = Path("/usr/local/go/bin/go")
# a cold build of helm or promtool took over 900 s on a busy 2-core machine; a hung build still ends
BUILD_TIMEOUT_S = 3600.0


@contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (created if needed) for as long as the block runs."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def go_install(cache: Path, *, package: str, version: str, folder: str = "bin", ldflags: str = "-s -w",
               env: dict[str, str] | None = None, log: Callable[[str], object] = print,
               timeout: float = BUILD_TIMEOUT_S) -> Path:
    """The binary of ``package@version`` (``module/cmd/name``), built the first time; StackError if it cannot be.

    A build takes minutes on a busy machine: ``log`` is told what is built, how many modules were
    downloaded and packages compiled so far, and the elapsed time every few seconds."""
    name = package.rstrip("/").rsplit("/", 1)[-1]
    target = cache / folder / f"{name}-{version}"
    binary = target / name
    if binary.exists():
        return binary
    go = shutil.which("go") or (str(_GO_FALLBACK) if _GO_FALLBACK.exists() else None)
    if go is None:
        raise StackError(f"Go is needed once to build {name} {version}; install Go 1.24+ or put it on PATH")
    with cache_lock(cache / folder):
        if binary.exists():
            return binary
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        build_env = dict(os.environ, GOMODCACHE=str(cache / "go" / "mod"), GOCACHE=str(cache / "go" / "build"),
                         GOBIN=str(staging), GOFLAGS="-mod=mod", **(env or {}))
        counts = {"modules": 0, "packages": 0}

        def progress(line: str) -> str | None:
            if line.startswith("go: downloading "):
                counts["modules"] += 1
            elif line and not line.startswith(("go: ", "#")) and " " not in line.strip():
                counts["packages"] += 1  # `go install -v` names each package as it is compiled
            else:
                return None
            return f"{counts['modules']} modules downloaded, {counts['packages']} packages compiled"

        run_with_progress([go, "install", "-v", "-ldflags", ldflags, f"{package}@{version}"],
                          f"building {name} {version} (go install from the Go module proxy, once; a few minutes)",
                          log=log, progress=progress, env=build_env, timeout=timeout)
        if not (staging / name).exists():
            raise StackError(f"building {name} {version}: go install finished but {staging / name} is missing")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return binary
