"""The controls of each framework an evidence report covers, and which measured checks answer each (pure).

Each control names what the framework asks of audit logs and the checks (:mod:`pipeline.report.evidence`)
whose results are its evidence. The texts paraphrase the controls; the framework documents are the reference:
AICPA Trust Services Criteria (2017, revised points of focus 2022) CC6.1, CC7.2, CC7.3; ISO/IEC 27001:2022
Annex A 8.15, 8.16, 8.17; PCI DSS v4.0.1 requirement 10; SEC Rule 17a-4(f) for non-rewriteable storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Control:
    """One control of a framework and the checks that are its evidence."""

    id: str
    title: str
    asks: str
    checks: tuple[str, ...]


@dataclass(frozen=True)
class Framework:
    """A framework's name, the compliance profile its retention is held to, and its controls."""

    name: str
    title: str
    retention_profile: str
    controls: tuple[Control, ...]


_INTEGRITY = ("verification", "continuity")
_PROTECTION = ("worm_conformance", "object_locks", "separation_of_duties")

FRAMEWORKS = {
    "soc2": Framework("soc2", "SOC 2 (AICPA Trust Services Criteria)", "soc2", (
        Control("CC6.1", "Logical access security", "access to the audit log is restricted to the roles that need "
                "it, with separation of duties", ("separation_of_duties", "access_to_log")),
        Control("CC7.2", "Monitoring of system components", "the entity monitors its systems for anomalies, with "
                "complete and protected logs of security events", (*_INTEGRITY, *_PROTECTION, "access_to_log",
                                                                    "logging_stops")),
        Control("CC7.3", "Evaluation of security events", "detected events are evaluated (alerts raised and "
                "reviewed; the log itself verified)", ("alerts", "review", "key_changes")),
        Control("A1.2/C1.1", "Retention", "records are retained for the observation period",
                ("retention", "object_locks")),
    )),
    "iso27001": Framework("iso27001", "ISO/IEC 27001:2022 Annex A", "iso27001", (
        Control("A.8.15", "Logging", "logs recording activities, exceptions and faults are produced, kept, "
                "protected against tampering and unauthorised access, and analysed",
                (*_INTEGRITY, *_PROTECTION, "retention", "access_to_log", "key_changes")),
        Control("A.8.16", "Monitoring activities", "networks, systems and applications are monitored for "
                "anomalous behaviour and action is taken", ("alerts", "review", "logging_stops")),
        Control("A.8.17", "Clock synchronization", "the clocks of the systems are synchronised to approved time "
                "sources", ("clock_skew",)),
    )),
    "pci-dss": Framework("pci-dss", "PCI DSS v4.0.1 Requirement 10", "pci-dss", (
        Control("10.2.1.3", "Access to audit logs is logged", "all access to audit logs is captured",
                ("access_to_log",)),
        Control("10.2.1.6", "Stops of audit logging are logged", "initialisation, stopping or pausing of the audit "
                "logs is captured", ("logging_stops", "continuity")),
        Control("10.3.2", "Audit logs are protected from modification", "audit log files are protected to prevent "
                "modifications by individuals", _PROTECTION),
        Control("10.3.4", "Change detection on audit logs", "file-integrity monitoring or change-detection "
                "mechanisms make sure existing log data cannot be changed without alerts", ("verification",)),
        Control("10.4.1.1", "Automated log review", "automated mechanisms perform audit log reviews",
                ("alerts", "review")),
        Control("10.5.1", "Retention", "audit log history is retained for at least 12 months, the last three "
                "immediately available", ("retention", "object_locks")),
        Control("10.6", "Time synchronization", "system clocks and time are synchronised", ("clock_skew",)),
        Control("10.7", "Failures of critical security controls", "failures of audit logging and of the review "
                "mechanisms are detected, alerted and responded to", ("logging_stops", "continuity", "alerts")),
    )),
}


def framework(name: str) -> Framework:
    """The framework called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ConfigError(f"unknown framework {name!r}; expected one of {', '.join(FRAMEWORKS)}") from None
