"""The integer samplers: exact distributions, reproducible with a seed, never floats."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter
from fractions import Fraction

import pytest

from sandbox.query.noise import (
    ExactNoise,
    NoiseSource,
    UrandomPool,
    _bernoulli_exp,
    as_fraction,
    discrete_laplace_mad,
    discrete_laplace_variance,
    seeded_noise,
    system_noise,
)

DRAWS = 20_000
SCALES = [Fraction(1, 2), Fraction(1), Fraction(37, 10), Fraction(25), Fraction(1000, 3), 12.3]


@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_discrete_laplace_moments_match_theory(scale: Fraction | float) -> None:
    draws = seeded_noise(20200101).discrete_laplace(as_fraction(scale), DRAWS)
    assert all(type(x) is int for x in draws)
    variance = statistics.fmean(x * x for x in draws)
    mad = statistics.fmean(abs(x) for x in draws)
    assert variance == pytest.approx(discrete_laplace_variance(scale), rel=0.06)
    assert mad == pytest.approx(discrete_laplace_mad(scale), rel=0.04)
    # symmetric: the mean is within 4 standard errors of 0, and both signs equally common
    stderr = math.sqrt(discrete_laplace_variance(scale) / DRAWS)
    assert abs(statistics.fmean(draws)) < 4 * stderr + 1e-12
    positive, negative = sum(x > 0 for x in draws), sum(x < 0 for x in draws)
    assert abs(positive - negative) < 4 * math.sqrt(positive + negative + 1)


def test_discrete_laplace_probabilities_of_small_values() -> None:
    scale = Fraction(3, 2)
    counts = Counter(seeded_noise(7).discrete_laplace(scale, 50_000))
    q = math.exp(-1 / float(scale))
    for x in range(-3, 4):
        expected = (1 - q) / (1 + q) * q ** abs(x)
        assert counts[x] / 50_000 == pytest.approx(expected, abs=4 * math.sqrt(expected / 50_000))


def test_small_scale_is_almost_always_zero_and_never_fractional() -> None:
    draws = seeded_noise(3).discrete_laplace(Fraction(1, 20), 2_000)
    assert set(draws) <= {-1, 0, 1}
    assert draws.count(0) > 1_990


@pytest.mark.parametrize("gamma", [Fraction(0), Fraction(1, 3), Fraction(1), Fraction(5, 2)])
def test_bernoulli_exp_is_exact(gamma: Fraction) -> None:
    rng = seeded_noise(11)._randbelow
    hits = sum(_bernoulli_exp(gamma.numerator, gamma.denominator, rng) for _ in range(40_000))
    p = math.exp(-gamma)
    assert hits / 40_000 == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 40_000) + 1e-12)


@pytest.mark.parametrize("sigma2", [Fraction(1, 4), Fraction(2), Fraction(100)], ids=str)
def test_discrete_gaussian_variance(sigma2: Fraction) -> None:
    draws = seeded_noise(5).discrete_gaussian(sigma2, 20_000)
    support = range(-2000, 2001)
    weights = [math.exp(-(x * x) / (2 * float(sigma2))) for x in support]
    exact = sum(w * x * x for w, x in zip(weights, support, strict=True)) / sum(weights)
    assert all(type(x) is int for x in draws)
    assert statistics.fmean(x * x for x in draws) == pytest.approx(exact, rel=0.06)
    assert abs(statistics.fmean(draws)) < 4 * math.sqrt(exact / 20_000)


def test_seeded_source_is_reproducible_and_seeds_differ() -> None:
    scale = Fraction(10)
    assert seeded_noise(1).discrete_laplace(scale, 100) == seeded_noise(1).discrete_laplace(
        scale, 100
    )
    assert seeded_noise(1).discrete_laplace(scale, 100) != seeded_noise(2).discrete_laplace(
        scale, 100
    )


def test_system_source_is_a_noise_source_and_unpredictable() -> None:
    source = system_noise()
    assert isinstance(source, NoiseSource)
    first, second = (
        source.discrete_laplace(Fraction(50), 200),
        source.discrete_laplace(Fraction(50), 200),
    )
    assert first != second
    assert all(type(x) is int for x in first)


def test_injected_randbelow_is_the_only_randomness() -> None:
    """Every random choice is an integer below an exact integer bound: no floats anywhere."""
    rng = random.Random(9)
    calls: list[int] = []

    def recording(n: int) -> int:
        calls.append(n)
        return rng.randrange(n)

    replay = random.Random(9)
    draws = ExactNoise(recording).discrete_laplace(Fraction(7, 2), 50)
    assert calls and all(type(n) is int and n > 0 for n in calls)
    assert draws == ExactNoise(replay.randrange).discrete_laplace(Fraction(7, 2), 50)


@pytest.mark.parametrize("bad", [0, -1, Fraction(-1, 2), "0"])
def test_non_positive_scales_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        as_fraction(bad)  # type: ignore[arg-type]


def test_float_scale_is_converted_exactly() -> None:
    assert as_fraction(0.1) == Fraction(3602879701896397, 36028797018963968)


def test_all_is_complete() -> None:
    """Every public class and function is exported, and every export exists."""
    import inspect

    import sandbox.query.noise as module

    defined = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and value.__module__ == module.__name__
    }
    assert defined <= set(module.__all__)
    assert all(hasattr(module, name) for name in module.__all__)


class _Bytes:
    """An ``urandom`` stand-in that serves a fixed byte string and counts its reads."""

    def __init__(self, data: bytes) -> None:
        self.data, self.reads = data, []

    def __call__(self, n: int) -> bytes:
        self.reads.append(n)
        chunk, self.data = self.data[:n], self.data[n:]
        assert len(chunk) == n, "the pool read past the bytes the test gave it"
        return chunk


def test_pool_takes_whole_bytes_drops_high_bits_and_redraws_values_out_of_range() -> None:
    # n = 5 takes 3 bits (the width of 4): one byte, shifted right by 5.  0xFF -> 7 and
    # 0xC0 -> 6 are out of range and drawn again; 0x80 -> 4 is kept.  n = 300 takes 9
    # bits: two bytes.  n = 1 has one value and reads nothing.
    source = _Bytes(bytes([0xFF, 0xC0, 0x80, 0x00, 0x80]) + bytes(11))
    pool = UrandomPool(16, urandom=source)
    assert pool(5) == 4
    assert pool(300) == 0x8000 >> 7
    assert pool(1) == 0
    assert pool(256) == 0  # 8 bits, the next byte whole
    assert source.reads == [16]


def test_pool_reads_a_new_block_when_the_old_one_runs_out() -> None:
    source = _Bytes(bytes(range(16)) + bytes(range(100, 116)))
    pool = UrandomPool(16, urandom=source)
    assert [pool(256) for _ in range(16)] == list(range(16))
    assert pool(256) == 100  # the 17th byte comes from a second read
    assert source.reads == [16, 16]
    wide = UrandomPool(16, urandom=_Bytes(bytes(16) + bytes([1] * 40)))
    assert wide(2**200) >= 0  # a bound wider than the block reads what it needs at once
    with pytest.raises(ValueError):
        UrandomPool(8)
    with pytest.raises(ValueError):
        UrandomPool()(0)


def test_pool_is_uniform() -> None:
    """Chi-square over 6 values (not a power of two: the redraw path runs) from real bytes."""
    draws = 60_000
    counts = Counter(UrandomPool(64)(6) for _ in range(draws))
    assert set(counts) == set(range(6))
    chi2 = sum((c - draws / 6) ** 2 / (draws / 6) for c in counts.values())
    assert chi2 < 25.7  # the 99.99th percentile of chi-square with 5 degrees of freedom


def test_system_noise_gives_each_call_its_own_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls (two threads, or a parent and its forked child) never share bytes."""
    import sandbox.query.noise as noise

    made: list[object] = []
    real = noise.UrandomPool

    def recording(block: int) -> object:
        made.append(pool := real(block))
        return pool

    monkeypatch.setattr(noise, "UrandomPool", recording)
    source = system_noise()
    source.discrete_laplace(Fraction(3), 10)
    source.discrete_gaussian(Fraction(9), 10)
    source.permute_and_flip([Fraction(1), Fraction(2)], Fraction(1))
    assert len(made) == 3 and len({id(p) for p in made}) == 3
    with pytest.raises(ValueError):
        ExactNoise()
    with pytest.raises(ValueError):
        ExactNoise(random.Random(1).randrange, pooled=True)
