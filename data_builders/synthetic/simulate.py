"""The generating process: one patient's record from (seed, index).

A patient is simulated in continuous time (years since birth; visits on whole minutes):

1. Demographics: sex, registration age and date, length of follow-up.
2. Before registration, disease onsets follow the hazards of `params.CONDITIONS` with the patient's
   own (unrecorded) onsets as covariates; all of them are written at the registration visit.
3. After registration, each condition's hazard is ``baseline(age, sex) x HR(recorded conditions)``
   where a condition counts once it was *recorded at a visit at least 365 days earlier* (or at the
   registration visit). A non-acute onset is diagnosed at the next visit; an acute one (heart
   failure, MI, stroke, a fall) brings the patient in at the onset time.
4. Visits: routine visits form a renewal process (Gamma(2) gaps) whose rate grows with age and the
   number of recorded chronic conditions; well-child and pregnancy schedules add visits; acute
   onsets add visits. Each visit writes diagnoses, reviews of known conditions (treatment lines,
   monitoring labs, flares), minor acute problems, check-ups, screening and vaccinations.

5. Exacerbations of asthma and COPD (`exacerbations`): a self-exciting process that starts when
   either is recorded, drawn from the patient's second random stream. Each exacerbation is an
   urgent-care encounter (its own visit: the exacerbation, its treatment, maybe a step-up of
   maintenance treatment, nothing else), so the rest of the record is the same with or without it.

Because every hazard input is a recorded code at least 365 days old (exacerbations: the record of
earlier exacerbations), the probability of a task event in the 365 days after any visit is a closed
form of the visible history (see `oracle`).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import exacerbations as X
from . import params as P
from .codes import BMI_CODES, allowed
from .hazards import (
    MINUTES_PER_YEAR,
    WINDOW_MINUTES,
    AgeHazard,
    RandomStream,
    interpolate_rates,
)
from .oracle import task_oracle

INF = math.inf
_MIN = MINUTES_PER_YEAR
_EPOCH = datetime(1900, 1, 1)
_EPOCH_YEAR = 1900.0


@dataclass
class PatientRecord:
    """A generated patient: the schema row plus what the exporter and the tests need."""

    index: int
    sex: str
    birth: datetime
    minutes: list  # visit times, minutes since birth (strictly increasing)
    codes: list  # list of code lists, one per visit
    tasks: dict  # task -> (index_visit, label, oracle)
    hazard_log: dict = field(default_factory=dict)  # task event -> [(age, hazard ratio), ...]

    @property
    def patient_id(self) -> str:
        return str(self.index)

    def visit_times(self) -> list:
        return [self.birth + timedelta(minutes=m) for m in self.minutes]


# ---------------------------------------------------------------------------------------------------
# The compiled model: baselines, risk tables and dependency lists, built once per process.


class _Model:
    def __init__(self):
        conds = P.CONDITIONS
        self.conds = conds
        self.n = len(conds)
        self.idx = {c.name: i for i, c in enumerate(conds)}
        self.hazard = []
        for c in conds:
            if not c.hazard:
                self.hazard.append(None)
                continue
            base = [r * c.enrichment for r in interpolate_rates(c.rates, c.min_age, c.max_age)]
            self.hazard.append(AgeHazard([r * c.female for r in base], [r * c.male for r in base]))
        self.risks = [tuple((self.idx[k], v) for k, v in c.risks.items()) for c in conds]
        self.requires = [tuple(self.idx[k] for k in c.requires) for c in conds]
        self.implies = [tuple(self.idx[k] for k in c.implies) for c in conds]
        self.supersedes = [self.idx[c.supersedes] if c.supersedes else -1 for c in conds]
        deps = [[] for _ in conds]
        for i in range(self.n):
            for j, _ in self.risks[i]:
                deps[j].append(i)
            for j in self.requires[i]:
                deps[j].append(i)
        self.dependents = [tuple(sorted(set(d))) for d in deps]
        self.chronic = [c.chronic for c in conds]
        self.acute = [i for i, c in enumerate(conds) if c.acute]
        self.onset_driven = [i for i, c in enumerate(conds) if c.hazard and not c.recurrent]
        self.fall = self.idx["fall"]
        self.task_events = {t.name: self.idx[t.event] for t in P.TASK_SPECS if t.event in self.idx}
        self.exacerbation_kinds = tuple((k, self.idx[k]) for k in P.EXACERBATION_KINDS)
        self.review = [_cum(c.review) for c in conds]
        self.lines = [tuple(_cum(line) for line in c.lines) for c in conds]
        self.conception = AgeHazard(interpolate_rates(P.CONCEPTION_RATES, *P.CONCEPTION_AGES),
                                    [0.0] * 110)
        ages, rates = zip(*P.VISIT_RATE_BY_AGE)
        self.visit_rate_ages, self.visit_rates = ages, rates
        self.fall_injuries = (_cum([(c, w) for c, w, _ in P.FALL_INJURIES]),
                              _cum([(c, w) for c, _, w in P.FALL_INJURIES]))
        self.death_hr = [P.MORTALITY_HR.get(c.name, 1.0) for c in conds]
        self.bmi = _cum([(c, 1.0 / (k + 1)) for k, c in enumerate(BMI_CODES)])
        self._pools = {}

    def pools(self, sex: str, age: float, covid: bool):
        """Pool weights and per-pool (codes, cumulative weights) for one age bucket."""
        bucket = math.floor(age * 12) / 12 if age < 2 else float(math.floor(age))
        key = (sex, bucket, covid)
        hit = self._pools.get(key)
        if hit is None:
            hi = bucket + (1 / 12 if age < 2 else 1.0) - 1e-9
            base = next(w for limit, w in P.POOL_WEIGHTS_BY_AGE if bucket < limit)
            weights, tables = [], []
            for name, w in zip(P.POOL_NAMES, base):
                items = []
                for code, wf, wm, extras in P.POOLS[name]:
                    weight = wf if sex == "F" else wm
                    if code in _COVID_ERA_CODES and not covid:
                        weight = 0
                    if weight > 0 and allowed(code, sex, bucket) and allowed(code, sex, hi):
                        extras = tuple((x, p) for x, p in extras if allowed(x, sex, bucket) and allowed(x, sex, hi))
                        items.append(((code, extras), weight))
                weights.append(w if items else 0.0)
                tables.append(_cum(items) if items else None)
            hit = self._pools[key] = (weights, tables)
        return hit


_COVID_ERA_CODES = {P.icd("U07.1"), P.icd("Z20.822")}
_COVID_START = 2020.2


def _cum(pairs):
    """(items, cumulative weights) from (item, weight) pairs."""
    items, cum, total = [], [], 0.0
    for item, w in pairs:
        total += w
        items.append(item)
        cum.append(total)
    return items, cum


_MODEL = None


def model() -> _Model:
    global _MODEL
    if _MODEL is None:
        _MODEL = _Model()
    return _MODEL


# ---------------------------------------------------------------------------------------------------


class _Patient:
    """Mutable simulation state of one patient (see the module docstring for the process)."""

    def __init__(self, seed: int, index: int):
        self.M = M = model()
        self.r = r = RandomStream(seed, index)
        self.rx = RandomStream(seed, index, stream=1)  # the exacerbation process (and its task's index date)
        self.index = index
        self.sex = "F" if r.u() < P.P_FEMALE else "M"
        self.s = 0 if self.sex == "F" else 1
        n = M.n
        self.T = [INF] * n  # onset (or next event) time, years
        self.remaining = [0.0] * n
        self.cref = [0.0] * n
        self.hr = [0.0] * n
        self.eff = [False] * n  # counts as a hazard covariate
        self.recorded = [False] * n
        self.recorded_list: list[int] = []  # recorded conditions, in index order
        self.burden = 0  # recorded chronic conditions
        self.superseded = [False] * n
        self.med_lines = [None] * n  # [(start time, drug), ...] per recorded condition
        self.minutes: list[int] = []
        self.codes: list[list[str]] = []
        self.breakpoints: list = []  # heap of (time, condition)
        self.scheduled: list = []  # heap of (minute, seq, kind, payload)
        self._seq = 0
        self.fall_minutes: list[int] = []
        self.event_minutes = {}  # task event condition -> first onset-visit minute
        self.hazard_log = {i: [] for i in M.task_events.values()}
        self.last_checkup = -INF
        self.flu_season = -1
        self.vaccine_doses = {}
        self.deliveries = 0
        self.next_conception = INF
        self.bmi_code = None
        self.in_follow_up = False
        self.ex_kind = None  # asthma / COPD once recorded: the exacerbation process runs
        self.ex_history: list[X.Exacerbation] = []
        self.ex_level = 0  # maintenance treatment steps added so far
        self.ex_next = INF  # minute of the next exacerbation encounter
        self.ex_minutes: list[int] = []

    # --- hazards -------------------------------------------------------------------------------------

    def _compute_hr(self, i: int) -> float:
        eff = self.eff
        for j in self.M.requires[i]:
            if not eff[j]:
                return 0.0
        h = 1.0
        for j, ratio in self.M.risks[i]:
            if eff[j]:
                h *= ratio
        return h

    def _start_hazard(self, i: int, t: float) -> None:
        """Draw a fresh Exp(1) threshold for condition ``i`` at time ``t``."""
        H = self.M.hazard[i]
        self.remaining[i] = self.r.exp()
        self.cref[i] = H.cum(self.s, t)
        self.hr[i] = h = self._compute_hr(i)
        self.T[i] = H.invert(self.s, self.cref[i] + self.remaining[i] / h) if h > 0 else INF
        if i in self.hazard_log and self.in_follow_up:
            self.hazard_log[i].append((t, h))

    def _update_hazard(self, i: int, t: float) -> None:
        """Covariates of ``i`` may have changed at ``t``: bank the hazard so far, re-aim the onset."""
        H = self.M.hazard[i]
        if H is None:
            return
        new = self._compute_hr(i)
        if i in self.hazard_log and self.in_follow_up:  # the would-be hazard, also after the event
            self.hazard_log[i].append((t, new))
        if self.T[i] <= t or (self.recorded[i] and not self.M.conds[i].recurrent):
            return
        old = self.hr[i]
        if new == old:
            return
        c = H.cum(self.s, t)
        self.remaining[i] -= old * (c - self.cref[i])
        self.cref[i], self.hr[i] = c, new
        if new <= 0:
            self.T[i] = INF
        elif self.remaining[i] <= 0:
            self.T[i] = t
        else:
            self.T[i] = H.invert(self.s, c + self.remaining[i] / new)

    def _make_effective(self, j: int, t: float) -> None:
        if self.eff[j]:
            return
        self.eff[j] = True
        for i in self.M.dependents[j]:
            self._update_hazard(i, t)

    # --- scheduling ----------------------------------------------------------------------------------

    def _clinic_minute(self, t: float) -> int:
        """A minute during clinic hours (08:00-18:00) on the day containing age ``t``."""
        day = math.floor(t * 365.25)
        return day * 1440 + 480 + int(self.r.u() * 600)

    def _schedule(self, minute: int, kind: str, payload=None) -> None:
        self._seq += 1
        heapq.heappush(self.scheduled, (minute, self._seq, kind, payload))

    def _routine_minute(self, m: int) -> int:
        M, t = self.M, m / _MIN
        k = 0
        while k + 1 < len(M.visit_rate_ages) and t >= M.visit_rate_ages[k + 1]:
            k += 1
        rate = M.visit_rates[k]
        if self.sex == "F" and 18 <= t < 65:
            rate *= P.VISIT_RATE_FEMALE
        rate *= 1.0 + P.BURDEN_EFFECT * min(self.burden, P.MAX_BURDEN)
        gap = (self.r.exp() + self.r.exp()) / (2.0 * rate)
        return max(self._clinic_minute(t + gap), m + 1440)

    def _calendar(self, t: float) -> float:
        return self.birth_year + t

    # --- the simulation ------------------------------------------------------------------------------

    def run(self) -> PatientRecord:
        M, r = self.M, self.r
        # demographics
        u = r.u()
        for p, lo, hi in P.ENTRY_AGE_MIXTURE:
            if u < p:
                entry_age = lo + (hi - lo) * r.u()
                break
            u -= p
        entry_year = r.uniform(*P.ENTRY_YEARS)
        follow_up = r.uniform(*P.FOLLOW_UP_YEARS) * (P.FOLLOW_UP_SCALE_65PLUS if entry_age >= 65 else 1.0)
        entry_day = math.floor((entry_year - _EPOCH_YEAR) * 365.25)
        newborn = entry_age == 0.0
        entry_age_days = 3 + int(r.u() * 4) if newborn else math.floor(entry_age * 365.25)
        birth_day = entry_day - entry_age_days
        self.birth = _EPOCH + timedelta(days=birth_day)
        self.birth_year = _EPOCH_YEAR + birth_day / 365.25
        entry_m = self._clinic_minute(entry_age_days / 365.25 + 1e-9)
        entry_t = entry_m / _MIN
        end_t = min(entry_t + follow_up, P.STUDY_END - self.birth_year, P.MAX_FOLLOW_UP_AGE)
        end_m = max(int(end_t * _MIN), entry_m)

        # before registration: onsets with the patient's own onsets as covariates, kept with the
        # probability that such a history survives to registration (see params.MORTALITY_HR)
        for _ in range(P.MAX_SURVIVAL_DRAWS):
            if r.u() < self._pre_registration(entry_t):
                break
        self.in_follow_up = True
        for i in M.task_events.values():
            self.hazard_log[i].append((entry_t, self.hr[i]))
        self._start_hazard(M.fall, entry_t)
        if self.sex == "F":
            self._next_conception_from(entry_t)

        # task index dates: uniform over the last INDEX_SPAN_YEARS of the follow-up that leaves a
        # full window; drawn now, independently of the disease process
        self.task_state = {}
        self._last_index_minute = last = end_m - WINDOW_MINUTES
        first = max(entry_m, last - int(P.INDEX_SPAN_YEARS * _MIN))
        for spec in P.TASK_SPECS:
            rng = self.rx if spec.event == P.EXACERBATION_EVENT else r
            tau = first + int(rng.u() * (last - first + 1)) if last >= first else None
            self.task_state[spec.name] = [tau, -1]

        # well-child schedule
        if entry_t < 18:
            for age, vaccines in P.WELL_CHILD:
                if age > entry_t + 1 / 52 and r.chance(P.P_WELL_CHILD_ATTENDED):
                    self._schedule(self._clinic_minute(age), "well_child", vaccines)

        self._visit(entry_m, "registration", None)
        routine = self._routine_minute(entry_m)
        while True:
            last_m = self.minutes[-1]
            # the next thing that happens
            t_bp = self.breakpoints[0][0] if self.breakpoints else INF
            acute_i, t_acute = -1, INF
            for i in M.acute:
                if self.T[i] < t_acute and not (self.recorded[i] and not M.conds[i].recurrent):
                    acute_i, t_acute = i, self.T[i]
            t_conc = self.next_conception
            m_sched = self.scheduled[0][0] if self.scheduled else INF
            m_acute = math.ceil(t_acute * _MIN - 1e-6) if t_acute < INF else INF
            # time-only events (no visit) first when they come strictly earlier
            t_next_visit = min(routine, m_sched, m_acute) / _MIN
            if min(t_bp, t_conc) < t_next_visit and min(t_bp, t_conc) * _MIN <= end_m:
                if t_bp <= t_conc:
                    _, j = heapq.heappop(self.breakpoints)
                    self._make_effective(j, t_bp)
                else:
                    self._conceive(t_conc)
                continue
            m = min(routine, m_sched, m_acute)
            if self.ex_next < m and self.ex_next <= end_m:  # an exacerbation encounter comes first
                self._exacerbation_visit(max(self.ex_next, last_m + 1))
                continue
            if m > end_m:
                break
            if m == m_acute:
                kind = "acute"
            elif m == m_sched:
                _, _, kind, payload = heapq.heappop(self.scheduled)
            else:
                kind, payload = "routine", None
            m = max(m, last_m + 1)
            self._visit(m, kind, payload if kind != "acute" else None)
            routine = self._routine_minute(m)

        tasks = self._finish_tasks()
        log = {name: self.hazard_log[i] for name, i in M.task_events.items()}
        return PatientRecord(self.index, self.sex, self.birth, self.minutes, self.codes, tasks, log)

    def _pre_registration(self, entry_t: float) -> float:
        """Simulate onsets from birth to registration; return the history's relative survival."""
        M = self.M
        self.T = [INF] * M.n
        self.eff = [False] * M.n
        for i in M.onset_driven:
            self._start_hazard(i, 0.0)
        pending = set(M.onset_driven)
        onsets = []
        while pending:
            i = min(pending, key=self.T.__getitem__)
            t = self.T[i]
            if t >= entry_t:
                break
            for k in (i,) + M.implies[i]:
                pending.discard(k)
                self.T[k] = min(self.T[k], t)
                self.eff[k] = True
                onsets.append((self.T[k], k))
            for k in (i,) + M.implies[i]:
                for d in M.dependents[k]:
                    self._update_hazard(d, t)
        # excess mortality: integral of mu(a) (HR(a) - 1) over the pieces between onsets
        a_, b_ = P.MORTALITY_LOG_RATE, P.MORTALITY_SLOPE
        excess, hr = 0.0, 1.0
        onsets.sort()
        edges = [t for t, _ in onsets] + [entry_t]
        for (t, k), nxt in zip(onsets, edges[1:]):
            hr *= M.death_hr[k]
            if hr > 1.0 and nxt > t:
                excess += (hr - 1.0) * (math.exp(a_ + b_ * nxt) - math.exp(a_ + b_ * t)) / b_
        return math.exp(-excess)

    # --- pregnancy -----------------------------------------------------------------------------------

    def _next_conception_from(self, t: float) -> None:
        H = self.M.conception
        target = H.cum(0, t) + self.r.exp()
        self.next_conception = H.invert(0, target)

    def _conceive(self, tc: float) -> None:
        r, week = self.r, 7.0 / 365.25
        first = self.deliveries == 0
        self._schedule(self._clinic_minute(tc + P.PREGNANCY_WEEKS["test"] * week), "pregnancy", ("test",))
        if r.chance(P.P_MISCARRIAGE):
            end = tc + 9 * week
            self._schedule(self._clinic_minute(end), "pregnancy", ("miscarriage",))
            rest = 0.3
        else:
            for stage in ("booking", "anomaly", "glucose", "late"):
                self._schedule(self._clinic_minute(tc + P.PREGNANCY_WEEKS[stage] * week), "pregnancy",
                               (stage, first))
            end = tc + (P.PREGNANCY_WEEKS["delivery"] + r.uniform(-1.0, 1.5)) * week
            self._schedule(self._clinic_minute(end), "pregnancy", ("delivery",))
            self._schedule(self._clinic_minute(end + 6 * week), "pregnancy", ("postpartum",))
            self.deliveries += 1
            rest = 0.5
        self._next_conception_from(end + rest)

    def _pregnancy_codes(self, payload, t: float, codes: list) -> None:
        r, icd, loinc = self.r, P.icd, P.loinc
        stage = payload[0]
        if stage == "test":
            codes += [icd("Z32.01"), loinc("2106-3")]
        elif stage == "miscarriage":
            codes.append(icd("O03.9"))
        elif stage == "delivery":
            codes += [icd("O80"), icd("Z37.0"), icd("Z3A.39")]
        elif stage == "postpartum":
            codes.append(icd("Z39.2"))
        else:
            first = payload[1]
            trimester = {"booking": "1", "anomaly": "2", "glucose": "3", "late": "3"}[stage]
            codes.append(icd(("Z34.0" if first else "Z34.8") + trimester))
            codes.append(icd({"booking": "Z3A.12", "anomaly": "Z3A.20", "glucose": "Z3A.28",
                              "late": "Z3A.36"}[stage]))
            obese = self.recorded[self.M.idx["obesity"]]
            if stage == "booking":
                self._maybe(codes, ((loinc("58410-2"), 0.7), (loinc("5195-3"), 0.6), (P.atc("B03BB01"), 0.5)))
            elif stage == "glucose":
                codes.append(loinc("1504-0"))
                p = P.P_GDM * (2.5 if obese else 1.0) * (1.8 if t >= 35 else 1.0)
                if r.chance(p):
                    codes.append(icd("O24.419"))
                    self._maybe(codes, ((P.atc("A10BA02"), 0.3),))
                    self._record(self.M.idx["gdm"], t, self.minutes_now)
            elif stage == "late":
                if r.chance(P.P_GHT * (2.0 if obese else 1.0)):
                    codes.append(icd("O13.3"))
                    self._record(self.M.idx["ght"], t, self.minutes_now)

    # --- visits ------------------------------------------------------------------------------------

    def _maybe(self, codes: list, pairs) -> None:
        u = self.r.u
        for code, p in pairs:
            if p >= 1.0 or u() < p:
                codes.append(code)

    def _record(self, i: int, t: float, m: int) -> None:
        """Condition ``i`` is written at the visit at minute ``m``: it counts 365 days later."""
        M = self.M
        self._mark_recorded(i, t)
        if self.T[i] > t:
            self.T[i] = t
        heapq.heappush(self.breakpoints, ((m + WINDOW_MINUTES) / _MIN, i))
        if M.supersedes[i] >= 0:
            self.superseded[M.supersedes[i]] = True
        self._start_treatment(i, t)

    def _mark_recorded(self, i: int, t: float) -> None:
        if not self.recorded[i]:
            self.recorded[i] = True
            bisect.insort(self.recorded_list, i)
            self.burden += self.M.chronic[i]

    def _start_treatment(self, i: int, since: float) -> None:
        lines = self.M.lines[i]
        if not lines:
            return
        c, r = self.M.conds[i], self.r
        start, out = since, []
        for items, cum in lines:
            out.append((start, r.pick(items, cum)))
            start += c.escalation_years * r.exp()
        self.med_lines[i] = out

    def _visit(self, m: int, kind: str, payload) -> None:
        M, r = self.M, self.r
        t = m / _MIN
        due = (m + 1e-6) / _MIN  # onsets up to this visit's minute (acute visits: ceil(onset) = m)
        self.minutes_now = m
        codes: list[str] = []
        conds = M.conds
        # diagnoses: every onset since the last visit (acute ones bring the patient in now)
        new = []
        if kind == "registration":
            for i in M.onset_driven:
                if self.T[i] <= t:
                    self._mark_recorded(i, t)
                    new.append(i)
            for i in new:
                if M.supersedes[i] >= 0:
                    self.superseded[M.supersedes[i]] = True
                self._make_effective(i, t)  # already counted since onset (no-op unless onset == t)
            for i in new:
                if not self.superseded[i]:
                    codes.append(conds[i].history or conds[i].dx)
                    if conds[i].name == "obesity":
                        codes.append(self._bmi())
                self._start_treatment(i, self.T[i])
        else:
            for i in M.onset_driven:
                if not self.recorded[i] and self.T[i] <= due:
                    new.append(i)
            for i in list(new):
                for k in M.implies[i]:
                    if not self.recorded[k] and k not in new:
                        new.append(k)
            for i in new:
                self._record(i, t, m)
                c = conds[i]
                codes.append(c.dx)
                if c.name == "obesity":
                    codes.append(self._bmi())
                if c.acute:
                    self._maybe(codes, c.acute_codes)
                self._maybe(codes, c.dx_codes)
                if i in M.task_events.values():
                    self.event_minutes.setdefault(i, m)
        # a fall brings the patient in
        f = M.fall
        if self.T[f] <= due:
            if not self.recorded[f]:
                self._record(f, t, m)
            codes.append(conds[f].dx)
            osteo = self.recorded[M.idx["osteoporosis"]]
            items, cum = M.fall_injuries[1 if osteo else 0]
            codes.append(r.pick(items, cum))
            self._maybe(codes, conds[f].acute_codes)
            self.fall_minutes.append(m)
            self._start_hazard(f, self.T[f])
            kind = "acute"

        if kind == "acute" and not codes:  # pragma: no cover - an acute visit always has its event
            kind = "routine"
        if kind == "registration":
            self._registration_codes(t, codes)
        elif kind == "well_child":
            self._exam(t, codes)
            if payload:
                codes.append(P.IMMUNIZATION)
                codes.extend(payload)
        elif kind == "pregnancy":
            self._pregnancy_codes(payload, t, codes)
        elif kind == "routine":
            self._routine_codes(t, codes, new)

        self.minutes.append(m)
        self.codes.append(list(dict.fromkeys(codes)))
        self._check_tasks(m, t)
        if self.ex_kind is None:
            self._start_exacerbations(t)

    # --- exacerbations of asthma and COPD (their own random stream) --------------------------------

    def _start_exacerbations(self, t: float) -> None:
        kind = next((k for k, i in self.M.exacerbation_kinds if self.recorded[i]), None)
        if kind is not None:
            self.ex_kind = kind
            self._next_exacerbation(t)

    def _next_exacerbation(self, t: float) -> None:
        age = X.next_exacerbation(self.ex_kind, self.ex_history, t, self.rx.exp())
        self.ex_next = math.ceil(age * _MIN) if age < INF else INF

    def _exacerbation_visit(self, m: int) -> None:
        """An urgent-care encounter: the exacerbation, its treatment, maybe a step-up; nothing else."""
        rx, kind, t = self.rx, self.ex_kind, m / _MIN
        codes = [P.EXACERBATION_MARKER]
        for code, p in P.EXACERBATION_CODES[kind]:
            if p >= 1.0 or rx.u() < p:
                codes.append(code)
        steps = P.STEP_UP_CODES[kind]
        stepped = self.ex_level < len(steps) and rx.chance(P.P_STEP_UP)
        if stepped:
            codes.append(steps[self.ex_level])
            self.ex_level += 1
        self.minutes.append(m)
        self.codes.append(list(dict.fromkeys(codes)))
        self.ex_minutes.append(m)
        self.ex_history.append(X.Exacerbation(t, stepped))
        self._next_exacerbation(t)

    def _bmi(self) -> str:
        if self.bmi_code is None:
            self.bmi_code = self.r.pick(*self.M.bmi)
        return self.bmi_code

    def _exam(self, t: float, codes: list) -> None:
        if t < 8 / 365.25:
            codes.append(P.NEWBORN_CHECK)
        elif t < 18:
            codes.append(P.CHILD_EXAM[1] if self.r.chance(0.1) else P.CHILD_EXAM[0])
            self._maybe(codes, P.CHILD_CHECKUP)
        else:
            chronic = self.burden > 0
            codes.append(P.ADULT_EXAM[1] if chronic else P.ADULT_EXAM[0])
            self._maybe(codes, P.ADULT_CHECKUP)
            for code, sex, lo, hi, p, extras in P.SCREENING:
                if (sex is None or sex == self.sex) and lo <= t < hi and self.r.chance(p):
                    codes.append(code)
                    codes.extend(extras)
        self.last_checkup = t

    def _registration_codes(self, t: float, codes: list) -> None:
        self._exam(t, codes)
        for i in self.recorded_list:
            if not self.superseded[i] and self.med_lines[i]:
                for start, drug in self.med_lines[i]:
                    if start < t:
                        codes.append(drug)
        if not codes:  # pragma: no cover - the exam always writes a code
            codes.append(P.ADULT_EXAM[0])

    def _routine_codes(self, t: float, codes: list, new: list) -> None:
        M, r = self.M, self.r
        chronic = False
        candidates, weights = [], []
        for i in self.recorded_list:
            if self.superseded[i] or i in new:
                continue
            c = M.conds[i]
            chronic = chronic or c.chronic
            if c.review:
                candidates.append(i)
                weights.append(c.review_prob)
        # a consultation addresses one to three known problems
        n_review = 1 + (r.u() < P.P_SECOND_PROBLEM) + (r.u() < P.P_THIRD_PROBLEM)
        reviewed = []
        while candidates and len(reviewed) < n_review:  # weighted, without replacement
            k = r.pick(range(len(candidates)), list(itertools.accumulate(weights)))
            reviewed.append(candidates.pop(k))
            weights.pop(k)
        for i in reviewed:
            c = M.conds[i]
            codes.append(r.pick(*M.review[i]))
            if c.name == "obesity":
                codes.append(self._bmi())
            if self.med_lines[i]:
                for start, drug in self.med_lines[i]:
                    if start < t and r.chance(0.85):
                        codes.append(drug)
            self._maybe(codes, c.labs)
            if c.flare and r.chance(c.flare[0]):
                self._maybe(codes, c.flare[1])
        # check-up when due
        if t >= 18 and t - self.last_checkup >= P.CHECKUP_INTERVAL_YEARS and r.chance(P.P_ADULT_CHECKUP):
            self._exam(t, codes)
        # a minor acute problem
        if not codes or r.chance(P.P_ACUTE_WITH_CHRONIC if chronic else 0.5):
            self._minor_problem(t, codes)
        self._vaccines(t, codes, chronic)

    def _minor_problem(self, t: float, codes: list) -> None:
        r = self.r
        cal = self._calendar(t)
        weights, tables = self.M.pools(self.sex, t, cal >= _COVID_START)
        season = 1.0 + P.RESPIRATORY_SEASONALITY * math.cos(2 * math.pi * ((cal % 1.0) - 0.04))
        w = list(weights)
        w[0] *= season
        total, cum = 0.0, []
        for x in w:
            total += x
            cum.append(total)
        k = P.POOL_NAMES.index(r.pick(P.POOL_NAMES, cum)) if total > 0 else -1
        if k < 0:  # pragma: no cover - every age bucket has a non-empty pool
            return
        (code, extras) = r.pick(*tables[k])
        codes.append(code)
        self._maybe(codes, extras)

    def _vaccines(self, t: float, codes: list, chronic: bool) -> None:
        r = self.r
        cal = self._calendar(t)
        season = int(cal - 0.67)  # flu seasons start in September
        frac = cal % 1.0
        if t >= 0.5 and frac >= 0.67 and season != self.flu_season:
            p = 0.7 if t >= 65 else 0.45 if chronic else 0.25
            if r.chance(p):
                codes += [P.IMMUNIZATION, P.FLU_VACCINE]
                self.flu_season = season
        for code, lo, hi, first, last, p, max_doses, gap in P.ADULT_VACCINES:
            if not (lo <= t < hi and first <= cal < last):
                continue
            doses, when = self.vaccine_doses.get(code, (0, -INF))
            if doses < max_doses and t - when >= gap and r.chance(p):
                codes += [P.IMMUNIZATION, code]
                self.vaccine_doses[code] = (doses + 1, t)

    # --- tasks ---------------------------------------------------------------------------------------

    def _check_tasks(self, m: int, t: float) -> None:
        M = self.M
        visit = len(self.minutes) - 1
        for spec in P.TASK_SPECS:
            state = self.task_state[spec.name]
            tau, idx = state
            if idx >= 0 or tau is None or m < tau or m > self._last_index_minute:
                continue
            if t < spec.min_age or (spec.exclude_recorded and self.recorded[M.idx[spec.event]]):
                continue
            if spec.any_of and sum(self.recorded[M.idx[k]] for k in spec.any_of) < spec.min_any_of:
                continue
            if len(self.ex_history) < spec.min_exacerbations:
                continue
            state[1] = visit

    def _finish_tasks(self) -> dict:
        out = {}
        ages = [m / _MIN for m in self.minutes]
        for spec in P.TASK_SPECS:
            idx = self.task_state[spec.name][1]
            if idx < 0:
                out[spec.name] = (-1, -1, math.nan)
                continue
            m0 = self.minutes[idx]
            if spec.event == "fall":
                hit = any(m0 < m <= m0 + WINDOW_MINUTES for m in self.fall_minutes)
            elif spec.event == P.EXACERBATION_EVENT:
                hit = any(m0 < m <= m0 + WINDOW_MINUTES for m in self.ex_minutes)
            else:
                m_event = self.event_minutes.get(self.M.idx[spec.event])
                hit = m_event is not None and m0 < m_event <= m0 + WINDOW_MINUTES
            oracle = task_oracle(spec.name, self.sex, ages, self.codes, idx)
            out[spec.name] = (idx, int(hit), oracle)
        return out


def simulate_patient(seed: int, index: int) -> PatientRecord:
    """The record of patient ``index`` of the cohort with ``seed``; depends on nothing else."""
    p = _Patient(seed, index)
    return p.run()


__all__ = ["PatientRecord", "model", "simulate_patient"]
