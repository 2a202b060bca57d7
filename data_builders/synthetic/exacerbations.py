"""Exacerbations of asthma and COPD: a self-exciting process whose risk depends on when, and in what
order, earlier exacerbations and treatment step-ups happened (the third task's event).

The hazard at age ``s`` (years) of a patient whose process is of ``kind`` (``params.EXACERBATION_KINDS``)
and whose record holds exacerbations ``history`` (all before ``s``) is::

    RATE[kind] * g * (1 + FREQUENT * n_365(s) + RECENCY * exp(-(s - t_last) / DECAY_YEARS))

- ``n_365(s)``: exacerbations in the 365 days before ``s`` (the frequent-exacerbator phenotype);
- ``t_last``: the latest exacerbation (no term without one): risk is highest just after one;
- ``g`` (1 before the first exacerbation): the order of the latest exacerbation and the latest
  treatment step-up, the control of the disease on its current treatment. Step-ups happen
  only at exacerbation encounters, so ``g = STEPPED`` if treatment was stepped up at the latest
  exacerbation, ``UNCONTROLLED`` if it was stepped up at an earlier one only (the latest came on
  escalated treatment), 1 if never.

Between two exacerbations nothing else changes the hazard (step-ups happen only at exacerbations;
asthma or COPD recorded later does not change ``kind``), so the probability of an exacerbation in
the 365 days after a visit is ``1 - exp(-cumulative_hazard(...))``, a closed form of the record up
to that visit. `from_record` reads the history back from the codes, as the oracle does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import params as P
from .hazards import WINDOW_YEARS

MAX_YEARS = 150.0  # no exacerbation is drawn further ahead than this


@dataclass(frozen=True)
class Exacerbation:
    """One exacerbation encounter: its age (years) and whether treatment was stepped up at it."""

    age: float
    stepped_up: bool


def order_factor(history) -> float:
    """``g``: STEPPED, UNCONTROLLED or 1, from the step-ups at the latest and at earlier exacerbations."""
    if history[-1].stepped_up:
        return P.EXACERBATION_STEPPED
    if any(e.stepped_up for e in history[:-1]):
        return P.EXACERBATION_UNCONTROLLED
    return 1.0


def cumulative_hazard(kind: str, history, start: float, stop: float) -> float:
    """Integral of the hazard over ``(start, stop]`` given ``history`` (every exacerbation before ``start``)."""
    total = stop - start
    for e in history:  # each counts in n_365 over (age, age + 365 days]
        total += P.EXACERBATION_FREQUENT * max(0.0, min(stop, e.age + WINDOW_YEARS) - max(start, e.age))
    if not history:
        return P.EXACERBATION_RATE[kind] * total
    last, tau = history[-1].age, P.EXACERBATION_DECAY_YEARS
    total += P.EXACERBATION_RECENCY * tau * (math.exp(-(start - last) / tau) - math.exp(-(stop - last) / tau))
    return P.EXACERBATION_RATE[kind] * order_factor(history) * total


def next_exacerbation(kind: str, history, start: float, target: float) -> float:
    """The age at which the cumulative hazard from ``start`` reaches ``target`` (an Exp(1) draw).

    The cumulative hazard is continuous and increasing, at least ``RATE x g x (x - start)``, so the
    root lies in ``(start, start + target / (RATE x g)]`` (searched with a 1% margin for rounding);
    bisection to 1e-10 years (3 ms). ``inf`` when it is more than ``MAX_YEARS`` away (beyond any
    follow-up).
    """
    g = order_factor(history) if history else 1.0
    hi = start + min(1.01 * target / (P.EXACERBATION_RATE[kind] * g), MAX_YEARS)
    if cumulative_hazard(kind, history, start, hi) < target:
        return math.inf
    lo = start
    while hi - lo > 1e-10:
        mid = 0.5 * (lo + hi)
        if cumulative_hazard(kind, history, start, mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def from_record(ages, codes_by_visit, upto: int):
    """``(kind, history)`` of a record up to visit ``upto``: ``kind`` is None before asthma or COPD is
    recorded; ``history`` the exacerbation encounters (visits with the marker code) so far."""
    from .oracle import markers

    mk = markers()
    kind, history = None, []
    steps = {code for codes in P.STEP_UP_CODES.values() for code in codes}
    for v in range(upto + 1):
        visit = set(codes_by_visit[v])
        if kind is None:
            kind = next((k for k in P.EXACERBATION_KINDS if not mk[k].isdisjoint(visit)), None)
        if P.EXACERBATION_MARKER in visit:
            history.append(Exacerbation(float(ages[v]), not steps.isdisjoint(visit)))
    return kind, history


def probability(ages, codes_by_visit, index: int, horizon: float = WINDOW_YEARS) -> float:
    """P(an exacerbation in ``(ages[index], ages[index] + horizon]`` | the record up to visit ``index``)."""
    kind, history = from_record(ages, codes_by_visit, index)
    if kind is None:
        return 0.0
    a0 = float(ages[index])
    return 1.0 - math.exp(-cumulative_hazard(kind, history, a0, a0 + horizon))


__all__ = ["Exacerbation", "cumulative_hazard", "from_record", "next_exacerbation", "order_factor", "probability"]
