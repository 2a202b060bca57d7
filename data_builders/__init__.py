"""Data for BEHRT: the synthetic cohort and the readers of real EHR formats, all -> the patient schema.

    from behrt_hf.data_builders import load_meds, ReaderInputError, DropReport

    try:
        splits = load_meds("meds_root/")
    except ReaderInputError as e:      # a missing file or column, named (MissingFileError: a file)
        ...
    print(splits.drop_report)          # a DropReport: what was left out, by reason

Modules: `synthetic_ehr` (+ `synthetic/`, the generator), `meds`, `mimic`, `synthea` (readers),
`meds_export` (cohort -> MEDS). The readers share `_drop_report` (the report and the errors),
`_csv_io` (CSV tables, dates, codes), `_assemble` (events -> patient rows), `_reader_base` (the
`datasets` builder) and `_cache_key` (the cache key of every builder here).

Names are imported on first use, so importing this package (as every builder module does) stays
cheap.
"""

import importlib

_LAZY = {
    "DropReport": "._drop_report",
    "MissingFileError": "._drop_report",
    "ReaderError": "._drop_report",
    "ReaderInputError": "._drop_report",
    "load_meds": ".meds",
    "load_mimic": ".mimic",
    "load_synthea": ".synthea",
    "load_synthetic": ".synthetic_ehr",
    "SyntheticEHR": ".synthetic_ehr",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = list(_LAZY)
