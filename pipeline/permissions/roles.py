"""The roles file (``config/roles.yaml``): roles, their Kafka grants and archive access, services, super users.

Loading is pure (YAML text in, frozen dataclasses out) and strict: a misspelt key, an unknown
operation or a missing mandatory role raises :class:`RolesFileError` naming the file, the entry and
the problem, because a permission file that is silently half-read grants the wrong rights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

MANDATORY_ROLES = ("producer", "sealer", "sink", "siem", "verifier", "access-auditor", "admin")
SERVICE_PREFIX = "svc-"
# the principal type the broker's certificate principal builder gives TLS clients (pipeline/dev/java):
# no SCRAM login can produce it, so super users are of this type only
CERTIFICATE_PRINCIPAL_TYPE = "Cert"
CLUSTER_NAME = "kafka-cluster"
RESOURCES = ("topic", "group", "transactional_id", "cluster")
PATTERNS = ("literal", "prefixed")
# Kafka's ACL operations (AclOperation without ANY/UNKNOWN), lower case as written in the file
OPERATIONS = ("all", "read", "write", "create", "delete", "alter", "describe", "cluster_action",
              "describe_configs", "alter_configs", "idempotent_write")
S3_ACCESS = ("none", "read", "write", "admin")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,47}$")


class RolesFileError(ConfigError):
    """The roles file is missing, not YAML, or describes something that cannot be applied."""


@dataclass(frozen=True)
class Grant:
    """One allowed operation: resource type (topic, group, transactional_id, cluster), pattern, name, operation."""

    resource: str
    name: str
    operation: str
    pattern: str = "literal"


@dataclass(frozen=True)
class Role:
    """A role: its Kafka grants and what it may do in the archive bucket (none, read, write or admin).

    ``kind`` is the mandatory role a role stands for in the separation-of-duties rules: its own
    name, or ``producer`` for a service's ``svc-<name>`` role.
    """

    name: str
    kafka: tuple[Grant, ...]
    s3_access: str = "none"
    description: str = ""
    group_prefix: str = field(default="")
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", self.name)

    @property
    def principal(self) -> str:
        """The Kafka principal of the role's SCRAM user."""
        return f"User:{self.name}"


@dataclass(frozen=True)
class RolesFile:
    """Everything the roles file declares; ``roles`` holds the mandatory roles first, then the services."""

    path: Path
    roles: tuple[Role, ...]
    super_users: tuple[str, ...]

    def role(self, name: str) -> Role:
        """The role called ``name``; ValueError listing the known roles otherwise."""
        for candidate in self.roles:
            if candidate.name == name:
                return candidate
        raise ValueError(f"unknown role {name!r}; expected one of {', '.join(r.name for r in self.roles)}")

    def principals_of_kind(self, *kinds: str) -> frozenset[str]:
        """Principals of every role whose kind is one of ``kinds``."""
        return frozenset(r.principal for r in self.roles if r.kind in kinds)


def load_roles(path: Path, *, raw_topic: str) -> RolesFile:
    """Read and validate the roles file at ``path``; ``raw_topic`` bounds the services' topic prefixes."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise RolesFileError(f"cannot read the roles file {path}: {exc.strerror or exc}; "
                             "set AUDITSEAL_ROLES_FILE or pass --roles") from None
    return parse_roles(text, path=path, raw_topic=raw_topic)


def parse_roles(text: str, *, path: Path, raw_topic: str) -> RolesFile:
    """Validate roles-file YAML ``text`` (``path`` is only used in error messages)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RolesFileError(f"{path} is not valid YAML: {exc}") from None
    where = str(path)
    document = _mapping(document, where)
    _only_keys(document, {"version", "super_users", "roles", "services"}, where)
    if document.get("version") != 1:
        raise RolesFileError(f"{where}: version: expected 1, found {document.get('version')!r}")
    super_users = tuple(_super_user(p, f"{where}: super_users") for p in _sequence(document.get("super_users", []),
                                                                                      f"{where}: super_users"))
    role_entries = _mapping(document.get("roles"), f"{where}: roles")
    missing = [name for name in MANDATORY_ROLES if name not in role_entries]
    if missing:
        raise RolesFileError(f"{where}: roles: mandatory role(s) {', '.join(missing)} missing")
    roles = [_role(name, entry, f"{where}: roles.{name}") for name, entry in role_entries.items()]
    producer = next(r for r in roles if r.name == "producer")
    services = _mapping(document.get("services") or {}, f"{where}: services")
    for name, entry in services.items():
        roles.append(_service(name, entry, producer, raw_topic, f"{where}: services.{name}"))
    names = [r.name for r in roles]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RolesFileError(f"{where}: role name(s) {', '.join(duplicates)} defined twice")
    clashing = sorted(p for p in super_users if p.split(":", 1)[1] in {r.name for r in roles})
    if clashing:
        raise RolesFileError(f"{where}: {', '.join(clashing)} shares its name with a role; "
                             "a super user bypasses every ACL, so it cannot hold a role")
    return RolesFile(path=path, roles=tuple(roles), super_users=super_users)


def _role(name: object, entry: object, where: str) -> Role:
    name = _role_name(name, where)
    if name.startswith(SERVICE_PREFIX):
        raise RolesFileError(f"{where}: names starting with {SERVICE_PREFIX!r} are reserved for services")
    entry = _mapping(entry, where)
    _only_keys(entry, {"description", "s3", "kafka"}, where)
    s3 = entry.get("s3", "none")
    if s3 not in S3_ACCESS:
        raise RolesFileError(f"{where}: s3: expected one of {', '.join(S3_ACCESS)}, found {s3!r}")
    grants: list[Grant] = []
    for index, grant in enumerate(_sequence(entry.get("kafka", []), f"{where}.kafka")):
        grants.extend(_grants(grant, f"{where}.kafka[{index}]"))
    return Role(name, tuple(dict.fromkeys(grants)), s3_access=s3, description=str(entry.get("description", "")))


def _service(name: object, entry: object, producer: Role, raw_topic: str, where: str) -> Role:
    name = _role_name(name, where)
    entry = _mapping(entry if entry is not None else {}, where)
    _only_keys(entry, {"description", "topic_prefix"}, where)
    prefix = entry.get("topic_prefix")
    grants = producer.kafka
    if prefix is not None:
        if not isinstance(prefix, str) or not prefix.startswith(raw_topic):
            raise RolesFileError(f"{where}: topic_prefix must start with {raw_topic!r} (a service only ever "
                                 f"writes raw events), found {prefix!r}")
        grants = tuple(Grant("topic", prefix, g.operation, "prefixed") if g.resource == "topic" else g
                       for g in grants)
    return Role(SERVICE_PREFIX + name, grants, description=str(entry.get("description", f"service {name}")),
                kind="producer")


def _grants(entry: object, where: str) -> list[Grant]:
    entry = _mapping(entry, where)
    _only_keys(entry, set(RESOURCES) | {"pattern", "operations"}, where)
    resources = [r for r in RESOURCES if r in entry]
    if len(resources) != 1:
        raise RolesFileError(f"{where}: name exactly one of {', '.join(RESOURCES)}, found {resources or 'none'}")
    resource = resources[0]
    name = entry[resource]
    if not isinstance(name, str) or not name:
        raise RolesFileError(f"{where}: {resource}: expected a non-empty name, found {name!r}")
    pattern = entry.get("pattern", "literal")
    if pattern not in PATTERNS:
        raise RolesFileError(f"{where}: pattern: expected literal or prefixed, found {pattern!r}")
    if resource == "cluster" and (name != CLUSTER_NAME or pattern != "literal"):
        raise RolesFileError(f"{where}: the cluster resource is always the literal {CLUSTER_NAME!r}")
    operations = _sequence(entry.get("operations"), f"{where}.operations")
    if not operations:
        raise RolesFileError(f"{where}: operations: list at least one operation")
    for operation in operations:
        if operation not in OPERATIONS:
            raise RolesFileError(f"{where}: unknown operation {operation!r}; expected one of {', '.join(OPERATIONS)}")
    return [Grant(resource, name, operation, pattern) for operation in operations]


def _role_name(name: object, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise RolesFileError(f"{where}: a name is lower-case letters, digits and '-', starting with a letter, "
                             f"at most 48 characters; found {name!r}")
    return name


def _principal(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("User:") or len(value) <= len("User:"):
        raise RolesFileError(f"{where}: expected a principal like 'User:name', found {value!r}")
    return value


def _super_user(value: object, where: str) -> str:
    prefix = f"{CERTIFICATE_PRINCIPAL_TYPE}:"
    if not isinstance(value, str) or not value.startswith(prefix) or len(value) <= len(prefix):
        raise RolesFileError(f"{where}: a super user is a certificate principal like '{prefix}broker' (a User: super "
                             f"user could be taken over by anyone allowed to set a SCRAM password), found {value!r}")
    return value


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RolesFileError(f"{where}: expected a mapping, found {type(value).__name__}")
    return value


def _sequence(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise RolesFileError(f"{where}: expected a list, found {type(value).__name__}")
    return value


def _only_keys(entry: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise RolesFileError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                             f"expected {', '.join(sorted(allowed))}")
