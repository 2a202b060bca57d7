"""Tasks: who is included, the cut at the index visit (no leakage), label subsets, class balance."""

import datasets
import numpy as np
import pytest
import torch

from behrt_hf import BehrtTokenizerFast
from behrt_hf.tasks import (
    ClassBalance,
    Task,
    balanced_sampler,
    format_report,
    imbalance_logit_shift,
    label_subset,
    summarize,
)
from tests.helpers import CODES, save_task_cohort


@pytest.fixture(scope="module")
def task_cohort(tmp_path_factory):
    return save_task_cohort(tmp_path_factory.mktemp("task") / "data")


def test_columns_default_to_the_synthetic_names_and_can_be_named():
    task = Task("fall_1y")
    assert (task.label, task.index_visit, task.oracle) == ("label_fall_1y", "index_visit_fall_1y", "oracle_fall_1y")
    named = Task("mine", label="y", index_visit="at")
    assert (named.label, named.index_visit, named.oracle) == ("y", "at", "oracle_mine")


def test_input_is_cut_at_the_index_visit(task_cohort):
    """No leakage: every encoded patient holds exactly the codes of visits 0..index, nothing later."""
    path, splits = task_cohort
    task = Task("demo")
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=512)
    encoded = task.encode(task.eligible(datasets.load_from_disk(path)["test"]), tokenizer, max_length=512)
    assert {"labels", "oracle", "patient_id"} <= set(encoded.column_names)
    echo = tokenizer.convert_tokens_to_ids(CODES[2])  # recorded after the index visit of positives only
    by_id = {p["patient_id"]: p for p in splits["test"]}
    assert len(encoded) == sum(p["label_demo"] >= 0 for p in splits["test"])
    for row in encoded:
        patient = by_id[row["patient_id"]]
        index = patient["index_visit_demo"]
        assert row["labels"] == patient["label_demo"]
        assert max(row["visit_ids"]) == index + 1
        tokens = tokenizer.convert_ids_to_tokens(row["input_ids"])
        expected = [c for v in patient["visits"][: index + 1] for c in v["codes"]]
        assert [t for t in tokens if t not in ("[CLS]", "[SEP]")] == [
            c if c in tokenizer.get_vocab() else "[UNK]" for c in expected]
        max_age = patient["visits"][index]["age"]
        assert max(row["age_ids"]) == tokenizer.age_to_id(max_age)  # no later age either
        if echo not in [tokenizer.convert_tokens_to_ids(c) for c in expected]:
            assert echo not in row["input_ids"]


def test_missing_task_columns_are_reported(task_cohort):
    path, _ = task_cohort
    with pytest.raises(ValueError, match="'label_nope' is not in the data"):
        Task("nope").eligible(datasets.load_from_disk(path)["train"])


def test_splits_are_eligible_in_order_and_must_hold_both_classes(task_cohort):
    path, splits = task_cohort
    cohort = datasets.load_from_disk(path)
    chosen = Task("demo").splits(cohort, ["train", "validation", "", "test", "validation"])
    assert list(chosen) == ["train", "validation", "test"]
    assert len(chosen["test"]) == sum(p["label_demo"] >= 0 for p in splits["test"])
    negatives = chosen["test"].filter(lambda y: y == 0, input_columns="label_demo")
    with pytest.raises(ValueError, match=f"'demo': the test split has {len(negatives)} eligible patients and 0 positive"):
        Task("demo").splits({"test": negatives}, ["test"])


def test_label_fraction_keeps_a_seeded_subset_with_both_classes(task_cohort):
    path, _ = task_cohort
    train = Task("demo").eligible(datasets.load_from_disk(path)["train"])
    a = label_subset(train, 0.25, "label_demo", seed=1)
    b = label_subset(train, 0.25, "label_demo", seed=1)
    assert list(a["patient_id"]) == list(b["patient_id"])
    labels = np.asarray(train["label_demo"])
    assert sum(a["label_demo"]) == round(0.25 * labels.sum())  # stratified
    assert len(a) - sum(a["label_demo"]) == round(0.25 * (labels == 0).sum())
    tiny = label_subset(train, 0.001, "label_demo", seed=1)
    assert set(tiny["label_demo"]) == {0, 1}  # at least one of each class
    with pytest.raises(ValueError, match="no patient with label 1"):
        label_subset(train.filter(lambda y: y == 0, input_columns="label_demo"), 0.1, "label_demo", seed=1)


def test_class_balance_weighs_positives_and_undoes_it_after_training():
    labels = [1, 0, 0, 0, 1, 0, 0, 0]
    weighted = ClassBalance.of(labels, "pos_weight")
    assert (weighted.positives, weighted.negatives, weighted.pos_weight) == (2, 6, 3.0)
    assert weighted.logit_shift == pytest.approx(-np.log(3.0))
    sampled = ClassBalance.of(labels, "sampler")
    assert sampled.pos_weight is None and sampled.logit_shift == pytest.approx(-np.log(3.0))
    assert ClassBalance.of(labels, "none").logit_shift == 0.0 == imbalance_logit_shift("none", 2, 6)
    with pytest.raises(ValueError, match="class imbalance must be one of"):
        ClassBalance.of(labels, "both")


def test_balanced_sampler_draws_both_classes_equally_and_is_seeded():
    labels = np.array([1] * 10 + [0] * 90)
    draws = list(balanced_sampler(labels, seed=0)) + list(balanced_sampler(labels, seed=1))
    assert abs(np.mean(labels[draws]) - 0.5) < 0.1
    assert list(balanced_sampler(labels, seed=3)) == list(balanced_sampler(labels, seed=3))
    assert isinstance(balanced_sampler(labels, seed=3), torch.utils.data.WeightedRandomSampler)


def test_summary_and_report_name_the_final_split():
    scores = {"auroc": 0.7, "auprc": 0.4, "brier": 0.1}
    report = {"validation": {"model": scores}, "test": {"model": scores, "oracle": dict(scores, auroc=0.8)}}
    summary = summarize(Task("demo"), "lora", report, "test", data={}, model={}, training={}, plots=["roc.png"])
    assert summary["eval"] is scores and summary["oracle"]["auroc"] == 0.8 and summary["plots"] == ["roc.png"]
    assert list(summary)[:2] == ["task", "mode"] and summary["task"] == "demo"
    text = format_report(report, "demo")
    assert text.splitlines()[-1].startswith("test        oracle   0.8000")


def test_report_gives_auroc_and_calibration_by_sex_and_age_band_at_the_index_visit(task_cohort):
    from types import SimpleNamespace

    from behrt_hf.stats import age_bands
    from behrt_hf.tasks import report_splits, subgroup_columns

    path, splits = task_cohort
    task = Task("demo")
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=512)
    encoded = task.encode(task.eligible(datasets.load_from_disk(path)["test"]), tokenizer, max_length=512)
    records = [p for p in splits["test"] if p["index_visit_demo"] >= 0]
    groups = subgroup_columns(encoded, tokenizer)
    assert groups["sex"].tolist() == [p["sex"] for p in records]
    index_ages = [p["visits"][p["index_visit_demo"]]["age"] for p in records]
    assert groups["age"].tolist() == age_bands(index_ages).tolist()  # the index visit's age, not the last visit's
    assert subgroup_columns(encoded.remove_columns("sex"), None) == {}

    oracle = np.asarray(encoded["oracle"])
    trainer = SimpleNamespace(processing_class=tokenizer,
                              predict=lambda ds: SimpleNamespace(predictions=np.log(oracle / (1 - oracle))))
    report, _ = report_splits(trainer, {"test": encoded}, "lora")
    rows = report["test"]["subgroups"]
    assert {r["grouping"] for r in rows} == {"sex", "age"}
    assert sum(r["n"] for r in rows if r["grouping"] == "age") == len(records)
    assert all(r["auroc"] is None or 0 <= r["auroc"] <= 1 for r in rows)
    assert "by subgroup" in format_report(report, "demo")
