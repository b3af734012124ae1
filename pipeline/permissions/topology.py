"""The roles of a deployment, their minimal Kafka grants and archive access, from the roles file.

The roles file (``config/roles.yaml``, see :mod:`pipeline.permissions.roles`) is read the first
time a command asks for it, never at import: a service that only emits events needs no roles file.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pipeline.permissions.roles import Grant, Role, RolesFile, load_roles
from pipeline.wire.topics import RAW_TOPIC

BUCKET = "audit-archive"


def roles_file_path() -> Path:
    """The roles file: ``$AUDITSEAL_ROLES_FILE``, or ``config/roles.yaml`` in the checkout."""
    configured = os.environ.get("AUDITSEAL_ROLES_FILE")
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "config" / "roles.yaml"


def load_roles_file(path: Path | None = None) -> RolesFile:
    """The roles file at ``path`` (default :func:`roles_file_path`), validated, read anew."""
    return load_roles(path or roles_file_path(), raw_topic=RAW_TOPIC)


@lru_cache(maxsize=1)
def roles_file() -> RolesFile:
    """The deployment's roles file (:func:`roles_file_path`), read once on first use."""
    return load_roles_file()


def roles() -> tuple[Role, ...]:
    """Every role of the roles file."""
    return roles_file().roles


def role_names() -> tuple[str, ...]:
    """The names of every role of the roles file."""
    return tuple(role.name for role in roles())


def super_users() -> tuple[str, ...]:
    """The super users the roles file declares."""
    return tuple(roles_file().super_users)


def role(name: str) -> Role:
    """The role called ``name``; ValueError listing the known roles otherwise."""
    for candidate in roles():
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown role {name!r}; expected one of {', '.join(role_names())}")


__all__ = ["BUCKET", "Grant", "Role", "load_roles_file", "role", "role_names", "roles", "roles_file",
           "roles_file_path", "super_users"]
