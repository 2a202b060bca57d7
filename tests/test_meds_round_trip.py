"""Synthetic cohort -> MEDS export -> MEDS reader gives back exactly the same patients."""

from behrt_hf import load_meds, load_synthetic
from behrt_hf.data_builders.meds_export import export_meds

SCHEMA_COLUMNS = ("patient_id", "sex", "visits")


def test_synthetic_meds_round_trip_is_exact(tmp_path):
    cohort = load_synthetic("tiny", seed=3, cache_dir=str(tmp_path / "synthetic_cache"))
    export_meds(tmp_path / "meds", name="tiny", seed=3, subjects_per_shard=64)
    read = load_meds(tmp_path / "meds", cache_dir=tmp_path / "reader_cache")
    assert sum(read.drop_report.invalid.values()) == 0, read.drop_report.summary()
    for split in ("train", "validation", "test"):
        expected = cohort[split].select_columns(list(SCHEMA_COLUMNS)).to_list()
        got = read[split].select_columns(list(SCHEMA_COLUMNS)).to_list()
        assert len(got) == len(expected) > 0
        assert sorted(got, key=lambda p: int(p["patient_id"])) == sorted(expected, key=lambda p: int(p["patient_id"]))
