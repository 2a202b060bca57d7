"""Next-visit prediction metrics (multi-label over the code vocabulary).

- average precision per patient, averaged over patients with at least one target code (as the
  BEHRT paper reports it);
- micro AUROC (all patient-code pairs pooled) and macro AUROC (mean over codes that have both
  positive and negative patients);
- recall@10: share of a patient's next-visit codes found among its 10 highest scores, averaged;
- best-threshold micro-F1: the best F1 over all thresholds of the pooled scores, and that threshold.

An `evaluate.Metric` depending on numpy and scikit-learn: load it offline by path
(`evaluate.load(behrt_hf.metrics.NEXT_VISIT_PREDICTION_PATH)`) or instantiate `NextVisitPrediction()`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from ._module_info import metric_info

_DESCRIPTION = "Per-patient average precision, micro/macro AUROC, recall@10 and best micro-F1 of next-visit codes."

_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, V) scores (logits or probabilities) of each code for each patient.
    references: (N, V) 0/1 targets: the codes of each patient's next visit.
    k: cut-off of recall@k (default 10).
"""


def per_patient_average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Average precision of each row that has a positive (rows without one are dropped). (N',)"""
    keep = targets.sum(1) > 0
    scores, targets = scores[keep], targets[keep]
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(targets, order, axis=1)  # (N', V) 0/1 by rank
    precision_at_rank = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    return (precision_at_rank * hits).sum(1) / hits.sum(1)


def compute_next_visit_metrics(scores: np.ndarray, targets: np.ndarray, k: int = 10) -> dict:
    scores = np.asarray(scores, dtype=np.float64)
    targets = (np.asarray(targets) > 0).astype(np.int64)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"predictions {scores.shape} and references {targets.shape} must both be (N, V).")
    if targets.sum() == 0 or targets.sum() == targets.size:
        raise ValueError("Next-visit targets need both positive and negative entries.")
    with_positive = targets.sum(1) > 0
    top_k = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    found = np.take_along_axis(targets, top_k, axis=1).sum(1)
    recall_at_k = found[with_positive] / targets.sum(1)[with_positive]

    both_classes = (targets.sum(0) > 0) & (targets.sum(0) < len(targets))
    macro_auroc = float(roc_auc_score(targets[:, both_classes], scores[:, both_classes], average="macro"))

    flat_targets, flat_scores = targets.ravel(), scores.ravel()
    precision, recall, thresholds = precision_recall_curve(flat_targets, flat_scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return {
        "average_precision": float(per_patient_average_precision(scores, targets).mean()),
        "micro_auroc": float(roc_auc_score(flat_targets, flat_scores)),
        "macro_auroc": macro_auroc,
        f"recall@{k}": float(recall_at_k.mean()),
        "micro_f1": float(f1[best]),
        "micro_f1_threshold": float(thresholds[best]) if len(thresholds) else float("nan"),
        "num_patients": int(len(targets)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class NextVisitPrediction(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, predictions=datasets.Sequence(datasets.Value("float32")),
            references=datasets.Sequence(datasets.Value("int8")),
        )

    def _compute(self, predictions, references, k=10):
        return compute_next_visit_metrics(np.asarray(predictions), np.asarray(references), k=k)
