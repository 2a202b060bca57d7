"""The metric modules against scikit-learn, offline loading by path, and the frequency baseline."""

import evaluate
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from behrt_hf.metrics import (
    BINARY_CLASSIFICATION_PATH,
    MASKED_CODE_MODELING_PATH,
    NEXT_VISIT_PREDICTION_PATH,
    compute_binary_metrics,
    compute_masked_code_metrics,
    compute_next_visit_metrics,
)


@pytest.fixture
def nvp_data():
    rng = np.random.default_rng(0)
    targets = (rng.random((60, 25)) < 0.15).astype(int)
    targets[0, :] = 0  # a patient without targets is skipped by per-patient metrics
    scores = rng.random((60, 25)) + 0.6 * targets
    return scores, targets


def test_next_visit_metrics_match_sklearn(nvp_data):
    scores, targets = nvp_data
    m = compute_next_visit_metrics(scores, targets, k=10)
    rows = targets.sum(1) > 0
    ap = np.mean([average_precision_score(t, s) for t, s in zip(targets[rows], scores[rows])])
    assert m["average_precision"] == pytest.approx(ap)
    assert m["micro_auroc"] == pytest.approx(roc_auc_score(targets.ravel(), scores.ravel()))
    cols = (targets.sum(0) > 0) & (targets.sum(0) < len(targets))
    assert m["macro_auroc"] == pytest.approx(np.mean([roc_auc_score(targets[:, j], scores[:, j]) for j in np.flatnonzero(cols)]))
    top = np.argsort(-scores, axis=1)[:, :10]
    recall = [np.isin(np.flatnonzero(t), top[i]).mean() for i, t in enumerate(targets) if t.any()]
    assert m["recall@10"] == pytest.approx(np.mean(recall))
    f1_at_threshold = f1_score(targets.ravel(), scores.ravel() >= m["micro_f1_threshold"])
    assert m["micro_f1"] == pytest.approx(f1_at_threshold)
    for threshold in np.linspace(0.1, 1.5, 15):  # no threshold does better
        assert f1_score(targets.ravel(), scores.ravel() >= threshold) <= m["micro_f1"] + 1e-12


def test_masked_code_metrics():
    top = np.array([[3, 4, 5], [7, 3, 1], [9, 8, 6]])
    m = compute_masked_code_metrics(top, np.array([3, 3, 2]), np.log([0.5, 0.25, 0.125]))
    assert m["accuracy"] == pytest.approx(1 / 3)
    assert m["top3_accuracy"] == pytest.approx(2 / 3)
    assert m["perplexity"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="No masked positions"):
        compute_masked_code_metrics(np.zeros((0, 3)), np.zeros(0), np.zeros(0))


def test_metric_modules_load_offline_by_path(nvp_data):
    scores, targets = nvp_data
    nvp = evaluate.load(NEXT_VISIT_PREDICTION_PATH)
    assert nvp.compute(predictions=scores, references=targets)["micro_auroc"] == pytest.approx(
        compute_next_visit_metrics(scores, targets)["micro_auroc"], rel=1e-6)
    mlm = evaluate.load(MASKED_CODE_MODELING_PATH)
    out = mlm.compute(predictions=[[1, 2], [3, 4]], references=[1, 4], log_likelihoods=[-0.1, -2.0])
    assert out["accuracy"] == 0.5 and out["top2_accuracy"] == 1.0
    binary = evaluate.load(BINARY_CLASSIFICATION_PATH)
    probabilities, labels = [0.1, 0.8, 0.4, 0.7], [0, 1, 1, 0]
    assert binary.compute(predictions=probabilities, references=labels) == compute_binary_metrics(probabilities, labels)


def test_bad_shapes_are_reported(nvp_data):
    scores, targets = nvp_data
    with pytest.raises(ValueError, match="must both be"):
        compute_next_visit_metrics(scores[:, :5], targets)
