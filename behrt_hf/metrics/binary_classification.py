"""Binary prediction metrics for clinical tasks: AUROC, AUPRC (average precision) and Brier score.

An `evaluate.Metric` depending on numpy and scikit-learn: load it offline by path
(`evaluate.load(behrt_hf.metrics.BINARY_CLASSIFICATION_PATH)`) or instantiate `BinaryClassification()`.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from ._module_info import metric_info

_DESCRIPTION = "AUROC, AUPRC (average precision) and Brier score of predicted probabilities for a binary label."

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted probability of the positive class for each patient.
    references: the 0/1 label of each patient.
"""


def compute_binary_metrics(probabilities, labels) -> dict:
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} predictions but {len(labels)} labels.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"Labels must be 0/1, got values {sorted(set(labels.tolist()))[:5]}.")
    if labels.min() == labels.max():
        raise ValueError("AUROC needs both positive and negative patients in the evaluation set.")
    if not np.isfinite(probabilities).all() or probabilities.min() < 0 or probabilities.max() > 1:
        raise ValueError("Predictions must be probabilities in [0, 1].")
    return {
        "auroc": float(roc_auc_score(labels, probabilities)),
        "auprc": float(average_precision_score(labels, probabilities)),
        "brier": float(brier_score_loss(labels, probabilities)),
        "prevalence": float(labels.mean()),
        "num_patients": int(len(labels)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BinaryClassification(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, predictions=datasets.Value("float64"), references=datasets.Value("int64")
        )

    def _compute(self, predictions, references):
        return compute_binary_metrics(predictions, references)
