"""Glue between the Trainer and the pretraining metrics, and the frequency baseline.

`PretrainingEvaluator.preprocess_logits_for_metrics` shrinks each evaluation batch before the
Trainer accumulates it: MLM logits (B, T, V) become the top-k code ids and the log-likelihood of
the true code (B, T, k + 1); NVP logits (B, V) become probabilities. So an evaluation never holds
vocabulary-sized logits for every token of the set.
"""

from __future__ import annotations

import numpy as np
import torch

from ..encoding import count_visits
from ..objectives import Objective
from .masked_code_modeling import compute_masked_code_metrics
from .next_visit_prediction import compute_next_visit_metrics


class PretrainingEvaluator:
    """`compute_metrics` and `preprocess_logits_for_metrics` for a pretraining objective.
    `first_code` is the tokenizer's `first_code_id`: NVP is scored over codes only."""

    def __init__(self, objective: Objective | str, first_code: int, top_k: int = 5):
        self.objective = Objective.parse(objective)
        self.first_code = first_code
        self.top_k = top_k

    def _split(self, logits, labels):
        """(mlm, nvp) parts of the model outputs / labels for this objective (None where absent)."""
        if self.objective.mlm and self.objective.nvp:
            return logits[0], logits[1], labels[0], labels[1]
        if self.objective.mlm:
            return logits, None, labels, None
        return None, logits, None, labels

    def preprocess_logits_for_metrics(self, logits, labels):
        mlm_logits, nvp_logits, mlm_labels, _ = self._split(logits, labels)
        reduced = []
        if mlm_logits is not None:
            log_probs = mlm_logits.float().log_softmax(-1)  # (B, T, V)
            top = log_probs.topk(self.top_k, dim=-1).indices.float()  # (B, T, k)
            true = log_probs.gather(-1, mlm_labels.clamp(min=0).unsqueeze(-1))  # (B, T, 1)
            reduced.append(torch.cat([top, true], dim=-1))
        if nvp_logits is not None:
            reduced.append(nvp_logits.float().sigmoid())  # (B, V)
        return tuple(reduced) if len(reduced) > 1 else reduced[0]

    def compute_metrics(self, eval_pred) -> dict:
        mlm_pred, nvp_pred, mlm_labels, nvp_labels = self._split(eval_pred.predictions, eval_pred.label_ids)
        metrics = {}
        if mlm_pred is not None:
            metrics.update(_prefixed("mlm", self.mlm_metrics(np.asarray(mlm_pred), np.asarray(mlm_labels))))
        if nvp_pred is not None:
            metrics.update(_prefixed("nvp", self.nvp_metrics(np.asarray(nvp_pred), np.asarray(nvp_labels))))
        return metrics

    def mlm_metrics(self, reduced: np.ndarray, labels: np.ndarray) -> dict:
        keep = labels != -100
        return compute_masked_code_metrics(reduced[keep][:, : self.top_k].astype(np.int64), labels[keep], reduced[keep][:, -1])

    def nvp_metrics(self, scores: np.ndarray, targets: np.ndarray) -> dict:
        return compute_next_visit_metrics(scores[:, self.first_code :], targets[:, self.first_code :])


def _prefixed(prefix: str, metrics: dict) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def frequency_baseline(train_encoded, eval_static, tokenizer, objective: Objective | str, top_k: int = 5) -> dict:
    """The same metrics for a model that ignores the patient and predicts the most common codes.

    MLM: the training split's code frequencies (add-one smoothed) for every masked position.
    NVP: for each code, the share of training visits that contain it, the same for every patient.
    `eval_static` carries fixed targets (`static_pretraining_targets`); the baseline scores those.
    """
    vocab_size, first = len(tokenizer), tokenizer.first_code_id
    code_counts = np.zeros(vocab_size)
    visit_counts = np.zeros(vocab_size)
    n_visits = 0
    for ids, visits in zip(train_encoded["input_ids"], train_encoded["visit_ids"]):
        ids, visits = np.asarray(ids), np.asarray(visits)
        codes = ids >= first
        np.add.at(code_counts, ids[codes], 1)
        num_visits = int(count_visits(visits[None, :])[0])
        stride = num_visits + 1
        pairs = np.unique(ids[codes] * stride + visits[codes])  # each code once per visit
        np.add.at(visit_counts, pairs // stride, 1)
        n_visits += num_visits
    code_counts[:first] = 0
    probs = (code_counts + 1) / (code_counts + 1)[first:].sum()
    probs[:first] = 0
    evaluator = PretrainingEvaluator(objective, first, top_k)
    metrics = {}
    if evaluator.objective.mlm:
        labels = np.concatenate([np.asarray(x) for x in eval_static["labels"]])
        labels = labels[labels != -100]
        top = np.argsort(-probs, kind="stable")[:top_k]
        metrics.update(_prefixed("mlm", compute_masked_code_metrics(
            np.broadcast_to(top, (len(labels), top_k)), labels, np.log(probs[labels]))))
    if evaluator.objective.nvp:
        targets = np.zeros((len(eval_static), vocab_size), dtype=np.int64)
        for row, codes in enumerate(eval_static["next_visit_codes"]):
            targets[row, codes] = 1
        scores = np.broadcast_to(visit_counts / max(n_visits, 1), targets.shape)
        metrics.update(_prefixed("nvp", evaluator.nvp_metrics(scores, targets)))
    return metrics


__all__ = ["PretrainingEvaluator", "frequency_baseline"]
