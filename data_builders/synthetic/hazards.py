"""Age-dependent hazards and the per-patient random stream.

Every hazard in the generator is ``HR(recorded history) x baseline(age, sex)`` where the baseline
is piecewise constant on one-year age bands (as incidence tables are published: events per 1,000
person-years by age) and the hazard ratio is constant between the times the recorded history
changes. Integrals and inverses of such hazards are exact and cheap: the cumulative baseline is a
piecewise-linear table, so ``integrate`` is a lookup and ``invert`` a bisection.
"""

from __future__ import annotations

import math
from bisect import bisect_left

import numpy as np

MAX_AGE_BAND = 110  # baselines are zero from age 110 on
MINUTES_PER_YEAR = 525960  # 365.25 days: the year of schema.age_in_years
WINDOW_MINUTES = 365 * 1440  # task horizon and hazard lag: 365 days
WINDOW_YEARS = WINDOW_MINUTES / MINUTES_PER_YEAR


def interpolate_rates(anchors, min_age: float = 0.0, max_age: float = MAX_AGE_BAND) -> list[float]:
    """Rates per person-year on one-year bands from ``(age, events per 1,000 person-years)`` anchors.

    Log-linear interpolation between anchors (rates grow roughly exponentially with age), flat
    beyond the first and last anchor, and exactly zero for bands outside ``[min_age, max_age)``.
    A band is inside when its whole year is: band ``a`` covers ages ``[a, a+1)``.
    """
    ages = np.array([a for a, _ in anchors], dtype=float)
    logs = np.log(np.maximum([r for _, r in anchors], 1e-12) / 1000.0)
    mids = np.arange(MAX_AGE_BAND) + 0.5
    rates = np.exp(np.interp(mids, ages, logs))
    band = np.arange(MAX_AGE_BAND)
    rates[(band < math.ceil(min_age)) | (band + 1 > max_age)] = 0.0
    return rates.tolist()


class AgeHazard:
    """A baseline hazard per sex (index 0 = F, 1 = M), piecewise constant on one-year age bands."""

    __slots__ = ("rates", "cums")

    def __init__(self, female_rates: list[float], male_rates: list[float]):
        self.rates = (list(female_rates), list(male_rates))
        self.cums = tuple([0.0] + np.cumsum(r).tolist() for r in self.rates)

    def cum(self, sex: int, age: float) -> float:
        """Cumulative baseline hazard from birth to ``age`` (years)."""
        i = int(age)
        if i >= MAX_AGE_BAND:
            return self.cums[sex][MAX_AGE_BAND]
        return self.cums[sex][i] + self.rates[sex][i] * (age - i)

    def integrate(self, sex: int, start: float, stop: float) -> float:
        return self.cum(sex, stop) - self.cum(sex, start)

    def invert(self, sex: int, target: float) -> float:
        """The first age at which the cumulative baseline reaches ``target`` (inf if never)."""
        cums = self.cums[sex]
        if target > cums[MAX_AGE_BAND]:
            return math.inf
        j = bisect_left(cums, target)
        if j == 0:
            return 0.0
        return (j - 1) + (target - cums[j - 1]) / self.rates[sex][j - 1]


class RandomStream:
    """Uniform draws for one patient, from ``np.random.default_rng([seed, index])``.

    Drawn in blocks and served from a list so scalar draws cost a list pop, not a NumPy call. The
    stream depends only on (seed, index), so a record never depends on sharding or ``num_proc``.
    ``stream > 0`` gives an independent stream of the same patient (``[seed, index, stream]``), for a
    process added later that must not shift the draws of the others.
    """

    __slots__ = ("_rng", "_buf")

    def __init__(self, seed: int, index: int, stream: int = 0):
        self._rng = np.random.default_rng([seed, index] if stream == 0 else [seed, index, stream])
        self._buf: list[float] = []

    def u(self) -> float:
        if not self._buf:
            self._buf = self._rng.random(256).tolist()
        return self._buf.pop()

    def exp(self) -> float:
        """Exp(1)."""
        return -math.log(1.0 - self.u())

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.u()

    def chance(self, p: float) -> bool:
        return self.u() < p

    def pick(self, items, cum_weights):
        """One of ``items`` with the given cumulative weights (last = total)."""
        return items[bisect_left(cum_weights, self.u() * cum_weights[-1])]


__all__ = ["AgeHazard", "MINUTES_PER_YEAR", "RandomStream", "WINDOW_MINUTES", "WINDOW_YEARS", "interpolate_rates"]
