"""MEDS export of the synthetic cohort: schemas, conventions and an exact round trip."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from behrt_hf.data_builders import meds_export as me
from behrt_hf.training import synthetic_export
from behrt_hf.data_builders import synthetic_ehr as se
from behrt_hf.data_builders.synthetic import TASKS
from behrt_hf.schema import MEDS_BIRTH_CODE, MEDS_GENDER_PREFIX, MEDS_SPLIT_NAMES, age_in_years


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("meds") / "tiny")
    summary = me.export_meds(out, "tiny", seed=0, subjects_per_shard=50)
    return out, summary


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return se.load_synthetic("tiny", seed=0, cache_dir=str(tmp_path_factory.mktemp("cache")))


def _data_files(root):
    return sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data")) for f in fs)


def test_layout_validates_with_meds_schemas(exported):
    from meds import CodeMetadataSchema, DataSchema, DatasetMetadataSchema, LabelSchema, SubjectSplitSchema

    root, summary = exported
    files = _data_files(root)
    assert files == sorted(summary["files"])
    assert {os.path.basename(os.path.dirname(f)) for f in files} == {"train", "tuning", "held_out"}
    for path in files:
        table = pq.read_table(path)
        DataSchema.validate(table)
        assert table.schema.field("time").type == pa.timestamp("us")
        assert table.column("numeric_value").null_count == len(table)
    CodeMetadataSchema.validate(pq.read_table(os.path.join(root, "metadata", "codes.parquet")))
    SubjectSplitSchema.validate(pq.read_table(os.path.join(root, "metadata", "subject_splits.parquet")))
    with open(os.path.join(root, "metadata", "dataset.json")) as f:
        DatasetMetadataSchema.validate(json.load(f))
    for task in TASKS:
        LabelSchema.validate(pq.read_table(os.path.join(root, "labels", f"{task}.parquet")))
    assert summary["subjects"] == {"train": 160, "validation": 20, "test": 20}
    assert len([f for f in files if "/train/" in f]) == 4  # 160 subjects, 50 per shard


def test_every_code_is_described(exported):
    root, _ = exported
    described = set(pq.read_table(os.path.join(root, "metadata", "codes.parquet")).column("code").to_pylist())
    used = set()
    for path in _data_files(root):
        used |= set(pq.read_table(path).column("code").to_pylist())
    assert used <= described
    assert {MEDS_BIRTH_CODE, MEDS_GENDER_PREFIX + "F", MEDS_GENDER_PREFIX + "M"} <= used


def _read_back(root):
    """A minimal MEDS -> patient-schema reader following behrt_hf.schema's conventions."""
    splits = pq.read_table(os.path.join(root, "metadata", "subject_splits.parquet")).to_pylist()
    split_of = {r["subject_id"]: r["split"] for r in splits}
    patients, seen_files = {}, {}
    for path in _data_files(root):
        table = pq.read_table(path).to_pylist()
        subject_ids = [r["subject_id"] for r in table]
        assert subject_ids == sorted(subject_ids)  # contiguous, sorted
        for sid in set(subject_ids):
            assert sid not in seen_files, "a subject must live in one file"
            seen_files[sid] = path
            assert split_of[sid] == os.path.basename(os.path.dirname(path))
        for r in table:
            p = patients.setdefault(r["subject_id"], {"sex": "U", "birth": None, "events": []})
            if r["time"] is None:
                assert r["code"].startswith(MEDS_GENDER_PREFIX) and not p["events"] and p["birth"] is None
                p["sex"] = r["code"][len(MEDS_GENDER_PREFIX):]
            elif r["code"] == MEDS_BIRTH_CODE:
                p["birth"] = r["time"]
            else:
                p["events"].append((r["time"], r["code"]))
    rows = {}
    for sid, p in patients.items():
        visits = []
        for time, code in p["events"]:
            assert time > p["birth"]
            if visits and visits[-1]["time"] == time:
                visits[-1]["codes"].append(code)
            else:
                assert not visits or time > visits[-1]["time"]
                age = float(np.float32(age_in_years(time, p["birth"])))
                visits.append({"time": time, "age": age, "codes": [code]})
        rows[str(sid)] = {"patient_id": str(sid), "sex": p["sex"], "visits": visits, "split": split_of[sid]}
    return rows


def test_round_trip_is_exact(exported, tiny):
    root, _ = exported
    back = _read_back(root)
    for split, ds in tiny.items():
        for row in ds.to_list():
            got = back.pop(row["patient_id"])
            assert got["split"] == MEDS_SPLIT_NAMES[split]
            assert {k: got[k] for k in ("patient_id", "sex", "visits")} == {
                k: row[k] for k in ("patient_id", "sex", "visits")
            }
    assert not back


def test_label_files_match_task_columns(exported, tiny):
    root, _ = exported
    rows = {r["patient_id"]: r for ds in tiny.values() for r in ds.to_list()}
    for task in TASKS:
        table = pq.read_table(os.path.join(root, "labels", f"{task}.parquet")).to_pylist()
        included = {pid: r for pid, r in rows.items() if r[f"index_visit_{task}"] >= 0}
        assert len(table) == len(included)
        for lab in table:
            row = included[str(lab["subject_id"])]
            assert lab["prediction_time"] == row["visits"][row[f"index_visit_{task}"]]["time"]
            assert lab["boolean_value"] == bool(row[f"label_{task}"])


def test_refuses_to_overwrite_and_bad_input(exported, tmp_path):
    root, _ = exported
    with pytest.raises(FileExistsError):
        me.export_meds(root, "tiny")
    with pytest.raises(ValueError):
        me.export_meds(str(tmp_path / "a"), "gigantic")
    with pytest.raises(ValueError):
        me.export_meds(str(tmp_path / "b"), "tiny", num_patients=-3)
    with pytest.raises(ValueError):
        me.export_meds(str(tmp_path / "c"), "tiny", subjects_per_shard=0)


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert synthetic_export.main(["--output_dir", out, "--synthetic", "tiny", "--num_patients", "12", "--seed", "3"]) == 0
    assert "12 subjects" in capsys.readouterr().out
    ids = pq.read_table(os.path.join(out, "metadata", "subject_splits.parquet")).column("subject_id").to_pylist()
    assert sorted(ids) == list(range(12))
    with pytest.raises(SystemExit, match="is not empty"):
        synthetic_export.main(["--output_dir", out, "--synthetic", "tiny"])  # not empty, no --overwrite
    assert synthetic_export.main(["--output_dir", out, "--synthetic", "tiny", "--num_patients", "5", "--overwrite"]) == 0
    assert "5 subjects" in capsys.readouterr().out
    for bad, message in ((["--split_fractions", "0.8", "0.2"], "three numbers"), (["--num_patients", "0"], "positive")):
        with pytest.raises(SystemExit, match=message):
            synthetic_export.main(["--output_dir", str(tmp_path / "other"), *bad])
    with pytest.raises(SystemExit):  # argparse: not a preset
        synthetic_export.main(["--output_dir", str(tmp_path / "other"), "--synthetic", "huge"])
