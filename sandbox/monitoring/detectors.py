# Over 400 lines: seven short detectors and the history they share, so live and re-run agree.
"""The detectors: small pure functions over one operator's history of decisions.

A :class:`History` is one operator's events in seq order with the indexes the
detectors need (times, refusals by rule, queries by shape and template, clients
first seen, queries per hour), built by appending: O(log n) per event.  Each
detector takes the history, the index of the event just appended and the
:class:`Thresholds`, and returns a :class:`Finding` or None; it reads only what
happened up to that event, so evaluating every event of a history in order
(:func:`scan`) finds what evaluating each as it happened found.

Severities: ``info`` (worth a look, never a response), ``warning`` (a bureau should
look), ``high`` (a response policy acts on it).  A summary says what was seen in
counts, rule names and dataset ids: never a constant of a query, never a value.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .events import Event

__all__ = [
    "DETECTORS",
    "SEVERITIES",
    "Budget",
    "Finding",
    "History",
    "Thresholds",
    "budget_burn",
    "differencing",
    "evaluate",
    "new_client",
    "off_hours",
    "probing",
    "repeated",
    "scan",
    "severity_rank",
    "suppressions",
    "volume",
]

SEVERITIES = ("info", "warning", "high")
HOUR = 3600.0
DAY = 86400.0
_EVIDENCE = 20


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Thresholds:
    """What each detector counts as unusual (settings ``monitor_*``, docs/monitoring.md)."""

    probe_window_s: float = 600.0
    probe_rule_warning: int = 8
    probe_total_high: int = 20
    diff_window_s: float = DAY
    repeat_window_s: float = 600.0
    repeat_warning: int = 10
    repeat_high: int = 20
    volume_floor_per_hour: int = 300
    volume_factor: float = 3.0
    volume_baseline_days: int = 7
    burn_min_fraction: float = 0.25
    burn_factor: float = 4.0
    suppress_window_s: float = HOUR
    suppress_queries: int = 25
    work_hours: tuple[int, int] = (0, 24)
    new_client_after: int = 20
    """Decisions of history before a client not seen yet is worth an ``info``."""
    utc_offset_hours: float = 8.0


@dataclass(frozen=True)
class Budget:
    """A grant's privacy budget and validity, as the burn-rate detector needs them."""

    total: float
    valid_from: float
    valid_until: float


@dataclass(frozen=True)
class Finding:
    detector: str
    severity: str
    operator: str
    dataset: str | None
    evidence: tuple[int, ...]
    summary: str


@dataclass
class History:
    """One operator's decisions in seq order, with append-only indexes."""

    operator: str
    events: list[Event] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    deny_times: list[float] = field(default_factory=list)
    deny_index: list[int] = field(default_factory=list)
    rule_times: dict[str, list[float]] = field(default_factory=dict)
    bases: dict[tuple[str | None, str, frozenset[str]], int] = field(default_factory=dict)
    """(dataset, shape, predicate set) -> the last event computing under that set."""
    extended: dict[tuple[str | None, str, frozenset[str]], int] = field(default_factory=dict)
    """(dataset, shape, set without one excluding conjunct) -> the last event computing
    under such a set: a pair with an event of ``bases`` under that smaller set."""
    by_template: dict[tuple[str | None, str], list[int]] = field(default_factory=dict)
    clients: dict[str, int] = field(default_factory=dict)
    hours: dict[int, int] = field(default_factory=dict)
    suppress_times: list[float] = field(default_factory=list)
    suppress_index: list[int] = field(default_factory=list)
    suppress_groups: list[int] = field(default_factory=lambda: [0])
    """Prefix sums of the groups suppressed, over ``suppress_index``."""
    spend_index: dict[str | None, list[int]] = field(default_factory=dict)
    _peaks: dict[int, int] = field(default_factory=dict)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else -1

    def append(self, event: Event) -> int:
        """Add the next event (seq order); returns its index."""
        i = len(self.events)
        self.events.append(event)
        self.times.append(event.at)
        if not event.allowed:
            self.deny_times.append(event.at)
            self.deny_index.append(i)
            self.rule_times.setdefault(event.rule, []).append(event.at)
        elif not event.explain:
            if event.shape is not None and not event.cached:
                for key, minus in _pair_keys(event):
                    self.bases[key] = i
                    for smaller in minus:
                        self.extended[smaller] = i
            if event.template is not None:
                self.by_template.setdefault((event.dataset, event.template), []).append(i)
            if event.suppressed > 0:
                self.suppress_times.append(event.at)
                self.suppress_index.append(i)
                self.suppress_groups.append(self.suppress_groups[-1] + event.suppressed)
            if event.epsilon_spent > 0:
                self.spend_index.setdefault(event.dataset, []).append(i)
        if event.client is not None:
            self.clients.setdefault(event.client, i)
        bucket = int(event.at // HOUR)
        self.hours[bucket] = self.hours.get(bucket, 0) + 1
        return i

    def trim(self, keep: int) -> None:
        """Forget all but the newest ``keep`` events (rebuilds the indexes)."""
        if len(self.events) <= keep:
            return
        kept = self.events[-keep:]
        fresh = History(self.operator)
        for event in kept:
            fresh.append(event)
        self.__dict__.update(fresh.__dict__)

    def seqs(self, indexes: Iterable[int]) -> tuple[int, ...]:
        return tuple(self.events[j].seq for j in indexes)


def _since(times: Sequence[float], start: float) -> int:
    return bisect_left(times, start)


# -- the detectors ---------------------------------------------------------------------------


def probing(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """A burst of refusals: one rule again and again (warning), or many of any (high)."""
    event = history.events[i]
    if event.allowed:
        return None
    start = event.at - th.probe_window_s
    total = len(history.deny_times) - _since(history.deny_times, start)
    times = history.rule_times[event.rule]
    same = len(times) - _since(times, start)
    if total >= th.probe_total_high:
        severity = "high"
    elif same >= th.probe_rule_warning:
        severity = "warning"
    else:
        return None
    first = len(history.deny_index) - min(total, _EVIDENCE)
    minutes = th.probe_window_s / 60
    return Finding(
        "probing",
        severity,
        history.operator,
        event.dataset,
        history.seqs(history.deny_index[first:]),
        f"{total} refusals in {minutes:g} minutes, {same} of them by rule {event.rule}",
    )


def _pair_keys(
    event: Event,
) -> list[
    tuple[tuple[str | None, str, frozenset[str]], list[tuple[str | None, str, frozenset[str]]]]
]:
    """Per predicate set: its key, and the keys of the set without each excluding conjunct."""
    out = []
    for found in event.sets:
        conjuncts = frozenset(found)
        key = (event.dataset, event.shape or "", conjuncts)
        minus = [
            (event.dataset, event.shape or "", conjuncts - {c}) for c in conjuncts if c[0] == "!"
        ]
        out.append((key, minus))
    return out


def differencing(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """Two results over one dataset whose predicates differ by one excluding condition:
    their difference is what the excluded condition selects (one person, a small group).

    Inside one query (a total beside the same total with ``FILTER (WHERE NOT c)``: a
    complement) or across queries of the same shape within the window (high either way).
    A repeat from the release cache learns nothing new and is not counted.
    """
    event = history.events[i]
    if not event.allowed or event.cached or event.shape is None or not event.sets:
        return None
    keys = _pair_keys(event)
    own = {key for key, _minus in keys}
    for _key, minus in keys:
        if any(smaller in own for smaller in minus):
            return Finding(
                "differencing",
                "high",
                history.operator,
                event.dataset,
                (event.seq,),
                f"one query over {event.dataset} computes a result and its complement "
                "(the same predicate with one excluding condition)",
            )
    start = event.at - th.diff_window_s
    for key, minus in keys:
        partners = [history.extended.get(key)]  # an earlier query narrower by an exclusion
        partners += [history.bases.get(smaller) for smaller in minus]  # or wider by one
        for j in partners:
            if j is None or j >= i:
                continue
            other = history.events[j]
            if other.at < start or other.query == event.query:
                continue
            return Finding(
                "differencing",
                "high",
                history.operator,
                event.dataset,
                (other.seq, event.seq),
                f"two queries over {event.dataset} whose predicates differ by one excluding "
                "condition",
            )
    return None


def repeated(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """Many variants of one query that differ only in constants, in a short window
    (a sweep of values, or noise averaged over trivially different queries)."""
    event = history.events[i]
    if not event.allowed or event.explain or event.template is None:
        return None
    same = history.by_template[(event.dataset, event.template)]
    start = event.at - th.repeat_window_s
    seen: set[str | None] = set()
    used: list[int] = []
    for j in reversed(same[max(0, len(same) - 4 * th.repeat_high) :]):
        if j > i:
            continue
        if history.events[j].at < start:
            break
        used.append(j)
        seen.add(history.events[j].query)
    if len(seen) >= th.repeat_high:
        severity = "high"
    elif len(seen) >= th.repeat_warning:
        severity = "warning"
    else:
        return None
    return Finding(
        "repeated",
        severity,
        history.operator,
        event.dataset,
        history.seqs(sorted(used)[-_EVIDENCE:]),
        f"{len(seen)} variants of one query over {event.dataset} that differ only in "
        f"constants within {th.repeat_window_s / 60:g} minutes",
    )


def _peak_before(history: History, bucket: int, days: int) -> int:
    """The busiest hour of the operator's baseline: the ``days`` before this hour."""
    cached = history._peaks.get(bucket)
    if cached is None:
        hours = history.hours
        cached = max((hours.get(b, 0) for b in range(bucket - 24 * days, bucket - 1)), default=0)
        history._peaks = {bucket: cached}
    return cached


def volume(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """More queries in the last hour than the floor and than ``factor`` times the
    operator's own busiest hour of the baseline days."""
    event = history.events[i]
    start = event.at - HOUR
    count = i + 1 - _since(history.times, start)
    if count < th.volume_floor_per_hour:
        return None
    peak = _peak_before(history, int(event.at // HOUR), th.volume_baseline_days)
    if count <= th.volume_factor * peak:
        return None
    return Finding(
        "volume",
        "warning",
        history.operator,
        event.dataset,
        history.seqs(range(max(0, i + 1 - _EVIDENCE), i + 1)),
        f"{count} queries in the last hour; the busiest hour of the previous "
        f"{th.volume_baseline_days} days had {peak}",
    )


def budget_burn(
    history: History, i: int, th: Thresholds, budgets: Mapping[str, Budget], /
) -> Finding | None:
    """ε spent much faster than the grant's validity elapses."""
    event = history.events[i]
    if event.epsilon_spent <= 0 or event.epsilon_remaining is None or event.dataset is None:
        return None
    budget = budgets.get(event.dataset)
    if budget is None or budget.total <= 0 or budget.valid_until <= budget.valid_from:
        return None
    spent = (budget.total - event.epsilon_remaining) / budget.total
    elapsed = max(0.0, event.at - budget.valid_from) / (budget.valid_until - budget.valid_from)
    if spent < th.burn_min_fraction or spent <= th.burn_factor * elapsed:
        return None
    spends = history.spend_index.get(event.dataset, [])
    return Finding(
        "budget_burn",
        "warning",
        history.operator,
        event.dataset,
        history.seqs(spends[-_EVIDENCE:]),
        f"{spent:.0%} of the privacy budget on {event.dataset} spent in "
        f"{elapsed:.0%} of the grant's validity",
    )


def new_client(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """A client (address) the operator never used before, after ``new_client_after``
    decisions from others."""
    event = history.events[i]
    if i < th.new_client_after or event.client is None or history.clients.get(event.client) != i:
        return None
    return Finding(
        "new_client",
        "info",
        history.operator,
        event.dataset,
        (event.seq,),
        f"first query from a new client after {i} decisions",
    )


def off_hours(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """A query outside working hours (local time of the deployment)."""
    event = history.events[i]
    hour = int(((event.at + th.utc_offset_hours * HOUR) % DAY) // HOUR)
    start, end = th.work_hours
    if start <= hour < end:
        return None
    return Finding(
        "off_hours",
        "info",
        history.operator,
        event.dataset,
        (event.seq,),
        f"a query at {hour:02d}h local time, outside {start:02d}-{end:02d}h",
    )


def suppressions(history: History, i: int, th: Thresholds, /) -> Finding | None:
    """Many queries whose small groups were suppressed, in a short window (the shape of
    a search for small groups)."""
    event = history.events[i]
    if not event.allowed or event.suppressed <= 0:
        return None
    start = event.at - th.suppress_window_s
    first = _since(history.suppress_times, start)
    count = len(history.suppress_times) - first
    if count < th.suppress_queries:
        return None
    indexes = history.suppress_index[first:]
    groups = history.suppress_groups[-1] - history.suppress_groups[first]
    return Finding(
        "suppressions",
        "warning",
        history.operator,
        event.dataset,
        history.seqs(indexes[-_EVIDENCE:]),
        f"{count} queries with small groups suppressed ({groups} groups) within "
        f"{th.suppress_window_s / 60:g} minutes",
    )


Detector = Callable[[History, int, Thresholds], Finding | None]

DETECTORS: tuple[Detector, ...] = (
    probing,
    differencing,
    repeated,
    volume,
    new_client,
    off_hours,
    suppressions,
)
"""Every detector but the budget burn (which also needs the grants' budgets)."""


def evaluate(
    history: History, i: int, th: Thresholds, budgets: Mapping[str, Budget]
) -> list[Finding]:
    """Every detector's finding on event ``i`` of ``history``."""
    found = [f for detect in DETECTORS if (f := detect(history, i, th)) is not None]
    burn = budget_burn(history, i, th, budgets)
    if burn is not None:
        found.append(burn)
    return found


def scan(
    operator: str,
    events: Iterable[Event],
    th: Thresholds,
    budgets: Mapping[str, Budget] | None = None,
) -> list[Finding]:
    """Re-evaluate one operator's whole history, in seq order: every finding."""
    history = History(operator)
    found: list[Finding] = []
    for event in events:
        found.extend(evaluate(history, history.append(event), th, budgets or {}))
    return found
