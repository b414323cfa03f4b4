"""Integer noise that floating-point attacks cannot exploit.

Textbook Laplace noise drawn with floating point (``-b * log(U)``) leaks the
true value through the pattern of representable doubles it can produce
(Mironov 2012).  Here every draw is an *integer*, sampled with exact rational
and integer arithmetic only, following Canonne, Kamath and Steinke, "The
Discrete Gaussian for Differential Privacy" (NeurIPS 2020), algorithms 1-3:

* ``Bernoulli(exp(-gamma))`` for a rational ``gamma`` from uniform integers
  (algorithm 1);
* the discrete Laplace distribution ``P(x) ∝ exp(-|x| / scale)`` for a
  rational ``scale = t / s`` (algorithm 2): a uniform remainder ``U < t``
  accepted with probability ``exp(-U / t)``, plus ``t`` times a geometric
  number of ``exp(-1)`` successes, divided by ``s``, with a random sign;
* the discrete Gaussian ``P(x) ∝ exp(-x² / 2 sigma^2)`` by rejection from a discrete
  Laplace (algorithm 3);
* the exponential mechanism's choice among scored candidates, as **permute-and-flip**
  (McKenna and Sheldon, NeurIPS 2020): candidates in a uniformly random order, each
  accepted with probability ``exp(-(best - score) / temperature)`` by algorithm 1, so
  the choice is exact too (used for DP quantiles).

The only source of randomness is ``randbelow(n)``: a uniform integer in
``[0, n)``.  Production uses the operating system's CSPRNG, read a block at a time
(:class:`UrandomPool`: ``secrets.randbelow`` made one ``getrandom`` system call per
integer, half of a draw's time); tests inject a seeded :class:`random.Random` so
distributions are reproducible.
A caller that needs something faster (e.g. OpenDP's Rust sampler) can pass any
object with the :class:`NoiseSource` method.

Cost: about 8 uniform integers per Laplace draw, independent of the scale
(``bench/noise_bench.py`` prints the cells per second).

A production sampler (:func:`system_noise`) gives each call its own pool of OS bytes,
discarded when the call returns: two threads, or a process and a child it forks, never
read the same bytes, so no two releases share noise.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from fractions import Fraction
from math import gcd, isqrt
from typing import Protocol, runtime_checkable

from sandbox.query import noise_vector

__all__ = [
    "VECTOR_MIN",
    "ChoiceSource",
    "ExactNoise",
    "GaussianSource",
    "NoiseSource",
    "RandBelow",
    "UrandomPool",
    "as_fraction",
    "discrete_laplace_mad",
    "discrete_laplace_variance",
    "seeded_noise",
    "system_noise",
]

RandBelow = Callable[[int], int]
#: From this many draws of one scale the production sampler runs the vector sampler
#: (:mod:`sandbox.query.noise_vector`: the same algorithm over NumPy arrays).
VECTOR_MIN = 64


@runtime_checkable
class NoiseSource(Protocol):
    """What disclosure needs from a sampler: a vector of discrete Laplace draws."""

    def discrete_laplace(self, scale: Fraction, size: int) -> list[int]:
        """``size`` independent integers with ``P(x) ∝ exp(-|x| / scale)``."""
        ...


@runtime_checkable
class GaussianSource(Protocol):
    """What a Gaussian release needs: a vector of discrete Gaussian draws."""

    def discrete_gaussian(self, sigma2: Fraction, size: int) -> list[int]:
        """``size`` independent integers with ``P(x) ∝ exp(-x² / (2 sigma2))``."""
        ...


@runtime_checkable
class ChoiceSource(Protocol):
    """What a DP quantile needs: the exponential mechanism's choice among candidates."""

    def permute_and_flip(self, scores: list[Fraction], temperature: Fraction) -> int:
        """An index, chosen with probability that falls as ``exp(-(best - score) / T)``."""
        ...


def as_fraction(value: Fraction | int | float | str) -> Fraction:
    """An exact rational (a float is converted exactly, never rounded); must be > 0."""
    result = Fraction(value)
    if result <= 0:
        raise ValueError("a noise scale must be positive")
    return result


def _bernoulli_exp(num: int, den: int, randbelow: RandBelow) -> bool:
    """``True`` with probability ``exp(-num / den)`` (CKS20 algorithm 1), num >= 0."""
    while num > den:  # exp(-g) = exp(-1)^floor(g) * exp(-(g - floor(g)))
        if not _bernoulli_exp_minus_one(randbelow):
            return False
        num -= den
    k = 1
    while randbelow(den * k) < num:  # Bernoulli(g / k)
        k += 1
    return bool(k & 1)


def _bernoulli_exp_minus_one(randbelow: RandBelow) -> bool:
    """``True`` with probability ``exp(-1)``: algorithm 1 with gamma = 1, first step always 1."""
    k = 2
    while randbelow(k) == 0:
        k += 1
    return bool(k & 1)


def _discrete_laplace(s: int, t: int, randbelow: RandBelow) -> int:
    """One draw with ``P(x) ∝ exp(-|x| · s / t)`` (CKS20 algorithm 2)."""
    while True:
        u = randbelow(t)
        if not _bernoulli_exp(u, t, randbelow):
            continue
        v = 0
        while _bernoulli_exp_minus_one(randbelow):
            v += 1
        y = (u + t * v) // s
        negative = randbelow(2)
        if negative and y == 0:
            continue  # otherwise 0 would be drawn twice as often as it should
        return -y if negative else y


class UrandomPool:
    """``randbelow`` over a block of the OS CSPRNG's bytes, read again when used up.

    ``randbelow(n)`` takes the bits of ``n - 1``'s width from the fewest whole bytes
    that hold them (the extra low bits shifted out) and draws again where the value is
    ``>= n`` (as :meth:`random.SystemRandom.getrandbits` and ``_randbelow`` do, so the
    integers are exactly uniform), but from a block read by one ``os.urandom`` call
    instead of one call per integer.  Not thread-safe and not
    to be shared: :func:`system_noise` makes one per sampling call.
    """

    __slots__ = ("_block", "_buffer", "_pos", "_urandom")

    def __init__(self, block: int = 4096, urandom: Callable[[int], bytes] = os.urandom) -> None:
        if block < 16:
            raise ValueError("a pool block must hold at least 16 bytes")
        self._block = block
        self._urandom = urandom
        self._buffer = urandom(block)
        self._pos = 0

    def __call__(self, n: int) -> int:
        if n <= 0:
            raise ValueError("randbelow needs a positive bound")
        k = (n - 1).bit_length()
        if k == 0:  # n == 1: the only value, no randomness needed
            return 0
        size = (k + 7) >> 3
        shift = (size << 3) - k
        while True:
            pos, end = self._pos, self._pos + size
            if end > len(self._buffer):
                self._buffer = self._urandom(max(self._block, size))
                pos, end = 0, size
            self._pos = end
            value = int.from_bytes(self._buffer[pos:end], "little") >> shift
            if value < n:
                return value


def _shared(randbelow: RandBelow) -> Callable[[int], RandBelow]:
    return lambda _draws: randbelow


def _pooled(draws: int) -> RandBelow:
    """A fresh pool sized for about ``draws`` draws (about 16 bytes each, at most 64 KiB)."""
    return UrandomPool(min(1 << 16, 64 + 16 * draws))


class ExactNoise:
    """CKS20 samplers over an injected ``randbelow``; implements :class:`NoiseSource`.

    ``randbelow`` is shared by every call (a seeded source's sequence), or, with
    ``pooled=True`` (production), each call draws from a fresh :class:`UrandomPool`.
    """

    def __init__(self, randbelow: RandBelow | None = None, *, pooled: bool = False) -> None:
        if (randbelow is not None) == pooled:
            raise ValueError("give either a randbelow or pooled=True")
        self._randbelow = randbelow
        self._source = _pooled if randbelow is None else _shared(randbelow)
        # Production's many draws of one scale: the vector sampler over the OS CSPRNG's
        # bytes, read afresh by each call as the pools are.  A seeded source keeps the
        # scalar sampler, whose sequence the tests and benches reproduce.
        self._randbytes: Callable[[int], bytes] | None = os.urandom if pooled else None

    def discrete_laplace(self, scale: Fraction, size: int) -> list[int]:
        exact = as_fraction(scale)
        if self._randbytes is not None and size >= VECTOR_MIN and noise_vector.fits(exact):
            uniforms = noise_vector.Uniforms(self._randbytes)
            draws: list[int] = noise_vector.discrete_laplace(exact, size, uniforms).tolist()
            return draws
        s, t, rb = exact.denominator, exact.numerator, self._source(size)
        return [_discrete_laplace(s, t, rb) for _ in range(size)]

    def permute_and_flip(self, scores: list[Fraction], temperature: Fraction) -> int:
        """Permute-and-flip over ``scores`` at ``temperature`` ``T = 2Δ / ε``: ε-DP.

        Each candidate, in a random order, is kept with probability
        ``exp(-(best - score) / T)`` (exact, algorithm 1); the best is kept surely, so
        one pass ends.  Its utility is never worse than the exponential mechanism's.
        """
        if not scores:
            raise ValueError("no candidates to choose from")
        scale = as_fraction(temperature)
        best = max(scores)
        rb = self._source(len(scores))
        order = list(range(len(scores)))
        for i in range(len(order) - 1, 0, -1):  # Fisher-Yates from randbelow
            j = rb(i + 1)
            order[i], order[j] = order[j], order[i]
        for index in order:
            gamma = Fraction(best - scores[index]) / scale
            if _bernoulli_exp(gamma.numerator, gamma.denominator, rb):
                return index
        raise AssertionError("the best candidate is always kept")  # pragma: no cover

    def discrete_gaussian(self, sigma2: Fraction, size: int) -> list[int]:
        """``size`` draws with ``P(x) ∝ exp(-x² / (2 sigma^2))`` (CKS20 algorithm 3)."""
        var = as_fraction(sigma2)
        a, b = var.numerator, var.denominator
        t = isqrt(a // b) + 1  # floor(sigma) + 1
        # gamma = (|y| - sigma²/t)² / (2 sigma²) = (|y|·b·t - a)² / (2·a·b·t²), in lowest
        # terms as Fraction would give it (algorithm 1 reads numerator and denominator).
        bt, den = b * t, 2 * a * b * t * t
        rb = self._source(size)
        out: list[int] = []
        while len(out) < size:
            y = _discrete_laplace(1, t, rb)
            num = (abs(y) * bt - a) ** 2
            common = gcd(num, den)
            if _bernoulli_exp(num // common, den // common, rb):
                out.append(y)
        return out


def system_noise() -> ExactNoise:
    """Production sampler: the operating system's CSPRNG, a fresh pool per call."""
    return ExactNoise(pooled=True)


def seeded_noise(seed: int) -> ExactNoise:
    """Reproducible sampler for tests and benchmarks only: never for a release."""
    return ExactNoise(random.Random(seed).randrange)


def _q(scale: Fraction | float) -> float:
    from math import exp

    return exp(-1.0 / float(scale))


def discrete_laplace_variance(scale: Fraction | float) -> float:
    """``2q / (1 - q)²`` with ``q = exp(-1/scale)``: what tests compare draws against."""
    q = _q(scale)
    return 2 * q / (1 - q) ** 2


def discrete_laplace_mad(scale: Fraction | float) -> float:
    """Mean absolute value ``2q / (1 - q²)`` of a discrete Laplace draw."""
    q = _q(scale)
    return 2 * q / (1 - q * q)
