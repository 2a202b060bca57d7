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
        for split in MEDS_SPLIT_NAMES.values():
            table = pq.read_table(os.path.join(root, "labels", task, split, "0.parquet"))
            LabelSchema.validate(table)
            assert table.column_names == ["subject_id", "prediction_time", "boolean_value"]  # no extra columns
            assert len(table) == summary["label_rows"][task][split] > 0
    # the labels folder holds label files only (a reader takes every **/*.parquet under it)
    assert sorted(os.path.relpath(os.path.join(d, f), os.path.join(root, "labels"))
                  for d, _, fs in os.walk(os.path.join(root, "labels")) for f in fs) == sorted(
        os.path.join(t, s, "0.parquet") for t in TASKS for s in MEDS_SPLIT_NAMES.values())
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


def _expected_task_rows(ds, task):
    """(subject_id, prediction_time, label, oracle) of every patient the task applies to, from the cohort's columns."""
    return sorted(
        (int(r["patient_id"]), r["visits"][r[f"index_visit_{task}"]]["time"], bool(r[f"label_{task}"]), r[f"oracle_{task}"])
        for r in ds.to_list() if r[f"index_visit_{task}"] >= 0
    )


def test_label_folders_match_task_columns(exported, tiny):
    root, _ = exported
    for task in TASKS:
        for split, ds in tiny.items():
            expected = _expected_task_rows(ds, task)
            assert expected, f"tiny has no {task} rows in {split}: the test would prove nothing"
            labels = pq.read_table(os.path.join(root, "labels", task, MEDS_SPLIT_NAMES[split], "0.parquet")).to_pylist()
            got = sorted((r["subject_id"], r["prediction_time"], r["boolean_value"]) for r in labels)
            assert got == [e[:3] for e in expected]
            assert len({(r[0], r[1]) for r in got}) == len(got)  # one row per (subject, prediction time)


def test_oracle_files_are_scoreable_predictions_of_the_same_rows(exported, tiny):
    from meds_evaluation.schema import PredictionSchema

    root, _ = exported
    for task in TASKS:
        for split, ds in tiny.items():
            meds_split = MEDS_SPLIT_NAMES[split]
            table = pq.read_table(os.path.join(root, "oracle", task, f"{meds_split}.parquet"))
            PredictionSchema.align(table)  # what meds-evaluation 0.0.6 does with a file (float64 -> float32)
            assert table.column_names == ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                                          "predicted_boolean_probability"]
            labels = pq.read_table(os.path.join(root, "labels", task, meds_split, "0.parquet"))
            assert table.select(labels.column_names).equals(labels)  # the same rows, in the same order
            rows = sorted(table.to_pylist(), key=lambda r: r["subject_id"])
            expected = _expected_task_rows(ds, task)
            assert table.schema.field("predicted_boolean_probability").type == pa.float64()  # meds-evaluation 0.0.3
            assert [r["predicted_boolean_probability"] for r in rows] == [e[3] for e in expected]  # exact
            assert [r["predicted_boolean_value"] for r in rows] == [e[3] >= 0.5 for e in expected]


def test_oracle_scores_with_meds_evaluation(exported):
    """The oracle file goes through meds-evaluation unchanged; its AUROC is sklearn's on the same rows."""
    import polars as pl
    from meds_evaluation.evaluate import evaluate_binary_classification
    from sklearn.metrics import roc_auc_score

    root, _ = exported
    path = os.path.join(root, "oracle", "fall_1y", "train.parquet")
    table = pq.read_table(path)
    assert 0 < sum(table.column("boolean_value").to_pylist()) < len(table)  # both classes, or AUROC is undefined
    result = evaluate_binary_classification(pl.read_parquet(path))
    ours = roc_auc_score(table.column("boolean_value").to_numpy(), table.column("predicted_boolean_probability").to_numpy())
    assert abs(result["samples_equally_weighted"]["roc_auc_score"] - ours) < 1e-9


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
    printed = capsys.readouterr().out
    assert "12 subjects" in printed and f"labels/{TASKS[0]}:" in printed
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
