"""Events -> patients: the tables every reader builds, and their assembly into patient-schema rows.

A reader turns its input into two Arrow tables, `EVENT_SCHEMA` (one row per code, with its time,
visit number and source row) and `PEOPLE_SCHEMA` (sex and birth per patient), and
`assemble_patients` does the rest: visits, ages and the drops, vectorised with numpy/pyarrow and
validated with `behrt_hf.schema.validate_patient` row by row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from behrt_hf.schema import MAX_AGE, SECONDS_PER_YEAR, SEXES, validate_patient

from ._drop_report import FILTERED, INVALID, DropReport, count_rows

UNKNOWN_PATIENT = "event of a patient missing from (or dropped from) the patients table"
US_PER_YEAR = SECONDS_PER_YEAR * 1e6
TIMESTAMP = pa.timestamp("us")

# Columns of the events table that `assemble_patients` consumes (built by each reader).
EVENT_SCHEMA = pa.schema(
    [
        ("patient_id", pa.string()),  # the patient-schema id
        ("time", TIMESTAMP),  # visit time of the event (MEDS: its own time; MIMIC/Synthea: the admission's)
        ("visit", pa.int64()),  # admission / encounter number (>= 0), or -1: visits by time (MEDS default)
        ("code", pa.string()),  # "SYSTEM//CODE"
        ("src", pa.int32()),  # index into the reader's list of source files (for examples)
        ("row", pa.int64()),  # 1-based row (CSV: line number) in that file (for examples)
    ]
)
# Optional events column: "code_time" (TIMESTAMP), the time the code became known when it is not the
# visit's (MIMIC: the admission's discharge; Synthea: the encounter's end); null: at `time`.
PEOPLE_SCHEMA = pa.schema([("patient_id", pa.string()), ("sex", pa.string()), ("birth", TIMESTAMP)])


def assemble_patients(
    events: pa.Table,
    people: pa.Table,
    report: DropReport,
    *,
    sources: Sequence[str],
    window_us: int = 0,
    dedupe: bool = False,
    patients_per_batch: int = 1024,
    code_times: bool = False,
) -> Iterator[dict]:
    """Group `events` (EVENT_SCHEMA) into visits and yield one patient-schema row per patient.

    `people` (PEOPLE_SCHEMA) gives each patient's sex and birth; patients come out in its order.
    Visits: events sorted by (time, visit) per patient, stably, so events of one visit keep their
    input order. Events with the same `visit` number (>= 0: an admission, an encounter) form one
    visit; events with `visit` -1 start a new visit where the time gap to the previous event
    exceeds `window_us` (0: every distinct time is a visit). A visit's time and age are those of
    its first event. Dropped and counted: events of patients missing from `people` or without a
    birth date, events before birth, events at ages above 120 years; with `dedupe`, repeats of a
    code within a visit (first kept). Patients left without visits are counted and not yielded.
    """
    events = events.combine_chunks()
    people_ids = people.column("patient_id")
    has_birth = np.append(people.column("birth").is_valid().to_numpy(zero_copy_only=False), False)
    birth_us = np.append(pc.fill_null(people.column("birth").cast(pa.int64()), 0).to_numpy(), 0)
    # rank: the patient's row in `people`; -1 (-> the appended "no birth" sentinel) when unknown
    rank = pc.fill_null(pc.index_in(events.column("patient_id"), value_set=people_ids), -1).to_numpy()
    time_valid = events.column("time").is_valid().to_numpy(zero_copy_only=False)
    time_us = pc.fill_null(events.column("time").cast(pa.int64()), 0).to_numpy()

    describe_person = lambda i: f"patient {people_ids[i].as_py()}"  # noqa: E731
    report.add_where(INVALID, "patient without a birth date (all its events dropped)", ~has_birth[:-1], describe_person)
    unknown = rank < 0
    count_rows(report, INVALID, UNKNOWN_PATIENT, unknown, events, sources)
    usable = has_birth[rank]
    count_rows(report, INVALID, "event without a time", usable & ~time_valid, events, sources)
    usable &= time_valid
    age_us = time_us - birth_us[rank]
    before = usable & (age_us < 0)
    count_rows(report, INVALID, "event before birth", before, events, sources)
    too_old = usable & (age_us / 1e6 / SECONDS_PER_YEAR > MAX_AGE)
    count_rows(report, INVALID, f"event at an age above {MAX_AGE:g} years", too_old, events, sources)

    known_us = time_us
    if "code_time" in events.column_names:  # a later time the code became known (MIMIC: discharge)
        known_us = np.maximum(time_us, pc.fill_null(events.column("code_time").cast(pa.int64()), 0).to_numpy())
    keep = np.flatnonzero(usable & ~before & ~too_old)
    visit_key = events.column("visit").to_numpy()[keep]
    start_us = _visit_start(rank[keep], visit_key, time_us[keep])
    # patient, visit start, visit, time; stable: input order among equals
    order = np.lexsort((time_us[keep], visit_key, start_us, rank[keep]))
    taken = keep[order]
    rank, time_us, age_us, visit_key = rank[taken], time_us[taken], age_us[taken], visit_key[order]
    known_us = known_us[taken]
    codes = events.column("code").take(pa.array(taken))

    new_visit = np.ones(len(taken), dtype=bool)
    new_visit[1:] = (
        (rank[1:] != rank[:-1])
        | (visit_key[1:] != visit_key[:-1])
        | ((visit_key[1:] < 0) & (time_us[1:] - time_us[:-1] > window_us))
    )
    if dedupe and len(taken):
        first = _first_of_each(np.cumsum(new_visit) - 1, codes)
        count_rows(report, FILTERED, "event repeating a code within a visit", ~first, events, sources, index=taken)
        rank, time_us, age_us, new_visit = rank[first], time_us[first], age_us[first], new_visit[first]
        known_us = known_us[first]
        codes = codes.filter(pa.array(first))

    with_visits = np.zeros(len(has_birth), dtype=bool)
    with_visits[rank] = True
    report.add_where(FILTERED, "patient with no visit left", ~with_visits & has_birth, describe_person)
    report.kept["events"] += len(rank)
    yield from _rows(people, rank, time_us, age_us, new_visit, codes, patients_per_batch, report,
                     known_us if code_times else None)


def _visit_start(rank: np.ndarray, visit_key: np.ndarray, time_us: np.ndarray) -> np.ndarray:
    """Per event, the time its visit starts: the earliest time of its (patient, visit >= 0), else its own."""
    start = time_us.copy()
    keyed = np.flatnonzero(visit_key >= 0)
    if len(keyed):
        group = rank[keyed].astype(np.int64) * (int(visit_key[keyed].max()) + 1) + visit_key[keyed]
        _, which = np.unique(group, return_inverse=True)
        first = np.full(which.max() + 1, np.iinfo(np.int64).max)
        np.minimum.at(first, which, time_us[keyed])
        start[keyed] = first[which]
    return start


def _first_of_each(visit_id: np.ndarray, codes: pa.ChunkedArray) -> np.ndarray:
    """Mask of the first occurrence of each (visit, code) pair."""
    table = pa.table({"v": visit_id, "c": codes, "i": np.arange(len(visit_id))})
    firsts = table.group_by(["v", "c"], use_threads=False).aggregate([("i", "min")]).column("i_min").to_numpy()
    mask = np.zeros(len(visit_id), dtype=bool)
    mask[firsts] = True
    return mask


def _rows(people, rank, time_us, age_us, new_visit, codes, patients_per_batch, report,
          known_us: np.ndarray | None = None) -> Iterator[dict]:
    """Yield validated patient rows, building Python objects one batch of patients at a time.

    Events arrive sorted by patient then visit; `new_visit` marks each visit's first event.
    `known_us` (per event, or None: no code_times) fills each visit's `code_times`.
    """
    ids, sexes = people.column("patient_id").to_pylist(), people.column("sex").to_pylist()
    ages = (age_us / 1e6 / SECONDS_PER_YEAR).astype(np.float32)  # == float32(age_in_years(time, birth))
    visit_starts = np.flatnonzero(new_visit)
    patient_starts = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1]]) if len(rank) else np.zeros(0, np.int64)
    # the visits of patient p are visit_starts[first_visit[p] : first_visit[p + 1]]
    first_visit = np.r_[np.searchsorted(visit_starts, patient_starts), len(visit_starts)]
    event_bounds = np.r_[visit_starts, len(rank)]
    for b in range(0, len(patient_starts), patients_per_batch):
        last = min(b + patients_per_batch, len(patient_starts))
        v0, v1 = first_visit[b], first_visit[last]
        lo = event_bounds[v0]
        batch_codes = codes.slice(lo, event_bounds[v1] - lo).to_pylist()
        bounds = (event_bounds[v0 : v1 + 1] - lo).tolist()
        times = pa.array(time_us[visit_starts[v0:v1]]).cast(TIMESTAMP).to_pylist()
        visits = [
            {"time": t, "age": a, "codes": batch_codes[s:e]}
            for t, a, s, e in zip(times, ages[visit_starts[v0:v1]].tolist(), bounds[:-1], bounds[1:])
        ]
        if known_us is not None:
            _add_code_times(visits, known_us[lo : event_bounds[v1]], time_us[visit_starts[v0:v1]], bounds)
        per_patient = (first_visit[b : last + 1] - v0).tolist()
        for p, start, stop in zip(range(b, last), per_patient[:-1], per_patient[1:]):
            person = int(rank[patient_starts[p]])
            sex = sexes[person]
            patient = {"patient_id": ids[person], "sex": sex if sex in SEXES else "U", "visits": visits[start:stop]}
            validate_patient(patient)
            yield patient
        report.kept["patients"] += last - b
        report.kept["visits"] += int(v1 - v0)


def _add_code_times(visits: list[dict], known_us: np.ndarray, visit_us: np.ndarray, bounds: list[int]) -> None:
    """Set each visit's `code_times`: its events' known times, or None when all equal the visit's time."""
    if not len(known_us):
        return
    differs = np.add.reduceat((known_us != np.repeat(visit_us, np.diff(bounds))).astype(np.int64), bounds[:-1])
    stamps = pa.array(known_us).cast(TIMESTAMP)
    for visit, n, s, e in zip(visits, differs.tolist(), bounds[:-1], bounds[1:]):
        visit["code_times"] = stamps.slice(s, e - s).to_pylist() if n else None


__all__ = ["EVENT_SCHEMA", "PEOPLE_SCHEMA", "TIMESTAMP", "UNKNOWN_PATIENT", "US_PER_YEAR", "assemble_patients"]
