"""MIMIC-III / MIMIC-IV reader: the hospital CSVs -> the patient schema.

    splits = load_mimic("path/to/mimic-iv/2.2", version="iv")   # finds hosp/*.csv.gz too
    splits = load_mimic("path/to/mimic-iii/1.4", version="iii")

Tables (plain `.csv` or `.csv.gz`, upper or lower case names, in the folder or its `hosp/`):
PATIENTS, ADMISSIONS and DIAGNOSES_ICD are required; PROCEDURES_ICD and PRESCRIPTIONS are used
when present (`tables=` picks which event tables to use). Columns used:

=============  ==========================================  ===========================================
table          MIMIC-III                                   MIMIC-IV
=============  ==========================================  ===========================================
patients       subject_id, gender, dob                     subject_id, gender, anchor_age, anchor_year
admissions     subject_id, hadm_id, admittime [, dischtime] same
diagnoses_icd  subject_id, hadm_id, icd9_code [, seq_num]  subject_id, hadm_id, icd_code, icd_version [, seq_num]
procedures_icd as diagnoses_icd                            as diagnoses_icd
prescriptions  subject_id, hadm_id, ndc (or drug)          same
=============  ==========================================  ===========================================

Rules:

- Admissions become visits, at ADMITTIME; every code of the admission (joined on hadm_id) belongs
  to that visit: diagnoses in seq_num order, then procedures in seq_num order, then prescriptions
  in file order. Times of codes: MIMIC's diagnoses and procedure codes are assigned for billing
  at discharge and carry no time of their own, so every code of an admission (prescriptions too,
  conservatively) has the admission's DISCHTIME as its `code_times` entry: a prediction made
  during an admission sees nothing of it (`behrt_hf.encoding.cut_at_times`). Without a dischtime
  (column absent, or unparseable) the codes count from ADMITTIME. `dedupe=True` (the default here) keeps one copy of a code per admission: the
  same diagnosis listed twice, or a drug prescribed several times in a stay, is one token.
- Codes: `ICD9CM//4019`, `ICD10CM//I10` / `ICD10CM//E11.9` (ICD-10-CM gets its dot back, the form
  of simple_icd_10_cm and of the synthetic cohort), `ICD9PCS//3893`, `ICD10PCS//0DTJ4ZZ`,
  prescriptions `NDC//00338001702` (`drug_code="drug"`: `DRUG//HEPARIN_SODIUM`, or `"none"`).
- Ages. MIMIC-III: from DOB. Patients older than 89 have their DOB shifted so that they appear
  about 300 years old at their first admission; a patient whose age at the first admission is
  above 150 years gets the birth date that makes that age `shifted_age` (default 91.4, the median
  age of this group in the MIMIC-III documentation), later admissions keeping their spacing
  (counted as adjusted). MIMIC-IV: `anchor_age` is the age in `anchor_year`, so birth is set to
  1 January of `anchor_year - anchor_age` (error under a year); MIMIC-IV already caps ages above
  89 at 91.
- Sex from `gender` (F / M, else U). patient_id is the decimal `subject_id`. Splits by a stable
  hash of patient_id, 80/10/10 (see `hash_split`).

Dropped and counted (invalid; `strict=True` raises): malformed CSV rows, rows with unparseable
ids, dates or anchor ages, repeated patient/admission ids (first kept), null codes, unknown
`icd_version`, codes of unknown admissions or of another patient's admission, events before
birth or above 120 years. Filtered: codes of dropped admissions, prescriptions without a usable
NDC (or drug name), repeated codes within an admission, patients with no admission left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._assemble import EVENT_SCHEMA, TIMESTAMP, US_PER_YEAR
from ._csv_io import find_csv, normalize_icd, normalize_sex, parse_datetimes, parse_ints
from ._drop_report import ADJUSTED, FILTERED, INVALID, count_csv_rows
from ._reader_base import CsvReaderBuilder, ReaderConfig

SUBDIRS = ("", "hosp")
EVENT_TABLES = ("diagnoses", "procedures", "prescriptions")
FILES = {"diagnoses": "diagnoses_icd", "procedures": "procedures_icd", "prescriptions": "prescriptions"}
ICD_SYSTEMS = {  # (table, icd_version) -> code system
    ("diagnoses", "9"): "ICD9CM",
    ("diagnoses", "10"): "ICD10CM",
    ("procedures", "9"): "ICD9PCS",
    ("procedures", "10"): "ICD10PCS",
}
SHIFTED_AGE_THRESHOLD = 150.0  # MIMIC-III: older than this at the first admission means a shifted DOB


@dataclass
class MimicConfig(ReaderConfig):
    """Options of the MIMIC reader.

    Args:
        mimic_version (`str`, defaults to `"iv"`): `"iii"` or `"iv"` (`version` is the cache version).
        tables (`tuple[str]`, defaults to all): event tables to use, among `"diagnoses"`
            (required when listed), `"procedures"` and `"prescriptions"` (used when present).
        drug_code (`str`, defaults to `"ndc"`): prescriptions as `NDC//<ndc>`, `DRUG//<name>`
            (`"drug"`) or not at all (`"none"`).
        shifted_age (`float`, defaults to 91.4): MIMIC-III age at the first admission given to
            patients whose DOB was shifted (older than 89).
        dedupe (`bool`, defaults to `True`): one copy of a code per admission.
        strict (`bool`, defaults to `False`): raise on the first invalid row instead of counting it.
    """

    mimic_version: str = "iv"
    tables: tuple[str, ...] = EVENT_TABLES
    drug_code: str = "ndc"
    shifted_age: float = 91.4
    dedupe: bool = True

    def __post_init__(self):
        super().__post_init__()
        self.mimic_version = str(self.mimic_version).lower()
        if self.mimic_version not in ("iii", "iv"):
            raise ValueError(f"mimic_version must be 'iii' or 'iv', got {self.mimic_version!r}")
        self.tables = tuple(self.tables)
        unknown = set(self.tables) - set(EVENT_TABLES)
        if unknown or not self.tables:
            raise ValueError(f"tables must be a non-empty subset of {EVENT_TABLES}, got {self.tables}")
        if self.drug_code not in ("ndc", "drug", "none"):
            raise ValueError(f"drug_code must be 'ndc', 'drug' or 'none', got {self.drug_code!r}")
        if not 89 < self.shifted_age <= 120:
            raise ValueError(f"shifted_age must be in (89, 120], got {self.shifted_age}")


class MimicReader(CsvReaderBuilder):
    """MIMIC-III or MIMIC-IV hospital tables read into the patient schema (rules in the module docstring)."""

    BUILDER_CONFIG_CLASS = MimicConfig
    READER_NAME = "MIMIC"

    def _input_files(self, config: MimicConfig) -> list[Path]:
        self._files = {
            "patients": find_csv(self.path, "patients", subdirs=SUBDIRS),
            "admissions": find_csv(self.path, "admissions", subdirs=SUBDIRS),
        }
        for table in config.tables:
            if not (table == "prescriptions" and config.drug_code == "none"):
                self._files[table] = find_csv(self.path, FILES[table], subdirs=SUBDIRS, required=table == "diagnoses")
        return [f for f in self._files.values() if f is not None]

    # --- tables ---
    def _read(self) -> tuple[pa.Table, pa.Table]:
        people = self._read_patients()
        visits = self._read_admissions()
        if self.config.mimic_version == "iii":
            people = self._unshift_ages(people, visits)
        events = []
        for table in self.config.tables:
            if table not in self._files:  # prescriptions with drug_code="none"
                continue
            if self._files[table] is None:
                self.drop_report.note(f"{FILES[table]}.csv not found: no {table}")
                continue
            events.append(self._read_events(table, visits))
        return (pa.concat_tables(events) if events else EVENT_SCHEMA.empty_table()), people

    def _read_patients(self) -> pa.Table:
        iii = self.config.mimic_version == "iii"
        columns = ["subject_id", "gender"] + (["dob"] if iii else ["anchor_age", "anchor_year"])
        table, src = self._read_table(self._files["patients"], columns)
        if iii:
            birth = parse_datetimes(table.column("dob"))
        else:  # born on 1 January of anchor_year - anchor_age
            year = pc.subtract(parse_ints(table.column("anchor_year")), parse_ints(table.column("anchor_age")))
            ok = pc.and_kleene(pc.greater_equal(year, 1), pc.less_equal(year, 9999))
            year = pc.if_else(ok, year, pa.scalar(None, pa.int64()))
            birth = parse_datetimes(pc.binary_join_element_wise(pc.utf8_lpad(pc.cast(year, pa.string()), 4, "0"), "01-01", "-"))
        ids = pc.cast(parse_ints(table.column("subject_id")), pa.string())
        return self._people_table(table, src, ids, normalize_sex(table.column("gender")), birth, columns)

    def _read_admissions(self) -> pa.Table:
        columns = ["subject_id", "hadm_id", "admittime"]
        table, src = self._read_table(self._files["admissions"], columns, ["dischtime"])
        ids = pc.cast(parse_ints(table.column("hadm_id")), pa.string())
        patients = pc.cast(parse_ints(table.column("subject_id")), pa.string())
        if "dischtime" in table.column_names:
            discharge = parse_datetimes(table.column("dischtime"))
        else:
            self.drop_report.note("admissions has no dischtime: codes count from the admission time (a prediction "
                                  "during an admission may see its codes)")
            discharge = pa.nulls(table.num_rows, TIMESTAMP)
        return self._visits_table(table, src, ids, patients, parse_datetimes(table.column("admittime")), "admission",
                                  columns, known_times=discharge)

    def _unshift_ages(self, people: pa.Table, visits: pa.Table) -> pa.Table:
        """MIMIC-III: patients older than 89 appear ~300 at their first admission; give them `shifted_age`."""
        timed = visits.filter(visits.column("time").is_valid())
        firsts = timed.group_by("patient_id", use_threads=False).aggregate([("time", "min")])
        where = pc.index_in(people.column("patient_id"), value_set=firsts.column("patient_id"))
        has_first = where.is_valid().to_numpy(zero_copy_only=False)
        first_us = pc.fill_null(pc.cast(firsts.column("time_min").take(where), pa.int64()), 0).to_numpy()
        birth_us = pc.cast(people.column("birth"), pa.int64()).to_numpy()  # _people_table left no null birth
        shifted = has_first & ((first_us - birth_us) / US_PER_YEAR > SHIFTED_AGE_THRESHOLD)
        self.drop_report.add_where(
            ADJUSTED,
            f"patient with a shifted DOB (older than 89): age at first admission set to {self.config.shifted_age:g}",
            shifted,
            lambda i: f"patient {people.column('patient_id')[i].as_py()}",
        )
        if not shifted.any():
            return people
        new_birth = np.where(shifted, first_us - round(self.config.shifted_age * US_PER_YEAR), birth_us)
        birth = pa.array(new_birth).cast(TIMESTAMP)
        return people.set_column(people.schema.get_field_index("birth"), "birth", birth)

    def _read_events(self, table_name: str, visits: pa.Table) -> pa.Table:
        iii = self.config.mimic_version == "iii"
        if table_name == "prescriptions":
            drug_column = "ndc" if self.config.drug_code == "ndc" else "drug"
            table, src = self._read_table(self._files[table_name], ["subject_id", "hadm_id", drug_column])
            codes = self._drug_codes(table, src, drug_column)
        else:
            code_columns = ["icd9_code"] if iii else ["icd_code", "icd_version"]
            table, src = self._read_table(self._files[table_name], ["subject_id", "hadm_id", *code_columns], ["seq_num"])
            table = _sorted_by_seq_num(table)
            codes = self._icd_codes(table, src, table_name)
        ids = pc.cast(parse_ints(table.column("hadm_id")), pa.string())
        patients = pc.cast(parse_ints(table.column("subject_id")), pa.string())
        return self._link(table, src, ids, patients, codes, visits, "admission")

    def _icd_codes(self, table: pa.Table, src: int, table_name: str) -> pa.Array:
        source, report = self._sources[src], self.drop_report
        if self.config.mimic_version == "iii":
            raw, versions = table.column("icd9_code"), pa.array(np.full(table.num_rows, "9"), pa.string())
        else:
            raw, versions = table.column("icd_code"), pc.utf8_trim_whitespace(pc.fill_null(table.column("icd_version"), ""))
        codes = pa.nulls(table.num_rows, pa.string())
        known = np.zeros(table.num_rows, bool)
        for version in ("9", "10"):
            mine = pc.equal(versions, version)
            known |= mine.to_numpy(zero_copy_only=False)
            codes = pc.if_else(mine, normalize_icd(raw.combine_chunks(), ICD_SYSTEMS[(table_name, version)]), codes)
        show = ["subject_id", "hadm_id", "icd9_code", "icd_code", "icd_version"]
        count_csv_rows(report, INVALID, "event with an unknown code system (icd_version not 9 or 10)", ~known, table, source, show)
        null_code = known & ~codes.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(report, INVALID, "event with a null code", null_code, table, source, show)
        return codes

    def _drug_codes(self, table: pa.Table, src: int, column: str) -> pa.Array:
        raw = pc.utf8_trim_whitespace(table.column(column).combine_chunks())
        if column == "ndc":
            usable = pc.and_(pc.match_substring_regex(raw, r"^\d+$"), pc.invert(pc.match_substring_regex(raw, r"^0+$")))
            codes = pc.binary_join_element_wise("NDC", raw, "//")
            reason = "prescription without a usable NDC (null, 0 or not digits)"
        else:
            name = pc.utf8_upper(pc.replace_substring_regex(raw, r"\s+", "_"))
            usable = pc.greater(pc.utf8_length(name), 0)
            codes = pc.binary_join_element_wise("DRUG", name, "//")
            reason = "prescription without a drug name"
        usable = pc.fill_null(usable, False)
        count_csv_rows(self.drop_report, FILTERED, reason, ~usable.to_numpy(zero_copy_only=False), table, self._sources[src], ["subject_id", "hadm_id", column])
        return pc.if_else(usable, codes, pa.scalar(None, pa.string()))


def _sorted_by_seq_num(table: pa.Table) -> pa.Table:
    """Rows in seq_num order (stable; rows without a number last); as read when there is no seq_num."""
    if "seq_num" not in table.column_names:
        return table
    seq = pc.fill_null(parse_ints(table.column("seq_num")), np.iinfo(np.int64).max).to_numpy()
    return table.take(pa.array(np.argsort(seq, kind="stable")))


def load_mimic(
    path,
    version: str = "iv",
    *,
    tables=EVENT_TABLES,
    drug_code: str = "ndc",
    dedupe: bool = True,
    strict: bool = False,
    cache_dir: str | None = None,
    **options,
) -> datasets.DatasetDict:
    """Read MIMIC-III (`version="iii"`) or MIMIC-IV (`"iv"`) CSVs into the patient schema.

    Returns a `DatasetDict` (train / validation / test by a stable hash of patient_id) with
    `.drop_report` (a `DropReport`). `**options`: other `MimicConfig` fields (`shifted_age`).
    """
    return MimicReader(
        path,
        cache_dir=cache_dir,
        mimic_version=version,
        tables=tuple(tables),
        drug_code=drug_code,
        dedupe=dedupe,
        strict=strict,
        **options,
    ).load()


__all__ = ["MimicConfig", "MimicReader", "load_mimic"]
