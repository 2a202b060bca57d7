"""MEDS label files: a prediction task as a table of (subject, prediction time, label).

    table, report = read_labels("labels/heart_failure_1y")   # a folder, one parquet file or a table
    value_column(table)                                       # "boolean_value": a binary task

A label file follows `meds.LabelSchema`: `subject_id` int64, `prediction_time` timestamp[us] and
one of `boolean_value` bool (binary task), `integer_value` int64 or `categorical_value` string
(multiclass: the classes are the values seen in training), `float_value` float32 / float64
(regression; meds 0.3.x wrote float64, 0.4.x float32). Optional columns may be absent; **no other
column is allowed** (except a split column the caller names). ACES writes a folder
`<labels_dir>/<split>/<shard>.parquet`: every `**/*.parquet` under a folder is read, in natural
path order; the folder names are not splits (the data's `subject_splits.parquet` decides).

Whole-file problems raise `LabelFileError` naming the file and the problem: not parquet, an extra
column, a missing required column, a wrong dtype, no value column filled or several, an empty
folder. Row problems are skipped and counted in a `DropReport` (reasons with file/row examples;
`strict=True` raises `ReaderError` instead): a null subject_id, prediction_time or value, and a
repeated (subject_id, prediction_time) row (the first kept). The checks that need the patients
(unknown subject, a prediction time before the patient's first event) are
`behrt_hf.tasks.join_labels`.

MEDS semantics: the model may use the patient's data with `time <= prediction_time` (inclusive).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .data_builders._drop_report import INVALID, DropReport, ReaderInputError

SUBJECT_ID, PREDICTION_TIME = "subject_id", "prediction_time"
VALUE_COLUMNS = ("boolean_value", "integer_value", "float_value", "categorical_value")
LABEL_COLUMNS = (SUBJECT_ID, PREDICTION_TIME, *VALUE_COLUMNS)
# value column -> the kind of problem its labels pose
PROBLEMS = {"boolean_value": "binary", "integer_value": "multiclass", "categorical_value": "multiclass",
            "float_value": "regression"}
TIMESTAMP = pa.timestamp("us")


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)))


_TYPES = {  # column -> (accepts the Arrow type, what meds.LabelSchema asks for, canonical type)
    SUBJECT_ID: (pa.types.is_integer, "int64", pa.int64()),
    PREDICTION_TIME: (lambda t: (pa.types.is_timestamp(t) and t.tz is None) or pa.types.is_date(t),
                      "timestamp[us] (without a time zone)", TIMESTAMP),
    "boolean_value": (pa.types.is_boolean, "bool", pa.bool_()),
    "integer_value": (pa.types.is_integer, "int64", pa.int64()),
    "float_value": (pa.types.is_floating, "float32 or float64", pa.float64()),
    "categorical_value": (_is_string, "string", pa.string()),
}


class LabelFileError(ReaderInputError):
    """A label file (or table) is unusable as a whole. The message names the file and the problem."""


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def label_files(source: str | os.PathLike) -> list[Path]:
    """The parquet files of `source`: every `**/*.parquet` of a folder (natural order), or the file."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise LabelFileError(f"{path}: no such label file or folder")
    files = sorted(path.rglob("*.parquet"), key=lambda p: _natural_key(p.relative_to(path).as_posix()))
    if not files:
        raise LabelFileError(f"{path}: the label folder holds no parquet file (expected {path}/**/*.parquet)")
    return files


def _checked(table: pa.Table, where: str, split_column: str | None) -> pa.Table:
    """`table` with its columns checked against meds.LabelSchema and cast to their canonical types."""
    allowed = set(LABEL_COLUMNS) | ({split_column} if split_column else set())
    extra = [c for c in table.column_names if c not in allowed]
    if extra:
        raise LabelFileError(f"{where}: extra column(s) {extra}; meds.LabelSchema allows only {list(LABEL_COLUMNS)}"
                             + (f" (and the split column {split_column!r})" if split_column else ""))
    for name in (SUBJECT_ID, PREDICTION_TIME) + ((split_column,) if split_column else ()):
        if name not in table.column_names:
            raise LabelFileError(f"{where}: missing column {name!r} (meds.LabelSchema requires "
                                 f"{SUBJECT_ID}, {PREDICTION_TIME} and one value column)")
    if len(set(table.column_names)) != len(table.column_names):
        raise LabelFileError(f"{where}: repeated column names {table.column_names}")
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if name == split_column:
            if not (_is_string(column.type) or pa.types.is_null(column.type)):
                raise LabelFileError(f"{where}: split column {name!r} has type {column.type}; it must hold strings")
            columns[name] = column.cast(pa.string())
            continue
        accepts, want, canonical = _TYPES[name]
        if not (accepts(column.type) or pa.types.is_null(column.type)):
            raise LabelFileError(f"{where}: column {name!r} has type {column.type}; meds.LabelSchema wants {want}")
        columns[name] = column.cast(canonical)  # date -> midnight; ns -> us truncates below a microsecond
    return pa.table(columns)


def _read_file(path: Path, split_column: str | None) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise LabelFileError(f"{path}: not a readable parquet file ({error})") from error
    table = pq.read_table(path, schema=schema)
    return _checked(table, str(path), split_column)


def read_labels(source, strict: bool = False, split_column: str | None = None,
                max_examples: int = 3) -> tuple[pa.Table, DropReport]:
    """Read and validate MEDS labels; returns (the table, what was skipped and why).

    Args:
        source: a folder (every `**/*.parquet`), one parquet file, a `pyarrow.Table` or a pandas
            DataFrame in `meds.LabelSchema`.
        strict: raise `ReaderError` at the first unusable row instead of skipping and counting it.
        split_column: a column naming each row's split (train / tuning / held_out); without it the
            split is the patient's (the data's `subject_splits.parquet`).

    Returns:
        A table `subject_id` int64, `prediction_time` timestamp[us], the one filled value column
        (`boolean_value` bool, `integer_value` int64, `float_value` float64 or
        `categorical_value` string) and `split_column` when given, in file order with unusable
        rows removed; and the `DropReport`.
    """
    if isinstance(source, (str, os.PathLike)):
        files = label_files(source)
        names = [str(f) for f in files]
        tables = [_read_file(f, split_column) for f in files]
        report = DropReport(source=f"labels ({source})", strict=strict, max_examples=max_examples)
    else:
        if not isinstance(source, pa.Table):
            try:
                source = pa.Table.from_pandas(source, preserve_index=False)
            except (TypeError, AttributeError, pa.ArrowException) as error:
                raise LabelFileError(f"labels must be a folder, a parquet file, a pyarrow Table or a pandas "
                                     f"DataFrame, got {type(source).__name__} ({error})") from error
        names, tables = ["<table>"], [_checked(source, "<label table>", split_column)]
        report = DropReport(source="labels (in-memory table)", strict=strict, max_examples=max_examples)
    value = _filled_value_column(tables, names)
    keep = [SUBJECT_ID, PREDICTION_TIME, value] + ([split_column] if split_column else [])
    parts = []
    for i, table in enumerate(tables):
        if value not in table.column_names:  # a shard without the column has no labels to give
            table = table.append_column(value, pa.nulls(table.num_rows, _TYPES[value][2]))
        parts.append(table.select(keep).append_column("_file", pa.array(np.full(table.num_rows, i, np.int32)))
                     .append_column("_row", pa.array(np.arange(1, table.num_rows + 1))))
    table = pa.concat_tables(parts) if parts else pa.table({})
    table = _drop_unusable(table, value, split_column, names, report)
    report.kept["label rows"] += table.num_rows
    return table.drop_columns(["_file", "_row"]), report


def _filled_value_column(tables: Sequence[pa.Table], names: Sequence[str]) -> str:
    """The one value column holding values across all files; a clear error when none or several do."""
    filled = {c: sum(t.num_rows - t.column(c).null_count for t in tables if c in t.column_names) for c in VALUE_COLUMNS}
    which = [c for c, n in filled.items() if n]
    where = names[0] if len(names) == 1 else f"{len(names)} label files ({names[0]}, ...)"
    if not which:
        present = sorted({c for t in tables for c in t.column_names if c in VALUE_COLUMNS})
        raise LabelFileError(f"{where}: no label values: none of {list(VALUE_COLUMNS)} holds a value "
                             f"(columns present: {present or 'none'})")
    if len(which) > 1:
        raise LabelFileError(f"{where}: several value columns hold values ({', '.join(f'{c}: {filled[c]}' for c in which)}); "
                             "a task has one kind of label")
    return which[0]


def _drop_unusable(table: pa.Table, value: str, split_column: str | None, names: Sequence[str],
                   report: DropReport) -> pa.Table:
    """Count and remove rows with a null subject, time, value (or NaN float) or split, and repeats."""
    if not table.num_rows:
        return table
    files, rows = table.column("_file").to_numpy(), table.column("_row").to_numpy()

    def describe(i: int) -> str:
        return (f"{names[files[i]]} row {rows[i]} (subject_id {table.column(SUBJECT_ID)[i].as_py()}, "
                f"prediction_time {table.column(PREDICTION_TIME)[i].as_py()})")

    bad = np.zeros(table.num_rows, bool)
    checks = [(SUBJECT_ID, "label row with a null subject_id"),
              (PREDICTION_TIME, "label row with a null prediction_time"),
              (value, f"label row with a null {value}")]
    if split_column:
        checks.append((split_column, f"label row with a null {split_column}"))
    for column, reason in checks:
        null = table.column(column).is_null().to_numpy(zero_copy_only=False)
        if column == value == "float_value":
            null |= ~np.isfinite(pc.fill_null(table.column(column), 0.0).to_numpy())
        report.add_where(INVALID, reason, null & ~bad, describe)
        bad |= null
    keys = pa.table({"s": pc.fill_null(table.column(SUBJECT_ID), 0),
                     "t": pc.fill_null(table.column(PREDICTION_TIME).cast(pa.int64()), 0), "i": np.arange(table.num_rows)})
    keys = keys.filter(pa.array(~bad))
    first = keys.group_by(["s", "t"], use_threads=False).aggregate([("i", "min")]).column("i_min").to_numpy()
    repeated = ~bad
    repeated[first] = False
    report.add_where(INVALID, "label row repeating an earlier (subject_id, prediction_time) (first kept)", repeated,
                     describe)
    return table.filter(pa.array(~(bad | repeated)))


def value_column(table: pa.Table) -> str:
    """The value column of a table from `read_labels` (the one of VALUE_COLUMNS it holds)."""
    present = [c for c in VALUE_COLUMNS if c in table.column_names]
    if len(present) != 1:
        raise LabelFileError(f"expected one value column of {list(VALUE_COLUMNS)}, the table has {present}")
    return present[0]


def problem_of(table: pa.Table) -> str:
    """`"binary"`, `"multiclass"` or `"regression"`: what the filled value column asks for."""
    return PROBLEMS[value_column(table)]


__all__ = ["LABEL_COLUMNS", "LabelFileError", "PREDICTION_TIME", "PROBLEMS", "SUBJECT_ID", "VALUE_COLUMNS",
           "label_files", "problem_of", "read_labels", "value_column"]
