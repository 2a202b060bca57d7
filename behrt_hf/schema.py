"""The patient schema: the one contract between data builders and the model.

Every builder (synthetic, MEDS, MIMIC, Synthea) yields rows of this shape::

    patient_id : string
    sex        : string                  "F" / "M" / "U"
    visits     : list of struct {
        time   : timestamp[us]           non-decreasing
        age    : float32 years           non-decreasing, 0..120
        codes  : list of string          MEDS style "SYSTEM//CODE", e.g. "ICD10CM//E11.9"
        code_times : list of timestamp[us], optional   each code's own time, parallel to `codes`
    }
    label_<task>        : int64          (builders that define tasks)
    oracle_<task>       : float32        true probability of the label (synthetic only)
    index_visit_<task>  : int32          last visit (0-based) the model may see for the task

Per-code times. A visit's `time` and `age` are those of its first event. When a visit groups
events of different times (a MEDS encounter or a time window, a MIMIC admission whose diagnoses
are coded at discharge, a Synthea encounter), `code_times` holds each code's own time; the field
absent, a null list or a null entry all mean "at the visit's time" (datasets written before the
field existed keep working). A prediction at time t sees a code only when its visit began at or
before t and its own time is at or before t (MEDS: `time <= prediction_time` may be used), so a
visit that straddles t contributes only its earlier codes: `behrt_hf.encoding.cut_at_times`, the
one cut that label files and the synthetic `index_visit_<task>` (prediction time = the index
visit's time) go through.

`validate_patient` is the single place where a record is checked; the tokenizer
calls it on every patient it encodes, readers may call it before yielding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import datasets

SEXES = ("F", "M", "U")
MIN_AGE, MAX_AGE = 0.0, 120.0
SECONDS_PER_YEAR = 365.25 * 86400

# MEDS conventions shared by the exporter (synthetic data) and the MEDS reader, so that
# cohort -> MEDS -> reader is an exact round trip:
#  - subject_id is int64 and patient_id is its decimal string;
#  - birth is a `MEDS_BIRTH` event; sex is a static event (null time) `GENDER//F` / `GENDER//M`
#    (no gender event means "U");
#  - a visit is the set of events sharing one timestamp, in file order; visit times are distinct;
#  - age is `age_in_years(time, birth)`, stored as float32.
MEDS_BIRTH_CODE = "MEDS_BIRTH"
MEDS_GENDER_PREFIX = "GENDER//"
# patient-schema split name -> MEDS split name (metadata/subject_splits.parquet)
MEDS_SPLIT_NAMES = {"train": "train", "validation": "tuning", "test": "held_out"}


def visit_features(time_dtype: str = "timestamp[us]", code_times: bool = False) -> dict:
    """Features of a visit; `code_times` adds the optional per-code times (see the module docstring)."""
    features = {
        "time": datasets.Value(time_dtype),
        "age": datasets.Value("float32"),
        "codes": datasets.List(datasets.Value("string")),
    }
    if code_times:
        features["code_times"] = datasets.List(datasets.Value(time_dtype))
    return features


def patient_features(
    tasks: Iterable[str] = (), with_oracle: bool = False, time_dtype: str = "timestamp[us]",
    code_times: bool = False,
) -> datasets.Features:
    """`datasets.Features` of the patient schema, with task columns for each name in `tasks`.

    Args:
        tasks: task names; each adds `label_<task>` and `index_visit_<task>`.
        with_oracle: also add `oracle_<task>` (the true label probability; synthetic data only).
        time_dtype: `"timestamp[us]"` (default) or `"int32"` for integer days.
        code_times: add each visit's optional `code_times` (readers whose visits span several times).
    """
    features = {
        "patient_id": datasets.Value("string"),
        "sex": datasets.Value("string"),
        "visits": datasets.List(visit_features(time_dtype, code_times)),
    }
    for task in tasks:
        features[f"label_{task}"] = datasets.Value("int64")
        if with_oracle:
            features[f"oracle_{task}"] = datasets.Value("float32")
        features[f"index_visit_{task}"] = datasets.Value("int32")
    return datasets.Features(features)


def age_in_years(time, birth) -> float:
    """Age in years at `time` for a patient born at `birth` (datetimes): seconds / (365.25 days)."""
    return (time - birth).total_seconds() / SECONDS_PER_YEAR


def task_names(column_names: Iterable[str]) -> list[str]:
    """The tasks a dataset defines, read off its `label_<task>` columns."""
    return sorted(c[len("label_") :] for c in column_names if c.startswith("label_"))


class PatientValidationError(ValueError):
    """A patient record breaks the schema. The message names the patient and the problem."""


def validate_patient(patient: Mapping[str, Any]) -> None:
    """Raise `PatientValidationError` naming the patient and the first problem found.

    Checks: at least one visit; every visit is a record with a list of codes, each a non-blank
    string; ages are finite, within 0..120 and non-decreasing; times (when present) are
    non-decreasing; `code_times` (when present) has one entry per code.
    """
    pid = patient.get("patient_id", "<no patient_id>")
    visits = patient.get("visits")

    def fail(problem: str) -> None:
        raise PatientValidationError(f"patient {pid!r}: {problem}")

    if not visits:
        fail("has no visits")
    prev_age = prev_time = None
    for i, visit in enumerate(visits):
        if not isinstance(visit, Mapping):
            fail(f"visit {i} is not a record ({{time, age, codes}}) but {visit!r}")
        codes = visit.get("codes")
        if codes is not None and not isinstance(codes, (list, tuple)):
            fail(f"visit {i} has codes {codes!r} ({type(codes).__name__}), not a list of strings")
        if not codes:
            fail(f"visit {i} has no codes")
        for code in codes:
            if not isinstance(code, str):
                fail(f"visit {i} has a non-string code {code!r} ({type(code).__name__})")
            if not code.strip():
                fail(f"visit {i} has a blank code {code!r}")
        age = visit.get("age")
        if age is None or not isinstance(age, (int, float)) or math.isnan(age) or math.isinf(age):
            fail(f"visit {i} has an invalid age {age!r}")
        if not MIN_AGE <= age <= MAX_AGE:
            fail(f"visit {i} has age {age} outside {MIN_AGE:g}..{MAX_AGE:g} years")
        if prev_age is not None and age < prev_age:
            fail(f"ages decrease at visit {i} ({prev_age} -> {age})")
        code_times = visit.get("code_times")
        if code_times is not None and (not isinstance(code_times, (list, tuple)) or len(code_times) != len(codes)):
            fail(f"visit {i} has {len(codes)} codes but code_times {code_times!r} (one time per code, or null)")
        time = visit.get("time")
        if time is not None and prev_time is not None and time < prev_time:
            fail(f"times decrease at visit {i} ({prev_time} -> {time})")
        prev_age, prev_time = age, time if time is not None else prev_time


__all__ = [
    "MEDS_BIRTH_CODE",
    "MEDS_GENDER_PREFIX",
    "MEDS_SPLIT_NAMES",
    "SECONDS_PER_YEAR",
    "SEXES",
    "age_in_years",
    "MIN_AGE",
    "MAX_AGE",
    "PatientValidationError",
    "patient_features",
    "task_names",
    "validate_patient",
    "visit_features",
]
