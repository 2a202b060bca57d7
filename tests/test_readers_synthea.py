"""Synthea reader on a small hand-written CSV export with awkward rows."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from _readers_testutils import patients_by_id, visit, write_csv

from behrt_hf.data_builders import MissingFileError, ReaderError, ReaderInputError
from behrt_hf.data_builders.synthea import SyntheaReader, load_synthea

T = datetime


@pytest.fixture
def synthea(tmp_path):
    root = tmp_path / "csv"
    write_csv(root / "patients.csv", '''
        Id,BIRTHDATE,DEATHDATE,SSN,FIRST,LAST,GENDER
        p-1,1980-05-17,,999-1,Ann,"Doe, Jr",F
        p-2,1990-01-01,,999-2,Bob,Roe,M
        p-3,bad,,999-3,Cy,Poe,M
    ''')
    write_csv(root / "encounters.csv", '''
        Id,START,STOP,PATIENT,ORGANIZATION,ENCOUNTERCLASS,CODE,DESCRIPTION
        e2,2020-01-01T09:00:00Z,2020-01-01T10:00:00Z,p-1,o,wellness,185349003,Check up
        e1,2010-01-01T09:00:00Z,2010-01-01T09:30:00Z,p-1,o,wellness,185349003,Check up
        e3,2020-01-01T09:00:00Z,,p-1,o,ambulatory,185345009,Encounter
        e4,1985-01-01T00:00:00Z,,p-2,o,ambulatory,185345009,Encounter
        e5,2000-01-01T00:00:00Z,,p-2,o,ambulatory,185345009,Encounter
        e6,2000-01-01T00:00:00Z,,p-3,o,ambulatory,185345009,Encounter
        e7,yesterday,,p-2,o,ambulatory,185345009,Encounter
        e8,1989-01-01T00:00:00Z,,p-2,o,ambulatory,185345009,Encounter
    ''')
    write_csv(root / "conditions.csv", '''
        START,STOP,PATIENT,ENCOUNTER,SYSTEM,CODE,DESCRIPTION
        2020-01-01,,p-1,e2,SNOMED-CT,44054006,Diabetes
        2020-01-01,,p-1,e2,ICD10,E119,Diabetes
        2020-01-01,,p-1,e2,WEIRD,123,Unknown system
        2010-01-01,,p-1,e1,http://snomed.info/sct,38341003,Hypertension
        1985-01-01,,p-2,e4,SNOMED-CT,,No code
        2000-01-01,,p-2,e7,SNOMED-CT,1234,Of an undated encounter
        2000-01-01,,p-1,e5,SNOMED-CT,5678,Of another patient's encounter
        1989-01-01,,p-2,e8,SNOMED-CT,999,Before birth
    ''')
    write_csv(root / "observations.csv.gz", '''
        DATE,PATIENT,ENCOUNTER,CATEGORY,CODE,DESCRIPTION,VALUE,UNITS,TYPE
        2020-01-01T09:00:00Z,p-1,e2,vital-signs,8302-2,Body Height,170,cm,numeric
        2020-01-01T09:00:00Z,p-1,e2,vital-signs,8302-2,Body Height,170,cm,numeric
        2020-01-01T09:00:00Z,p-1,e3,vital-signs,29463-7,Body Weight,70,kg,numeric
        2000-01-01T00:00:00Z,p-2,e5,vital-signs,29463-7,Body Weight,70,kg,numeric
        2000-01-01T00:00:00Z,p-2,,vital-signs,29463-7,Body Weight,70,kg,numeric
    ''')
    write_csv(root / "medications.csv", '''
        START,STOP,PATIENT,PAYER,ENCOUNTER,CODE,DESCRIPTION
        2020-01-01T09:00:00Z,,p-1,x,e2,860975,Metformin
    ''')
    return root


def test_synthea(synthea, tmp_path):
    splits = load_synthea(synthea, cache_dir=tmp_path)
    by_id = patients_by_id(splits)
    b1, b2 = T(1980, 5, 17), T(1990, 1, 1)
    assert by_id == {
        "p-1": {"patient_id": "p-1", "sex": "F", "visits": [
            # codes are known at the encounter's STOP (code_times); no STOP: at its START
            dict(visit(T(2010, 1, 1, 9), b1, ["SNOMED//38341003"]), code_times=[T(2010, 1, 1, 9, 30)]),
            # conditions, procedures, medications, observations; one copy of a code per encounter
            dict(visit(T(2020, 1, 1, 9), b1, ["SNOMED//44054006", "ICD10CM//E11.9", "RXNORM//860975", "LOINC//8302-2"]),
                 code_times=[T(2020, 1, 1, 10)] * 4),
            dict(visit(T(2020, 1, 1, 9), b1, ["LOINC//29463-7"]), code_times=None)]},  # a second encounter, same time
        "p-2": {"patient_id": "p-2", "sex": "M", "visits": [
            dict(visit(T(2000, 1, 1), b2, ["LOINC//29463-7"]), code_times=None)]},
    }
    report = splits.drop_report
    assert report.invalid == Counter({
        "patient with an unparseable or missing birth date": 1,
        "encounter with an unparseable or missing date (its codes dropped)": 1,
        "event with an unknown code system": 1,
        "event with a null code": 1,
        "event of an unknown encounter": 1,
        "event whose patient differs from its encounter's": 1,
        "event before birth": 1,
    })
    assert report.filtered == Counter({"event of a dropped encounter": 1, "event repeating a code within a visit": 1})
    assert report.examples["event with an unknown code system"] == [
        "conditions.csv line 4 (patient='p-1', encounter='e2', system='WEIRD', code='123')"]
    assert any("procedures.csv not found" in note for note in report.notes)


def test_a_reader_prepares_twice(synthea, tmp_path):
    """`_plan` builds the patients table afresh each time (it once overwrote the method that builds it),
    and a forced second preparation counts its drops once, not on top of the first."""
    reader = SyntheaReader(synthea, cache_dir=tmp_path)
    first = reader.load()
    counted = first.drop_report.to_dict()
    assert set(reader._plan()) == set(reader._plan()) == set(first)
    reader.download_and_prepare(download_mode="force_redownload")
    again = reader.load()
    assert patients_by_id(again) == patients_by_id(first)
    assert again.drop_report.to_dict() == counted
    assert again.drop_report.invalid["event before birth"] == 1


def test_synthea_options_and_errors(synthea, tmp_path):
    by_id = patients_by_id(load_synthea(synthea, tables=["medications"], dedupe=False, cache_dir=tmp_path))
    assert by_id == {"p-1": {"patient_id": "p-1", "sex": "F", "visits": [
        dict(visit(T(2020, 1, 1, 9), T(1980, 5, 17), ["RXNORM//860975"]), code_times=[T(2020, 1, 1, 10)])]}}
    with pytest.raises(ReaderError, match=r"patients\.csv line 4 \(id='p-3'"):
        load_synthea(synthea, strict=True, cache_dir=tmp_path)
    with pytest.raises(MissingFileError, match="none of the event tables procedures.csv"):
        load_synthea(synthea, tables=["procedures"], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="tables must be"):
        load_synthea(synthea, tables=["allergies"], cache_dir=tmp_path)
    write_csv(synthea / "encounters.csv", "Id,STOP,PATIENT\ne1,2020-01-01,p-1")
    with pytest.raises(ReaderInputError, match=r"encounters\.csv: missing required column\(s\) \['start'\]"):
        load_synthea(synthea, cache_dir=tmp_path)
    (synthea / "patients.csv").unlink()
    with pytest.raises(MissingFileError, match=r"patients\.csv"):
        load_synthea(synthea, cache_dir=tmp_path)


def test_pretraining_runs_on_synthea(synthea, tmp_path):
    from tests.helpers import pretrain_a_few_steps

    pretrain_a_few_steps(load_synthea(synthea, cache_dir=tmp_path / "cache"), tmp_path)
