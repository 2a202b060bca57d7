"""Bootstrap intervals, paired differences, calibration and subgroups, against known cases and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from behrt_hf.stats import (
    age_bands,
    bootstrap_metrics,
    calibration,
    format_subgroups,
    paired_bootstrap,
    resample_counts,
    subgroup_metrics,
    weighted_auroc,
    weighted_average_precision,
)


def scored(n=600, seed=0, signal=1.0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.2).astype(int)
    return np.round(1 / (1 + np.exp(-(rng.normal(size=n) + signal * y - 1.5))), 2), y  # rounded: ties


def test_weighted_metrics_agree_with_sklearn_on_resamples_with_ties():
    s, y = scored()
    counts = next(resample_counts(len(y), 5, seed=1))
    assert counts.sum(1).tolist() == [len(y)] * 5
    for row, auroc, ap in zip(counts, weighted_auroc(s, y, counts), weighted_average_precision(s, y, counts)):
        assert auroc == pytest.approx(roc_auc_score(y, s, sample_weight=row), abs=1e-12)
        assert ap == pytest.approx(average_precision_score(y, s, sample_weight=row), abs=1e-12)


def test_resamples_are_seeded_and_independent_of_the_chunk_size():
    a = np.concatenate(list(resample_counts(50, 7, seed=3, chunk=2)))
    b = np.concatenate(list(resample_counts(50, 7, seed=3, chunk=7)))
    assert a.shape == (7, 50)
    np.testing.assert_array_equal(a[:2], b[:2])  # the first chunk's draws are the same
    assert not np.array_equal(np.concatenate(list(resample_counts(50, 7, seed=4))), b)
    s, y = scored()
    assert bootstrap_metrics(s, y, resamples=200, seed=5) == bootstrap_metrics(s, y, resamples=200, seed=5)


def test_interval_holds_the_point_value_and_covers_the_population_auroc_most_times():
    s, y = scored(n=400)
    ci = bootstrap_metrics(s, y, resamples=300, seed=0)
    for m in ("auroc", "auprc"):
        assert ci[m]["low"] < ci[m]["value"] < ci[m]["high"]
    assert ci["auroc"]["value"] == pytest.approx(roc_auc_score(y, s))
    # coverage: the AUROC of a large sample of the same process is inside most 95% intervals of small ones
    big_s, big_y = scored(n=200_000, seed=99)
    truth = roc_auc_score(big_y, big_s)
    covered = [bootstrap_metrics(*scored(n=300, seed=k), resamples=300, seed=k)["auroc"] for k in range(20)]
    assert sum(c["low"] <= truth <= c["high"] for c in covered) >= 16
    wide = bootstrap_metrics(*scored(n=100, seed=1), resamples=300)["auroc"]
    narrow = bootstrap_metrics(*scored(n=5000, seed=1), resamples=300)["auroc"]
    assert narrow["high"] - narrow["low"] < wide["high"] - wide["low"]


def test_paired_difference_of_identical_predictions_is_exactly_zero():
    s, y = scored()
    diff = paired_bootstrap(s, s, y, resamples=200)
    for m in ("auroc", "auprc"):
        assert diff[m]["difference"] == diff[m]["low"] == diff[m]["high"] == 0.0
        assert diff[m]["p_value"] == 1.0


def test_paired_difference_finds_a_better_model_and_averages_draws():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.3).astype(int)
    good = y + rng.normal(0, 0.6, 2000)
    bad = y + rng.normal(0, 1.5, 2000)
    diff = paired_bootstrap(good, bad, y, resamples=300)["auroc"]
    assert diff["difference"] == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, bad))
    assert 0 < diff["low"] < diff["difference"] < diff["high"] and diff["p_value"] < 0.01
    reverse = paired_bootstrap(bad, good, y, resamples=300)["auroc"]
    assert reverse["high"] < 0 and reverse["p_value"] < 0.01
    draws = bootstrap_metrics(np.stack([good, bad]), y, resamples=50)["auroc"]
    assert draws["value"] == pytest.approx((roc_auc_score(y, good) + roc_auc_score(y, bad)) / 2)


def test_calibration_of_true_probabilities_and_of_shifted_ones():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.05, 0.6, 20_000)
    y = (rng.random(len(p)) < p).astype(int)
    good = calibration(p, y)
    assert good["calibration_slope"] == pytest.approx(1, abs=0.1)
    assert good["calibration_intercept"] == pytest.approx(0, abs=0.1) and good["ece"] < 0.02
    logit = np.log(p / (1 - p))
    over = calibration(1 / (1 + np.exp(-(2 * logit + 1))), y)  # overconfident: slope 1/2
    assert over["calibration_slope"] == pytest.approx(0.5, abs=0.05) and over["ece"] > 0.05


def test_subgroups_show_n_everywhere_and_no_auroc_where_a_class_is_absent():
    s, y = scored(n=300)
    sex = np.where(np.arange(300) % 2, "F", "M")
    ages = np.linspace(20, 90, 300)
    y[ages >= 85] = 0  # the oldest band has no positive
    rows = subgroup_metrics(s, y, {"sex": sex, "age": age_bands(ages)})
    by = {(r["grouping"], r["group"]): r for r in rows}
    assert [r["group"] for r in rows if r["grouping"] == "age"] == ["18-44", "45-64", "65-74", "75-84", "85+"]
    assert sum(r["n"] for r in rows if r["grouping"] == "sex") == 300
    female = sex == "F"
    assert by[("sex", "F")]["auroc"] == pytest.approx(roc_auc_score(y[female], s[female]))
    assert by[("age", "85+")]["auroc"] is None and by[("age", "85+")]["calibration_slope"] is None
    assert by[("age", "85+")]["n"] == int((ages >= 85).sum()) and by[("age", "85+")]["prevalence"] == 0
    text = format_subgroups(rows)
    assert "85+" in text and " - " in text
    assert age_bands([5, 18, 44.9, 45, 85]).tolist() == ["<18", "18-44", "18-44", "45-64", "85+"]
    with pytest.raises(ValueError, match="grouping 'sex'"):
        subgroup_metrics(s, y, {"sex": sex[:10]})


def test_compare_models_matches_the_single_and_paired_bootstraps():
    from behrt_hf.stats import compare_models

    s, y = scored()
    t = s + np.random.default_rng(3).normal(0, 0.1, len(s))
    both = compare_models({"s": s, "t": t}, y, [("s", "t"), ("t", "s")], resamples=100, seed=2)
    assert both["models"]["s"]["auroc"] == {k: v for k, v in bootstrap_metrics(s, y, 100, 2)["auroc"].items()}
    assert both["pairs"][("s", "t")]["auprc"] == paired_bootstrap(s, t, y, 100, 2)["auprc"]
    forward, backward = both["pairs"][("s", "t")]["auroc"], both["pairs"][("t", "s")]["auroc"]
    assert forward["difference"] == pytest.approx(-backward["difference"])
    assert forward["low"] == pytest.approx(-backward["high"]) and forward["p_value"] == backward["p_value"]
