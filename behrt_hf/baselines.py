"""Count-based baselines of a task: what a clinical ML user tries first, beside which BEHRT is judged.

`CountBaseline("logistic")`: L2 logistic regression on `CountFeatures` (columns scaled by their
largest training value, so the sparse matrix stays sparse), C chosen on validation AUROC.
`CountBaseline("gbm")`: scikit-learn's HistGradientBoostingClassifier on the codes most often
present in training (it needs a dense matrix), with a small grid of tree settings chosen on
validation AUROC. Selection ties (common on a validation set of a few patients) go to the first
candidate, the default. Both are deterministic for a given `seed`.

    baseline = CountBaseline("logistic").fit(train.matrix, train.labels, validation.matrix, validation.labels)
    probabilities = baseline.predict_proba(test.matrix)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

BASELINES = ("logistic", "gbm")
LOGISTIC_C = (1.0, 0.1, 10.0, 0.01, 100.0)  # candidate order = preference on ties: the default first
GBM_GRID = (  # HistGradientBoostingClassifier settings, the default-like one first
    {"max_leaf_nodes": 15, "min_samples_leaf": 20, "learning_rate": 0.1, "max_iter": 100},
    {"max_leaf_nodes": 7, "min_samples_leaf": 5, "learning_rate": 0.1, "max_iter": 100},
    {"max_leaf_nodes": 31, "min_samples_leaf": 20, "learning_rate": 0.05, "max_iter": 300},
    {"max_leaf_nodes": 7, "min_samples_leaf": 50, "learning_rate": 0.05, "max_iter": 300},
)


@dataclass
class CountBaseline:
    """A count-based classifier with hyperparameters chosen on a labelled validation set."""

    kind: str = "logistic"
    seed: int = 0
    max_dense_features: int = 1000  # gbm: the demographics and the codes most often present in training
    selected: dict = field(default_factory=dict)  # the chosen candidate and every candidate's validation AUROC

    def __post_init__(self):
        if self.kind not in BASELINES:
            raise ValueError(f"Unknown baseline {self.kind!r}; choose from {BASELINES}.")
        self._model = None
        self._columns = None

    def fit(self, x_train, y_train, x_val, y_val) -> "CountBaseline":
        """Fit every candidate on (x_train, y_train); keep the best by AUROC on (x_val, y_val)."""
        from sklearn.metrics import roc_auc_score

        y_train, y_val = np.asarray(y_train).astype(np.int64), np.asarray(y_val).astype(np.int64)
        for name, y in (("training", y_train), ("validation", y_val)):
            if len(set(y.tolist())) != 2:
                raise ValueError(f"CountBaseline: the {name} labels need both classes, got {len(y)} patients "
                                 f"with {int(y.sum())} positive.")
        self._columns = self._dense_columns(x_train) if self.kind == "gbm" else None
        best, scores = None, []
        for candidate in self._candidates():
            model = self._make(candidate).fit(self._prepare(x_train), y_train)
            auroc = float(roc_auc_score(y_val, model.predict_proba(self._prepare(x_val))[:, 1]))
            scores.append({**candidate, "validation_auroc": auroc})
            if best is None or auroc > best[0]:  # strict: ties keep the earlier (preferred) candidate
                best = (auroc, candidate, model)
        self._model = best[2]
        self.selected = {"kind": self.kind, **best[1], "validation_auroc": best[0], "candidates": scores}
        return self

    def predict_proba(self, x) -> np.ndarray:
        """(P,) probability of the positive class."""
        if self._model is None:
            raise ValueError("CountBaseline: fit it before predicting.")
        return self._model.predict_proba(self._prepare(x))[:, 1]

    def _candidates(self) -> list[dict]:
        return [{"C": c} for c in LOGISTIC_C] if self.kind == "logistic" else [dict(g) for g in GBM_GRID]

    def _make(self, candidate: dict):
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import MaxAbsScaler

            return make_pipeline(MaxAbsScaler(), LogisticRegression(C=candidate["C"], max_iter=5000))
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(early_stopping=False, random_state=self.seed, **candidate)

    def _dense_columns(self, x_train) -> np.ndarray:
        """The columns the trees see: the most often non-zero in training (ties by column order)."""
        present = np.asarray((sp.csr_matrix(x_train) != 0).sum(0)).ravel()
        order = np.argsort(-present, kind="stable")[: self.max_dense_features]
        return np.sort(order)

    def _prepare(self, x):
        if self._columns is None:
            return sp.csr_matrix(x)
        return sp.csr_matrix(x)[:, self._columns].toarray().astype(np.float32)


__all__ = ["BASELINES", "CountBaseline", "GBM_GRID", "LOGISTIC_C"]
