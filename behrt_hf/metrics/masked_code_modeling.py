"""Masked-code modelling metrics: accuracy, top-k accuracy and perplexity over masked positions.

An `evaluate.Metric` that depends only on numpy: load it offline by path
(`evaluate.load(behrt_hf.metrics.MASKED_CODE_MODELING_PATH)`) or instantiate `MaskedCodeModeling()`.
"""

import datasets
import evaluate
import numpy as np

from ._module_info import metric_info

_DESCRIPTION = """Accuracy of the top prediction, top-k accuracy and perplexity (exp of the mean negative
log-likelihood of the true code) over masked code positions."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: for each masked position, the ids of the k highest-scoring codes, best first.
    references: the true code id of each masked position.
    log_likelihoods: log-probability the model gave the true code at each masked position.
Returns:
    accuracy, top{k}_accuracy, perplexity, num_masked
"""


def compute_masked_code_metrics(top_ids: np.ndarray, labels: np.ndarray, log_likelihoods: np.ndarray) -> dict:
    """`top_ids` (N, k) best first, `labels` (N,), `log_likelihoods` (N,): one row per masked position."""
    top_ids, labels = np.asarray(top_ids), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("No masked positions to score.")
    k = top_ids.shape[1]
    return {
        "accuracy": float(np.mean(top_ids[:, 0] == labels)),
        f"top{k}_accuracy": float(np.mean((top_ids == labels[:, None]).any(axis=1))),
        "perplexity": float(np.exp(-np.mean(log_likelihoods))),
        "num_masked": int(len(labels)),
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MaskedCodeModeling(evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, predictions=datasets.Sequence(datasets.Value("int64")),
            references=datasets.Value("int64"), log_likelihoods=datasets.Value("float64"),
        )

    def _compute(self, predictions, references, log_likelihoods):
        return compute_masked_code_metrics(np.asarray(predictions), np.asarray(references), np.asarray(log_likelihoods))
