"""The machinery shared by the readers: drop report, CSV access, dates, codes, hash split, visit assembly."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from _readers_testutils import age, write_csv

from behrt_hf.data_builders import DropReport, MissingFileError, ReaderError, ReaderInputError
from behrt_hf.data_builders._assemble import EVENT_SCHEMA, PEOPLE_SCHEMA, assemble_patients
from behrt_hf.data_builders._csv_io import find_csv, normalize_icd, parse_datetimes, parse_ints, read_csv
from behrt_hf.data_builders._drop_report import FILTERED, INVALID
from behrt_hf.data_builders._reader_base import hash_split

T = datetime


def test_drop_report_counts_examples_and_round_trips(tmp_path):
    report = DropReport(source="test reader", max_examples=2)
    report.add(INVALID, "event before birth", 3, ["a.csv line 2", "a.csv line 5", "a.csv line 9"])
    report.add(INVALID, "event before birth", 1, ["b.csv line 3"])
    report.add(FILTERED, "static event", 2)
    report.add(INVALID, "nothing", 0, ["never recorded"])
    assert report.invalid == Counter({"event before birth": 4})
    assert report.examples["event before birth"] == ["a.csv line 2", "a.csv line 5"]
    assert report.counts == Counter({"event before birth": 4, "static event": 2})
    assert "nothing" not in report.examples
    summary = report.summary()
    assert "event before birth" in summary and "a.csv line 2" in summary and "static event" in summary
    report.save(tmp_path / "r.json")
    assert DropReport.load(tmp_path / "r.json") == report


def test_strict_report_raises_with_the_example():
    report = DropReport(source="MIMIC reader (/x)", strict=True)
    report.add(FILTERED, "by design", 5)  # filtered never raises
    with pytest.raises(ReaderError, match=r"MIMIC reader \(/x\): event before birth: ADMISSIONS.csv line 7"):
        report.add(INVALID, "event before birth", 1, ["ADMISSIONS.csv line 7 (subject 3)"])
    assert isinstance(ReaderError("x"), ValueError)


def test_parse_datetimes_accepts_iso_variants_and_nulls_the_rest():
    values = pa.array(
        ["2180-07-23 14:00:00", "2019-02-17T05:07:38Z", "1960-05-12", "2101-10-20 19:08", "2019-02-17T05:07:38.5Z",
         "garbage", None, "", "2019-02-30", "2019-02-17 25:00:00", " 1800-07-05 00:00:00 "]
    )
    assert parse_datetimes(values).to_pylist() == [
        T(2180, 7, 23, 14), T(2019, 2, 17, 5, 7, 38), T(1960, 5, 12), T(2101, 10, 20, 19, 8),
        T(2019, 2, 17, 5, 7, 38, 500000), None, None, None, None, None, T(1800, 7, 5),
    ]


def test_parse_ints_and_normalize_icd():
    assert parse_ints(pa.array(["12", " 3 ", "4.0", "x", "", None, "1.5"])).to_pylist() == [12, 3, 4, None, None, None, None]
    icd10 = normalize_icd(pa.array(["E119", " i10 ", "E11.9", "S72001A", "", None]), "ICD10CM").to_pylist()
    assert icd10 == ["ICD10CM//E11.9", "ICD10CM//I10", "ICD10CM//E11.9", "ICD10CM//S72.001A", None, None]
    icd9 = normalize_icd(pa.array(["4019", "V5861", "E879.8", "038.9"]), "ICD9CM").to_pylist()
    assert icd9 == ["ICD9CM//4019", "ICD9CM//V5861", "ICD9CM//E8798", "ICD9CM//0389"]  # leading zero kept


def test_hash_split_is_stable_and_80_10_10():
    # pinned values: the rule (sha256(patient_id)[:8] mod 100) is documented; changing it reshuffles cohorts
    assert [hash_split(str(i)) for i in (4, 5, 6, 8)] == ["train", "validation", "train", "test"]
    counts = Counter(hash_split(str(i)) for i in range(20000))
    assert abs(counts["train"] / 20000 - 0.8) < 0.02
    assert abs(counts["validation"] / 20000 - 0.1) < 0.01 and abs(counts["test"] / 20000 - 0.1) < 0.01


def test_find_csv_matches_case_and_gz(tmp_path):
    write_csv(tmp_path / "hosp" / "patients.csv.gz", "subject_id\n1")
    assert find_csv(tmp_path, "PATIENTS", subdirs=("", "hosp")).name == "patients.csv.gz"
    assert find_csv(tmp_path, "admissions", required=False) is None
    with pytest.raises(MissingFileError, match=r"admissions\.csv"):
        find_csv(tmp_path, "admissions", subdirs=("", "hosp"))


def test_read_csv_names_missing_columns_and_counts_malformed_rows(tmp_path):
    path = write_csv(tmp_path / "T.csv", 'A,"B",C\n1,x,\n2\n3,"y, z",q\n4,w,v,extra\n5,,')
    report = DropReport(source="t")
    table = read_csv(path, ["a", "b"], ["c", "d"], report=report)
    assert table.column_names == ["a", "b", "c", "row"]
    assert table.column("b").to_pylist() == ["x", "y, z", None]  # quoted comma; empty -> null
    assert table.column("row").to_pylist() == [2, 4, 6]  # line numbers, header = line 1
    assert report.invalid["malformed CSV row (wrong number of fields)"] == 2
    assert report.examples["malformed CSV row (wrong number of fields)"][0].startswith("T.csv line 3")
    with pytest.raises(ReaderInputError, match=r"T\.csv: missing required column\(s\) \['e'\]"):
        read_csv(path, ["a", "e"], report=report)
    with pytest.raises(ReaderError, match="malformed CSV row"):
        read_csv(path, ["a"], report=DropReport(source="t", strict=True))
    with pytest.raises(ReaderInputError, match="empty file"):
        read_csv(write_csv(tmp_path / "E.csv", ""), ["a"], report=report)


def _events(rows):
    """rows: (patient_id, time, visit, code)."""
    columns = list(zip(*rows))
    n = len(rows)
    return pa.table(
        {"patient_id": columns[0], "time": columns[1], "visit": columns[2], "code": columns[3],
         "src": np.zeros(n, np.int32), "row": np.arange(1, n + 1)},
        schema=EVENT_SCHEMA,
    )


def _people(rows):
    return pa.table(dict(zip(("patient_id", "sex", "birth"), zip(*rows))), schema=PEOPLE_SCHEMA)


def test_assemble_patients_groups_sorts_and_drops():
    birth = T(1990, 1, 1)
    events = _events([
        ("a", T(2001, 1, 1), -1, "C"),
        ("a", T(2000, 1, 1), -1, "B"),  # out of order: sorted by time, stably
        ("a", T(2000, 1, 1), -1, "A"),
        ("a", T(2000, 1, 1), -1, "B"),  # a repeat within the visit: kept unless dedupe
        ("a", T(1980, 1, 1), -1, "BEFORE"),
        ("b", T(2000, 1, 1), 7, "X"),  # two admissions at one time, told apart by `visit`
        ("b", T(2000, 1, 1), 3, "Y"),
        ("b", T(2000, 1, 2), 3, "Z"),  # a later event of admission 3: same visit
        ("a", T(2111, 1, 1), -1, "OLD"),
        ("ghost", T(2000, 1, 1), -1, "G"),
        ("nobirth", T(2000, 1, 1), -1, "N"),
    ])
    people = _people([("b", "M", birth), ("a", "F", birth), ("nobirth", "U", None), ("empty", "F", birth)])
    report = DropReport(source="t")
    rows = list(assemble_patients(events, people, report, sources=["f.parquet"]))
    assert rows == [
        {"patient_id": "b", "sex": "M", "visits": [
            {"time": T(2000, 1, 1), "age": age(T(2000, 1, 1), birth), "codes": ["Y", "Z"]},
            {"time": T(2000, 1, 1), "age": age(T(2000, 1, 1), birth), "codes": ["X"]}]},
        {"patient_id": "a", "sex": "F", "visits": [
            {"time": T(2000, 1, 1), "age": age(T(2000, 1, 1), birth), "codes": ["B", "A", "B"]},
            {"time": T(2001, 1, 1), "age": age(T(2001, 1, 1), birth), "codes": ["C"]}]},
    ]
    assert report.invalid == Counter({
        "event before birth": 1,
        "event at an age above 120 years": 1,
        "event of a patient missing from (or dropped from) the patients table": 1,
        "patient without a birth date (all its events dropped)": 1,
    })
    assert report.filtered == Counter({"patient with no visit left": 1})
    assert report.examples["event before birth"] == ["f.parquet row 5 (patient a, code BEFORE, time 1980-01-01 00:00:00)"]
    assert report.kept == Counter({"patients": 2, "visits": 4, "events": 7})


def test_assemble_patients_window_and_dedupe():
    birth = T(1990, 1, 1)
    events = _events([
        ("a", T(2000, 1, 1, 8), -1, "A"),
        ("a", T(2000, 1, 1, 9), -1, "B"),
        ("a", T(2000, 1, 1, 10, 30), -1, "A"),  # 1.5 h after the previous event
        ("a", T(2000, 1, 1, 8), -1, "A"),
    ])
    people = _people([("a", "F", birth)])
    hour = 3600 * 10**6
    report = DropReport(source="t")
    (row,) = assemble_patients(events, people, report, sources=["f"], window_us=hour, dedupe=True)
    assert [(v["time"], v["codes"]) for v in row["visits"]] == [(T(2000, 1, 1, 8), ["A", "B"]), (T(2000, 1, 1, 10, 30), ["A"])]
    assert report.filtered["event repeating a code within a visit"] == 1
    (row,) = assemble_patients(events, people, DropReport(), sources=["f"], window_us=2 * hour)
    assert [v["codes"] for v in row["visits"]] == [["A", "A", "B", "A"]]


def test_reader_cache_key_follows_the_machinery_it_uses():
    """A reader's cache key hashes its module and every behrt_hf module it uses, found through its imports."""
    from behrt_hf.data_builders import meds, mimic, synthea
    from behrt_hf.data_builders._cache_key import local_modules

    shared = {f"behrt_hf.data_builders.{m}" for m in ("_assemble", "_cache_key", "_csv_io", "_drop_report", "_reader_base")}
    for reader in (meds, mimic, synthea):
        names = {m.__name__ for m in local_modules(reader)}
        assert names >= shared | {reader.__name__, "behrt_hf.schema"}, names
        assert not names & {"behrt_hf.data_builders.synthetic.simulate", "behrt_hf.modeling_behrt"}, names


def test_errors_are_exported_lazily():
    """The errors and the report come from `behrt_hf.data_builders`; importing the package loads no reader."""
    import subprocess
    import sys

    script = (
        "import sys, behrt_hf.data_builders as db\n"
        "assert 'behrt_hf.data_builders._reader_base' not in sys.modules\n"
        "assert issubclass(db.MissingFileError, db.ReaderInputError) and issubclass(db.ReaderError, ValueError)\n"
        "assert db.DropReport.__module__ == 'behrt_hf.data_builders._drop_report'\n"
        "assert 'behrt_hf.data_builders._reader_base' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
