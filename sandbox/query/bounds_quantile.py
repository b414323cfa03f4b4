"""DP quantiles of histograms, for proposing a dataset's bounds (pure functions).

``sandbox dataset propose-bounds`` (:mod:`sandbox.query.bounds_proposal`) reads
histograms in the enclave (per-entity row counts, per-entity distinct values of a
groupable column, clamped values) and chooses each bound here with the exponential
mechanism as permute-and-flip (:meth:`sandbox.query.noise.ExactNoise.permute_and_flip`),
never reading the true maximum.

One choice, over candidates ``i = 0 … m`` (the edges of ``m`` bins): the score of ``i``
is ``-|below(i) - q·n|``, ``below(i)`` the items in bins before ``i`` and ``n`` all
items.  Adding or removing one entity moves ``below(i)`` by at most ``Δ`` (its items:
1 for a per-entity count, at most ``C`` for values when each entity keeps at most ``C``
rows) and ``q·n`` by at most ``q·Δ``; so a score moves by at most ``Δ``
(``max(q, 1 - q) ≤ 1``).  Permute-and-flip at temperature ``T = 2Δ/ε`` is ε-DP, and with
probability ``1 - β`` its choice scores within ``T·(ln(m + 1) + ln(1/β))`` of the best
(McKenna and Sheldon 2020): :func:`rank_tolerance`.  The candidates depend only on
public inputs (the declared bounds, :data:`COUNT_CANDIDATES`), never on the data.

Per-entity counts are whole numbers with atoms (every person has one gender): there
the score of a candidate ``c`` is ``-max(0, #(< c) - q·n, q·n - #(≤ c))``, zero exactly
where ``c`` is a ``q``-quantile, so a plateau of equal scores above the largest value
does not draw the choice upwards; its sensitivity is ``Δ`` too.  The candidates are
``1 … 20`` and then steps of about 20% up to ``MAX_CONTRIBUTION`` (fewer candidates: a
smaller ``ln m`` and fewer ways to land far off).  Above the largest count every candidate
still scores ``-(1 - q)·n``, a plateau of a few dozen candidates that drew the choice far up
at a small ε (G = 924 for claims whose persons have at most 10 diagnoses, ε 1 over seven
quantiles on 2,000 persons); so each candidate's score is lowered by ``COUNT_PRIOR·T`` per
step up the list (:func:`chosen_count`), a data-independent offset: the sensitivity, and
so the privacy, are unchanged, and a choice is at most that offset further from the best
(:func:`count_tolerance`).

Values (clamping bounds) are chosen among a **geometric grid** (:func:`value_edges`): the
E24 preferred numbers (24 per decade, steps of 7 to 15%) over ``VALUE_DECADES`` decades below
the larger declared bound's magnitude, mirrored for negative values, plus 0 and the
declared bounds themselves.  Equal-width bins over wide declared bounds put almost every
candidate above the data (claim amounts declared ``[0, 200000]``, 99% of them under
13,500: 93% of 1,001 equal bins, every one scoring about ``-(1 - q)·n``), so at a small ε the
choice landed anywhere up to the declared bound; on a geometric grid the candidates above
the data are a few dozen of about 130, and a value is known to within 15% of itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from sandbox.core.classification_file import MAX_CONTRIBUTION
from sandbox.query.noise import ChoiceSource

__all__ = [
    "COUNT_CANDIDATES",
    "chosen_above",
    "chosen_count",
    "chosen_edge",
    "chosen_total",
    "count_scores",
    "count_tolerance",
    "edge_scores",
    "enough_entities",
    "least_entities",
    "rank_tolerance",
    "temperature",
    "total_scores",
    "value_edges",
]


def _count_candidates(limit: int) -> tuple[int, ...]:
    values = list(range(1, 21))
    while values[-1] < limit:
        values.append(min(limit, round(values[-1] * 1.2)))
    return tuple(values)


#: The bounds a per-entity count may be proposed as (data-independent).
COUNT_CANDIDATES = _count_candidates(MAX_CONTRIBUTION)


#: How much a count candidate's score is lowered per step up the list, in temperatures.
COUNT_PRIOR = Fraction(1, 4)
#: The E24 series of preferred numbers (IEC 60063): 24 steps per decade.
E24 = (
    10, 11, 12, 13, 15, 16, 18, 20, 22, 24, 27, 30,
    33, 36, 39, 43, 47, 51, 56, 62, 68, 75, 82, 91,
)  # fmt: skip
#: Decades of magnitude the value grid spans below the larger declared bound.
VALUE_DECADES = 6


def value_edges(lower: float, upper: float, decades: int = VALUE_DECADES) -> tuple[float, ...]:
    """Candidate clamping bounds in ``[lower, upper]`` (public: from the declared bounds only).

    The E24 numbers ``d·10^e`` for the ``decades`` decades up to the magnitude of
    ``max(|lower|, |upper|)``, with both signs, kept where they fall strictly inside the
    bounds; then ``lower``, ``upper`` and 0 (if inside).  Sorted, distinct, at least two.
    """
    if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
        raise ValueError("value edges need finite bounds with lower < upper")
    top = math.floor(math.log10(max(abs(lower), abs(upper))))
    magnitudes = {
        float(Fraction(d) * Fraction(10) ** (e - 1))
        for e in range(top - decades + 1, top + 1)
        for d in E24
    }
    inside = {v for m in magnitudes for v in (m, -m) if lower < v < upper}
    if lower < 0 < upper:
        inside.add(0.0)
    return tuple(sorted({float(lower), float(upper), *inside}))


def temperature(epsilon: Fraction, sensitivity: int) -> Fraction:
    """``T = 2Δ/ε``: permute-and-flip over scores of sensitivity ``Δ`` is then ε-DP."""
    if epsilon <= 0 or sensitivity < 1:
        raise ValueError("a DP quantile needs ε > 0 and a sensitivity of at least 1")
    return 2 * Fraction(sensitivity) / epsilon


def edge_scores(counts: Sequence[int], q: Fraction) -> list[Fraction]:
    """``-|below(i) - q·n|`` for each edge ``i = 0 … len(counts)``."""
    target = q * sum(counts)
    scores, below = [], 0
    for i in range(len(counts) + 1):
        scores.append(-abs(below - target))
        below += counts[i] if i < len(counts) else 0
    return scores


def chosen_edge(
    counts: Sequence[int],
    q: Fraction,
    epsilon: Fraction,
    sensitivity: int,
    source: ChoiceSource,
    *,
    first: int = 0,
) -> int:
    """The edge (``first … len(counts)``) permute-and-flip chooses as the ``q``-quantile.

    ``first``: the lowest admissible edge (1 for a count: a bound of 0 rows is none).
    """
    scores = edge_scores(counts, q)[first:]
    return first + source.permute_and_flip(scores, temperature(epsilon, sensitivity))


def count_scores(
    counts: Sequence[int], q: Fraction, candidates: Sequence[int] = COUNT_CANDIDATES
) -> list[Fraction]:
    """``-max(0, #(< c) - q·n, q·n - #(≤ c))`` per candidate ``c``; ``counts[j]``: value ``j+1``."""
    prefix = [0]
    for count in counts:
        prefix.append(prefix[-1] + count)
    target = q * prefix[-1]
    scores = []
    for c in candidates:
        below, at_most = prefix[min(c - 1, len(counts))], prefix[min(c, len(counts))]
        scores.append(-max(Fraction(0), below - target, target - at_most))
    return scores


def chosen_count(
    counts: Sequence[int],
    q: Fraction,
    epsilon: Fraction,
    source: ChoiceSource,
    candidates: Sequence[int] = COUNT_CANDIDATES,
) -> int:
    """The candidate permute-and-flip chooses as the ``q``-quantile of per-entity counts
    (one entity, one count: ``Δ = 1``), each score lowered by ``COUNT_PRIOR·T`` per step."""
    t = temperature(epsilon, 1)
    scores = [s - COUNT_PRIOR * t * i for i, s in enumerate(count_scores(counts, q, candidates))]
    return candidates[source.permute_and_flip(scores, t)]


def total_scores(
    counts: Sequence[int], q: Fraction, top: int, candidates: Sequence[int] | None = None
) -> list[Fraction]:
    """Scores of ``candidates`` (default ``1 … top``), the last standing for "that or more".

    All but the last score as in :func:`count_scores`; the last, ``c``, scores
    ``-max(0, #(< c) - q·n)``: zero wherever a ``q``-quantile is at least ``c``, so data
    whose entities hold more rows than any candidate keeps the largest rather than being
    drawn down to a candidate below them all.  Sensitivity 1, as every count score.
    """
    candidates = tuple(range(1, top + 1)) if candidates is None else tuple(candidates)
    if len(candidates) < 2:
        raise ValueError("a total's candidates need a top of at least 2")
    last = candidates[-1]
    scores = count_scores(counts, q, candidates[:-1])
    below = sum(counts[: last - 1])
    scores.append(-max(Fraction(0), below - q * sum(counts)))
    return scores


def chosen_total(
    counts: Sequence[int], q: Fraction, epsilon: Fraction, source: ChoiceSource, top: int
) -> int:
    """The candidate ``1 … top`` permute-and-flip chooses as the ``q``-quantile of per-entity
    row counts (:func:`total_scores`; ``Δ = 1``), each score lowered by ``COUNT_PRIOR·T``
    per step up, as :func:`chosen_count` does.  ``top``: "``top`` or more"."""
    return _drawn(counts, q, epsilon, source, top, tuple(range(1, top + 1)))


def chosen_above(
    counts: Sequence[int],
    q: Fraction,
    epsilon: Fraction,
    source: ChoiceSource,
    top: int,
    ceiling: int,
) -> int:
    """Where :func:`chosen_total` said "``top`` or more": the candidate ``top … ceiling``
    (every whole number, so the quantile itself is one; the last standing for "that or
    more") permute-and-flip chooses as the ``q``-quantile (:func:`total_scores`; ``Δ =
    1``), each score lowered by ``COUNT_PRIOR·T`` per step up from ``top``, as the first
    draw's are: against the plateau of equal scores above the largest count (a prior per
    20% step let a 95th percentile of 55 come out as 60 to 100 in 8% of draws), and
    where the data cannot tell (few entities) towards ``top``, the default, never below
    it (one draw over ``1 … ceiling`` pulled 100 entities of 60 rows each down to 3)."""
    if ceiling <= top:
        return top
    return _drawn(counts, q, epsilon, source, top, tuple(range(top, ceiling + 1)))


def _drawn(
    counts: Sequence[int],
    q: Fraction,
    epsilon: Fraction,
    source: ChoiceSource,
    top: int,
    candidates: tuple[int, ...],
) -> int:
    """Permute-and-flip over ``candidates`` (:func:`total_scores`), each score lowered by
    ``COUNT_PRIOR·T`` per step up the list."""
    t = temperature(epsilon, 1)
    scores = total_scores(counts, q, top, candidates)
    return candidates[
        source.permute_and_flip([s - COUNT_PRIOR * t * i for i, s in enumerate(scores)], t)
    ]


#: How far (in temperatures) a per-entity count quantile's best candidate must stand above
#: a wrong one on the plateau beyond the data for the choice to be worth using:
#: ``(1 - q)·n`` entities of score at temperature ``2/ε``.  At 3 a wrong candidate weighs
#: ``e^-3 ≈ 5%`` of the right one before the prior.
PLATEAU_GAP = 3


def least_entities(q: Fraction, epsilon: Fraction) -> int:
    """The fewest entities at which a ``q``-quantile of per-entity counts drawn at ``ε``
    stands :data:`PLATEAU_GAP` temperatures above the plateau: ``(1 - q)·n·ε/2 ≥ gap``
    (public: settings only).  At ε 0.2 and q 0.95: 600."""
    return math.ceil(2 * PLATEAU_GAP / ((1 - q) * epsilon))


def enough_entities(entities: int, least: int, epsilon: Fraction, source: ChoiceSource) -> bool:
    """Whether there are ``least`` entities or more, decided with ε-DP (permute-and-flip
    between "yes", scored ``-max(0, least - n)``, and "no", scored ``-max(0, n - least)``:
    each moves by at most 1 with one entity).  Far from ``least`` it is right almost
    surely; near it, either."""
    scores = [-Fraction(max(0, least - entities)), -Fraction(max(0, entities - least))]
    return source.permute_and_flip(scores, temperature(epsilon, 1)) == 0


def count_tolerance(epsilon: Fraction, candidates: int, beta: float = 1e-9) -> float:
    """:func:`rank_tolerance` of a count quantile, plus the largest offset of its prior."""
    offset = float(COUNT_PRIOR * temperature(epsilon, 1)) * (candidates - 1)
    return rank_tolerance(epsilon, 1, candidates, beta) + offset


def rank_tolerance(
    epsilon: Fraction, sensitivity: int, candidates: int, beta: float = 1e-9
) -> float:
    """How far below the best score a choice falls, at most, with probability ``1 - β``."""
    return float(temperature(epsilon, sensitivity)) * (math.log(candidates) + math.log(1 / beta))
