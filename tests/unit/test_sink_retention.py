"""Compliance profiles and retain-until dates computed from the records, not the clock."""

from __future__ import annotations

import datetime

import pytest

from pipeline.archive.retention import ComplianceProfile, load_profiles, parse_profiles
from pipeline.errors import ConfigError

UTC = datetime.UTC


def _micros(*args) -> int:
    return int(datetime.datetime(*args, tzinfo=UTC).timestamp() * 1_000_000)


def test_shipped_profiles():
    profiles = load_profiles()
    assert profiles.default == "soc2"
    assert {name: p.retention for name, p in profiles.profiles.items()} == {
        "soc2": "1y", "iso27001": "3y", "pci-dss": "1y", "hipaa": "6y", "sox": "7y", "gdpr-min": "180d"}
    assert all(p.why for p in profiles.profiles.values())
    assert profiles.get(None).name == "soc2"
    with pytest.raises(ConfigError, match="no compliance profile 'hipa'; known: gdpr-min, hipaa"):
        profiles.get("hipa")


def test_retain_until_rounds_the_newest_timestamp_up_to_the_second():
    soc2 = ComplianceProfile("soc2", years=1)
    assert soc2.retain_until(_micros(2026, 3, 1, 12, 0, 0) + 1) == datetime.datetime(2027, 3, 1, 12, 0, 1, tzinfo=UTC)
    assert soc2.retain_until(_micros(2026, 3, 1, 12, 0, 0)) == datetime.datetime(2027, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_years_are_calendar_years_and_29_february_moves_to_1_march():
    assert ComplianceProfile("x", years=1).retain_until(_micros(2028, 1, 1)) == datetime.datetime(2029, 1, 1, tzinfo=UTC)
    assert ComplianceProfile("x", years=1).retain_until(_micros(2028, 2, 29, 8)) == datetime.datetime(
        2029, 3, 1, 8, tzinfo=UTC)
    assert ComplianceProfile("x", years=4).retain_until(_micros(2028, 2, 29)) == datetime.datetime(2032, 2, 29, tzinfo=UTC)
    assert ComplianceProfile("x", days=180).retain_until(_micros(2026, 1, 1)) == datetime.datetime(
        2026, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "message"), [
    ({"version": 2, "default": "a", "profiles": {"a": {"retention": "1y"}}}, "version must be 1"),
    ({"version": 1, "default": "b", "profiles": {"a": {"retention": "1y"}}}, "default 'b' is not one of"),
    ({"version": 1, "default": "a", "profiles": {"a": {"retention": "12m"}}}, "must be <N>y .* or <N>d"),
    ({"version": 1, "default": "a", "profiles": {"a": {"retention": "0d"}}}, "must be <N>y"),
    ({"version": 1, "default": "a", "profiles": {"a": {"retention": "101y"}}}, "exceeds 100 years"),
    ({"version": 1, "default": "A", "profiles": {"A": {"retention": "1y"}}}, "lower case"),
    ({"version": 1, "default": "a", "profiles": {"a": {"retention": "1y", "mode": "GOVERNANCE"}}}, "expected"),
    ({"version": 1, "default": "a", "profiles": {}}, "profiles must map"),
])
def test_a_bad_compliance_file_names_the_problem(raw, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        parse_profiles(raw, tmp_path / "compliance.yaml")


def test_custom_profiles_load_from_a_file(tmp_path):
    path = tmp_path / "compliance.yaml"
    path.write_text("version: 1\ndefault: legal-hold\nprofiles:\n  legal-hold: {retention: 10y, why: counsel}\n")
    profile = load_profiles(path).get(None)
    assert (profile.name, profile.years, profile.why) == ("legal-hold", 10, "counsel")
