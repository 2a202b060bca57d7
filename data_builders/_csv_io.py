"""Reading CSV exports (MIMIC, Synthea) without crashing deep inside pandas/pyarrow.

`find_csv` finds a table whatever its case and compression; `read_csv` reads the named columns as
strings, with the line number of each row, counting malformed rows in the drop report; the
`parse_*` / `normalize_*` functions turn string columns into dates, integers, codes and sexes,
giving null (for the caller to count) where a value cannot be parsed.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from ._assemble import TIMESTAMP
from ._drop_report import INVALID, DropReport, MissingFileError, ReaderInputError


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


__all__ = ["find_csv", "normalize_icd", "normalize_sex", "parse_datetimes", "parse_ints", "read_csv"]
