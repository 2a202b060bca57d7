"""MIMIC-III and MIMIC-IV readers on small hand-written tables with awkward rows."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from _readers_testutils import patients_by_id, visit, write_csv

from behrt_hf.data_builders import MissingFileError, ReaderError, ReaderInputError
from behrt_hf.data_builders.mimic import load_mimic
from behrt_hf.schema import SECONDS_PER_YEAR

T = datetime


@pytest.fixture
def mimic_iii(tmp_path):
    """MIMIC-III layout: upper-case names, ADMISSIONS gzipped, no PROCEDURES_ICD (optional)."""
    root = tmp_path / "mimic-iii"
    write_csv(root / "PATIENTS.csv", '''
        "ROW_ID","SUBJECT_ID","GENDER","DOB","DOD"
        1,10,"F","2100-01-01 00:00:00",
        2,11,"M","1800-07-05 00:00:00",
        3,12,"M","not a date",
        4,13,"F","2090-05-05 00:00:00",
        5,10,"M","2000-01-01 00:00:00",
    ''')
    write_csv(root / "ADMISSIONS.csv.gz", '''
        ROW_ID,SUBJECT_ID,HADM_ID,ADMITTIME,DISCHTIME
        1,10,100,2150-03-01 10:00:00,2150-03-05 10:00:00
        2,10,101,2140-01-01 08:00:00,2140-01-02 08:00:00
        3,11,110,2101-06-01 00:00:00,
        4,11,111,2105-06-01 00:00:00,
        5,12,120,2150-01-01 00:00:00,
        6,13,130,garbage,
    ''')
    write_csv(root / "DIAGNOSES_ICD.csv", '''
        ROW_ID,SUBJECT_ID,HADM_ID,SEQ_NUM,ICD9_CODE
        1,10,100,2,4019
        2,10,100,1,25000
        3,10,100,3,4019
        4,10,101,1,V5861
        5,11,110,1,E8798
        6,11,111,1,
        7,12,120,1,4280
        8,13,130,1,4280
        9,10,999,1,4280
        10,11,100,1,4280
        11,10,101
        12,11,111,2,0389
    ''')
    write_csv(root / "PRESCRIPTIONS.csv", '''
        ROW_ID,SUBJECT_ID,HADM_ID,DRUG,NDC
        1,10,100,Heparin Sodium,00338001702
        2,10,100,Heparin,0
        3,10,100,Aspirin,
        4,10,100,Heparin Sodium,00338001702
    ''')
    return root


def test_mimic_iii(mimic_iii, tmp_path):
    splits = load_mimic(mimic_iii, version="iii", cache_dir=tmp_path)
    b10 = T(2100, 1, 1)
    b11 = T(2101, 6, 1) - timedelta(microseconds=round(91.4 * SECONDS_PER_YEAR * 1e6))  # 91.4 at the first admission
    by_id = patients_by_id(splits)
    # every code of an admission is known at its discharge (code_times); no dischtime: at the admission
    assert by_id["10"] == {"patient_id": "10", "sex": "F", "visits": [
        dict(visit(T(2140, 1, 1, 8), b10, ["ICD9CM//V5861"]), code_times=[T(2140, 1, 2, 8)]),
        # seq_num order, one copy per admission (dedupe), then prescriptions
        dict(visit(T(2150, 3, 1, 10), b10, ["ICD9CM//25000", "ICD9CM//4019", "NDC//00338001702"]),
             code_times=[T(2150, 3, 5, 10)] * 3)]}
    # DOB shifted (age ~300 at the first admission): re-anchored at 91.4, later admissions keep their spacing
    assert by_id["11"] == {"patient_id": "11", "sex": "M", "visits": [
        dict(visit(T(2101, 6, 1), b11, ["ICD9CM//E8798"]), code_times=None),
        dict(visit(T(2105, 6, 1), b11, ["ICD9CM//0389"]), code_times=None)]}
    # a prediction during admission 100 sees nothing of it; after its discharge, all of it
    from behrt_hf.encoding import cut_at_times

    table = pa.Table.from_pylist([by_id["10"]] * 2, schema=splits["train"].features.arrow_schema
                                 if "10" in splits["train"]["patient_id"] else splits["test"].features.arrow_schema)
    cut = cut_at_times(table, pa.array([T(2150, 3, 4), T(2150, 3, 5, 10)], pa.timestamp("us"))).to_pylist()
    assert [[v["codes"] for v in p["visits"]] for p in cut] == [
        [["ICD9CM//V5861"]], [["ICD9CM//V5861"], ["ICD9CM//25000", "ICD9CM//4019", "NDC//00338001702"]]]
    assert by_id["11"]["visits"][0]["age"] == pytest.approx(91.4)
    assert set(by_id) == {"10", "11"}
    report = splits.drop_report
    assert report.invalid == Counter({
        "malformed CSV row (wrong number of fields)": 1,  # DIAGNOSES_ICD line 12
        "patient row repeating an id (first row kept)": 1,
        "patient with an unparseable or missing birth date": 1,
        "admission with an unparseable or missing date (its codes dropped)": 1,
        "event with a null code": 1,
        "event of an unknown admission": 1,
        "event whose patient differs from its admission's": 1,
        "event of a patient missing from (or dropped from) the patients table": 1,  # patient 12's diagnosis
    })
    assert report.filtered == Counter({
        "prescription without a usable NDC (null, 0 or not digits)": 2,
        "event of a dropped admission": 1,
        "event repeating a code within a visit": 2,
        "patient with no visit left": 1,  # patient 13: its only admission has no date
    })
    assert report.adjusted == Counter({"patient with a shifted DOB (older than 89): age at first admission set to 91.4": 1})
    assert report.examples["patient with an unparseable or missing birth date"] == [
        "PATIENTS.csv line 4 (subject_id='12', gender='M', dob='not a date')"]
    assert report.examples["admission with an unparseable or missing date (its codes dropped)"] == [
        "ADMISSIONS.csv.gz line 7 (subject_id='13', hadm_id='130', admittime='garbage')"]
    assert any("procedures_icd" in note for note in report.notes)


def test_mimic_iii_without_dedupe_and_drug_names(mimic_iii, tmp_path):
    by_id = patients_by_id(load_mimic(mimic_iii, version="iii", dedupe=False, drug_code="drug", cache_dir=tmp_path))
    assert by_id["10"]["visits"][1]["codes"] == [
        "ICD9CM//25000", "ICD9CM//4019", "ICD9CM//4019",
        "DRUG//HEPARIN_SODIUM", "DRUG//HEPARIN", "DRUG//ASPIRIN", "DRUG//HEPARIN_SODIUM"]


def test_mimic_iii_strict_and_input_errors(mimic_iii, tmp_path):
    with pytest.raises(ReaderError, match=r"PATIENTS\.csv line 6"):  # the first invalid row found
        load_mimic(mimic_iii, version="iii", strict=True, cache_dir=tmp_path)
    (mimic_iii / "DIAGNOSES_ICD.csv").rename(mimic_iii / "diagnoses.txt")
    with pytest.raises(MissingFileError, match=r"diagnoses_icd\.csv"):
        load_mimic(mimic_iii, version="iii", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="'iii' or 'iv'"):
        load_mimic(mimic_iii, version="v", cache_dir=tmp_path)
    write_csv(mimic_iii / "DIAGNOSES_ICD.csv", "SUBJECT_ID,HADM_ID,ICD10_CODE\n1,2,3")
    with pytest.raises(ReaderInputError, match=r"DIAGNOSES_ICD\.csv: missing required column\(s\) \['icd9_code'\]"):
        load_mimic(mimic_iii, version="iii", cache_dir=tmp_path)


@pytest.fixture
def mimic_iv(tmp_path):
    """MIMIC-IV layout: lower-case names under hosp/, some gzipped, icd_version 9 and 10."""
    root = tmp_path / "mimic-iv"
    write_csv(root / "hosp" / "patients.csv.gz", '''
        subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
        1,F,50,2150,"2011 - 2013",
        2,M,91,2160,"2014 - 2016",
        3,M,x,2150,"2011 - 2013",
    ''')
    write_csv(root / "hosp" / "admissions.csv.gz", '''
        subject_id,hadm_id,admittime,dischtime
        1,10,2150-05-01 10:00:00,2150-05-03 10:00:00
        1,11,2148-01-01 00:00:00,
        2,20,2160-01-01 00:00:00,
        2,20,2160-01-01 00:00:00,
        1,12,2090-01-01 00:00:00,
        3,30,2150-01-01 00:00:00,
    ''')
    write_csv(root / "hosp" / "diagnoses_icd.csv", '''
        subject_id,hadm_id,seq_num,icd_code,icd_version
        1,10,2,I10,10
        1,10,1,E119,10
        1,10,3,4019,9
        1,11,1,25000,9
        1,10,4,X,11
        1,12,1,I10,10
        2,20,1,I10,10
        1,10,2,I10,10
        3,30,1,I10,10
    ''')
    write_csv(root / "hosp" / "procedures_icd.csv", '''
        subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version
        1,10,1,2150-05-02,0DTJ4ZZ,10
        2,20,1,2160-01-02,3893,9
    ''')
    write_csv(root / "hosp" / "prescriptions.csv.gz", '''
        subject_id,hadm_id,pharmacy_id,starttime,drug,ndc
        1,10,1,2150-05-01 12:00:00,Heparin,00338001702
        1,10,2,2150-05-02 12:00:00,Heparin,00338001702
        2,20,3,2160-01-01 12:00:00,Insulin,0
    ''')
    return root


def test_mimic_iv(mimic_iv, tmp_path):
    splits = load_mimic(mimic_iv, version="iv", cache_dir=tmp_path)
    by_id = patients_by_id(splits)
    b1, b2 = T(2100, 1, 1), T(2069, 1, 1)  # 1 January of anchor_year - anchor_age
    assert by_id == {
        "1": {"patient_id": "1", "sex": "F", "visits": [
            dict(visit(T(2148, 1, 1), b1, ["ICD9CM//25000"]), code_times=None),  # no dischtime
            dict(visit(T(2150, 5, 1, 10), b1, ["ICD10CM//E11.9", "ICD10CM//I10", "ICD9CM//4019", "ICD10PCS//0DTJ4ZZ",
                                                "NDC//00338001702"]), code_times=[T(2150, 5, 3, 10)] * 5)]},
        "2": {"patient_id": "2", "sex": "M", "visits": [
            dict(visit(T(2160, 1, 1), b2, ["ICD10CM//I10", "ICD9PCS//3893"]), code_times=None)]},
    }
    report = splits.drop_report
    assert report.invalid == Counter({
        "patient with an unparseable or missing birth date": 1,
        "admission row repeating an id (first row kept)": 1,
        "event with an unknown code system (icd_version not 9 or 10)": 1,
        "event before birth": 1,
        "event of a patient missing from (or dropped from) the patients table": 1,
    })
    assert report.examples["event with an unknown code system (icd_version not 9 or 10)"] == [
        "hosp/diagnoses_icd.csv line 6 (subject_id='1', hadm_id='10', icd_code='X', icd_version='11')"]
    assert report.examples["event before birth"] == [
        "hosp/diagnoses_icd.csv line 7 (patient 1, code ICD10CM//I10, time 2090-01-01 00:00:00)"]
    assert report.filtered["event repeating a code within a visit"] == 2


def test_mimic_iv_table_selection(mimic_iv, tmp_path):
    by_id = patients_by_id(load_mimic(mimic_iv, tables=["diagnoses"], cache_dir=tmp_path))
    assert by_id["2"]["visits"][0]["codes"] == ["ICD10CM//I10"]
    (mimic_iv / "hosp" / "procedures_icd.csv").unlink()  # optional: fine without it
    by_id = patients_by_id(load_mimic(mimic_iv, drug_code="none", cache_dir=tmp_path))
    assert by_id["1"]["visits"][1]["codes"] == ["ICD10CM//E11.9", "ICD10CM//I10", "ICD9CM//4019"]


@pytest.mark.parametrize("version", ["iii", "iv"])
def test_pretraining_runs_on_mimic(version, mimic_iii, mimic_iv, tmp_path):
    from tests.helpers import pretrain_a_few_steps

    pretrain_a_few_steps(load_mimic(mimic_iii if version == "iii" else mimic_iv, version=version,
                                    cache_dir=tmp_path / "cache"), tmp_path)


def test_pretraining_with_the_code_hierarchy_on_mimic(mimic_iv, tmp_path):
    from behrt_hf import BehrtTokenizerFast
    from tests.helpers import pretrain_a_few_steps

    pretrain_a_few_steps(load_mimic(mimic_iv, version="iv", cache_dir=tmp_path / "cache"), tmp_path,
                         extra_args=("--code_hierarchy", "category"))
    tokenizer = BehrtTokenizerFast.from_pretrained(tmp_path / "pretrain")
    assert tokenizer.code_hierarchy == "category"
    icd = [code for code in tokenizer.get_vocab() if code.startswith(("ICD9CM//", "ICD10CM//"))]
    assert icd and all(len(code.split("//")[1]) <= 4 for code in icd)  # categories: 3 characters (E-codes 4)
