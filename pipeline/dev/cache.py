"""Where downloads and builds are cached (outside the checkout) and where a stack keeps its state."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The per-user cache of jars, Go builds and pip wheels: ``$AUDITSEAL_CACHE`` or
    ``${XDG_CACHE_HOME:-~/.cache}/auditseal``. Shared by every checkout, so a fresh clone starts fast."""
    explicit = os.environ.get("AUDITSEAL_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser().resolve() / "auditseal"


def stack_dir() -> Path:
    """The state of this checkout's local stack (certificates, credentials, broker and S3 data):
    ``$AUDITSEAL_STACK_DIR`` or ``.stack/`` at the top of the checkout."""
    explicit = os.environ.get("AUDITSEAL_STACK_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / ".stack"
