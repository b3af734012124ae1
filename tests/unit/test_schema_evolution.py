"""Each schema version is backward and forward compatible with the previous one (schemas/README.md).

The shipped versions are checked pair by pair; the checker itself is proven on temporary v2 files
that break one rule each, so the check is known to bite before a real v2 exists.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.producer.synthetic import synthetic_events
from pipeline.wire.catalog import (
    AUDIT_EVENT,
    SchemaCatalog,
    SchemaVersion,
    compatibility_problems,
    default_catalog,
    schemas_dir,
)

# Fingerprints of released versions. A released file may get better docs, never a different
# canonical form: records written with it are in the immutable log. Add a line per new version.
RELEASED = {
    "alert.v1.avsc": "b1b575cea0a69adf",
    "archived_record.v1.avsc": "7629bc48f4d6a781",
    "audit_event.v1.avsc": "4216880367485bc2",
    "audit_event.v2.avsc": "e45ee069157e1960",
    "audit_event.v3.avsc": "fc0763bb7e4c1020",
    "checkpoint.v1.avsc": "13beec4225f95385",
    "checkpoint.v2.avsc": "c1390a89cb3a9761",
    "gap.v1.avsc": "bb571da5e9a7f8e5",
    "tree_head.v1.avsc": "2c10b6fdabde73b9",
    "cosignature.v1.avsc": "6818a08a1acfaa56",
    "rejection.v1.avsc": "6923573b826bb833",
    "sealed_event.v1.avsc": "cea19d85f7c88405",
}


def _samples(family: str) -> list[dict[str, Any]]:
    return list(synthetic_events(300, seed=7)) if family == AUDIT_EVENT else []


def _consecutive_pairs() -> list[tuple[SchemaVersion, SchemaVersion]]:
    catalog = default_catalog()
    return [pair for family in catalog.families for pair in zip(catalog.versions(family), catalog.versions(family)[1:], strict=False)]


def test_released_versions_keep_their_fingerprint() -> None:
    catalog = default_catalog()
    shipped = {schema.name: schema.fingerprint.hex() for family in catalog.families for schema in catalog.versions(family)}
    assert {name: shipped.get(name) for name in RELEASED} == RELEASED
    unreleased = set(shipped) - set(RELEASED)
    assert not unreleased, f"add the fingerprints of {sorted(unreleased)} to RELEASED"


def test_every_shipped_version_is_compatible_with_the_previous_one() -> None:
    # Not parametrized: with only v1 there is no pair yet, and this must still run (and pass)
    # rather than be skipped; from v2 on it checks every consecutive pair.
    for older, newer in _consecutive_pairs():
        assert compatibility_problems(older, newer, _samples(older.family)) == [], (older.name, newer.name)


def _walk(schema: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, list):
        for branch in schema:
            yield from _walk(branch)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "enum", "fixed"):
            yield schema["name"], schema
        if kind == "record":
            for field in schema["fields"]:
                yield f"{schema['name']}.{field['name']}", field
                yield from _walk(field["type"])
        elif kind == "array":
            yield from _walk(schema["items"])
        elif kind == "map":
            yield from _walk(schema["values"])
        elif isinstance(kind, (dict, list)):
            yield from _walk(kind)


@pytest.mark.parametrize("path", sorted(schemas_dir().glob("*.avsc")), ids=lambda p: p.name)
def test_every_field_and_named_type_is_documented(path: Path) -> None:
    raw = json.loads(path.read_text())
    assert raw.get("namespace"), f"{path.name}: the top-level record needs a namespace"
    for name, node in _walk(raw):
        assert isinstance(node.get("doc"), str) and node["doc"].strip(), f"{path.name}: {name} has no doc"
        if node.get("type") == "enum":
            assert node.get("default") in node["symbols"], f"{path.name}: enum {name} needs a default symbol"


# -- the checker bites: temporary v2 files, each breaking (or keeping) the rules ---------------------


def _v1() -> dict[str, Any]:
    return json.loads((schemas_dir() / "audit_event.v1.avsc").read_text())


def _field(schema: dict[str, Any], path: str) -> dict[str, Any]:
    record = schema
    *parents, name = path.split(".")
    for parent in parents:
        record = next(f for f in record["fields"] if f["name"] == parent)["type"]
    return next(f for f in record["fields"] if f["name"] == name)


def _check_v2(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> list[str]:
    shutil.copy(schemas_dir() / "audit_event.v1.avsc", tmp_path / "audit_event.v1.avsc")
    v2 = copy.deepcopy(_v1())
    edit(v2)
    (tmp_path / "audit_event.v2.avsc").write_text(json.dumps(v2))
    v1_loaded, v2_loaded = SchemaCatalog.load(tmp_path).versions(AUDIT_EVENT)
    return compatibility_problems(v1_loaded, v2_loaded, _samples(AUDIT_EVENT))


def _add_tenant(v2: dict[str, Any]) -> None:
    v2["fields"].append({"name": "tenant_id", "type": ["null", "string"], "default": None, "doc": "Tenant."})


def _add_nested_optional_and_symbol(v2: dict[str, Any]) -> None:
    _field(v2, "actor")["type"]["fields"].append(
        {"name": "mfa", "type": ["null", "boolean"], "default": None, "doc": "Whether MFA was used."}
    )
    _field(v2, "actor.type")["type"]["symbols"].append("DEVICE")


def _rename_with_alias(v2: dict[str, Any]) -> None:
    field = _field(v2, "request_id")
    field["name"], field["aliases"] = "upstream_request_id", ["request_id"]


@pytest.mark.parametrize(
    "edit",
    [_add_tenant, _add_nested_optional_and_symbol, _rename_with_alias, lambda v2: v2.update(doc="Better words.")],
    ids=["optional-field", "nested-field-and-enum-symbol", "rename-with-alias-of-defaulted-field", "docs-only"],
)
def test_compatible_changes_pass(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    assert _check_v2(tmp_path, edit) == []


def _add_required(v2: dict[str, Any]) -> None:
    v2["fields"].append({"name": "tenant_id", "type": "string", "doc": "Tenant."})


def _remove_outcome_reason(v2: dict[str, Any]) -> None:
    outcome = _field(v2, "outcome")["type"]
    outcome["fields"] = [f for f in outcome["fields"] if f["name"] != "reason"]


def _rename_required_without_alias(v2: dict[str, Any]) -> None:
    _field(v2, "source_service")["name"] = "emitter"


def _rename_required_with_alias(v2: dict[str, Any]) -> None:
    field = _field(v2, "source_service")
    field["name"], field["aliases"] = "emitter", ["source_service"]


def _widen_type(v2: dict[str, Any]) -> None:
    _field(v2, "resource.id")["type"] = ["null", "string"]


def _drop_symbol(v2: dict[str, Any]) -> None:
    _field(v2, "outcome.status")["type"]["symbols"].remove("DENIED")


def _remove_enum_default(v2: dict[str, Any]) -> None:
    enum = _field(v2, "actor.type")["type"]
    enum["symbols"].append("DEVICE")
    del enum["default"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_add_required, "AuditEvent.tenant_id: added without a default"),
        (_remove_outcome_reason, "AuditEvent.outcome.reason: removed or renamed without an alias"),
        (_rename_required_without_alias, "AuditEvent.source_service: removed or renamed without an alias"),
        # An alias lets new readers read old data, but old readers still need the old field:
        # only the data check can see that, and it does.
        (_rename_required_with_alias, "forward compatibility: data written with audit_event.v2.avsc cannot be read"),
        (_widen_type, "AuditEvent.resource.id: type changed from string to union"),
        (_drop_symbol, "enum OutcomeStatus lost symbol(s) DENIED"),
        (_remove_enum_default, "enum ActorType gained symbols but has no default symbol in audit_event.v2.avsc"),
    ],
    ids=["field-without-default", "field-removed", "renamed-without-alias", "renamed-required-field",
         "type-changed", "enum-symbol-removed", "enum-default-removed"],
)
def test_incompatible_changes_are_flagged(tmp_path: Path, edit: Callable[[dict[str, Any]], None], expected: str) -> None:
    problems = _check_v2(tmp_path, edit)
    assert any(expected in problem for problem in problems), problems


def test_data_check_alone_catches_a_missing_default(tmp_path: Path) -> None:
    # The structural rules and the data check are independent: the resolution failure is reported too.
    problems = _check_v2(tmp_path, _add_required)
    assert any(p.startswith("backward compatibility: data written with audit_event.v1.avsc") for p in problems), problems
