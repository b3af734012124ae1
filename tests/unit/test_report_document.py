"""The evidence report's pure parts: the verdict rules, the framework table, and the page's first screen."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.report.document import FAILED, INCOMPLETE, PASSED, REVIEW, render_html, report_data, verdict
from pipeline.report.evidence import FAIL, INFO, NOT_RUN, PASS, Check, Evidence, Period
from pipeline.report.frameworks import FRAMEWORKS, framework

DAY = 86_400_000_000
START = 1_767_225_600_000_000


def _check(check_id: str, status: str) -> Check:
    return Check(check_id, f"title of {check_id} <b>", "how", status, f"summary of {check_id}", {"n": 1})


def _evidence(statuses: dict[str, str]) -> Evidence:
    return Evidence([_check(c, s) for c, s in statuses.items()], {"2026-01-01": {"billing": 3}}, {"2026-01-01": 1}, [],
                    {"objects": 2, "objects_valid": 2, "checkpoints": 3, "checkpoints_valid": 3, "events": 3,
                     "events_verified": 3}, {"violations": [{"kind": "gap", "location": "obj", "chain_id": "c",
                                                            "seq": 4, "detail": "seq 4..9 missing"}]}, START, START + DAY)


ALL_CHECKS = sorted({check for f in FRAMEWORKS.values() for control in f.controls for check in control.checks})


@pytest.mark.parametrize("statuses, expected", [
    ([PASS, INFO], PASSED), ([PASS, FAIL, NOT_RUN], FAILED), ([PASS, NOT_RUN], INCOMPLETE), ([INFO, INFO], REVIEW),
])
def test_verdict(statuses, expected):
    assert verdict([_check(str(n), s) for n, s in enumerate(statuses)]) == expected


def test_every_control_of_every_framework_names_known_checks():
    from pipeline.report import evidence

    source = open(evidence.__file__).read()
    for check in ALL_CHECKS:
        assert f'Check("{check}"' in source, check


def test_a_failed_report_says_so_first_with_the_violations_and_escapes_what_it_shows():
    statuses = dict.fromkeys(ALL_CHECKS, PASS) | {"verification": FAIL}
    data = report_data(_evidence(statuses), framework("pci-dss"), Period(START, START + DAY), "dir x", "now")
    page = render_html(data)
    first = page[:page.index("<h2>Controls</h2>")]
    assert data["verdict"] == FAILED and 'class="verdict failed">FAILED<' in first
    assert 'id="violations"' in first and "seq 4..9 missing" in first
    assert "<b>" not in page and "&lt;b&gt;" in page
    for control in FRAMEWORKS["pci-dss"].controls:
        assert f'id="control-{control.id}"' in page
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_a_passed_report_has_no_failure_list():
    data = report_data(_evidence(dict.fromkeys(ALL_CHECKS, PASS)), framework("soc2"), Period(START, START + DAY),
                       "dir x", "now")
    assert data["verdict"] == PASSED and 'id="failures"' not in render_html(data)


def test_bad_framework_and_empty_period():
    with pytest.raises(ConfigError, match="unknown framework"):
        framework("hipaa")
    with pytest.raises(ConfigError, match="empty"):
        Period(START, START)
