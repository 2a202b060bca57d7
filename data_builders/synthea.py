"""Synthea reader: Synthea's CSV output (`exporter.csv.export = true`) -> the patient schema.

    splits = load_synthea("output/csv")

Tables (plain `.csv` or `.csv.gz`): `patients.csv` (Id, BIRTHDATE, GENDER) and `encounters.csv`
(Id, START, PATIENT) are required; the event tables `conditions.csv`, `procedures.csv`,
`medications.csv` and `observations.csv` (PATIENT, ENCOUNTER, CODE [, SYSTEM]) are used when
present (`tables=` picks which).

Rules:

- Encounters become visits, at the encounter's START; each event joins the visit of its ENCOUNTER
  (its own date is not used) and has the encounter's STOP as its `code_times` entry (when the
  column is there), so a prediction during an encounter sees none of its codes. Within a visit: conditions, procedures, medications, observations
  (the order of `tables`), each in file order. `dedupe=True` (the default here) keeps one copy of
  a code per encounter (e.g. repeated vital-sign observations).
- Codes: the SYSTEM column when the table has one (Synthea 3.x: `SNOMED-CT` -> `SNOMED`,
  `RxNorm` -> `RXNORM`, `LOINC`, ICD-10 -> `ICD10CM` with its dot, FHIR URIs of these too);
  otherwise the table's system: conditions and procedures `SNOMED//`, medications `RXNORM//`,
  observations `LOINC//`. Observation values are not used (codes only).
- Age from BIRTHDATE; sex from GENDER (F / M, else U); patient_id is the patient's Id (a UUID).
  Times with a trailing `Z` are UTC and stored naive. Splits by a stable hash of patient_id,
  80/10/10 (see `hash_split`).

Dropped and counted (invalid; `strict=True` raises): malformed CSV rows, unparseable dates,
repeated patient/encounter ids (first kept), null codes, unknown code systems, events of unknown
encounters or of another patient's encounter, events before birth or above 120 years. Filtered:
events of dropped encounters, repeated codes within an encounter, patients with no visit left.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._assemble import EVENT_SCHEMA
from ._csv_io import find_csv, normalize_icd, normalize_sex, parse_datetimes
from ._drop_report import INVALID, MissingFileError, count_csv_rows
from ._reader_base import CsvReaderBuilder, ReaderConfig

EVENT_TABLES = ("conditions", "procedures", "medications", "observations")
DEFAULT_SYSTEMS = {"conditions": "SNOMED", "procedures": "SNOMED", "medications": "RXNORM", "observations": "LOINC"}
SYSTEMS = {  # SYSTEM column value (lower case) -> MEDS code system
    "snomed-ct": "SNOMED",
    "snomed": "SNOMED",
    "sct": "SNOMED",
    "http://snomed.info/sct": "SNOMED",
    "rxnorm": "RXNORM",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "loinc": "LOINC",
    "http://loinc.org": "LOINC",
    "icd10": "ICD10CM",
    "icd-10": "ICD10CM",
    "icd10cm": "ICD10CM",
    "icd-10-cm": "ICD10CM",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
}


@dataclass
class SyntheaConfig(ReaderConfig):
    """Options of the Synthea reader.

    Args:
        tables (`tuple[str]`, defaults to all four): event tables to use, among `"conditions"`,
            `"procedures"`, `"medications"`, `"observations"` (each used when its file exists).
        dedupe (`bool`, defaults to `True`): one copy of a code per encounter.
        strict (`bool`, defaults to `False`): raise on the first invalid row instead of counting it.
    """

    tables: tuple[str, ...] = EVENT_TABLES
    dedupe: bool = True

    def __post_init__(self):
        super().__post_init__()
        self.tables = tuple(self.tables)
        if not self.tables or set(self.tables) - set(EVENT_TABLES):
            raise ValueError(f"tables must be a non-empty subset of {EVENT_TABLES}, got {self.tables}")


class SyntheaReader(CsvReaderBuilder):
    """Synthea CSV output read into the patient schema (rules in the module docstring)."""

    BUILDER_CONFIG_CLASS = SyntheaConfig
    READER_NAME = "Synthea"

    def _input_files(self, config: SyntheaConfig) -> list[Path]:
        self._files = {"patients": find_csv(self.path, "patients"), "encounters": find_csv(self.path, "encounters")}
        for table in config.tables:
            self._files[table] = find_csv(self.path, table, required=False)
        if not any(self._files[t] for t in config.tables):
            names = ", ".join(f"{t}.csv" for t in config.tables)
            raise MissingFileError(f"{self.path}: none of the event tables {names} found")
        return [f for f in self._files.values() if f is not None]

    def _read(self) -> tuple[pa.Table, pa.Table]:
        columns = ["id", "birthdate", "gender"]
        table, src = self._read_table(self._files["patients"], columns)
        people = self._people_table(
            table, src, table.column("id"), normalize_sex(table.column("gender")), parse_datetimes(table.column("birthdate")), columns
        )
        columns = ["id", "start", "patient"]
        table, src = self._read_table(self._files["encounters"], columns, ["stop"])
        stop = parse_datetimes(table.column("stop")) if "stop" in table.column_names else None
        visits = self._visits_table(
            table, src, table.column("id"), table.column("patient"), parse_datetimes(table.column("start")), "encounter", columns,
            known_times=stop,
        )
        events = []
        for name in self.config.tables:
            if self._files[name] is None:
                self.drop_report.note(f"{name}.csv not found: no {name}")
                continue
            table, src = self._read_table(self._files[name], ["patient", "encounter", "code"], ["system"])
            codes = self._codes(table, src, name)
            events.append(self._link(table, src, table.column("encounter"), table.column("patient"), codes, visits, "encounter"))
        return (pa.concat_tables(events) if events else EVENT_SCHEMA.empty_table()), people

    def _codes(self, table: pa.Table, src: int, name: str) -> pa.Array:
        """`SYSTEM//CODE` per row; null (and counted) for null codes and unknown systems."""
        source, show = self._sources[src], ["patient", "encounter", "system", "code"]
        raw = pc.utf8_trim_whitespace(table.column("code").combine_chunks())
        if "system" in table.column_names:
            given = pc.utf8_lower(pc.utf8_trim_whitespace(pc.fill_null(table.column("system").combine_chunks(), "")))
            system = pc.if_else(pc.equal(given, ""), DEFAULT_SYSTEMS[name], _map(given, SYSTEMS))
        else:
            system = pa.array(np.full(table.num_rows, DEFAULT_SYSTEMS[name]), pa.string())
        known = system.is_valid().to_numpy(zero_copy_only=False)
        count_csv_rows(self.drop_report, INVALID, "event with an unknown code system", ~known, table, source, show)
        has_code = pc.fill_null(pc.greater(pc.utf8_length(raw), 0), False).to_numpy(zero_copy_only=False)
        count_csv_rows(self.drop_report, INVALID, "event with a null code", known & ~has_code, table, source, show)
        icd = normalize_icd(raw, "ICD10CM")  # the dot after the category, as elsewhere
        plain = pc.binary_join_element_wise(system, pc.replace_substring_regex(raw, r"\s+", "_"), "//")
        codes = pc.if_else(pc.equal(system, "ICD10CM"), icd, plain)
        return pc.if_else(pa.array(known & has_code), codes, pa.scalar(None, pa.string()))


def _map(values: pa.Array, mapping: dict[str, str]) -> pa.Array:
    """values -> mapping[value], null where unknown."""
    keys = pa.array(list(mapping))
    return pa.array(list(mapping.values())).take(pc.index_in(values, value_set=keys))


def load_synthea(
    path,
    *,
    tables=EVENT_TABLES,
    dedupe: bool = True,
    strict: bool = False,
    cache_dir: str | None = None,
    **options,
) -> datasets.DatasetDict:
    """Read Synthea's CSV output folder into the patient schema.

    Returns a `DatasetDict` (train / validation / test by a stable hash of patient_id) with
    `.drop_report` (a `DropReport`).
    """
    return SyntheaReader(path, cache_dir=cache_dir, tables=tuple(tables), dedupe=dedupe, strict=strict, **options).load()


__all__ = ["SyntheaConfig", "SyntheaReader", "load_synthea"]
