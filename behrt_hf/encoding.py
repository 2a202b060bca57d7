"""Vectorised patient encoding: a batch of patients -> BEHRT inputs, with no Python loop per token.

A batch (columns of Python objects, or an Arrow table as `dataset.with_format("arrow").map(...)`
passes it) is flattened into per-visit and per-code arrays (`PatientColumns`); validation,
task cuts, truncation and the code -> id lookup then run as numpy / Arrow compute over the whole
batch (`encode_columns`). The vectorised checks only flag records: every flagged record goes
through `schema.validate_patient`, so errors name the patient and the problem exactly as the
per-patient code does. The tokenizer (`BehrtTokenizerFast.encode_patients`) is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import MAX_AGE, MIN_AGE, PatientValidationError, validate_patient

# Value types of the Arrow output: those `datasets` infers from Python ints for these names
# (int64 for the rest), so Python and Arrow batches map to datasets with the same features.
ARROW_DTYPES = {"input_ids": np.int32, "attention_mask": np.int8}


def exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    """[0, c0, c0 + c1, ...]: the start offsets of consecutive runs of `counts` (one more entry)."""
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    offsets = exclusive_cumsum(counts)
    return np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1] - starts, counts)


@dataclass
class PatientColumns:
    """A batch of P patients with V visits and C codes in all, flattened in record order."""

    visits_per_patient: np.ndarray  # (P,) int64
    codes_per_visit: np.ndarray  # (V,) int64
    codes: pa.Array  # (C,) string
    ages: np.ndarray  # (V,) float64, NaN where missing
    times: np.ndarray | None  # (V,) int64 or float64 for the order check; None: already validated
    suspect: np.ndarray  # (P,) bool: a vectorised check failed, validate_patient decides
    record: Callable[[int], dict]  # the i-th patient as a dict, for validate_patient and messages

    @property
    def num_patients(self) -> int:
        return len(self.visits_per_patient)

    @classmethod
    def from_python(cls, batch: Mapping[str, Sequence[Any]]) -> "PatientColumns":
        """Columns of Python objects (`dataset.map(..., batched=True)` without a format)."""
        names = [k for k in batch if k != "visits"]
        visits = batch["visits"]

        def record(i: int) -> dict:
            return {**{k: batch[k][i] for k in names}, "visits": visits[i]}

        n = len(visits)
        visits_per_patient = np.fromiter((len(v) if v else 0 for v in visits), np.int64, n)
        flat = [visit for patient in visits if patient for visit in patient]  # one entry per visit
        try:
            code_lists = pa.array([v.get("codes") for v in flat], type=pa.list_(pa.string()))
            ages = pa.array([v.get("age") for v in flat], type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # a non-string code, a non-number age
            raise_validation_error(record, n, error)
        suspect = np.zeros(n, dtype=bool)
        times = _order_keys([v.get("time") for v in flat], visits_per_patient, suspect, record)
        return cls._checked(visits_per_patient, code_lists, ages, times, suspect, record)

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch) -> "PatientColumns":
        """An Arrow batch in the patient schema (`dataset.with_format("arrow").map(..., batched=True)`)."""
        visits = table.column("visits")
        if isinstance(visits, pa.ChunkedArray):
            visits = visits.combine_chunks()
        n = len(visits)

        def record(i: int) -> dict:
            return table.slice(i, 1).to_pylist()[0]

        visits_per_patient = pc.list_value_length(visits).fill_null(0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(visits)  # StructArray, one entry per visit
        fields = {flat.type.field(i).name for i in range(flat.type.num_fields)}
        if not {"codes", "age"} <= fields or flat.null_count:
            raise_validation_error(record, n, ValueError(f"visits need 'codes' and 'age' fields, got {sorted(fields)}"))
        code_lists = pc.struct_field(flat, "codes")
        if not (pa.types.is_list(code_lists.type) or pa.types.is_large_list(code_lists.type)) or not (
            pa.types.is_string(code_lists.type.value_type) or pa.types.is_large_string(code_lists.type.value_type)
        ):
            raise_validation_error(record, n, TypeError(f"codes must be lists of strings, got {code_lists.type}"))
        suspect = np.zeros(n, dtype=bool)
        times = None
        if "time" in fields:
            times = _order_keys(pc.struct_field(flat, "time"), visits_per_patient, suspect, record)
        ages = pc.struct_field(flat, "age").cast(pa.float64())
        return cls._checked(visits_per_patient, code_lists, ages, times, suspect, record)

    @classmethod
    def _checked(cls, visits_per_patient, code_lists, ages, times, suspect, record) -> "PatientColumns":
        """Flatten the codes and flag every patient that `validate_patient` could reject."""
        codes_per_visit = pc.list_value_length(code_lists).fill_null(0).to_numpy().astype(np.int64)
        codes = pc.list_flatten(code_lists)
        ages = ages.to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
        patient_of_visit = np.repeat(np.arange(len(visits_per_patient)), visits_per_patient)
        same_patient = patient_of_visit[1:] == patient_of_visit[:-1]  # visit i + 1 follows visit i
        bad_visit = (codes_per_visit == 0) | ~np.isfinite(ages) | (ages < MIN_AGE) | (ages > MAX_AGE)
        bad_visit[1:] |= same_patient & (ages[1:] < ages[:-1])
        if times is not None:
            bad_visit[1:] |= same_patient & (times[1:] < times[:-1])
        if codes.null_count:
            code_visit = np.repeat(np.arange(len(codes_per_visit)), codes_per_visit)
            bad_visit[code_visit[codes.is_null().to_numpy(zero_copy_only=False)]] = True
        suspect |= visits_per_patient == 0
        suspect[patient_of_visit[bad_visit]] = True
        return cls(visits_per_patient, codes_per_visit, codes, ages, times, suspect, record)

    def raise_first_error(self, until: np.ndarray | None, check_settings: Callable[[], None]) -> None:
        """Raise what the per-patient encoder raises first: patients in order, each validated, then
        its `until_visit` checked; `check_settings` (max_length) right after the first patient."""
        bad = self.suspect.copy()
        if until is not None:
            out_of_range = (until < 0) | (until >= self.visits_per_patient)
            bad |= out_of_range
        settings_checked = False
        for i in np.flatnonzero(bad).tolist():
            if i > 0 and not settings_checked:
                check_settings()
                settings_checked = True
            patient = self.record(i)
            validate_patient(patient)
            if until is not None and out_of_range[i]:
                raise PatientValidationError(
                    f"patient {patient.get('patient_id')!r}: until_visit={int(until[i])} is outside its "
                    f"{int(self.visits_per_patient[i])} visits"
                )
        check_settings()


def _order_keys(times, visits_per_patient, suspect, record) -> np.ndarray | None:
    """Visit times as numbers for the non-decreasing check; patients with a missing time are
    flagged (validate_patient skips missing times). None if the times were checked another way."""
    if not isinstance(times, pa.Array):
        if all(t is None for t in times):
            return None
        try:
            times = pa.array(times)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: let the per-patient check decide
            _validate_all(record, len(visits_per_patient))
            return None
    if pa.types.is_temporal(times.type) or pa.types.is_integer(times.type):
        keys = times.cast(pa.int64()).fill_null(0).to_numpy()
    elif pa.types.is_floating(times.type):
        keys = times.cast(pa.float64()).fill_null(0.0).to_numpy()
    else:
        _validate_all(record, len(visits_per_patient))
        return None
    if times.null_count:
        patient_of_visit = np.repeat(np.arange(len(visits_per_patient)), visits_per_patient)
        suspect[patient_of_visit[times.is_null().to_numpy(zero_copy_only=False)]] = True
    return keys


def _validate_all(record: Callable[[int], dict], n: int) -> None:
    for i in range(n):
        validate_patient(record(i))


def raise_validation_error(record: Callable[[int], dict], n: int, error: Exception):
    """The batch could not be read as arrays: raise the first patient's validation error, else `error`."""
    _validate_all(record, n)
    raise TypeError(f"Cannot encode this batch of patients: {error}") from error


@dataclass
class EncodedColumns:
    """BEHRT inputs of P patients: per-token arrays, patient i owning [offsets[i], offsets[i + 1])."""

    offsets: np.ndarray  # (P + 1,) int64
    columns: dict[str, np.ndarray]  # name -> (N,) int64, N = offsets[-1]
    num_unknown_codes: np.ndarray  # (P,) int64
    unknown_codes: pa.Array  # every code mapped to [UNK], with repeats

    def _list_arrays(self, dtypes: Mapping[str, Any] | None = None, skip=()) -> dict[str, pa.ListArray]:
        offsets = pa.array(self.offsets.astype(np.int32))
        dtypes = dtypes or {}
        return {
            name: pa.ListArray.from_arrays(offsets, pa.array(values.astype(dtypes.get(name, np.int64), copy=False)))
            for name, values in self.columns.items() if name not in skip
        }

    def to_python(self, return_unknown_count: bool) -> dict[str, list]:
        out = {name: array.to_pylist() for name, array in self._list_arrays(skip=("attention_mask",)).items()}
        out["attention_mask"] = [[1] * n for n in np.diff(self.offsets).tolist()]
        if return_unknown_count:
            out["num_unknown_codes"] = self.num_unknown_codes.tolist()
        return out

    def to_arrow(self, return_unknown_count: bool) -> pa.Table:
        out = self._list_arrays(ARROW_DTYPES)
        if return_unknown_count:
            out["num_unknown_codes"] = pa.array(self.num_unknown_codes)
        return pa.table(out)


def encode_columns(
    patients: PatientColumns,
    until: np.ndarray | None,
    max_length: int,
    vocab: pa.Array,
    vocab_ids: np.ndarray,
    special_ids: Mapping[str, int],
    age_steps_per_year: int,
    max_age: int,
    code_map: Callable[[pa.Array], pa.Array] | None = None,
    cls_age: str = "last",
) -> EncodedColumns:
    """`[CLS] codes of visit 1 [SEP] ...` for every patient of a validated batch.

    Visits after `until` (per patient, or None) are cut; then whole visits are dropped from the
    oldest end until the rest fits in `max_length` tokens; if even the last visit alone does not
    fit, its first `max_length - 2` codes are kept. `code_map` (e.g. the code hierarchy) rewrites
    the kept codes before the lookup. Codes missing from `vocab` become [UNK]. [CLS] carries the
    age of the last kept visit (`cls_age="last"`) or of the first (`"first"`, the BEHRT paper).
    """
    nv, nc = patients.visits_per_patient, patients.codes_per_visit
    visit_start = exclusive_cumsum(nv)  # (P + 1,)
    end = visit_start[:-1] + (nv if until is None else until + 1)  # one past the last visit to keep
    cost = exclusive_cumsum(nc + 1)  # tokens of visits [0, v): codes + [SEP] each
    # First visit whose suffix up to `end` fits beside [CLS]; costs are positive, so cost is increasing.
    first = np.searchsorted(cost, cost[end] - (max_length - 1), side="left")
    first = np.maximum(first, visit_start[:-1])
    too_long = first == end  # the last visit alone does not fit: keep its first codes
    first[too_long] -= 1

    kept_per_patient = end - first  # (P,) >= 1
    kept = ranges(first, kept_per_patient)  # (K,) flat visit index of every kept visit
    kept_start = exclusive_cumsum(kept_per_patient)
    codes_kept = nc[kept]
    codes_kept[kept_start[:-1][too_long]] = max_length - 2
    number = np.arange(len(kept)) - np.repeat(kept_start[:-1], kept_per_patient) + 1  # visit number, from 1
    steps = age_steps_per_year
    age_id = np.minimum(np.floor(patients.ages[kept] * steps), max_age * steps).astype(np.int64) + 1

    # Tokens of the kept visits, concatenated: visit j owns codes_kept[j] codes, then [SEP].
    tokens_per_visit = codes_kept + 1
    visit_of_token = np.repeat(np.arange(len(kept)), tokens_per_visit)  # (Tv,)
    within = np.arange(len(visit_of_token)) - np.repeat(exclusive_cumsum(tokens_per_visit)[:-1], tokens_per_visit)
    is_sep = within == codes_kept[visit_of_token]
    code_index = exclusive_cumsum(nc)[kept][visit_of_token] + within  # into patients.codes (not for [SEP])
    code_index = code_index[~is_sep]

    # Code -> id through a hash lookup in Arrow; unknown codes -> [UNK].
    codes = patients.codes.take(pa.array(code_index))
    if code_map is not None:
        codes = code_map(codes)
    if codes.type != vocab.type:
        codes = codes.cast(vocab.type)
    found = pc.index_in(codes, value_set=vocab)
    code_ids = np.where(
        found.is_null().to_numpy(zero_copy_only=False), special_ids["unk"], vocab_ids[found.fill_null(0).to_numpy()]
    )

    # Output position of each visit token: patient p's [CLS] precedes its visits (p + 1 [CLS] so far).
    patient_of_token = np.repeat(np.repeat(np.arange(len(nv)), kept_per_patient), tokens_per_visit)
    position = np.arange(len(visit_of_token)) + patient_of_token + 1
    tokens_per_patient = 1 + np.add.reduceat(tokens_per_visit, kept_start[:-1]) if len(nv) else np.zeros(0, np.int64)
    offsets = exclusive_cumsum(tokens_per_patient)
    cls_position = offsets[:-1]

    def scatter(cls_value, visit_values) -> np.ndarray:
        out = np.empty(offsets[-1], dtype=np.int64)
        out[cls_position] = cls_value
        out[position] = visit_values
        return out

    input_ids = np.full(len(visit_of_token), special_ids["sep"], dtype=np.int64)
    input_ids[~is_sep] = code_ids
    cls_visit = kept_start[1:] - 1 if cls_age == "last" else kept_start[:-1]  # last / first kept visit
    columns = {
        "input_ids": scatter(special_ids["cls"], input_ids),
        "age_ids": scatter(age_id[cls_visit], age_id[visit_of_token]),
        "segment_ids": scatter(0, ((number - 1) % 2)[visit_of_token]),
        "visit_ids": scatter(0, number[visit_of_token]),
        "attention_mask": np.ones(offsets[-1], dtype=np.int64),
    }
    unknown = code_ids == special_ids["unk"]
    num_unknown = np.bincount(patient_of_token[~is_sep][unknown], minlength=len(nv)).astype(np.int64)
    return EncodedColumns(offsets, columns, num_unknown, codes.filter(pa.array(unknown)))


__all__ = ["ARROW_DTYPES", "EncodedColumns", "PatientColumns", "encode_columns"]
