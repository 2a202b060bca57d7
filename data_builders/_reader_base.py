"""The `datasets` builder shared by the readers (MEDS, MIMIC-III/IV, Synthea).

- `PatientReaderBuilder`: the `datasets.ArrowBasedBuilder` base class of the three readers. It
  caches by options, reader code (`_cache_key.cache_key`) and input files (paths, sizes, mtimes),
  stores the drop report next to the cached Arrow files, and `load()` returns a `DatasetDict`
  with `.drop_report`.
- `CsvReaderBuilder`: its subclass for CSV exports without splits (MIMIC, Synthea): tables read
  once, patients split by `hash_split`, the patients / visits / events tables checked and linked.
- `hash_split`: the deterministic 80/10/10 split of formats that have no splits.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets.builder import Key
from datasets.exceptions import DatasetGenerationError

from behrt_hf.schema import patient_features

from ._assemble import EVENT_SCHEMA, PEOPLE_SCHEMA, UNKNOWN_PATIENT, assemble_patients
from ._cache_key import cache_key, local_modules
from ._csv_io import read_csv
from ._drop_report import (
    FILTERED,
    INVALID,
    REPORT_FILENAME,
    DropReport,
    MissingFileError,
    ReaderError,
    ReaderInputError,
    count_csv_rows,
    count_rows,
)

logger = logging.getLogger("behrt_hf.data_builders")

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
        key = cache_key(local_modules(inspect.getmodule(type(self))), input_files=files)
        super().__init__(cache_dir=cache_dir, data_dir=str(self.path), hash=key, **options)
        self.drop_report = self._new_report()

    def _new_report(self) -> DropReport:
        return DropReport(source=f"{self.READER_NAME} reader ({self.path})", strict=self.config.strict)

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
        self.drop_report = self._new_report()  # a second preparation (force_redownload) counts afresh
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
        yield from assemble_patients(events, people, self.drop_report, sources=self._sources, dedupe=self.config.dedupe,
                                     code_times=True)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=(type(self).__doc__ or "").strip(),
                                    features=patient_features(code_times=True))

    def _people_table(self, table: pa.Table, src: int, ids: pa.Array, sex: pa.Array, birth: pa.Array, show: Sequence[str]) -> pa.Table:
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

    def _visits_table(self, table: pa.Table, src: int, ids: pa.Array, patient_ids: pa.Array, times: pa.Array, name: str, show,
                      known_times: pa.Array | None = None) -> pa.Table:
        """Visits (admissions, encounters): id, patient_id, time (null: dropped), visit (row index), and
        `code_time` when `known_times` gives the time their codes became known (e.g. the discharge)."""
        source, report = self._sources[src], self.drop_report
        has_id = pc.and_(ids.is_valid(), patient_ids.is_valid()).to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, f"{name} row without a usable id or patient id", ~has_id, table, source, show)
        first = first_rows(ids, has_id)
        count_csv_rows(report, INVALID, f"{name} row repeating an id (first row kept)", has_id & ~first, table, source, show)
        has_time = times.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, f"{name} with an unparseable or missing date (its codes dropped)", first & ~has_time, table, source, show)
        keep = pa.array(first)
        visits = {
            "id": ids.filter(keep),
            "patient_id": patient_ids.filter(keep),
            "time": times.filter(keep),
            "visit": pa.array(np.flatnonzero(first), pa.int64()),
        }
        if known_times is not None:
            visits["code_time"] = known_times.filter(keep)
        return pa.table(visits)

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
        events = pa.table(
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
        if "code_time" in visits.column_names:  # when the visit's codes became known (see _visits_table)
            events = events.append_column("code_time", visits.column("code_time").take(slot).filter(keep))
        return events


__all__ = ["CsvReaderBuilder", "PatientReaderBuilder", "ReaderConfig", "hash_split", "ordered_splits"]
