"""The evidence report as data (JSON) and as one self-contained HTML page (pure: no I/O).

The page needs nothing but itself: inline CSS, charts as inline SVG, no script, no external resource, so it
renders the same offline, in an archive of evidence, years later, and prints to PDF as it shows. Its first
screen says PASSED, FAILED or INCOMPLETE; a FAILED report lists the failing checks and the archive's
violations there, never under a green banner.
"""

from __future__ import annotations

import html
import json
from typing import Any

from pipeline.report.evidence import FAIL, NOT_RUN, PASS, Check, Evidence, Period, iso
from pipeline.report.frameworks import Framework

REPORT_FORMAT = "auditseal-evidence-report"
REPORT_VERSION = 1
PASSED, FAILED, INCOMPLETE = "PASSED", "FAILED", "INCOMPLETE"
_COLOURS = ("#3b6ea5", "#e07b39", "#4f9a65", "#b5453f", "#7d5ba6", "#8c6d46", "#d36fa8", "#6f6f6f", "#a9a93c")


REVIEW = "REVIEW"


def verdict(checks: list[Check]) -> str:
    """FAILED if any check failed, INCOMPLETE if any could not run, PASSED if one passed and none did either,
    REVIEW if every check is evidence to read (INFO): nothing was there to pass or fail."""
    statuses = {check.status for check in checks}
    if FAIL in statuses:
        return FAILED
    if NOT_RUN in statuses:
        return INCOMPLETE
    return PASSED if PASS in statuses else REVIEW


def report_data(evidence: Evidence, framework: Framework, period: Period, source: str, generated_at: str) -> dict[str, Any]:
    """The report's data: what the JSON file holds and the HTML page shows."""
    checks = {check.id: check for check in evidence.checks}
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "framework": framework.name,
        "framework_title": framework.title, "source": source, "generated_at": generated_at,
        "period": {"from": iso(period.start_micros), "until": iso(period.end_micros)},
        "verdict": verdict(evidence.checks),
        "archive": {"first_event": iso(evidence.first_event_micros), "last_event": iso(evidence.last_event_micros)},
        "controls": [{"id": control.id, "title": control.title, "asks": control.asks,
                      "status": verdict([checks[c] for c in control.checks]),
                      "checks": list(control.checks)} for control in framework.controls],
        "checks": [check.as_dict() for check in evidence.checks],
        "series": {"events_per_day": evidence.events_per_day, "denials_per_day": evidence.denials_per_day,
                   "gaps": evidence.gaps, "coverage": evidence.coverage},
        "verification": evidence.verification,
    }


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: str) -> str:
    return f'<span class="badge {status.lower()}">{_e(status)}</span>'


def _bar_chart(chart_id: str, title: str, days: list[str], series: dict[str, dict[str, int]], unit: str) -> str:
    # stacked bars: one per day, one colour per series name; an SVG a person reads at a glance
    names = sorted({name for values in series.values() for name in values})
    totals = [sum(series.get(day, {}).values()) for day in days]
    top = max(totals, default=0) or 1
    width, height, left, bottom = 760, 220, 48, 40
    step = (width - left - 10) / max(len(days), 1)
    bar = max(min(step * 0.8, 40), 1)
    parts = [f'<svg id="{chart_id}" class="chart" role="img" aria-label="{_e(title)}" viewBox="0 0 {width} '
             f'{height + 24}" width="{width}" height="{height + 24}" xmlns="http://www.w3.org/2000/svg">',
             f'<title>{_e(title)}</title>',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width - 5}" y2="{height - bottom}" stroke="#888"/>',
             f'<text x="4" y="14" class="axis">{top} {unit}</text>']
    for n, day in enumerate(days):
        x, y = left + n * step, height - bottom
        for k, name in enumerate(names):
            value = series.get(day, {}).get(name, 0)
            if not value:
                continue
            h = value / top * (height - bottom - 24)
            parts.append(f'<rect x="{x:.1f}" y="{y - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                         f'fill="{_COLOURS[k % len(_COLOURS)]}"><title>{_e(day)} {_e(name)}: {value}</title></rect>')
            y -= h
        if len(days) <= 16 or n % max(len(days) // 8, 1) == 0:
            parts.append(f'<text x="{x:.1f}" y="{height - bottom + 14}" class="axis">{_e(day[5:])}</text>')
    legend_x = left
    for k, name in enumerate(names[:9]):
        parts.append(f'<rect x="{legend_x}" y="{height + 6}" width="10" height="10" fill="{_COLOURS[k % len(_COLOURS)]}"/>'
                     f'<text x="{legend_x + 14}" y="{height + 15}" class="axis">{_e(name)}</text>')
        legend_x += 14 + 8 * len(name) + 16
    if not names:
        parts.append(f'<text x="{left + 10}" y="{(height - bottom) / 2}" class="axis">no events in the period</text>')
    parts.append("</svg>")
    return "".join(parts)


def _coverage_chart(coverage: dict[str, int]) -> str:
    rows = [("objects valid", coverage["objects_valid"], coverage["objects"]),
            ("checkpoints valid", coverage["checkpoints_valid"], coverage["checkpoints"]),
            ("period events verified", coverage["events_verified"], coverage["events"])]
    parts = ['<svg id="chart-coverage" class="chart" role="img" aria-label="verification coverage" viewBox="0 0 760 110" '
             'width="760" height="110" xmlns="http://www.w3.org/2000/svg"><title>Verification coverage</title>']
    for n, (name, good, total) in enumerate(rows):
        y = 10 + n * 32
        share = good / total if total else 0.0
        parts.append(f'<text x="4" y="{y + 15}" class="axis">{_e(name)}</text>'
                     f'<rect x="190" y="{y}" width="480" height="20" fill="#eee"/>'
                     f'<rect x="190" y="{y}" width="{480 * share:.1f}" height="20" fill="{"#4f9a65" if good == total else "#b5453f"}"/>'
                     f'<text x="680" y="{y + 15}" class="axis">{good}/{total}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _gaps_chart(gaps: list[dict[str, Any]]) -> str:
    if not gaps:
        return ('<svg id="chart-gaps" class="chart" role="img" aria-label="gaps" viewBox="0 0 760 40" width="760" '
                'height="40" xmlns="http://www.w3.org/2000/svg"><title>Gaps</title><rect x="0" y="8" width="760" '
                'height="20" fill="#4f9a65"/><text x="8" y="23" fill="#fff" class="axis">no gap in any chain</text></svg>')
    parts = [f'<svg id="chart-gaps" class="chart" role="img" aria-label="gaps" viewBox="0 0 760 {24 * len(gaps[:12]) + 10}" '
             f'width="760" height="{24 * len(gaps[:12]) + 10}" xmlns="http://www.w3.org/2000/svg"><title>Gaps</title>']
    for n, gap in enumerate(gaps[:12]):
        y = 4 + 24 * n
        where = (f'from {gap["start"]} to {gap["end"]} ({gap.get("seconds")} s without a tree head)' if "start" in gap
                 else f'seq {gap.get("seq")}: {str(gap.get("detail"))[:90]}')
        parts.append(f'<rect x="0" y="{y}" width="760" height="20" fill="#b5453f"/>'
                     f'<text x="8" y="{y + 15}" fill="#fff" class="axis">{_e(gap.get("kind"))} chain '
                     f'{_e(gap.get("chain_id"))} {_e(where)}</text>')
    parts.append("</svg>")
    return "".join(parts)


_STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:2em auto;max-width:60em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.verdict{font-size:2em;font-weight:bold;padding:.3em .6em;border-radius:.2em;display:inline-block;color:#fff}
.verdict.passed{background:#2e7d4f}.verdict.failed{background:#b3261e}.verdict.incomplete{background:#9a6700}
.badge{font-size:.8em;font-weight:bold;padding:.1em .5em;border-radius:.3em;color:#fff}
.badge.pass,.badge.passed{background:#2e7d4f}.badge.fail,.badge.failed{background:#b3261e}
.badge.not_run,.badge.incomplete{background:#9a6700}.badge.info,.badge.review{background:#3b6ea5}
table{border-collapse:collapse;width:100%;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}.axis{font-size:11px;font-family:sans-serif}.chart{display:block;margin:.5em 0 1em}
pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.8em;white-space:pre-wrap}
.meta td:first-child{width:12em;font-weight:bold}section.control{page-break-inside:avoid}
@media print{body{margin:0;max-width:none}}
"""


def render_html(data: dict[str, Any]) -> str:
    """The self-contained page of :func:`report_data`'s data (module docstring)."""
    checks = {check["id"]: check for check in data["checks"]}
    state = data["verdict"]
    failing = [check for check in data["checks"] if check["status"] in (FAIL, NOT_RUN)]
    out = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>AuditSeal evidence report: '
           f'{_e(data["framework_title"])} {_e(data["period"]["from"])} to {_e(data["period"]["until"])}</title>'
           f'<style>{_STYLE}</style></head><body>',
           '<header id="summary">',
           f'<h1>Audit log evidence: {_e(data["framework_title"])}</h1>',
           f'<div id="verdict" class="verdict {state.lower()}">{_e(state)}</div>',
           '<table class="meta">',
           f'<tr><td>Period</td><td>{_e(data["period"]["from"])} to {_e(data["period"]["until"])} (UTC, end exclusive)</td></tr>',
           f'<tr><td>Archive</td><td>{_e(data["source"])}; events from {_e(data["archive"]["first_event"])} to '
           f'{_e(data["archive"]["last_event"])}</td></tr>',
           f'<tr><td>Generated</td><td>{_e(data["generated_at"])} by auditseal report; every result below was measured '
           'when the report ran</td></tr></table>']
    if failing:
        out.append('<h2 id="failures">What failed or could not be checked</h2><ul>')
        for check in failing:
            out.append(f'<li>{_badge(check["status"])} <a href="#check-{_e(check["id"])}">{_e(check["title"])}</a>: '
                       f'{_e(check["summary"])}</li>')
        out.append("</ul>")
        violations = data["verification"].get("violations", [])
        if violations:
            out.append('<table id="violations"><tr><th>kind</th><th>where</th><th>chain</th><th>seq</th><th>detail</th></tr>')
            for v in violations[:50]:
                out.append(f'<tr><td>{_e(v.get("kind"))}</td><td>{_e(v.get("location"))}</td><td>{_e(v.get("chain_id"))}'
                           f'</td><td>{_e(v.get("seq"))}</td><td>{_e(v.get("detail"))}</td></tr>')
            out.append("</table>")
    out.append("</header>")
    out.append('<h2>Controls</h2><table id="controls"><tr><th>control</th><th>result</th><th>checks</th></tr>')
    for control in data["controls"]:
        out.append(f'<tr><td><a href="#control-{_e(control["id"])}">{_e(control["id"])} {_e(control["title"])}</a></td>'
                   f'<td>{_badge(control["status"])}</td><td>'
                   + ", ".join(f'{_e(checks[c]["title"])} {_badge(checks[c]["status"])}' for c in control["checks"])
                   + "</td></tr>")
    out.append("</table>")
    series = data["series"]
    days = list(series["events_per_day"])
    out.append('<h2 id="charts">At a glance</h2>')
    out.append("<h3>Events per day, by service</h3>" + _bar_chart("chart-events-per-day", "events per day per service",
                                                                     days, series["events_per_day"], "events"))
    out.append("<h3>Denied actions per day</h3>" + _bar_chart(
        "chart-denials", "denials per day", days, {d: {"DENIED": n} for d, n in series["denials_per_day"].items()},
        "denials"))
    out.append("<h3>Gaps in the chains</h3>" + _gaps_chart(series["gaps"]))
    out.append("<h3>Verification coverage</h3>" + _coverage_chart(series["coverage"]))
    for control in data["controls"]:
        out.append(f'<section class="control" id="control-{_e(control["id"])}"><h2>{_e(control["id"])} '
                   f'{_e(control["title"])} {_badge(control["status"])}</h2><p>The framework asks: {_e(control["asks"])}.</p>')
        for check_id in control["checks"]:
            check = checks[check_id]
            out.append(f'<h3>{_e(check["title"])} {_badge(check["status"])}</h3><table>'
                       f'<tr><th>checked</th><td>{_e(check["title"])}</td></tr>'
                       f'<tr><th>how</th><td>{_e(check["how"])}</td></tr>'
                       f'<tr><th>result</th><td>{_badge(check["status"])} {_e(check["summary"])}</td></tr>'
                       f'<tr><th>evidence</th><td><a href="#check-{_e(check_id)}">details below</a></td></tr></table>')
        out.append("</section>")
    out.append('<h2 id="evidence">Evidence</h2>')
    for check in data["checks"]:
        text = json.dumps(check["evidence"], indent=1, sort_keys=True, default=str)
        if len(text) > 20_000:
            text = text[:20_000] + "\n… (the JSON report holds all of it)"
        out.append(f'<section id="check-{_e(check["id"])}"><h3>{_e(check["title"])} {_badge(check["status"])}</h3>'
                   f"<pre>{_e(text)}</pre></section>")
    out.append('<h2 id="check-this-report">How to check this report</h2><p>When it was written, the SHA-256 of this '
               'file was sealed into the audit log as an event (action <code>report.issue</code>, resource '
               '<code>evidence.report</code> / the hex digest). To check that this copy is the one issued, compute '
               '<code>sha256sum</code> of this file, then find the event and its proof: <code>auditseal timeline '
               '--s3 s3://BUCKET/ --action report.issue --resource evidence.report:DIGEST --bundle report.proof.json'
               '</code> and <code>auditseal verify-proof report.proof.json --keyring KEYRING</code>. A changed byte '
               'gives another digest, which no sealed event names.</p></body></html>')
    return "\n".join(out)
