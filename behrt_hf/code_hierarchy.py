"""Coarsen MEDS-style codes to their category, per code system (the tokenizer's hierarchy option).

A coarser vocabulary has denser co-occurrence statistics: `ICD10CM//E11.9` (type 2 diabetes
without complications) and `ICD10CM//E11.65` both become `ICD10CM//E11` (type 2 diabetes).

=============  ==========================  ===================================================
system         example                     rule
=============  ==========================  ===================================================
ICD10CM        E11.9 -> E11, S72.001A ->   the 3-character category among the code's ancestors
               S72                         in `simple_icd_10_cm` (the CMS ICD-10-CM tables);
                                           codes it does not know: first 3 characters, counted
                                           (`fallback_counts()`)
ICD9CM         4019 / 401.9 -> 401         3 characters; E-codes 4 (E8798 -> E879); V-codes 3
ICD10PCS       0DTJ4ZZ -> 0DT              section, body system and root operation (the first
                                           3 of the 7 axes)
ICD9PCS        3893 / 38.93 -> 38          the 2-digit procedure category
anything else  SNOMED//44054006            unchanged
=============  ==========================  ===================================================

The system is the text before the first `//`; `ICD10`/`ICD9` are read as `ICD10CM`/`ICD9CM`, and
MEDS-ETL MIMIC-IV codes `DIAGNOSIS//ICD//10//E119` / `PROCEDURE//ICD//9//3893` are understood too
(their prefix is kept). Output codes keep the input's system prefix. Dots are ignored on input;
ICD-10-CM categories are 3 characters and have no dot.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

with warnings.catch_warnings():  # simple_icd_10_cm imports pkg_resources, deprecated in setuptools
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", UserWarning)
    import simple_icd_10_cm as icd10cm

_FALLBACKS: Counter = Counter()
# MEDS-ETL MIMIC-IV style: DIAGNOSIS//ICD//10//E119, PROCEDURE//ICD//9//3893
_MEDS_MIMIC = re.compile(r"^(?P<prefix>(?P<kind>DIAGNOSIS|PROCEDURE)//ICD//(?P<version>9|10)//)(?P<value>.+)$", re.IGNORECASE)
_ALIASES = {"ICD10": "ICD10CM", "ICD9": "ICD9CM"}


def _icd10cm_category(value: str) -> str:
    code = value.replace(".", "").strip().upper()
    if icd10cm.is_valid_item(code):
        if icd10cm.is_category(code):
            return code
        for ancestor in icd10cm.get_ancestors(code):  # nearest first: subcategory, category, block, chapter
            if icd10cm.is_category(ancestor):
                return ancestor
        return code  # a block or chapter (E08-E13, 4): above the category level already
    _FALLBACKS["ICD10CM"] += 1
    return code[:3]


def _icd9cm_category(value: str) -> str:
    code = value.replace(".", "").strip().upper()
    return code[:4] if code.startswith("E") else code[:3]


def _icd10pcs_category(value: str) -> str:
    return value.replace(".", "").strip().upper()[:3]


def _icd9pcs_category(value: str) -> str:
    return value.replace(".", "").strip()[:2]


_CATEGORY = {
    "ICD10CM": _icd10cm_category,
    "ICD9CM": _icd9cm_category,
    "ICD10PCS": _icd10pcs_category,
    "ICD9PCS": _icd9pcs_category,
}


@lru_cache(maxsize=None)
def coarsen_code(code: str) -> str:
    """The category of a MEDS-style code (`ICD10CM//E11.9` -> `ICD10CM//E11`); other systems unchanged.

    Cached: each distinct code is resolved once (so `fallback_counts()` counts distinct codes).
    """
    match = _MEDS_MIMIC.match(code)
    if match:
        kind = "CM" if match["kind"].upper() == "DIAGNOSIS" else "PCS"
        system, prefix, value = f"ICD{match['version']}{kind}", match["prefix"], match["value"]
    else:
        head, sep, value = code.partition("//")
        if not sep or not value:
            return code
        system, prefix = _ALIASES.get(head.upper(), head.upper()), head + sep
    category = _CATEGORY.get(system)
    if category is None:
        return code
    coarse = category(value)
    return prefix + coarse if coarse else code


def coarsen_codes(codes: Iterable[str]) -> list[str]:
    """`coarsen_code` over a list of codes (order and repeats kept)."""
    return [coarsen_code(code) for code in codes]


def coarsen_array(codes: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`coarsen_code` over an Arrow string array, each distinct code looked up once."""
    encoded = pc.dictionary_encode(codes)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    categories = pa.array(coarsen_codes(encoded.dictionary.to_pylist()), pa.string())
    return categories.take(encoded.indices)


def fallback_counts() -> dict[str, int]:
    """Distinct codes per system that the maintained hierarchy did not know (coarsened by slicing)."""
    return dict(_FALLBACKS)


def clear_cache() -> None:
    """Forget cached results and fallback counts (tests, or after `simple_icd_10_cm.change_version`)."""
    coarsen_code.cache_clear()
    _FALLBACKS.clear()


__all__ = ["clear_cache", "coarsen_array", "coarsen_code", "coarsen_codes", "fallback_counts"]
