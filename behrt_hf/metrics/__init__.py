"""Evaluation metrics, shipped in the package as `evaluate.Metric` modules (no Hub needed).

`compute_*` are the plain numpy functions; the `evaluate` classes wrap them, and each module
file also loads offline by path with `evaluate.load(PATH)`.
"""

from pathlib import Path

from .binary_classification import BinaryClassification, compute_binary_metrics
from .masked_code_modeling import MaskedCodeModeling, compute_masked_code_metrics
from .next_visit_prediction import NextVisitPrediction, compute_next_visit_metrics, per_patient_average_precision

_HERE = Path(__file__).resolve().parent
BINARY_CLASSIFICATION_PATH = str(_HERE / "binary_classification.py")
MASKED_CODE_MODELING_PATH = str(_HERE / "masked_code_modeling.py")
NEXT_VISIT_PREDICTION_PATH = str(_HERE / "next_visit_prediction.py")

__all__ = [
    "BINARY_CLASSIFICATION_PATH",
    "BinaryClassification",
    "compute_binary_metrics",
    "MASKED_CODE_MODELING_PATH",
    "NEXT_VISIT_PREDICTION_PATH",
    "MaskedCodeModeling",
    "NextVisitPrediction",
    "compute_masked_code_metrics",
    "compute_next_visit_metrics",
    "per_patient_average_precision",
]
