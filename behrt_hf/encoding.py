"""Vectorised patient encoding: a batch of patients -> BEHRT inputs, with no Python loop per token.

A batch (columns of Python objects, or an Arrow table as `dataset.with_format("arrow").map(...)`
passes it) is flattened into per-visit and per-code arrays (`PatientColumns`); validation,
task cuts, truncation and the code -> id lookup then run as numpy / Arrow compute over the whole
batch (`encode_columns`). The vectorised checks only flag records: every flagged record goes
through `schema.validate_patient`, so errors name the patient and the problem exactly as the
per-patient code does. The tokenizer (`BehrtTokenizerFast.encode_patients`) is the entry point.

This module owns the sequence layout, and every rule of it is written once, in batched form (one
patient is a batch of one): age -> id (`age_ids`), whose age [CLS] carries (`cls_age_position`),
visit numbers and counts (`count_visits`), the cut before a visit (`cut_before_visit`), which ids
are codes (`BehrtTokenizerFast.first_code_id`) and BERT masking of codes (`mask_codes`). The
collators, the evaluation targets and the metrics call these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .schema import MAX_AGE, MIN_AGE, PatientValidationError, validate_patient

# Per-token columns of an encoded patient, in the tokenizer's `model_input_names` order.
TOKEN_COLUMNS = ("input_ids", "age_ids", "segment_ids", "visit_ids", "attention_mask")

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


def visits_array(table: pa.Table | pa.RecordBatch) -> pa.ListArray:
    """The `visits` column of an Arrow patient batch as one array (chunks combined)."""
    visits = table.column("visits")
    return visits.combine_chunks() if isinstance(visits, pa.ChunkedArray) else visits


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
        if not all(type(v) is dict or isinstance(v, Mapping) for v in flat):  # type(): the fast common case
            raise_validation_error(record, n, TypeError("a visit is not a mapping"))
        code_values = [v.get("codes") for v in flat]
        if not all(type(c) is list or c is None or isinstance(c, (list, tuple)) for c in code_values):  # Arrow splits str
            raise_validation_error(record, n, TypeError("codes must be lists of strings"))
        try:
            code_lists = pa.array(code_values, type=pa.list_(pa.string()))
            ages = pa.array([v.get("age") for v in flat], type=pa.float64())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:  # a non-string code, a non-number age
            raise_validation_error(record, n, error)
        suspect = np.zeros(n, dtype=bool)
        times = _order_keys([v.get("time") for v in flat], visits_per_patient, suspect, record)
        return cls._checked(visits_per_patient, code_lists, ages, times, suspect, record)

    @classmethod
    def from_arrow(cls, table: pa.Table | pa.RecordBatch) -> "PatientColumns":
        """An Arrow batch in the patient schema (`dataset.with_format("arrow").map(..., batched=True)`)."""
        visits = visits_array(table)
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
        blank = pc.or_(pc.equal(pc.binary_length(codes), 0), pc.utf8_is_space(codes)).fill_null(True)  # "", " ", None
        if pc.any(blank).as_py():
            code_visit = np.repeat(np.arange(len(codes_per_visit)), codes_per_visit)
            bad_visit[code_visit[blank.to_numpy(zero_copy_only=False)]] = True
        suspect |= visits_per_patient == 0
        suspect[patient_of_visit[bad_visit]] = True
        return cls(visits_per_patient, codes_per_visit, codes, ages, times, suspect, record)

    def raise_for_flagged(self, until: np.ndarray | None) -> None:
        """Raise `validate_patient`'s error, or an out-of-range `until_visit`, for the first flagged patient."""
        bad = self.suspect.copy()
        if until is not None:
            out_of_range = (until < 0) | (until >= self.visits_per_patient)
            bad |= out_of_range
        for i in np.flatnonzero(bad).tolist():
            patient = self.record(i)
            validate_patient(patient)
            if until is not None and out_of_range[i]:
                raise PatientValidationError(
                    f"patient {patient.get('patient_id')!r}: until_visit={int(until[i])} is outside its "
                    f"{int(self.visits_per_patient[i])} visits"
                )


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


def _lookup(codes: pa.Array, vocab: pa.Array, vocab_ids: np.ndarray, unk_id: int) -> np.ndarray:
    """Code -> id through a hash lookup in Arrow; codes missing from `vocab` -> `unk_id`."""
    if codes.type != vocab.type:
        codes = codes.cast(vocab.type)
    found = pc.index_in(codes, value_set=vocab)
    return np.where(found.is_null().to_numpy(zero_copy_only=False), unk_id, vocab_ids[found.fill_null(0).to_numpy()])


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
    truncate_by: str = "visit",
) -> EncodedColumns:
    """`[CLS] codes of visit 1 [SEP] ...` for every patient of a validated batch.

    Visits after `until` (per patient, or None) are cut; then the history is truncated to
    `max_length` tokens from the oldest end (`truncate_by`, see `_first_kept_tokens`).
    `code_map` (e.g. the code hierarchy) rewrites the kept codes before the lookup. Codes missing
    from `vocab` become [UNK]. [CLS] carries the age of the last kept visit (`cls_age="last"`) or
    of the first (`"first"`, the BEHRT paper; with `truncate_by="token"`, of the first kept token,
    a leading [SEP] included, as the BEHRT code does).
    """
    nv, nc = patients.visits_per_patient, patients.codes_per_visit
    kept, kept_per_patient, codes_skipped, codes_kept, cls_visit = _kept_visits(nv, nc, until, max_length, truncate_by)
    kept_start = exclusive_cumsum(kept_per_patient)
    number = np.arange(len(kept)) - np.repeat(kept_start[:-1], kept_per_patient) + 1  # visit number, from 1
    age_id = age_ids(patients.ages[kept], age_steps_per_year, max_age)

    # Tokens of the kept visits, concatenated: visit j owns codes_kept[j] codes, then [SEP].
    tokens_per_visit = codes_kept + 1
    visit_of_token = np.repeat(np.arange(len(kept)), tokens_per_visit)  # (Tv,)
    within = np.arange(len(visit_of_token)) - np.repeat(exclusive_cumsum(tokens_per_visit)[:-1], tokens_per_visit)
    is_sep = within == codes_kept[visit_of_token]
    code_index = (exclusive_cumsum(nc)[kept] + codes_skipped)[visit_of_token] + within  # into patients.codes (not [SEP])
    code_index = code_index[~is_sep]

    codes = patients.codes.take(pa.array(code_index))
    if code_map is not None:
        codes = code_map(codes)
    code_ids = _lookup(codes, vocab, vocab_ids, special_ids["unk"])

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
    ages = scatter(0, age_id[visit_of_token])
    ages[cls_position] = ages[cls_position + cls_age_position(tokens_per_patient, cls_age)]
    if cls_visit is not None and cls_age == "first":  # the visit of the first kept token, maybe a dropped [SEP]'s
        ages[cls_position] = age_ids(patients.ages[cls_visit], age_steps_per_year, max_age)
    columns = {
        "input_ids": scatter(special_ids["cls"], input_ids),
        "age_ids": ages,
        "segment_ids": scatter(0, ((number - 1) % 2)[visit_of_token]),
        "visit_ids": scatter(0, number[visit_of_token]),
        "attention_mask": np.ones(offsets[-1], dtype=np.int64),
    }
    unknown = code_ids == special_ids["unk"]
    num_unknown = np.bincount(patient_of_token[~is_sep][unknown], minlength=len(nv)).astype(np.int64)
    return EncodedColumns(offsets, columns, num_unknown, codes.filter(pa.array(unknown)))


TRUNCATIONS = ("visit", "token")


def _kept_visits(nv, nc, until, max_length: int, truncate_by: str):
    """The visits each patient keeps: (K,) flat visit indices, (P,) visits kept per patient, and
    per kept visit the leading codes skipped and the codes kept; the [CLS] age's visit (or None)."""
    visit_start = exclusive_cumsum(nv)  # (P + 1,)
    end = visit_start[:-1] + (nv if until is None else until + 1)  # one past the last visit to keep
    first, skip, head, cls_visit = _first_kept_tokens(nc, visit_start[:-1], end, max_length, truncate_by)
    kept_per_patient = end - first  # (P,) >= 1
    kept = ranges(first, kept_per_patient)  # (K,) flat visit index of every kept visit
    first_kept = exclusive_cumsum(kept_per_patient)[:-1]  # index into `kept` of each patient's first
    codes_skipped = np.zeros(len(kept), dtype=np.int64)  # leading codes of a visit cut mid-visit
    codes_skipped[first_kept] = skip
    codes_kept = nc[kept] - codes_skipped
    cut_short = head >= 0  # the last visit alone does not fit: keep its first `head` codes
    codes_kept[first_kept[cut_short]] = head[cut_short]
    return kept, kept_per_patient, codes_skipped, codes_kept, cls_visit


def _first_kept_tokens(nc: np.ndarray, start: np.ndarray, end: np.ndarray, max_length: int, truncate_by: str):
    """Where each patient's kept history begins, for visits [start, end) with `nc` codes each.

    `truncate_by="visit"`: drop whole visits from the oldest end until the rest fits beside [CLS];
    if even the last visit does not fit, keep its first `max_length - 2` codes. `"token"` (the
    BEHRT code): the flat sequence `codes [SEP] codes [SEP] ...` keeps its last `max_length - 1`
    tokens, which can begin mid-visit; a kept run that begins with a [SEP] drops it ([CLS] takes
    its place, so that sequence is one token shorter).

    Returns (P,) arrays: the first kept visit, the codes skipped at its start, the codes kept when
    only a head of the one visit fits (-1: not cut so), and for `"token"` the visit of the first
    kept token (None for `"visit"`).
    """
    if truncate_by not in TRUNCATIONS:
        raise ValueError(f"truncate_by must be one of {TRUNCATIONS}, got {truncate_by!r}.")
    cost = exclusive_cumsum(nc + 1)  # tokens of visits [0, v): codes + [SEP] each; strictly increasing
    no_skip = np.zeros(len(start), dtype=np.int64)
    if truncate_by == "visit":
        # First visit whose suffix up to `end` fits beside [CLS].
        first = np.maximum(np.searchsorted(cost, cost[end] - (max_length - 1), side="left"), start)
        too_long = first == end
        first[too_long] -= 1
        return first, no_skip, np.where(too_long, max_length - 2, -1), None
    first_token = np.maximum(cost[end] - (max_length - 1), cost[start])  # flat index of the first kept token
    visit = np.searchsorted(cost, first_token, side="right") - 1  # the visit holding it
    skip = first_token - cost[visit]
    at_sep = skip == nc[visit]  # the run begins with that visit's [SEP]: dropped, the next visit is first
    first = np.where(at_sep, visit + 1, visit)
    return first, np.where(at_sep, 0, skip), np.full(len(start), -1), visit


# --- the layout of encoded sequences: padded (B, T) batches, one patient = a batch of one ----------


def pad_value(column: str, pad_token_id: int) -> int:
    """What pads `column`: [PAD] in `input_ids`, 0 elsewhere (age 0 is the padding age, visit 0 is
    [CLS] and padding, attention 0 masks the position)."""
    return pad_token_id if column == "input_ids" else 0


def age_ids(ages: np.ndarray, steps_per_year: int, max_age: int) -> np.ndarray:
    """Ages in years -> age ids 1 .. max_age * steps_per_year + 1 (0 is padding): one id per step
    of age (floored); ages past `max_age` share the last id."""
    ages = np.asarray(ages, dtype=np.float64)
    return np.minimum(np.floor(ages * steps_per_year), max_age * steps_per_year).astype(np.int64) + 1


def cls_age_position(lengths: np.ndarray, cls_age: str) -> np.ndarray:
    """For sequences of `lengths` tokens, the position whose age [CLS] carries: the last token (the
    [SEP] closing the last visit) with `cls_age="last"`, the first code with `"first"`.

    "last" is the age at the time of prediction: a task's input ends at its index visit, a
    next-visit input at the visit before the target, so [CLS] never sees a later age. "first" is
    the BEHRT paper's choice."""
    return lengths - 1 if cls_age == "last" else np.ones_like(lengths)


def count_visits(visit_ids) -> np.ndarray:
    """(B,) visits of each encoded patient: its largest visit number (visits are numbered from 1,
    [CLS] and padding are 0). `visit_ids`: a padded (B, T) array or a sequence of rows."""
    if isinstance(visit_ids, np.ndarray) and visit_ids.ndim == 2:
        return visit_ids.max(1)
    return np.fromiter((max(row) for row in visit_ids), np.int64, len(visit_ids))


def visit_span(visit_ids: np.ndarray, target: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a padded (B, T) batch: start (first token) and end (one past the run) of visit `target`."""
    positions = np.arange(visit_ids.shape[1])
    hit = (visit_ids == target[:, None]) & (positions < lengths[:, None])
    if not hit.any(1).all():
        row = int(np.flatnonzero(~hit.any(1))[0])
        raise ValueError(f"Row {row}: visit {int(target[row])} is not in visit_ids.")
    start = hit.argmax(1)
    after = ~hit & (positions >= start[:, None])  # the first such position ends the run
    end = np.where(after.any(1), after.argmax(1), visit_ids.shape[1])
    return start, end


def cut_before_visit(
    columns: Mapping[str, np.ndarray], lengths: np.ndarray, target: np.ndarray, pad_token_id: int,
    sep_token_id: int, cls_age: str,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Cut each row of a padded batch before its visit `target[i]` (a visit number, at least 2).

    Returns the cut columns (padded to the longest cut row), the cut lengths (B,), and a (B, T)
    mask over the input of the target visit's codes (its [SEP] left out). Nothing of the target
    visit or later stays in the input: [CLS] takes its age anew from the cut row (`cls_age_position`).
    """
    start, end = visit_span(columns["visit_ids"], target, lengths)
    positions = np.arange(columns["visit_ids"].shape[1])
    in_target = (positions >= start[:, None]) & (positions < end[:, None]) & (columns["input_ids"] != sep_token_id)
    length = int(start.max())
    outside = positions[:length] >= start[:, None]
    cut = {}
    for name, values in columns.items():
        values = values[:, :length].copy()
        values[outside] = pad_value(name, pad_token_id)
        cut[name] = values
    if "age_ids" in cut:
        cut["age_ids"][:, 0] = cut["age_ids"][np.arange(len(start)), cls_age_position(start, cls_age)]
    return cut, start, in_target


def next_visit_cut(
    feature: Mapping[str, Any], target_visit: int, sep_token_id: int, cls_age: str = "last"
) -> tuple[dict, list[int]]:
    """`cut_before_visit` for one encoded patient (lists): (the input before `target_visit`, the
    target visit's code ids)."""
    columns = {k: np.asarray(feature[k], dtype=np.int64)[None, :] for k in TOKEN_COLUMNS if k in feature}
    length = np.array([columns["input_ids"].shape[1]])
    cut, _, in_target = cut_before_visit(columns, length, np.array([target_visit]), 0, sep_token_id, cls_age)
    return {k: v[0].tolist() for k, v in cut.items()}, columns["input_ids"][in_target].tolist()


def mask_codes(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    maskable: np.ndarray,
    rngs: Sequence[np.random.Generator],
    mask_token_id: int,
    first_code_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of the code tokens of a padded (B, T) batch: (masked input ids, labels with -100
    where not masked).

    Row i draws from `rngs[i]` over its first `lengths[i]` positions. Each maskable position is
    selected with `mlm_probability`; a selected token becomes [MASK] with `mask_replace_prob`, a
    random code (ids from `first_code_id`) with `random_replace_prob`, else stays. `maskable` is
    False on special tokens ([UNK] included); positions past a row's length never are. A row with
    something maskable but nothing selected gets one position selected, so its loss is defined.
    """
    valid = np.arange(input_ids.shape[1]) < lengths[:, None]  # (B, T)
    maskable = maskable & valid

    def draw_uniform() -> np.ndarray:  # (B, T): row i's `lengths[i]` draws, then zeros
        out = np.zeros(input_ids.shape)
        out[valid] = np.concatenate([rng.random(int(n)) for rng, n in zip(rngs, lengths)])
        return out

    selected = (draw_uniform() < mlm_probability) & maskable
    for row in np.flatnonzero(~selected.any(1) & maskable.any(1)).tolist():  # rare: force one selection
        candidates = np.flatnonzero(maskable[row])
        selected[row, candidates[rngs[row].integers(len(candidates))]] = True
    labels = np.where(selected, input_ids, -100)
    draw = draw_uniform()
    masked = input_ids.copy()
    to_mask = selected & (draw < mask_replace_prob)
    to_random = selected & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    masked[to_mask] = mask_token_id
    counts = to_random.sum(1)
    if counts.any():
        masked[to_random] = np.concatenate(
            [rngs[row].integers(first_code_id, vocab_size, size=int(k)) for row, k in enumerate(counts.tolist()) if k]
        )
    return masked, labels


# --- the cut at a prediction time: the one way an input is limited to the past --------------------


def _as_int64_times(times, like: pa.DataType) -> np.ndarray:
    """Prediction times as int64 in the unit of the visit times (`like`): timestamps of any unit or
    integers (for integer visit times)."""
    if not isinstance(times, (pa.Array, pa.ChunkedArray)):
        times = pa.array(times) if len(times) else pa.array([], like)
    if pa.types.is_timestamp(like) and pa.types.is_timestamp(times.type):
        times = times.cast(like)
    elif pa.types.is_timestamp(like) != pa.types.is_timestamp(times.type):
        raise TypeError(f"prediction times of type {times.type} cannot be compared with visit times of type {like}")
    if times.null_count:
        raise ValueError("a prediction time is null")
    return times.cast(pa.int64()).to_numpy(zero_copy_only=False)


@dataclass
class _EventTimes:
    """The visits of an Arrow patient batch flattened, with every code's own time (int64)."""

    flat: pa.StructArray  # (V,) visits
    visits_per_patient: np.ndarray  # (P,)
    patient_of_visit: np.ndarray  # (V,)
    visit_time: np.ndarray  # (V,) int64
    codes_per_visit: np.ndarray  # (V,)
    visit_of_code: np.ndarray  # (C,)
    code_time: np.ndarray  # (C,) int64: code_times[j], else the visit's time
    time_type: pa.DataType

    @classmethod
    def of(cls, table: pa.Table | pa.RecordBatch) -> "_EventTimes":
        visits = visits_array(table)
        n = len(visits)
        ids = table.column("patient_id") if "patient_id" in table.column_names else None
        name = lambda p: repr(ids[p].as_py()) if ids is not None else f"#{p}"  # noqa: E731
        nv = pc.list_value_length(visits).fill_null(0).to_numpy().astype(np.int64)
        flat = pc.list_flatten(visits)
        fields = {flat.type.field(i).name for i in range(flat.type.num_fields)}
        patient_of_visit = np.repeat(np.arange(n), nv)
        if "time" not in fields:
            raise PatientValidationError("visits have no 'time': a cut at a prediction time needs visit times")
        time = pc.struct_field(flat, "time")
        if time.null_count:
            p = int(patient_of_visit[np.flatnonzero(time.is_null().to_numpy(zero_copy_only=False))[0]])
            raise PatientValidationError(f"patient {name(p)}: a visit has no time, so it cannot be cut at a prediction time")
        visit_time = time.cast(pa.int64()).to_numpy(zero_copy_only=False)
        nc = pc.list_value_length(pc.struct_field(flat, "codes")).fill_null(0).to_numpy().astype(np.int64)
        visit_of_code = np.repeat(np.arange(len(nc)), nc)
        code_time = visit_time[visit_of_code]
        if "code_times" in fields:
            code_times = pc.struct_field(flat, "code_times")
            has = code_times.is_valid().to_numpy(zero_copy_only=False)
            lengths = pc.list_value_length(code_times).fill_null(0).to_numpy()
            wrong = has & (lengths != nc)
            if wrong.any():
                v = int(np.flatnonzero(wrong)[0])
                raise PatientValidationError(f"patient {name(int(patient_of_visit[v]))}: a visit has {nc[v]} codes but "
                                             f"{lengths[v]} code_times")
            own = pc.list_flatten(code_times).cast(time.type)  # the entries of the non-null lists, in order
            values = own.cast(pa.int64()).to_numpy(zero_copy_only=False)
            timed = np.repeat(has, nc)
            code_time = code_time.copy()
            code_time[timed] = np.where(own.is_null().to_numpy(zero_copy_only=False), code_time[timed], values)
        return cls(flat, nv, patient_of_visit, visit_time, nc, visit_of_code, code_time, time.type)

    def kept_codes(self, prediction_times) -> np.ndarray:
        """(C,) mask: the code's visit began and the code itself happened at or before its patient's
        prediction time (MEDS: `time <= prediction_time` may be used)."""
        limit = _as_int64_times(prediction_times, self.time_type)[self.patient_of_visit][self.visit_of_code]
        return (self.visit_time[self.visit_of_code] <= limit) & (self.code_time <= limit)


def first_event_times(table: pa.Table | pa.RecordBatch) -> pa.Array:
    """Per patient, the earliest prediction time that leaves an input: the earliest time at which
    one of its codes is known (its own time, or its visit's if later). Null for a patient without codes."""
    events = _EventTimes.of(table)
    known = np.maximum(events.code_time, events.visit_time[events.visit_of_code])
    patient = events.patient_of_visit[events.visit_of_code]
    first = np.full(len(events.visits_per_patient), np.iinfo(np.int64).max)
    np.minimum.at(first, patient, known)
    return pa.array(first, mask=first == np.iinfo(np.int64).max).cast(events.time_type)


def cut_at_times(table: pa.Table | pa.RecordBatch, prediction_times) -> pa.Table:
    """Each patient's history as known at its prediction time (a patient-schema Arrow table).

    A code stays when its visit began at or before `prediction_times[i]` and its own time (its
    `code_times` entry; without one, its visit's time) is at or before it too: a visit that
    straddles the prediction time keeps only its earlier codes (and their code_times), and a visit
    left without codes is dropped. Visits keep their time and age (those of their first event).
    This is the one cut: label files and the synthetic index visits both go through it.
    """
    table = pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table
    events = _EventTimes.of(table)
    keep = events.kept_codes(prediction_times)
    flat = events.flat
    new_nc = np.bincount(events.visit_of_code[keep], minlength=len(events.codes_per_visit))
    keep_visit = new_nc > 0
    visit_rows = pa.array(np.flatnonzero(keep_visit))
    code_offsets = pa.array(exclusive_cumsum(new_nc[keep_visit]).astype(np.int32))
    keep_mask = pa.array(keep)
    fields, arrays = [], []
    for i in range(flat.type.num_fields):
        field = flat.type.field(i)
        values = pc.struct_field(flat, field.name)
        if field.name == "codes":
            values = pa.ListArray.from_arrays(code_offsets, pc.list_flatten(values).filter(keep_mask), type=field.type)
        elif field.name == "code_times":
            values = _cut_code_times(values, keep, events, keep_visit, code_offsets)
        else:
            values = values.take(visit_rows)
        fields.append(field)
        arrays.append(values)
    visits = pa.StructArray.from_arrays(arrays, fields=fields)
    per_patient = np.bincount(events.patient_of_visit[keep_visit], minlength=len(events.visits_per_patient))
    offsets = pa.array(exclusive_cumsum(per_patient).astype(np.int32))
    column = table.schema.get_field_index("visits")
    return table.set_column(column, table.schema.field(column),
                            pa.ListArray.from_arrays(offsets, visits, type=table.schema.field(column).type))


def _cut_code_times(code_times: pa.Array, keep: np.ndarray, events: _EventTimes, keep_visit: np.ndarray,
                    code_offsets: pa.Array) -> pa.Array:
    """The code_times of the kept codes of the kept visits; null where the visit had none."""
    has = code_times.is_valid().to_numpy(zero_copy_only=False)
    full = np.zeros(len(keep), np.int64)
    timed = np.repeat(has, events.codes_per_visit)
    own = pc.list_flatten(code_times)
    values = pa.array(full, pa.int64()).cast(own.type) if len(full) else pa.array([], own.type)
    if timed.any():  # the own entries where the visit has code_times, placeholders elsewhere
        index = np.full(len(keep), -1, np.int64)
        index[timed] = np.arange(int(timed.sum()))
        values = own.take(pa.array(index, mask=index < 0))
    kept = values.filter(pa.array(keep))
    mask = pa.array(~has[keep_visit])
    return pa.ListArray.from_arrays(code_offsets, kept, type=code_times.type, mask=mask)


__all__ = [
    "ARROW_DTYPES",
    "EncodedColumns",
    "PatientColumns",
    "TOKEN_COLUMNS",
    "TRUNCATIONS",
    "age_ids",
    "cls_age_position",
    "count_visits",
    "cut_at_times",
    "cut_before_visit",
    "first_event_times",
    "encode_columns",
    "mask_codes",
    "next_visit_cut",
    "pad_value",
    "visit_span",
    "visits_array",
]
