"""Code hierarchy: MEDS-style codes -> 3-character categories per code system."""

import pytest

from behrt_hf.code_hierarchy import clear_cache, coarsen_code, coarsen_codes, fallback_counts


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_cache()
    yield
    clear_cache()


@pytest.mark.parametrize(
    "code, category",
    [
        # ICD-10-CM through simple_icd_10_cm's ancestors, dotted or not
        ("ICD10CM//E11.9", "ICD10CM//E11"),
        ("ICD10CM//E119", "ICD10CM//E11"),
        ("ICD10CM//e11.65", "ICD10CM//E11"),
        ("ICD10CM//I10", "ICD10CM//I10"),  # already a category
        ("ICD10CM//S72.001A", "ICD10CM//S72"),  # 7th-character extension
        ("ICD10CM//M1A.0", "ICD10CM//M1A"),  # categories with a letter in third place
        ("ICD10CM//C7A.0", "ICD10CM//C7A"),
        ("ICD10CM//E08-E13", "ICD10CM//E08-E13"),  # a block: above the category level, unchanged
        ("ICD10//E11.9", "ICD10//E11"),  # alias, prefix kept
        # ICD-9-CM: 3 characters, E-codes 4, V-codes 3
        ("ICD9CM//4019", "ICD9CM//401"),
        ("ICD9CM//401.9", "ICD9CM//401"),
        ("ICD9CM//0389", "ICD9CM//038"),
        ("ICD9CM//E8798", "ICD9CM//E879"),
        ("ICD9CM//V5861", "ICD9CM//V58"),
        # procedures
        ("ICD10PCS//0DTJ4ZZ", "ICD10PCS//0DT"),
        ("ICD9PCS//3893", "ICD9PCS//38"),
        ("ICD9PCS//38.93", "ICD9PCS//38"),
        # MEDS-ETL MIMIC-IV spelling
        ("DIAGNOSIS//ICD//10//E119", "DIAGNOSIS//ICD//10//E11"),
        ("DIAGNOSIS//ICD//9//4019", "DIAGNOSIS//ICD//9//401"),
        ("PROCEDURE//ICD//10//0DTJ4ZZ", "PROCEDURE//ICD//10//0DT"),
        # other systems and odd inputs unchanged
        ("SNOMED//44054006", "SNOMED//44054006"),
        ("ATC//A10BA02", "ATC//A10BA02"),
        ("LAB//HBA1C//Q3", "LAB//HBA1C//Q3"),
        ("MEDS_BIRTH", "MEDS_BIRTH"),
        ("ICD10CM//", "ICD10CM//"),
    ],
)
def test_coarsen_code(code, category):
    assert coarsen_code(code) == category


def test_unknown_icd10_codes_fall_back_to_slicing_and_are_counted():
    assert fallback_counts() == {}
    assert coarsen_code("ICD10CM//Z9Z.99") == "ICD10CM//Z9Z"
    assert coarsen_code("ICD10CM//Q99.999") == "ICD10CM//Q99"
    coarsen_code("ICD10CM//Z9Z.99")  # cached: a distinct code is counted once
    coarsen_code("ICD10CM//E11.9")  # known: not a fallback
    assert fallback_counts() == {"ICD10CM": 2}


def test_coarsen_codes_keeps_order_and_repeats():
    codes = ["ICD10CM//E11.9", "ATC//A10BA02", "ICD10CM//E11.65", "ICD9CM//4019"]
    assert coarsen_codes(codes) == ["ICD10CM//E11", "ATC//A10BA02", "ICD10CM//E11", "ICD9CM//401"]
    assert coarsen_codes([]) == []
    assert coarsen_code.cache_info().currsize == 4
