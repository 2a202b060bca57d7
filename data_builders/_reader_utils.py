"""Machinery shared by the readers of real EHR formats (MEDS, MIMIC-III/IV, Synthea).

One implementation of everything the readers have in common:

- `DropReport`: what a reader left out, counted by reason with a few examples. Three kinds:
  *invalid* (bad input: unparseable dates, events before birth, ages above 120, null codes,
  unknown code systems, ...; `strict=True` turns the first one into a `ReaderError`),
  *filtered* (left out by design or by an option: static codes, code-prefix filter, duplicate
  codes within a visit, patients with no visit left; never an error) and *adjusted* (kept but
  changed, e.g. MIMIC-III's shifted ages above 89).
- `ReaderInputError` / `MissingFileError`: missing files or columns, raised before any work with
  the file and the column named.
- CSV access (`find_csv`, `read_csv`) and date parsing (`parse_datetimes`) that never crash deep
  inside pandas/pyarrow: bad rows become nulls or counted skips.
- `hash_split`: the deterministic 80/10/10 split of formats that have no splits.
- `assemble_patients`: events -> patient-schema rows (visits, ages, drops), vectorised with
  numpy/pyarrow and validated with `behrt_hf.schema.validate_patient` row by row.
- `PatientReaderBuilder`: the `datasets.ArrowBasedBuilder` base class of the three readers. It
  caches by options, reader code and input files (paths, sizes, mtimes), stores the drop report
  next to the cached Arrow files, and `load()` returns a `DatasetDict` with `.drop_report`.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import hashlib
import inspect
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from datasets.builder import Key
from datasets.exceptions import DatasetGenerationError

from behrt_hf.schema import MAX_AGE, SECONDS_PER_YEAR, SEXES, patient_features, validate_patient

logger = logging.getLogger("behrt_hf.data_builders")

INVALID, FILTERED, ADJUSTED = "invalid", "filtered", "adjusted"
REPORT_FILENAME = "drop_report.json"
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
PEOPLE_SCHEMA = pa.schema([("patient_id", pa.string()), ("sex", pa.string()), ("birth", TIMESTAMP)])


# --------------------------------------------------------------------------------------------
# Errors and the drop report
# --------------------------------------------------------------------------------------------


class ReaderError(ValueError):
    """`strict=True`: an input row or patient that would have been skipped. Names file, row and reason."""


class ReaderInputError(ValueError):
    """The input is unusable as a whole: a missing column, a wrong column type, an unreadable file."""


class MissingFileError(ReaderInputError, FileNotFoundError):
    """A required file or folder is missing. The message names what was looked for and where."""


@dataclass
class DropReport:
    """What a reader left out or changed, by reason, with up to `max_examples` examples each.

    `invalid` counts bad input (with `strict=True` the first such row raises `ReaderError`),
    `filtered` counts what was left out by design or by an option, `adjusted` counts values that
    were changed but kept. Reasons name their unit ("event ...", "patient ...", "... row").
    `notes` holds other remarks (optional tables not found, ...); `kept` counts what was produced.
    """

    source: str = ""
    strict: bool = False
    max_examples: int = 3
    invalid: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    adjusted: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    kept: Counter = field(default_factory=Counter)

    def add(self, kind: str, reason: str, count: int = 1, examples: Iterable[str] = ()) -> None:
        """Count `count` items left out (or adjusted) for `reason`; raise in strict mode if invalid."""
        if count <= 0:
            return
        examples = list(examples)
        if kind == INVALID and self.strict:
            where = examples[0] if examples else "(no example)"
            raise ReaderError(f"{self.source}: {reason}: {where} [strict=True; use strict=False to skip and count]")
        getattr(self, kind)[reason] += int(count)
        kept = self.examples.setdefault(reason, [])
        kept.extend(examples[: max(0, self.max_examples - len(kept))])

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def counts(self) -> Counter:
        """All reasons of all kinds with their counts."""
        return self.invalid + self.filtered + self.adjusted

    def summary(self) -> str:
        lines = [f"{self.source}: kept " + ", ".join(f"{n} {what}" for what, n in sorted(self.kept.items()))]
        for kind, counter in ((INVALID, self.invalid), (FILTERED, self.filtered), (ADJUSTED, self.adjusted)):
            for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                example = "; ".join(self.examples.get(reason, []))
                lines.append(f"  {kind:8s} {n:>9d}  {reason}" + (f"  e.g. {example}" if example else ""))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        # not dataclasses.asdict: it rebuilds Counters from (key, value) pairs and miscounts them
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> DropReport:
        data = dict(data)
        for name in (INVALID, FILTERED, ADJUSTED, "kept"):
            data[name] = Counter(data.get(name, {}))
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> DropReport:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, list) else value


def count_rows(
    report: DropReport,
    kind: str,
    reason: str,
    mask: np.ndarray,
    events: pa.Table,
    sources: Sequence[str],
    index: np.ndarray | None = None,
) -> None:
    """Count the events selected by boolean `mask` under `reason`, with examples.

    `mask` indexes `events` directly, or `index` (row numbers into `events`) when given.
    """
    n = int(mask.sum())
    if n:
        first = np.flatnonzero(mask)[: report.max_examples]
        rows = first if index is None else index[first]
        report.add(kind, reason, n, (describe_event(events, int(i), sources) for i in rows))


def count_csv_rows(
    report: DropReport, kind: str, reason: str, mask: np.ndarray, table: pa.Table, source: str, show: Sequence[str] = ()
) -> None:
    """Count the rows of a table from `read_csv` selected by `mask`; examples show the `show` columns."""
    n = int(mask.sum())
    if n:
        rows = np.flatnonzero(mask)[: report.max_examples]
        report.add(kind, reason, n, (describe_csv_row(table, int(i), source, show) for i in rows))


def describe_csv_row(table: pa.Table, i: int, source: str, show: Sequence[str] = ()) -> str:
    values = ", ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in show if c in table.column_names)
    return f"{source} line {table.column('row')[i].as_py()}" + (f" ({values})" if values else "")


def describe_event(events: pa.Table, i: int, sources: Sequence[str]) -> str:
    row = {name: events.column(name)[i].as_py() for name in ("patient_id", "time", "code", "src", "row")}
    source = sources[row["src"]]
    unit = "line" if source.lower().endswith((".csv", ".csv.gz")) else "row"  # CSV: line number, header = 1
    return f"{source} {unit} {row['row']} (patient {row['patient_id']}, code {row['code']}, time {row['time']})"


# --------------------------------------------------------------------------------------------
# Files, CSVs, dates, codes
# --------------------------------------------------------------------------------------------


def find_csv(root: Path, name: str, *, subdirs: Sequence[str] = ("",), required: bool = True) -> Path | None:
    """`root/<subdir>/<name>.csv` or `.csv.gz`, the name matched case-insensitively (PATIENTS / patients)."""
    wanted = {f"{name.lower()}.csv", f"{name.lower()}.csv.gz"}
    for subdir in subdirs:
        folder = root / subdir
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and entry.name.lower() in wanted:
                    return entry
    if required:
        where = ", ".join(str(root / s) if s else str(root) for s in subdirs)
        raise MissingFileError(f"required table {name}.csv (or {name}.csv.gz) not found in {where}")
    return None


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ReaderInputError(f"{path}: cannot read the CSV header ({e})") from e
    if not header:
        raise ReaderInputError(f"{path}: empty file, expected a CSV header")
    return header


def read_csv(
    path: Path, required: Sequence[str], optional: Sequence[str] = (), *, report: DropReport
) -> pa.Table:
    """Read the named columns of a CSV (or .csv.gz) as strings; column names matched case-insensitively.

    Returns a table whose columns are the requested names in lower case, plus `row` (the line number
    of each row in the file, the header being line 1). A missing required column raises
    `ReaderInputError` naming the file and column; a missing optional column is absent from the
    result. Rows with the wrong number of fields are skipped and counted (invalid).
    """
    header = _csv_header(path)
    by_lower = {h.strip().lower(): h for h in header}
    missing = [c for c in required if c.lower() not in by_lower]
    if missing:
        raise ReaderInputError(f"{path}: missing required column(s) {missing}; the header has {header}")
    wanted = [c.lower() for c in (*required, *optional) if c.lower() in by_lower]
    originals = [by_lower[c] for c in wanted]
    bad_rows: list[str] = []

    def on_invalid_row(row) -> str:
        bad_rows.append(f"{path.name} line {row.number}: {row.text[:80]!r}")
        return "error" if report.strict else "skip"

    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),  # single-threaded: line numbers for examples
            parse_options=pa_csv.ParseOptions(invalid_row_handler=on_invalid_row),
            convert_options=pa_csv.ConvertOptions(
                include_columns=originals,
                column_types={c: pa.string() for c in originals},
                strings_can_be_null=True,
            ),
        )
    except pa.ArrowInvalid as e:
        if bad_rows:
            report.add(INVALID, "malformed CSV row", 1, bad_rows)  # raises: strict mode
        raise ReaderInputError(f"{path}: cannot parse the CSV ({e})") from e
    report.add(INVALID, "malformed CSV row (wrong number of fields)", len(bad_rows), bad_rows)
    table = table.rename_columns(wanted)
    table = table.combine_chunks()
    # Line numbers: rows are consecutive lines after the header, except the skipped ones.
    return table.append_column("row", pa.array(_line_numbers(table.num_rows, bad_rows), pa.int64()))


def _line_numbers(n_rows: int, bad_rows: list[str]) -> np.ndarray:
    skipped = sorted(int(m.group(1)) for m in (re.search(r" line (\d+):", b) for b in bad_rows) if m)
    lines = np.arange(2, n_rows + 2 + len(skipped), dtype=np.int64)
    if skipped:
        lines = lines[~np.isin(lines, skipped)]
    return lines[:n_rows]


_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def parse_datetimes(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Parse ISO-like date strings to timestamp[us] (naive, UTC); unparseable or empty -> null.

    Accepts `YYYY-MM-DD`, `YYYY-MM-DD HH:MM`, `YYYY-MM-DD HH:MM:SS[.ffffff]`, the `T` separator and
    a trailing `Z` (Synthea). Other time-zone offsets are not parsed (null, counted by the caller).
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    text = pc.utf8_trim_whitespace(values)
    text = pc.replace_substring_regex(text, r"^(\d{4}-\d{2}-\d{2})T", r"\1 ")
    fraction = pc.struct_field(pc.extract_regex(text, r"\.(?P<f>\d{1,6})Z?$"), "f")
    text = pc.replace_substring_regex(text, r"(\.\d{1,6})?Z?$", "")
    seconds = pc.coalesce(*(pc.strptime(text, format=f, unit="us", error_is_null=True) for f in _DATE_FORMATS))
    # strptime rolls impossible dates over (2019-02-30 -> 2019-03-02): reject them
    same_day = pc.equal(pc.strftime(seconds, format="%Y-%m-%d"), pc.utf8_slice_codeunits(text, 0, 10))
    seconds = pc.if_else(same_day, seconds, pa.scalar(None, TIMESTAMP))
    micros = pc.fill_null(pc.cast(pc.utf8_rpad(fraction, 6, "0"), pa.int64()), 0)
    return pc.add(seconds.cast(pa.int64()), micros).cast(TIMESTAMP)


def normalize_icd(values: pa.Array, system: str) -> pa.Array:
    """Raw ICD strings -> MEDS-style codes `SYSTEM//CODE`; empty -> null.

    Dots and spaces are removed and letters upper-cased (`401.9` -> `4019`, as MIMIC stores them);
    ICD-10-CM codes then get their dot back after the 3-character category (`E119` -> `E11.9`), the
    form of `simple_icd_10_cm` and of the synthetic cohort. ICD-9 and PCS codes stay without dots.
    """
    text = pc.utf8_upper(pc.replace_substring_regex(values, r"[\s.]", ""))
    text = pc.if_else(pc.equal(pc.utf8_length(text), 0), pa.scalar(None, pa.string()), text)
    if system == "ICD10CM":
        dotted = pc.binary_join_element_wise(pc.utf8_slice_codeunits(text, 0, 3), pc.utf8_slice_codeunits(text, 3), ".")
        text = pc.if_else(pc.greater(pc.utf8_length(text), 3), dotted, text)
    return pc.binary_join_element_wise(pa.scalar(system), text, "//")


def normalize_sex(values: pa.Array) -> pa.Array:
    """`F`/`FEMALE` -> F, `M`/`MALE` -> M, anything else (or null) -> U."""
    text = pc.utf8_upper(pc.utf8_trim_whitespace(pc.fill_null(values, "")))
    female = pc.is_in(text, value_set=pa.array(["F", "FEMALE"]))
    male = pc.is_in(text, value_set=pa.array(["M", "MALE"]))
    return pc.if_else(female, "F", pc.if_else(male, "M", "U"))


def parse_ints(values: pa.Array) -> pa.Array:
    """Decimal strings -> int64 (`"12"`, `" 12 "`, `"12.0"` as pandas writes ids); anything else -> null."""
    text = pc.replace_substring_regex(pc.utf8_trim_whitespace(values), r"\.0*$", "")
    ok = pc.match_substring_regex(text, r"^[+-]?\d{1,18}$")
    return pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), pa.int64())


def hash_split(patient_id: str) -> str:
    """The split of a patient in formats that have none: train / validation / test, 80 / 10 / 10.

    Deterministic and stable across runs, machines and Python versions: the first 8 bytes of
    SHA-256 of the patient_id, modulo 100 (0-79 train, 80-89 validation, 90-99 test).
    """
    bucket = int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:8], "big") % 100
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


SPLIT_ORDER = ("train", "validation", "test")


def ordered_splits(names: Iterable[str]) -> list[str]:
    """train, validation, test first, then other split names sorted."""
    names = set(names)
    return [s for s in SPLIT_ORDER if s in names] + sorted(names - set(SPLIT_ORDER))


# --------------------------------------------------------------------------------------------
# Events -> patients
# --------------------------------------------------------------------------------------------


def assemble_patients(
    events: pa.Table,
    people: pa.Table,
    report: DropReport,
    *,
    sources: Sequence[str],
    window_us: int = 0,
    dedupe: bool = False,
    patients_per_batch: int = 1024,
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

    no_birth = np.flatnonzero(~has_birth[:-1])
    report.add(
        INVALID,
        "patient without a birth date (all its events dropped)",
        len(no_birth),
        (f"patient {people_ids[int(i)].as_py()}" for i in no_birth[: report.max_examples]),
    )
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

    keep = np.flatnonzero(usable & ~before & ~too_old)
    visit_key = events.column("visit").to_numpy()[keep]
    start_us = _visit_start(rank[keep], visit_key, time_us[keep])
    # patient, visit start, visit, time; stable: input order among equals
    order = np.lexsort((time_us[keep], visit_key, start_us, rank[keep]))
    taken = keep[order]
    rank, time_us, age_us, visit_key = rank[taken], time_us[taken], age_us[taken], visit_key[order]
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
        codes = codes.filter(pa.array(first))

    with_visits = np.zeros(len(has_birth), dtype=bool)
    with_visits[rank] = True
    lost = np.flatnonzero(~with_visits & has_birth)
    report.add(
        FILTERED,
        "patient with no visit left",
        len(lost),
        (f"patient {people_ids[int(i)].as_py()}" for i in lost[: report.max_examples]),
    )
    report.kept["events"] += len(rank)
    yield from _rows(people, rank, time_us, age_us, new_visit, codes, patients_per_batch, report)


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


def _rows(people, rank, time_us, age_us, new_visit, codes, patients_per_batch, report) -> Iterator[dict]:
    """Yield validated patient rows, building Python objects one batch of patients at a time.

    Events arrive sorted by patient then visit; `new_visit` marks each visit's first event.
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
        per_patient = (first_visit[b : last + 1] - v0).tolist()
        for p, start, stop in zip(range(b, last), per_patient[:-1], per_patient[1:]):
            person = int(rank[patient_starts[p]])
            sex = sexes[person]
            patient = {"patient_id": ids[person], "sex": sex if sex in SEXES else "U", "visits": visits[start:stop]}
            validate_patient(patient)
            yield patient
        report.kept["patients"] += last - b
        report.kept["visits"] += int(v1 - v0)


# --------------------------------------------------------------------------------------------
# The datasets builder shared by the readers
# --------------------------------------------------------------------------------------------


@dataclass
class ReaderConfig(datasets.BuilderConfig):
    """Options every reader has.

    Args:
        strict (`bool`, defaults to `False`): raise `ReaderError` on the first invalid row instead
            of skipping and counting it.
        dedupe (`bool`, defaults to `False`): keep only the first occurrence of a code within a visit.
    """

    strict: bool = False
    dedupe: bool = False


def _empty_split(features: datasets.Features, name: str) -> datasets.Dataset:
    return datasets.Dataset.from_dict({column: [] for column in features}, features=features, split=datasets.Split(name))


def fingerprint(files: Iterable[Path], modules: Iterable[object]) -> str:
    """Cache key of a reader's output: its code and its input files (path, size, mtime)."""
    h = hashlib.sha256()
    for module in modules:
        h.update(inspect.getsource(module).encode())
    for path in sorted(Path(f) for f in files):
        stat = path.stat()
        h.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


class PatientReaderBuilder(datasets.ArrowBasedBuilder):
    """Base class of the readers: one `datasets` builder over a local folder of EHR data.

    Subclasses set `BUILDER_CONFIG_CLASS` and `READER_NAME`, and implement `_input_files(config)`
    (check the folder, return the files the output depends on; raise `ReaderInputError` early),
    `_plan()` (read what is needed to know the splits; return `{split: gen_kwargs}`) and
    `_iter_patients(**gen_kwargs)` (yield validated patient rows of one split).
    """

    BUILDER_CONFIG_CLASS = ReaderConfig
    VERSION = datasets.Version("1.0.0")
    READER_NAME = "reader"
    PATIENTS_PER_TABLE = 1000

    def __init__(self, path: str | os.PathLike, *, cache_dir: str | None = None, **options):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise MissingFileError(f"{self.path}: not a folder ({self.READER_NAME} reader)")
        # the options are checked (and the inputs found) before any cache is touched
        files = self._input_files(self.BUILDER_CONFIG_CLASS(data_dir=str(self.path), **options))
        modules = [inspect.getmodule(PatientReaderBuilder), inspect.getmodule(type(self))]
        super().__init__(cache_dir=cache_dir, data_dir=str(self.path), hash=fingerprint(files, modules), **options)
        self.drop_report = DropReport(source=f"{self.READER_NAME} reader ({self.path})", strict=self.config.strict)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=(type(self).__doc__ or "").strip(), features=patient_features())

    # --- subclass interface ---
    def _input_files(self, config: ReaderConfig) -> list[Path]:
        raise NotImplementedError

    def _plan(self) -> dict[str, dict]:
        raise NotImplementedError

    def _iter_patients(self, **gen_kwargs) -> Iterator[dict]:
        raise NotImplementedError

    # --- datasets plumbing ---
    def _split_generators(self, dl_manager):
        plan = self._plan()
        return [datasets.SplitGenerator(name=split, gen_kwargs=plan[split]) for split in ordered_splits(plan)]

    def _generate_tables(self, **gen_kwargs):
        schema = self.info.features.arrow_schema
        batch, index = [], 0
        for patient in self._iter_patients(**gen_kwargs):
            batch.append(patient)
            if len(batch) == self.PATIENTS_PER_TABLE:
                yield Key(0, index), pa.Table.from_pylist(batch, schema=schema)
                batch, index = [], index + 1
        if batch:
            yield Key(0, index), pa.Table.from_pylist(batch, schema=schema)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        self.drop_report.save(os.path.join(self._output_dir, REPORT_FILENAME))

    def load(self) -> datasets.DatasetDict:
        """Read (or reuse the cache), log the drop summary, return the splits with `.drop_report` attached."""
        try:
            self.download_and_prepare()
        except DatasetGenerationError as e:  # surface our own errors, not the datasets wrapper
            cause = e.__cause__
            if isinstance(cause, (ReaderError, ReaderInputError)):
                raise cause from None
            raise
        report_path = os.path.join(self.cache_dir, REPORT_FILENAME)
        if os.path.exists(report_path):
            self.drop_report = DropReport.load(report_path)
        left_out = self.drop_report.invalid or self.drop_report.filtered or self.drop_report.adjusted
        logger.log(logging.WARNING if left_out else logging.INFO, "%s", self.drop_report.summary())
        splits = datasets.DatasetDict()
        for name, info in self.info.splits.items():
            # datasets cannot read back a split of 0 rows (all its patients dropped): an empty one instead
            splits[name] = self.as_dataset(split=name) if info.num_examples else _empty_split(self.info.features, name)
        splits.drop_report = self.drop_report
        return splits


# --------------------------------------------------------------------------------------------
# CSV exports without splits (MIMIC, Synthea)
# --------------------------------------------------------------------------------------------


def first_rows(ids: pa.Array, valid: np.ndarray) -> np.ndarray:
    """Mask of rows whose id is valid and seen for the first time."""
    keep = np.zeros(len(ids), dtype=bool)
    candidates = np.flatnonzero(valid)
    _, first = np.unique(ids.take(pa.array(candidates)).to_numpy(zero_copy_only=False), return_index=True)
    keep[candidates[first]] = True
    return keep


class CsvReaderBuilder(PatientReaderBuilder):
    """Readers of CSV exports without splits (MIMIC, Synthea).

    Subclasses implement `_read()` -> (events, people): every table is read once (pyarrow, all
    columns as strings), then patients are split by `hash_split` (80/10/10 on patient_id).
    Within a visit, codes keep the order of the events table, which the subclass builds.
    """

    def _read(self) -> tuple[pa.Table, pa.Table]:
        raise NotImplementedError

    def _read_table(self, path: Path, required: Sequence[str], optional: Sequence[str] = ()) -> tuple[pa.Table, int]:
        """A CSV as strings (see `read_csv`) and its index in the sources named by examples."""
        self._sources.append(path.relative_to(self.path).as_posix())
        return read_csv(path, required, optional, report=self.drop_report), len(self._sources) - 1

    def _plan(self) -> dict[str, dict]:
        self._sources: list[str] = []
        events, people = self._read()
        known = pc.is_in(events.column("patient_id"), value_set=people.column("patient_id")).to_numpy(zero_copy_only=False)
        count_rows(self.drop_report, INVALID, UNKNOWN_PATIENT, ~known, events, self._sources)
        self._events = events.filter(pa.array(known))
        self._people = people
        self._split_of = np.array([hash_split(p) for p in people.column("patient_id").to_pylist()], dtype=object)
        return {split: {"split": split} for split in set(self._split_of.tolist())}

    def _iter_patients(self, split: str) -> Iterator[dict]:
        people = self._people.filter(pa.array(self._split_of == split))
        events = self._events.filter(pc.is_in(self._events.column("patient_id"), value_set=people.column("patient_id")))
        yield from assemble_patients(events, people, self.drop_report, sources=self._sources, dedupe=self.config.dedupe)

    def _people(self, table: pa.Table, src: int, ids: pa.Array, sex: pa.Array, birth: pa.Array, show: Sequence[str]) -> pa.Table:
        """PEOPLE_SCHEMA from a patients table; rows without id or birth, and repeated ids, counted and left out."""
        source, report = self._sources[src], self.drop_report
        has_id = ids.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, "patient row without a usable id", ~has_id, table, source, show)
        first = first_rows(ids, has_id)
        count_csv_rows(report, INVALID, "patient row repeating an id (first row kept)", has_id & ~first, table, source, show)
        has_birth = birth.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, "patient with an unparseable or missing birth date", first & ~has_birth, table, source, show)
        keep = pa.array(first & has_birth)
        return pa.table(
            {"patient_id": ids.filter(keep), "sex": sex.filter(keep), "birth": birth.filter(keep)}, schema=PEOPLE_SCHEMA
        )

    def _visits(self, table: pa.Table, src: int, ids: pa.Array, patient_ids: pa.Array, times: pa.Array, name: str, show) -> pa.Table:
        """Visits (admissions, encounters): id, patient_id, time (null: dropped), visit (row index)."""
        source, report = self._sources[src], self.drop_report
        has_id = pc.and_(ids.is_valid(), patient_ids.is_valid()).to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, f"{name} row without a usable id or patient id", ~has_id, table, source, show)
        first = first_rows(ids, has_id)
        count_csv_rows(report, INVALID, f"{name} row repeating an id (first row kept)", has_id & ~first, table, source, show)
        has_time = times.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, f"{name} with an unparseable or missing date (its codes dropped)", first & ~has_time, table, source, show)
        keep = pa.array(first)
        return pa.table(
            {
                "id": ids.filter(keep),
                "patient_id": patient_ids.filter(keep),
                "time": times.filter(keep),
                "visit": pa.array(np.flatnonzero(first), pa.int64()),
            }
        )

    def _link(
        self, table: pa.Table, src: int, visit_ids: pa.Array, patient_ids: pa.Array, codes: pa.Array, visits: pa.Table, name: str
    ) -> pa.Table:
        """EVENT_SCHEMA rows of an event table attached to its visits by id, in table order.

        Rows with a null code were counted by the caller and are left out here; rows whose visit
        is unknown or belongs to another patient are counted (invalid), rows of dropped visits
        are counted (filtered).
        """
        report, source = self.drop_report, self._sources[src]
        where = pc.fill_null(pc.index_in(visit_ids, value_set=visits.column("id")), -1).to_numpy()
        has_code = codes.is_valid().to_numpy(zero_copy_only=False)
        known = where >= 0
        show = ["patient_id", "visit_id", "code"]
        shown = pa.table({"patient_id": patient_ids, "visit_id": visit_ids, "code": codes, "row": table.column("row")})
        count_csv_rows(report, INVALID, f"event of an unknown {name}", has_code & ~known, shown, source, show)
        slot = pa.array(np.maximum(where, 0))
        visit_patient = visits.column("patient_id").take(slot)
        same = pc.fill_null(pc.equal(visit_patient, patient_ids), False).to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, f"event whose patient differs from its {name}'s", has_code & known & ~same, shown, source, show)
        visit_time = visits.column("time").take(slot)
        timed = visit_time.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, FILTERED, f"event of a dropped {name}", has_code & known & same & ~timed, shown, source, show)
        keep = pa.array(has_code & known & same & timed)
        n = int(pc.sum(keep).as_py() or 0)
        return pa.table(
            {
                "patient_id": visit_patient.filter(keep),
                "time": visit_time.filter(keep),
                "visit": visits.column("visit").take(slot).filter(keep),
                "code": codes.filter(keep),
                "src": pa.array(np.full(n, src, np.int32)),
                "row": table.column("row").filter(keep),
            },
            schema=EVENT_SCHEMA,
        )
