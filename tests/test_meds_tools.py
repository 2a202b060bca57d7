"""The real MEDS tools around our files: ACES writes label folders we fine-tune on, meds-evaluation
scores our predictions.parquet, and MEDS-DEV's model.yaml (meds_dev/behrt/) runs end to end.

Everything runs on one tiny synthetic MEDS export; the tools run as their command-line programs,
from this virtualenv's bin folder (the `dev` extra installs them).
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from behrt_hf.data_builders.meds_export import export_meds

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "meds_dev" / "behrt"
ACES_TASK = REPO / "meds_dev" / "tasks" / "fall_1y_after_flu_vaccine.yaml"
BIN = Path(sys.executable).parent
TEMPLATE_VARIABLES = {"dataset_dir", "labels_dir", "output_dir", "model_dir", "model_initialization_dir", "split", "demo"}
PREDICTION_COLUMNS = ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                      "predicted_boolean_probability"]


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: install the dev extra (pip install -e '.[dev]')"
    return str(path)


def _environment() -> dict:
    """This virtualenv first on PATH, as MEDS-DEV activates a model's virtualenv; single-threaded torch."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(BIN.parent),
            "OMP_NUM_THREADS": "1"}


def _run(command: str, cwd: Path, what: str) -> float:
    """Run `command` with bash (``set -e``), fail with its output's tail; returns the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run(["bash", "-c", "set -e\n" + command], cwd=cwd, env=_environment(), capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{command}\n{(done.stdout + done.stderr)[-4000:]}"
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def meds_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("meds_tools") / "meds"
    export_meds(root, "tiny", seed=0, subjects_per_shard=64)
    return root


# --- ACES -------------------------------------------------------------------------------------------


def _expected_aces_rows(meds_root: Path) -> dict:
    """The task YAML's meaning computed directly from the data: one row per flu-vaccination time with an
    event more than 365 days later, label = a fall in the 365 days after it (the vaccination excluded)."""
    events = pa.concat_tables([pq.read_table(p) for p in sorted((meds_root / "data").rglob("*.parquet"))])
    events = events.filter(pa.compute.is_valid(events["time"])).to_pylist()
    by_subject = {}
    for e in events:
        by_subject.setdefault(e["subject_id"], []).append((e["time"], e["code"]))
    year = dt.timedelta(days=365)
    rows = {}
    for subject, evs in by_subject.items():
        last = max(t for t, _ in evs)
        falls = [t for t, c in evs if c == "ICD10CM//W19.XXXA"]
        for t in sorted({t for t, c in evs if c == "ATC//J07BB02"}):
            if last > t + year:
                rows[(subject, t)] = any(t < f <= t + year for f in falls)
    return rows


def _run_aces(meds_root: Path, labels_dir: Path) -> None:
    """ACES over every shard, as MEDS-DEV runs a task: <labels_dir>/<split>/<shard>.parquet."""
    _run(
        f"{_tool('aces-cli')} --multirun cohort_name=fall_1y_after_flu_vaccine data=sharded data.standard=meds "
        f"data.root={meds_root}/data \"data.shard=$({_tool('expand_shards')} {meds_root}/data)\" "
        f"config_path={ACES_TASK} 'output_filepath={labels_dir}/${{data.shard}}.parquet' log_dir={labels_dir}/.logs",
        labels_dir.parent, "aces-cli",
    )


@pytest.fixture(scope="module")
def aces_labels(meds_root) -> Path:
    labels_dir = meds_root.parent / "aces_labels"
    _run_aces(meds_root, labels_dir)
    return labels_dir


def test_aces_writes_the_task_our_yaml_describes(meds_root, aces_labels):
    from meds import LabelSchema

    files = sorted(aces_labels.rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"train", "tuning", "held_out"}
    got = {}
    for f in files:
        table = pq.read_table(f)
        # ACES writes every LabelSchema value column, the unused ones all null, which meds 0.4's
        # LabelSchema.validate rejects ("should have no nulls"): readers must drop all-null value columns.
        assert table.column_names == ["subject_id", "prediction_time", "boolean_value", "integer_value",
                                      "float_value", "categorical_value"]
        filled = [c for c in table.column_names if table[c].null_count < len(table) or c == "boolean_value"]
        assert filled == ["subject_id", "prediction_time", "boolean_value"] or not len(table)
        LabelSchema.validate(table.select(filled))
        for r in table.to_pylist():
            assert (r["subject_id"], r["prediction_time"]) not in got
            got[(r["subject_id"], r["prediction_time"])] = r["boolean_value"]
    expected = _expected_aces_rows(meds_root)
    assert got == expected
    assert 0 < sum(got.values()) < len(got)  # both classes: a task worth fine-tuning on
