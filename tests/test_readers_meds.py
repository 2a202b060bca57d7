"""MEDS reader: exact round trip from a hand-built MEDS folder, awkward cases, options, errors, cache."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _readers_testutils import patients_by_id, visit, write_meds

from behrt_hf.data_builders import MissingFileError, ReaderError, ReaderInputError
from behrt_hf.data_builders.meds import load_meds

T = datetime
B7, B12, B3, B100 = T(1950, 3, 4, 12), T(1990, 1, 1), T(2001, 2, 3, 4, 5, 6, 789000), T(1970, 6, 1)
T1, T2, T3 = T(2000, 1, 1, 8, 30), T(2000, 1, 1, 8, 31), T(2005, 6, 7)


@pytest.fixture(scope="module")
def meds_dir(tmp_path_factory):
    """Four patients over two shards, written the way the conventions (behrt_hf.schema) say."""
    root = tmp_path_factory.mktemp("meds")
    return write_meds(
        root,
        {
            "train/0": [
                (7, None, "GENDER//F"),
                (7, None, "EYE_COLOR//BLUE"),  # static, not a visit
                (7, B7, "MEDS_BIRTH"),
                (7, T1, "ICD10CM//E11.9"),  # file order within a timestamp, a duplicate included
                (7, T1, "ATC//A10BA02"),
                (7, T1, "ICD10CM//E11.9"),
                (7, T1, "LAB//HBA1C", 6.5),
                (7, T2, "ICD10CM//I10"),
                (7, T3, "ICD10CM//Z99.89"),
                (12, None, "GENDER//M"),
                (12, B12, "MEDS_BIRTH"),
                (12, T(2010, 5, 5), "SNOMED//2"),
                (12, T(2010, 5, 5), "SNOMED//1"),
            ],
            "train/1": [
                (3, B3, "MEDS_BIRTH"),  # no gender -> U
                (3, B3, "ICD10CM//P07.3"),  # at birth: age 0
                (3, T(2003, 1, 1), "LAB//HBA1C", 7.0),
                (3, T(2003, 1, 1), "LAB//OTHER", 1.0),
                (100, None, "GENDER//M"),
                (100, B100, "MEDS_BIRTH"),
                (100, T(2000, 1, 1), "LAB//HBA1C", 8.0),
            ],
        },
        splits={7: "train", 12: "tuning", 3: "held_out", 100: "train"},
    )


EXPECTED = {
    "train": [
        {"patient_id": "7", "sex": "F", "visits": [
            visit(T1, B7, ["ICD10CM//E11.9", "ATC//A10BA02", "ICD10CM//E11.9", "LAB//HBA1C"]),
            visit(T2, B7, ["ICD10CM//I10"]),
            visit(T3, B7, ["ICD10CM//Z99.89"])]},
        {"patient_id": "100", "sex": "M", "visits": [visit(T(2000, 1, 1), B100, ["LAB//HBA1C"])]},
    ],
    "validation": [{"patient_id": "12", "sex": "M", "visits": [visit(T(2010, 5, 5), B12, ["SNOMED//2", "SNOMED//1"])]}],
    "test": [{"patient_id": "3", "sex": "U", "visits": [
        visit(B3, B3, ["ICD10CM//P07.3"]), visit(T(2003, 1, 1), B3, ["LAB//HBA1C", "LAB//OTHER"])]}],
}


def test_round_trip_is_exact(meds_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="behrt_hf.data_builders"):
        splits = load_meds(meds_dir, cache_dir=tmp_path)
    assert list(splits) == ["train", "validation", "test"]
    assert {name: splits[name].to_list() for name in splits} == EXPECTED
    assert splits["test"][0]["visits"][0]["age"] == 0.0
    report = splits.drop_report
    assert report.invalid == Counter()
    assert report.filtered == Counter({"static event without a time (not a visit)": 1})
    assert report.kept == Counter({"patients": 4, "visits": 7, "events": 12})
    assert "static event without a time" in caplog.text  # the summary is printed, never silent


def test_options_prefixes_dedupe_window(meds_dir, tmp_path):
    splits = load_meds(meds_dir, code_prefixes=["ICD10CM//"], cache_dir=tmp_path)
    assert len(splits["validation"]) == 0 and splits["validation"].features == splits["train"].features  # all dropped
    by_id = patients_by_id(splits)
    assert [v["codes"] for v in by_id["7"]["visits"]] == [["ICD10CM//E11.9", "ICD10CM//E11.9"], ["ICD10CM//I10"], ["ICD10CM//Z99.89"]]
    assert set(by_id) == {"7", "3"}  # 12 and 100 have no ICD-10 code left
    by_id = patients_by_id(load_meds(meds_dir, dedupe=True, visit_window=timedelta(hours=1), cache_dir=tmp_path))
    assert by_id["7"]["visits"][0] == dict(visit(T1, B7, ["ICD10CM//E11.9", "ATC//A10BA02", "LAB//HBA1C", "ICD10CM//I10"]),
                                           code_times=[T1, T1, T1, T2])  # each code keeps its own time
    assert len(by_id["7"]["visits"]) == 2


def test_numeric_values_binned_on_train_quantiles(meds_dir, tmp_path):
    splits = load_meds(meds_dir, numeric="bin", n_bins=2, cache_dir=tmp_path)
    by_id = patients_by_id(splits)
    # train HBA1C values 6.5 and 8.0: median edge 7.25
    assert by_id["7"]["visits"][0]["codes"][-1] == "LAB//HBA1C//Q1"
    assert by_id["100"]["visits"][0]["codes"] == ["LAB//HBA1C//Q2"]
    assert by_id["3"]["visits"][1]["codes"] == ["LAB//HBA1C//Q1", "LAB//OTHER"]  # OTHER: no train values
    assert splits.drop_report.adjusted == Counter({"numeric value of a code without fitted bins (plain code kept)": 1})


@pytest.fixture
def awkward_dir(tmp_path):
    b1, b4 = T(1980, 1, 1), T(1970, 1, 1)
    return write_meds(
        tmp_path / "awkward",
        {
            "0": [
                (1, T(2001, 1, 1), "A"),  # rows out of time order
                (1, b1, "MEDS_BIRTH"),
                (1, T(1999, 1, 1), "B"),
                (1, T(1999, 1, 1), "C"),
                (1, None, "GENDER//M"),
                (1, T(1970, 1, 1), "BEFORE_BIRTH"),
                (1, T(2101, 1, 2), "OLDER_THAN_120"),
                (1, T(2000, 1, 1), None),  # null code
                (2, T(2000, 1, 1), "X"),  # no MEDS_BIRTH
                (4, None, "GENDER//F"),
                (4, None, "GENDER//M"),  # conflicting sex: first kept
                (4, b4, "MEDS_BIRTH"),
                (4, T(1971, 1, 1), "MEDS_BIRTH"),  # second, different birth: first kept
                (4, T(2000, 1, 1), "Y"),
                (5, b4, "MEDS_BIRTH"),
                (5, None, "HEIGHT", 180.0),  # only a static code: no visit left
            ],
            "1": [
                (1, T(2002, 1, 1), "SECOND_SHARD"),  # subject 1 again: MEDS forbids it
                (6, b4, "MEDS_BIRTH"),
                (6, T(2000, 1, 1), "Z"),
                (9, b4, "MEDS_BIRTH"),  # not in subject_splits
                (9, T(2000, 1, 1), "W"),
            ],
        },
        splits={1: "train", 2: "train", 4: "tuning", 5: "train", 6: "held_out"},
    )


def test_awkward_rows_are_skipped_and_counted(awkward_dir, tmp_path):
    splits = load_meds(awkward_dir, cache_dir=tmp_path)
    by_id = patients_by_id(splits)
    assert by_id == {
        "1": {"patient_id": "1", "sex": "M", "visits": [
            visit(T(1999, 1, 1), T(1980, 1, 1), ["B", "C"]), visit(T(2001, 1, 1), T(1980, 1, 1), ["A"])]},
        "4": {"patient_id": "4", "sex": "F", "visits": [visit(T(2000, 1, 1), T(1970, 1, 1), ["Y"])]},
        "6": {"patient_id": "6", "sex": "U", "visits": [visit(T(2000, 1, 1), T(1970, 1, 1), ["Z"])]},
    }
    report = splits.drop_report
    assert report.invalid == Counter({
        "subject found in more than one shard (its rows in later shards dropped)": 1,
        "subject missing from metadata/subject_splits.parquet (its rows dropped)": 1,
        "event with a null code": 1,
        "event before birth": 1,
        "event at an age above 120 years": 1,
        "patient without a birth date (all its events dropped)": 1,
        "patient with several different MEDS_BIRTH times (first kept)": 1,
        "patient with conflicting GENDER codes (first kept)": 1,
    })
    assert report.filtered == Counter({"static event without a time (not a visit)": 1, "patient with no visit left": 1})
    assert report.examples["event before birth"] == ["data/0.parquet row 6 (patient 1, code BEFORE_BIRTH, time 1970-01-01 00:00:00)"]
    assert report.examples["subject found in more than one shard (its rows in later shards dropped)"] == [
        "subject 1 in data/1.parquet and data/0.parquet"]


def test_strict_raises_naming_file_row_and_reason(awkward_dir, tmp_path):
    with pytest.raises(ReaderError, match=r"more than one shard.*subject 1 in data/1\.parquet"):
        load_meds(awkward_dir, strict=True, cache_dir=tmp_path)
    root = write_meds(tmp_path / "one", {"0": [(1, T(1990, 1, 1), "MEDS_BIRTH"), (1, T(1980, 1, 1), "EARLY")]})
    with pytest.raises(ReaderError, match=r"event before birth: data/0\.parquet row 2 \(patient 1, code EARLY"):
        load_meds(root, strict=True, cache_dir=tmp_path)


def test_without_subject_splits_the_hash_split_is_used(tmp_path):
    rows = [r for s in range(40) for r in ((s, T(1990, 1, 1), "MEDS_BIRTH"), (s, T(2000, 1, 1), "A"))]
    splits = load_meds(write_meds(tmp_path / "m", {"0": rows}), cache_dir=tmp_path)
    from behrt_hf.data_builders._reader_base import hash_split

    for name, dataset in splits.items():
        assert all(hash_split(pid) == name for pid in dataset["patient_id"])
    assert sum(len(d) for d in splits.values()) == 40
    assert any("hash of patient_id" in note for note in splits.drop_report.notes)


def test_cache_is_reused_with_its_report_and_invalidated_by_new_data(tmp_path):
    root = write_meds(tmp_path / "m", {"0": [(1, T(1990, 1, 1), "MEDS_BIRTH"), (1, None, "S"), (1, T(2000, 1, 1), "A")]},
                      splits={1: "train"})
    first = load_meds(root, cache_dir=tmp_path / "cache")
    again = load_meds(root, cache_dir=tmp_path / "cache")
    assert again["train"].cache_files == first["train"].cache_files
    assert again.drop_report == first.drop_report and again.drop_report.filtered
    write_meds(root, {"0": [(1, T(1990, 1, 1), "MEDS_BIRTH"), (1, T(2000, 1, 1), "B")]}, splits={1: "train"})
    changed = load_meds(root, cache_dir=tmp_path / "cache")
    assert changed["train"][0]["visits"][0]["codes"] == ["B"]


def test_input_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(MissingFileError, match="data"):
        load_meds(tmp_path, cache_dir=tmp_path)
    bad = tmp_path / "bad" / "data"
    bad.mkdir(parents=True)
    pq.write_table(pa.table({"subject_id": [1], "time": [T(2000, 1, 1)]}), bad / "0.parquet")
    with pytest.raises(ReaderInputError, match=r"0\.parquet: missing column 'code'"):
        load_meds(bad.parent, cache_dir=tmp_path)
    pq.write_table(pa.table({"subject_id": [1], "time": ["2000-01-01"], "code": ["A"]}), bad / "0.parquet")
    with pytest.raises(ReaderInputError, match=r"0\.parquet: column 'time' has type string"):
        load_meds(bad.parent, cache_dir=tmp_path)
    root = write_meds(tmp_path / "m", {"0": [(1, T(1990, 1, 1), "MEDS_BIRTH")]})
    pq.write_table(pa.table({"subject_id": [1], "fold": ["train"]}), root / "metadata" / "subject_splits.parquet")
    with pytest.raises(ReaderInputError, match=r"subject_splits\.parquet: missing column 'split'"):
        load_meds(root, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="numeric must be"):
        load_meds(root, numeric="keep", cache_dir=tmp_path)


def test_other_arrow_types_are_accepted(tmp_path):
    """ns timestamps, large strings, dictionary codes, float64 values: cast, not rejected."""
    root = tmp_path / "m"
    (root / "data").mkdir(parents=True)
    table = pa.table({
        "subject_id": pa.array([5, 5, 5], pa.int32()),
        "time": pa.array([T(1990, 1, 1), T(2000, 1, 1), T(2000, 1, 1)], pa.timestamp("ns")),
        "code": pa.array(["MEDS_BIRTH", "A", "B"], pa.large_string()).dictionary_encode(),
        "numeric_value": pa.array([None, 1.5, None], pa.float64()),
        "text_value": pa.array([None, None, "note"], pa.string()),
    })
    pq.write_table(table, root / "data" / "shard.parquet")
    by_id = patients_by_id(load_meds(root, cache_dir=tmp_path))
    assert by_id["5"]["visits"] == [visit(T(2000, 1, 1), T(1990, 1, 1), ["A", "B"])]


def test_meds_testing_helpers_sample_dataset(tmp_path):
    helpers = pytest.importorskip("meds_testing_helpers.dataset")
    from meds_testing_helpers.static_sample_data import SIMPLE_STATIC_SHARDED_BY_SPLIT

    helpers.MEDSDataset.from_yaml(SIMPLE_STATIC_SHARDED_BY_SPLIT).write(tmp_path / "sample")
    splits = load_meds(tmp_path / "sample", cache_dir=tmp_path / "cache")
    assert {name: len(d) for name, d in splits.items()} == {"train": 4, "validation": 1, "test": 1}
    by_id = patients_by_id(splits)
    first = by_id["239684"]
    assert first["sex"] == "U"  # the sample has no GENDER codes
    assert first["visits"][0]["codes"] == ["ADMISSION//CARDIAC", "HR", "TEMP"]
    assert first["visits"][-1]["codes"] == ["DISCHARGE"]
    assert splits.drop_report.filtered == Counter({"static event without a time (not a visit)": 12})  # EYE_COLOR, HEIGHT


def test_encounter_codes_make_one_visit_per_stay(tmp_path):
    birth, t1, t2 = T(1980, 1, 1), T(2000, 2, 1, 10), T(2001, 1, 1)
    root = write_meds(tmp_path / "m", {"0": [
        (1, birth, "MEDS_BIRTH"),
        (1, T(2000, 1, 1), "LAB//A"),  # outpatient: a visit by time
        (1, t1, "LAB//B"),  # same timestamp as the admission, listed before it: inside
        (1, t1, "HOSPITAL_ADMISSION//EW"),
        (1, t1 + timedelta(hours=2), "LAB//C"),
        (1, t1 + timedelta(days=1), "ICD10CM//I10"),
        (1, t1 + timedelta(days=1), "HOSPITAL_DISCHARGE//HOME"),  # the discharge timestamp is inside
        (1, t1 + timedelta(days=2), "LAB//D"),  # after discharge: visits by time again
        (1, t1 + timedelta(days=2, hours=1), "LAB//E"),
        (1, t2, "HOSPITAL_ADMISSION//X"),  # never discharged: open to the end
        (1, t2 + timedelta(hours=1), "LAB//F"),
    ]})
    stays = {"visit_start_codes": ["HOSPITAL_ADMISSION//"], "visit_end_codes": ["HOSPITAL_DISCHARGE//"]}
    (row,) = patients_by_id(load_meds(root, cache_dir=tmp_path, **stays)).values()
    stay = [t1, t1, t1 + timedelta(hours=2), t1 + timedelta(days=1), t1 + timedelta(days=1)]
    assert row["visits"] == [  # a visit spanning several times keeps each code's own time (null: all at its time)
        dict(visit(T(2000, 1, 1), birth, ["LAB//A"]), code_times=None),
        dict(visit(t1, birth, ["LAB//B", "HOSPITAL_ADMISSION//EW", "LAB//C", "ICD10CM//I10", "HOSPITAL_DISCHARGE//HOME"]),
             code_times=stay),
        dict(visit(t1 + timedelta(days=2), birth, ["LAB//D"]), code_times=None),
        dict(visit(t1 + timedelta(days=2, hours=1), birth, ["LAB//E"]), code_times=None),
        dict(visit(t2, birth, ["HOSPITAL_ADMISSION//X", "LAB//F"]), code_times=[t2, t2 + timedelta(hours=1)]),
    ]
    # markers work even when code_prefixes leaves them out; the window applies outside encounters only
    (row,) = patients_by_id(load_meds(root, cache_dir=tmp_path, code_prefixes=["LAB//", "ICD10CM//"], visit_window=2, **stays)).values()
    assert [v["codes"] for v in row["visits"]] == [["LAB//A"], ["LAB//B", "LAB//C", "ICD10CM//I10"], ["LAB//D", "LAB//E"], ["LAB//F"]]
    assert row["visits"][3]["time"] == t2 + timedelta(hours=1)  # the visit starts at its first kept event
    with pytest.raises(ValueError, match="visit_end_codes needs visit_start_codes"):
        load_meds(root, visit_end_codes=["HOSPITAL_DISCHARGE//"], cache_dir=tmp_path)


def test_pretraining_runs_on_meds(meds_dir, tmp_path):
    from tests.helpers import pretrain_a_few_steps

    pretrain_a_few_steps(load_meds(meds_dir, cache_dir=tmp_path / "cache"), tmp_path)
