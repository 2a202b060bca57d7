"""MEDS reader: a MEDS dataset folder -> the patient schema.

    splits = load_meds("path/to/meds_root")           # DatasetDict train / validation / test
    splits.drop_report                                # what was left out, by reason

A MEDS dataset (https://github.com/Medical-Event-Data-Standard/meds, v0.4) is a folder with
`data/**/*.parquet` (columns subject_id, time, code, numeric_value, ...; each subject in one shard)
and `metadata/{dataset.json, codes.parquet, subject_splits.parquet}`. The reader follows the
conventions of `behrt_hf.schema` (shared with the synthetic MEDS exporter, so that cohort -> MEDS
-> reader is an exact round trip):

- `patient_id` is the decimal string of `subject_id`; patients come out in file order (shards in
  natural path order, subjects in order of first appearance).
- Birth is the `MEDS_BIRTH` event (not a visit code); sex comes from `GENDER//F` / `GENDER//M`
  (any `GENDER//...` event, usually static; none -> "U"). Other events without a time (static
  codes such as eye colour) are not visits: left out and counted as filtered.
- A visit is the set of events sharing one timestamp (`visit_window=...`: events at most that far
  apart from the previous event join its visit). Events are sorted by time only, stably, so the
  codes of a visit keep their file order, duplicates included (`dedupe=True` keeps the first).
  With encounter codes (`visit_start_codes=["HOSPITAL_ADMISSION//"]`,
  `visit_end_codes=["HOSPITAL_DISCHARGE//"]`) the events of an encounter, from the timestamp of
  its start code through the timestamp of its end code, form one visit at its first event's time;
  events outside encounters form visits by time. Such visits (a window, encounters) keep each
  code's own time in `code_times`, so a prediction inside the visit sees only its earlier events.
- Age is `float32(age_in_years(time, birth))`.
- Splits from `metadata/subject_splits.parquet` (train / tuning / held_out -> train / validation
  / test; other names kept); without that file, a stable hash of patient_id (80/10/10, see
  `hash_split`).
- Numeric values: `numeric="drop"` (default) keeps the code and ignores the value;
  `numeric="bin"` appends the value's quantile bin, `LAB//HR` -> `LAB//HR//Q3` (1..`n_bins`), with
  per-code quantiles fitted on the train split (a deterministic sample of at most `max_bin_samples`
  values across shards). A value of a code without fitted bins keeps the plain code (adjusted).

Memory: shards are read one at a time (one shard's events in Arrow plus a batch of patient rows
in Python) and written to the Arrow cache as they go, so a dataset larger than RAM works as long
as each shard fits. A first pass reads only the subject_id column of every shard (splits, and
subjects found in more than one shard, which MEDS forbids: later shards' rows are dropped).

Dropped and counted (invalid; `strict=True` raises instead): null subject_id or code, subjects
without MEDS_BIRTH, several different MEDS_BIRTH times or conflicting GENDER codes (first kept),
events before birth or above 120 years of age, subjects in several shards, subjects missing from
subject_splits.parquet. Filtered (never an error): static non-gender events, codes outside
`code_prefixes`, repeated codes within a visit with `dedupe`, patients with no visit left.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import datasets
import meds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from behrt_hf.schema import MEDS_BIRTH_CODE, MEDS_GENDER_PREFIX, MEDS_SPLIT_NAMES, patient_features

from ._assemble import EVENT_SCHEMA, PEOPLE_SCHEMA, TIMESTAMP, assemble_patients
from ._csv_io import normalize_sex
from ._drop_report import ADJUSTED, FILTERED, INVALID, MissingFileError, ReaderInputError, count_rows
from ._reader_base import PatientReaderBuilder, ReaderConfig, hash_split

# MEDS split name -> patient-schema split name
SPLIT_FROM_MEDS = {meds_name: name for name, meds_name in MEDS_SPLIT_NAMES.items()}
SUBJECT_ID, TIME, CODE = meds.DataSchema.subject_id_name, meds.DataSchema.time_name, meds.DataSchema.code_name
NUMERIC_VALUE = meds.DataSchema.numeric_value_name


@dataclass
class MedsConfig(ReaderConfig):
    """Options of the MEDS reader.

    Args:
        code_prefixes (`tuple[str]`, *optional*): keep only visit codes starting with one of these
            (e.g. `("ICD10CM//", "ATC//", "LAB//")`); `None` keeps all.
        visit_window_hours (`float`, defaults to 0): events at most this many hours after the previous
            event of the patient join its visit; 0 makes every distinct timestamp a visit.
        visit_start_codes (`tuple[str]`, *optional*): code prefixes that open an encounter (e.g.
            `("HOSPITAL_ADMISSION//", "ED_REGISTRATION//")`); its events up to the first timestamp
            with a `visit_end_codes` code (or up to the next start) form one visit, whatever their
            times. Events outside encounters form visits by time as above.
        visit_end_codes (`tuple[str]`, *optional*): code prefixes that close an encounter
            (e.g. `("HOSPITAL_DISCHARGE//", "ED_OUT//")`).
        numeric (`str`, defaults to `"drop"`): `"drop"` ignores numeric values, `"bin"` appends their
            per-code quantile bin to the code (`CODE//Q1` .. `CODE//Q<n_bins>`).
        n_bins (`int`, defaults to 5): number of quantile bins for `numeric="bin"`.
        max_bin_samples (`int`, defaults to 1_000_000): at most this many train values are read to fit
            the bins (an even stride sample of each shard).
        dedupe (`bool`, defaults to `False`): keep only the first occurrence of a code within a visit.
        strict (`bool`, defaults to `False`): raise on the first invalid row instead of counting it.
    """

    code_prefixes: tuple[str, ...] | None = None
    visit_window_hours: float = 0.0
    visit_start_codes: tuple[str, ...] | None = None
    visit_end_codes: tuple[str, ...] | None = None
    numeric: str = "drop"
    n_bins: int = 5
    max_bin_samples: int = 1_000_000

    def __post_init__(self):
        super().__post_init__()
        if self.numeric not in ("drop", "bin"):
            raise ValueError(f"numeric must be 'drop' or 'bin', got {self.numeric!r}")
        if self.n_bins < 2:
            raise ValueError(f"n_bins must be at least 2, got {self.n_bins}")
        if not (self.visit_window_hours >= 0 and math.isfinite(self.visit_window_hours)):
            raise ValueError(f"visit_window_hours must be a finite number >= 0, got {self.visit_window_hours}")
        for name in ("code_prefixes", "visit_start_codes", "visit_end_codes"):
            prefixes = getattr(self, name)
            if prefixes is not None:
                if isinstance(prefixes, str) or not all(isinstance(p, str) and p for p in prefixes):
                    raise ValueError(f"{name} must be a sequence of non-empty strings, got {prefixes!r}")
                setattr(self, name, tuple(prefixes))
        if self.visit_end_codes and not self.visit_start_codes:
            raise ValueError("visit_end_codes needs visit_start_codes")


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


_TYPE_CHECKS = {  # column -> (accepts the Arrow type, what MEDS asks for)
    SUBJECT_ID: (pa.types.is_integer, "an integer type (int64)"),
    TIME: (lambda t: pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_null(t), "timestamp[us]"),
    CODE: (
        lambda t: pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))),
        "string",
    ),
    NUMERIC_VALUE: (
        lambda t: pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_null(t),
        "float32",
    ),
}
_CANONICAL = {SUBJECT_ID: pa.int64(), TIME: TIMESTAMP, CODE: pa.string(), NUMERIC_VALUE: pa.float64()}


class MedsReader(PatientReaderBuilder):
    """A MEDS dataset folder read into the patient schema (see the module docstring for the rules)."""

    BUILDER_CONFIG_CLASS = MedsConfig
    READER_NAME = "MEDS"

    @property
    def _visits_span_times(self) -> bool:
        """Visits group events of several times (a window, encounters): each code keeps its own time."""
        return bool(self.config.visit_window_hours > 0 or self.config.visit_start_codes)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=(type(self).__doc__ or "").strip(),
                                    features=patient_features(code_times=self._visits_span_times))

    # --- inputs and plan ---
    def _input_files(self, config: MedsConfig) -> list[Path]:
        data_dir = self.path / meds.data_subdirectory
        if not data_dir.is_dir():
            raise MissingFileError(f"{data_dir}: MEDS data folder not found (expected {data_dir}/**/*.parquet)")
        self._shards = sorted(data_dir.rglob("*.parquet"), key=lambda p: _natural_key(p.relative_to(self.path).as_posix()))
        if not self._shards:
            raise MissingFileError(f"{data_dir}: no parquet shards found (expected {data_dir}/**/*.parquet)")
        self._sources = [p.relative_to(self.path).as_posix() for p in self._shards]
        metadata = [meds.code_metadata_filepath, meds.dataset_metadata_filepath, meds.subject_splits_filepath]
        return self._shards + [self.path / m for m in metadata if (self.path / m).exists()]

    def _plan(self) -> dict[str, dict]:
        self._check_metadata()
        split_of = self._subject_splits()
        plan: dict[str, dict] = {}
        seen: dict[int, int] = {}
        for i in range(len(self._shards)):
            subjects = self._shard_subjects(i)
            again = np.fromiter((s in seen for s in subjects.tolist()), bool, len(subjects))
            self.drop_report.add_where(
                INVALID,
                "subject found in more than one shard (its rows in later shards dropped)",
                again,
                lambda j: f"subject {subjects[j]} in {self._sources[i]} and {self._sources[seen[int(subjects[j])]]}",
            )
            subjects = subjects[~again]
            seen.update((s, i) for s in subjects.tolist())
            splits = self._splits_of(subjects, split_of, i)
            for split in np.unique(splits).tolist():
                if split:
                    plan.setdefault(split, {"shards": []})["shards"].append((i, subjects[splits == split]))
        if self.config.numeric == "bin":
            fit_on = plan.get("train") or {"shards": [s for p in plan.values() for s in p["shards"]]}
            self._fit_bins(fit_on["shards"])
        return plan

    def _check_metadata(self) -> None:
        """Notes (not errors) when optional metadata is absent or off-schema; the data shards are checked strictly."""
        dataset_json = self.path / meds.dataset_metadata_filepath
        if dataset_json.exists():
            try:
                meds.DatasetMetadataSchema.validate(json.loads(dataset_json.read_text()))
            except json.JSONDecodeError as e:
                raise ReaderInputError(f"{dataset_json}: not valid JSON ({e})") from e
            except Exception as e:  # flexible_schema's validation errors
                self.drop_report.note(f"{meds.dataset_metadata_filepath} does not match meds.DatasetMetadataSchema: {e}")
        else:
            self.drop_report.note(f"{meds.dataset_metadata_filepath} not found")
        codes = self.path / meds.code_metadata_filepath
        if codes.exists() and meds.CodeMetadataSchema.code_name not in pq.read_schema(codes).names:
            self.drop_report.note(f"{meds.code_metadata_filepath} has no '{meds.CodeMetadataSchema.code_name}' column")

    def _subject_splits(self) -> tuple[pa.Array, np.ndarray] | None:
        """(subject ids, split names) from metadata/subject_splits.parquet, or None when absent."""
        path = self.path / meds.subject_splits_filepath
        if not path.exists():
            self.drop_report.note(f"{meds.subject_splits_filepath} not found: split by a hash of patient_id (80/10/10)")
            return None
        id_col, split_col = meds.SubjectSplitSchema.subject_id_name, meds.SubjectSplitSchema.split_name
        schema = pq.read_schema(path)
        for name, ok in ((id_col, pa.types.is_integer), (split_col, lambda t: pa.types.is_string(t) or pa.types.is_large_string(t))):
            if name not in schema.names:
                raise ReaderInputError(f"{path}: missing column {name!r} (meds.SubjectSplitSchema)")
            if not ok(schema.field(name).type):
                raise ReaderInputError(f"{path}: column {name!r} has type {schema.field(name).type} (meds.SubjectSplitSchema)")
        table = pq.read_table(path, columns=[id_col, split_col]).drop_null()
        ids = table.column(id_col).cast(pa.int64()).to_numpy()
        names = np.array([SPLIT_FROM_MEDS.get(s, s) for s in table.column(split_col).to_pylist()], dtype=object)
        for name in set(names.tolist()):
            if not re.fullmatch(r"\w+(\.\w+)*", name):
                raise ReaderInputError(f"{path}: split name {name!r} is not usable as a datasets split name")
        unique_ids, first = np.unique(ids, return_index=True)
        first = np.sort(first)
        repeated = np.ones(len(ids), dtype=bool)
        repeated[first] = False
        self.drop_report.add_where(
            INVALID,
            "subject listed more than once in subject_splits.parquet (first kept)",
            repeated,
            lambda r: f"{meds.subject_splits_filepath} row {r + 1} (subject {ids[r]})",
        )
        return pa.array(ids[first]), names[first]

    def _splits_of(self, subjects: np.ndarray, split_of, shard: int) -> np.ndarray:
        """Split name per subject ("" when the subject has none and is dropped)."""
        if split_of is None:
            return np.array([hash_split(str(s)) for s in subjects.tolist()], dtype=object)
        ids, names = split_of
        where = pc.fill_null(pc.index_in(pa.array(subjects, pa.int64()), value_set=ids), -1).to_numpy()
        missing = where < 0
        self.drop_report.add_where(
            INVALID,
            "subject missing from metadata/subject_splits.parquet (its rows dropped)",
            missing,
            lambda j: f"subject {subjects[j]} in {self._sources[shard]}",
        )
        out = np.full(len(subjects), "", dtype=object)
        out[~missing] = names[where[~missing]]
        return out

    # --- shards ---
    def _shard_columns(self, i: int) -> list[str]:
        """Check a shard's schema against meds.DataSchema; the columns the reader will use."""
        path, schema = self._shards[i], pq.read_schema(self._shards[i])
        wanted = [SUBJECT_ID, TIME, CODE] + ([NUMERIC_VALUE] if self.config.numeric == "bin" else [])
        for name in wanted:
            if name not in schema.names:
                if name == NUMERIC_VALUE:  # optional in MEDS
                    continue
                raise ReaderInputError(f"{path}: missing column {name!r} (meds.DataSchema requires {SUBJECT_ID}, {TIME}, {CODE})")
            accepts, want = _TYPE_CHECKS[name]
            if not accepts(schema.field(name).type):
                raise ReaderInputError(f"{path}: column {name!r} has type {schema.field(name).type}; meds.DataSchema wants {want}")
        return [n for n in wanted if n in schema.names]

    def _shard_subjects(self, i: int) -> np.ndarray:
        """Distinct subject ids of a shard, in order of first appearance (null ids counted here, once)."""
        self._shard_columns(i)
        ids = pq.read_table(self._shards[i], columns=[SUBJECT_ID]).column(0).cast(pa.int64())
        self.drop_report.add_where(
            INVALID, "event with a null subject_id", ids.is_null().to_numpy(zero_copy_only=False),
            lambda r: f"{self._sources[i]} row {r + 1}",
        )
        return pc.unique(ids.drop_null()).to_numpy()

    def _read_shard(self, i: int, subjects: np.ndarray) -> pa.Table:
        """The rows of `subjects` in shard i with canonical types and a 1-based `row` column."""
        columns = self._shard_columns(i)
        table = pq.read_table(self._shards[i], columns=columns)
        table = table.append_column("row", pa.array(np.arange(1, table.num_rows + 1)))
        table = pa.table({n: table.column(n).cast(_CANONICAL.get(n, table.schema.field(n).type)) for n in table.column_names})
        meds.DataSchema.validate(table.select([c for c in columns if c != NUMERIC_VALUE]).schema)
        if NUMERIC_VALUE not in table.column_names:
            table = table.append_column(NUMERIC_VALUE, pa.nulls(table.num_rows, pa.float64()))
        return table.filter(pc.is_in(table.column(SUBJECT_ID), value_set=pa.array(subjects, pa.int64())))

    def _shard_events(self, table: pa.Table, i: int) -> tuple[pa.Table, pa.Table]:
        """One shard's rows -> (events, people) for `assemble_patients`, counting what is left out."""
        report, n = self.drop_report, table.num_rows
        subject, time, code = table.column(SUBJECT_ID), table.column(TIME), table.column(CODE)
        events = pa.table(
            {
                "patient_id": subject.cast(pa.string()),
                "time": time,
                "visit": pa.array(np.full(n, -1, np.int64)),  # visits by time unless encounter codes say otherwise
                "code": code,
                "src": pa.array(np.full(n, i, np.int32)),
                "row": table.column("row"),
            },
            schema=EVENT_SCHEMA,
        )
        ok = code.is_valid().to_numpy(zero_copy_only=False)  # null subject ids were filtered (and counted) already
        count_rows(report, INVALID, "event with a null code", ~ok, events, self._sources)
        code_filled = pc.fill_null(code, "")
        is_birth = ok & pc.equal(code_filled, MEDS_BIRTH_CODE).to_numpy(zero_copy_only=False)
        is_gender = ok & pc.starts_with(code_filled, MEDS_GENDER_PREFIX).to_numpy(zero_copy_only=False)
        timed = time.is_valid().to_numpy(zero_copy_only=False)
        static = ok & ~is_birth & ~is_gender & ~timed
        count_rows(report, FILTERED, "static event without a time (not a visit)", static, events, self._sources)
        in_visit = ok & ~is_birth & ~is_gender & ~static
        people = self._people(events, ok, is_birth & timed, is_gender)
        if self.config.visit_start_codes:  # before the prefix filter: markers count even when not kept
            is_start = in_visit & _starts_with_any(code_filled, self.config.visit_start_codes)
            is_end = in_visit & _starts_with_any(code_filled, self.config.visit_end_codes or ())
            visit = _encounter_numbers(events, people, is_start, is_end)
            events = events.set_column(2, "visit", pa.array(visit))
        if self.config.code_prefixes:
            matches = _starts_with_any(code_filled, self.config.code_prefixes)
            count_rows(report, FILTERED, "event whose code matches none of code_prefixes", in_visit & ~matches, events, self._sources)
            in_visit &= matches
        if self.config.numeric == "bin":
            events = events.set_column(3, "code", self._apply_bins(events, table.column(NUMERIC_VALUE), in_visit))
        return events.filter(pa.array(in_visit)), people

    def _people(self, events: pa.Table, ok, is_birth, is_gender) -> pa.Table:
        """Subjects of the shard in order of first appearance, with sex and birth (first event kept)."""
        ids = pc.unique(events.column("patient_id").filter(pa.array(ok)))
        birth = self._first_per_patient(events, ids, is_birth, events.column("time"), "several different MEDS_BIRTH times")
        sex_values = normalize_sex(pc.utf8_slice_codeunits(pc.fill_null(events.column("code"), ""), len(MEDS_GENDER_PREFIX)))
        sex = self._first_per_patient(events, ids, is_gender, sex_values, "conflicting GENDER codes")
        return pa.table({"patient_id": ids, "sex": pc.fill_null(sex, "U"), "birth": birth}, schema=PEOPLE_SCHEMA)

    def _first_per_patient(self, events, ids, mask, values, conflict: str) -> pa.Array:
        """values[first row of `mask` per patient] aligned to `ids` (null where none); conflicts counted."""
        rows = np.flatnonzero(mask)
        which = pc.index_in(events.column("patient_id").take(rows), value_set=ids).to_numpy(zero_copy_only=False).astype(np.int64)
        picked = values.take(rows)
        patients, first = np.unique(which, return_index=True)
        pairs = pa.table({"p": which, "v": picked}).group_by(["p", "v"], use_threads=False).aggregate([])
        n_values = np.bincount(pairs.column("p").to_numpy(), minlength=len(ids)) if pairs.num_rows else np.zeros(len(ids), int)
        self.drop_report.add_where(
            INVALID, f"patient with {conflict} (first kept)", n_values > 1, lambda p: f"patient {ids[p].as_py()}"
        )
        slot = np.full(len(ids), -1, np.int64)
        slot[patients] = first
        taken = picked.take(pa.array(slot, mask=slot < 0))
        return taken

    # --- numeric values ---
    def _fit_bins(self, shards: list[tuple[int, np.ndarray]]) -> None:
        """Per-code quantile edges from an even stride sample of the (train) values of every shard."""
        per_shard = max(1, self.config.max_bin_samples // max(1, len(shards)))
        codes, values = [], []
        for i, subjects in shards:
            table = self._read_shard(i, subjects)
            value = table.column(NUMERIC_VALUE)
            usable = pc.and_(pc.and_(value.is_valid(), pc.is_finite(value)), table.column(CODE).is_valid())
            usable = pc.and_(usable, table.column(TIME).is_valid())
            code, value = table.column(CODE).filter(usable), value.filter(usable)
            stride = math.ceil(len(value) / per_shard) if len(value) > per_shard else 1
            take = pa.array(np.arange(0, len(value), stride))
            codes.append(code.take(take))
            values.append(value.take(take).to_numpy())
        all_codes = pa.chunked_array([c for chunk in codes for c in chunk.chunks], pa.string())
        all_values = np.concatenate(values) if values else np.zeros(0)
        self._bin_codes = pc.unique(all_codes)
        which = pc.index_in(all_codes, value_set=self._bin_codes).to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.lexsort((all_values, which))
        bounds = np.searchsorted(which[order], np.arange(len(self._bin_codes) + 1))
        q = np.arange(1, self.config.n_bins) / self.config.n_bins
        self._bin_edges = np.array(
            [np.quantile(all_values[order][a:b], q) for a, b in zip(bounds[:-1], bounds[1:])]
        ).reshape(len(self._bin_codes), len(q))
        self.drop_report.note(f"numeric values binned into {self.config.n_bins} quantile bins of {len(self._bin_codes)} codes")

    def _apply_bins(self, events: pa.Table, value: pa.ChunkedArray, in_visit: np.ndarray) -> pa.Array:
        """`CODE` -> `CODE//Q<k>` for events with a numeric value (k = 1..n_bins)."""
        code = events.column("code")
        has_value = pc.fill_null(pc.is_finite(value), False).to_numpy(zero_copy_only=False) & in_visit
        which = pc.fill_null(pc.index_in(code, value_set=self._bin_codes), -1).to_numpy()
        binnable = has_value & (which >= 0)
        count_rows(
            self.drop_report, ADJUSTED, "numeric value of a code without fitted bins (plain code kept)",
            has_value & (which < 0), events, self._sources,
        )
        numbers = np.nan_to_num(pc.fill_null(value, 0.0).to_numpy(zero_copy_only=False))
        bins = np.zeros(len(numbers), np.int64)
        rows = np.flatnonzero(binnable)
        bins[rows] = (numbers[rows, None] >= self._bin_edges[which[rows]]).sum(axis=1) + 1
        binned = pc.binary_join_element_wise(code, pc.cast(pa.array(bins), pa.string()), "//Q")
        return pc.if_else(pa.array(binnable), binned, code)

    # --- patients ---
    def _iter_patients(self, shards: list[tuple[int, np.ndarray]]):
        window_us = int(round(self.config.visit_window_hours * 3600 * 1e6))
        for i, subjects in shards:
            events, people = self._shard_events(self._read_shard(i, subjects), i)
            yield from assemble_patients(
                events, people, self.drop_report, sources=self._sources, window_us=window_us, dedupe=self.config.dedupe,
                code_times=self._visits_span_times,
            )


def _starts_with_any(codes: pa.Array, prefixes) -> np.ndarray:
    matches = np.zeros(len(codes), bool)
    for prefix in prefixes:
        matches |= pc.starts_with(codes, prefix).to_numpy(zero_copy_only=False)
    return matches


def _encounter_numbers(events: pa.Table, people: pa.Table, is_start: np.ndarray, is_end: np.ndarray) -> np.ndarray:
    """Visit number per row for `visit_start_codes` / `visit_end_codes`; -1 outside encounters.

    Works on timestamps, so file order within a timestamp does not matter: a timestamp of the
    patient holding a start code opens an encounter (closing the previous one), the timestamps
    after it belong to it up to and including the first one holding an end code (none: up to the
    next start). Timestamps outside encounters are -1 (visits by time).
    """
    rank = pc.fill_null(pc.index_in(events.column("patient_id"), value_set=people.column("patient_id")), -1).to_numpy()
    time_us = pc.fill_null(events.column("time").cast(pa.int64()), np.iinfo(np.int64).min).to_numpy()
    order = np.lexsort((time_us, rank))
    r, t = rank[order], time_us[order]
    new_patient = np.r_[True, r[1:] != r[:-1]]
    new_stamp = new_patient | np.r_[True, t[1:] != t[:-1]]
    stamp = np.cumsum(new_stamp) - 1  # timestamp group of each sorted row
    n_stamps = int(stamp[-1]) + 1 if len(stamp) else 0
    starts = np.bincount(stamp, weights=is_start[order], minlength=n_stamps) > 0
    ends = np.bincount(stamp, weights=is_end[order], minlength=n_stamps) > 0
    first_of_patient = new_patient[new_stamp]
    # state after each timestamp: 1 inside an encounter, -1 closed, 0 none yet (carried forward)
    after = np.where(ends, -1, np.where(starts, 1, 0))
    last = np.maximum.accumulate(np.where((after != 0) | first_of_patient, np.arange(n_stamps), 0))
    state = after[last]
    state_before = np.r_[0, state[:-1]]
    state_before[first_of_patient] = 0
    inside = starts | (state_before == 1)
    number = np.where(inside, np.cumsum(starts) - 1, -1)
    visit = np.empty(len(order), np.int64)
    visit[order] = number[stamp]
    return visit


def load_meds(
    path,
    *,
    code_prefixes=None,
    visit_window: timedelta | float | None = None,
    visit_start_codes=None,
    visit_end_codes=None,
    numeric: str = "drop",
    n_bins: int = 5,
    dedupe: bool = False,
    strict: bool = False,
    cache_dir: str | None = None,
    **options,
) -> datasets.DatasetDict:
    """Read a MEDS dataset folder into the patient schema; returns a `DatasetDict` with `.drop_report`.

    Args:
        path: the MEDS root (with `data/` and `metadata/`).
        code_prefixes: keep only visit codes starting with one of these prefixes (None: all).
        visit_window: `timedelta` or hours; events this close to the previous one join its visit
            (None: one visit per distinct timestamp).
        visit_start_codes, visit_end_codes: code prefixes that open / close an encounter; the
            events of an encounter form one visit (e.g. `["HOSPITAL_ADMISSION//"]`,
            `["HOSPITAL_DISCHARGE//"]` for MIMIC-IV MEDS).
        numeric: `"drop"` (ignore numeric values) or `"bin"` (`CODE//Q<k>`, per-code quantile bins).
        n_bins: quantile bins for `numeric="bin"`.
        dedupe: keep only the first occurrence of a code within a visit.
        strict: raise `ReaderError` on the first invalid row instead of skipping and counting it.
        cache_dir: where `datasets` caches the Arrow output (default: HF_DATASETS_CACHE).
        **options: other `MedsConfig` fields (`max_bin_samples`).
    """
    if isinstance(visit_window, timedelta):
        visit_window = visit_window.total_seconds() / 3600
    return MedsReader(
        path,
        cache_dir=cache_dir,
        code_prefixes=tuple(code_prefixes) if code_prefixes is not None else None,
        visit_window_hours=float(visit_window or 0.0),
        visit_start_codes=tuple(visit_start_codes) if visit_start_codes else None,
        visit_end_codes=tuple(visit_end_codes) if visit_end_codes else None,
        numeric=numeric,
        n_bins=n_bins,
        dedupe=dedupe,
        strict=strict,
        **options,
    ).load()


__all__ = ["MedsConfig", "MedsReader", "load_meds"]
