"""Risk monitoring, early warning and emergency response (监测预警、应急处置).

Detectors over the stream of query decisions (metadata only: audit entries and the
control plane, never rows), alerts with a lifecycle, and response policies that act
on severe alerts at once on every server process.  See docs/monitoring.md.
"""

from .alerts import AlertFilter, acknowledge, get_alert, list_alerts, resolve
from .detectors import SEVERITIES, Budget, Finding, History, Thresholds, evaluate, scan
from .events import Event, event_from_entry
from .fingerprint import predicate_fingerprint
from .monitor import Monitor, thresholds_of
from .responses import ACTIONS, apply_responses, list_policies, reverse, set_policy

__all__ = [
    "ACTIONS",
    "SEVERITIES",
    "AlertFilter",
    "Budget",
    "Event",
    "Finding",
    "History",
    "Monitor",
    "Thresholds",
    "acknowledge",
    "apply_responses",
    "evaluate",
    "event_from_entry",
    "get_alert",
    "list_alerts",
    "list_policies",
    "predicate_fingerprint",
    "resolve",
    "reverse",
    "scan",
    "set_policy",
    "thresholds_of",
]
