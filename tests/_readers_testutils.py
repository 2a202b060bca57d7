"""Helpers shared by the reader tests: writing small MEDS / CSV fixtures and reading results back."""

from __future__ import annotations

import gzip
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from behrt_hf.schema import age_in_years, validate_patient

MEDS_DATA_SCHEMA = pa.schema(
    [("subject_id", pa.int64()), ("time", pa.timestamp("us")), ("code", pa.string()), ("numeric_value", pa.float32())]
)


def write_meds(root: Path, shards: dict[str, list[tuple]], splits: dict[int, str] | None = None) -> Path:
    """A MEDS folder: `shards` maps `data/<name>.parquet` to rows (subject_id, time, code[, numeric_value])."""
    for name, rows in shards.items():
        rows = [tuple(r) + (None,) * (4 - len(r)) for r in rows]
        columns = {field.name: [r[i] for r in rows] for i, field in enumerate(MEDS_DATA_SCHEMA)}
        path = root / "data" / f"{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns, schema=MEDS_DATA_SCHEMA), path)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": "test", "meds_version": "0.4.1"}))
    if splits is not None:
        pq.write_table(
            pa.table({"subject_id": list(splits), "split": list(splits.values())},
                     schema=pa.schema([("subject_id", pa.int64()), ("split", pa.string())])),
            root / "metadata" / "subject_splits.parquet",
        )
    return root


def write_csv(path: Path, text: str) -> Path:
    """Write `text` (dedented lines) to a .csv, or gzip it when the name ends in .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join(line.strip() for line in text.strip().splitlines()) + "\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(body)
    else:
        path.write_text(body)
    return path


def age(time: datetime, birth: datetime) -> float:
    """The age the readers must produce: float32(age_in_years), as a Python float."""
    return float(np.float32(age_in_years(time, birth)))


def visit(time: datetime, birth: datetime, codes: list[str]) -> dict:
    return {"time": time, "age": age(time, birth), "codes": codes}


def patients_by_id(splits) -> dict[str, dict]:
    """All rows of a DatasetDict keyed by patient_id, each checked with validate_patient."""
    out = {}
    for dataset in splits.values():
        for row in dataset:
            validate_patient(row)
            assert row["patient_id"] not in out
            out[row["patient_id"]] = row
    return out
