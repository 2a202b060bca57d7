"""The Bayes-optimal probability of a task label, computed from the visible history only.

For a task whose event is condition ``e``, the hazard of ``e`` at age ``s`` is
``baseline_e(s, sex) x HR_e(conditions recorded at the registration visit or at a visit no later than
s - 365 days)``. Over the 365-day window after the index visit (age ``a0``), ``s - 365 days <= a0``,
so every covariate of the hazard is in the history up to the index visit: the probability of the
event in the window is exactly ``1 - exp(-integral of the hazard over (a0, a0 + 365 days])``. The
integral is a finite sum (the baseline is piecewise constant in one-year age bands and the hazard
ratio changes only when a condition recorded in the year before the index visit starts to count).
No Monte-Carlo: the value is exact up to floating point. Exacerbations of asthma and COPD follow
their own process, whose closed form is in `exacerbations`.
"""

from __future__ import annotations

import functools
import math

from . import params as P
from .hazards import WINDOW_YEARS


@functools.lru_cache(maxsize=None)
def markers() -> dict:
    """condition -> codes whose presence at a visit means the condition is recorded there.

    A condition's own diagnosis / history code, and those of every condition that requires it
    (a recorded CKD stage 4 means CKD is recorded; a former smoker has smoked).
    """
    own = {c.name: {c.dx, c.history or c.dx} for c in P.CONDITIONS}
    out = {name: set(codes) for name, codes in own.items()}
    changed = True
    while changed:
        changed = False
        for c in P.CONDITIONS:
            for req in c.requires:
                before = len(out[req])
                out[req] |= out[c.name]
                changed |= len(out[req]) != before
    return {name: frozenset(codes) for name, codes in out.items()}


def first_recorded(codes_by_visit, names, upto: int) -> dict:
    """name -> index of the first visit (<= ``upto``) where the condition is recorded."""
    mk = markers()
    out = {}
    for v in range(upto + 1):
        visit = set(codes_by_visit[v])
        for name in names:
            if name not in out and not mk[name].isdisjoint(visit):
                out[name] = v
    return out


def cumulative_hazard(event: str, sex: str, ages, codes_by_visit, index: int, horizon: float = WINDOW_YEARS):
    """Integrated hazard of ``event`` over ``(ages[index], ages[index] + horizon]``, ``horizon`` <= 1 year."""
    from .simulate import model  # the compiled baselines

    M = model()
    e = M.idx[event]
    cond = P.CONDITION_BY_NAME[event]
    H, s = M.hazard[e], 0 if sex == "F" else 1
    names = set(cond.risks) | set(cond.requires)
    first = first_recorded(codes_by_visit, names, index)
    # age from which each recorded covariate counts (the registration visit: from the start)
    counts_from = {name: (-math.inf if v == 0 else ages[v] + WINDOW_YEARS) for name, v in first.items()}
    a0 = ages[index]
    a1 = a0 + horizon
    cuts = sorted({x for x in counts_from.values() if a0 < x < a1}) + [a1]
    total, lo = 0.0, a0
    for hi in cuts:
        active = {name for name, x in counts_from.items() if x <= lo}
        if all(req in active for req in cond.requires):
            hr = 1.0
            for name, ratio in cond.risks.items():
                if name in active:
                    hr *= ratio
            total += hr * H.integrate(s, lo, hi)
        lo = hi
    return total


def task_oracle(task: str, sex: str, ages, codes_by_visit, index: int) -> float:
    """P(label = 1 | history up to and including visit ``index``) for ``task``."""
    spec = next(t for t in P.TASK_SPECS if t.name == task)
    if spec.event == P.EXACERBATION_EVENT:
        from . import exacerbations

        return exacerbations.probability(ages, codes_by_visit, index)
    return 1.0 - math.exp(-cumulative_hazard(spec.event, sex, ages, codes_by_visit, index))


__all__ = ["cumulative_hazard", "first_recorded", "markers", "task_oracle"]
