"""Uncertainty and subgroups of binary predictions: bootstrap intervals, paired comparisons,
calibration, and metrics by subgroup.

The bootstrap resamples patients (rows) with replacement, seeded. A resample is held as a count
per patient (how often it was drawn), so AUROC and AUPRC of all resamples are computed at once
from one sort of the scores: no Python loop per resample. Several models scored on the same
patients (`paired_bootstrap`) share the resamples, so their difference carries only the
uncertainty of the test set's draw, not of the two models' separate draws.

Scores may be one vector (n,) or several draws of a model (D, n) on the same patients (e.g. one
per training subset); the metric of a resample is then the mean over the draws, so the interval
is that of the mean across draws.

    ci = bootstrap_metrics(probabilities, labels)                 # {"auroc": {"value", "low", "high"}, ...}
    diff = paired_bootstrap(probs_a, probs_b, labels)             # {"auroc": {"difference", "low", "high", "p_value"}, ...}
    rows = subgroup_metrics(probabilities, labels, {"sex": sex, "age": age_bands(age)})
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

RANKING_METRICS = ("auroc", "auprc")
AGE_BAND_EDGES = (18, 45, 65, 75, 85)  # years: <18, 18-44, 45-64, 65-74, 75-84, 85+


def _as_draws(scores) -> np.ndarray:
    """(D, n) float64: one row per draw of a model."""
    scores = np.asarray(scores, dtype=np.float64)
    return scores[None, :] if scores.ndim == 1 else scores


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape[-1] != len(labels):
        raise ValueError(f"{scores.shape[-1]} predictions but {len(labels)} labels.")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"Labels must be 0/1, got values {sorted(set(labels.tolist()))[:5]}.")
    if not np.isfinite(scores).all():
        raise ValueError("Predictions must be finite.")


def resample_counts(n: int, resamples: int, seed: int, chunk: int = 250) -> Iterator[np.ndarray]:
    """Seeded bootstrap resamples of `n` patients as counts: (b, n) int arrays, `chunk` rows at a time.

    Row r holds how often each patient is drawn in resample r (rows sum to n). The same `n`,
    `resamples` and `seed` give the same resamples, whatever `chunk` is.
    """
    rng = np.random.default_rng(seed)
    drawn = 0
    while drawn < resamples:
        b = min(chunk, resamples - drawn)
        picks = rng.integers(0, n, size=(b, n))
        counts = np.bincount((picks + n * np.arange(b)[:, None]).ravel(), minlength=b * n)
        yield counts.reshape(b, n)
        drawn += b


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order of `scores` ascending and, in that order, where each run of equal scores starts."""
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.concatenate([[True], ranked[1:] != ranked[:-1]]))
    return order, starts


def _class_sums(labels: np.ndarray, weights: np.ndarray, order: np.ndarray, starts: np.ndarray):
    """(B, G) summed weight of the positives and of the negatives in each tie group (sorted order)."""
    w = weights[:, order].astype(np.float64)
    y = labels[order].astype(bool)
    pos = np.add.reduceat(w * y, starts, axis=1)
    return pos, np.add.reduceat(w, starts, axis=1) - pos


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC of `scores` (n,) for each row of patient `weights` (B, n); ties count one half.

    The Mann-Whitney statistic with weights: the weighted share of (positive, negative) pairs the
    scores order correctly. NaN where a row has no positive or no negative weight.
    """
    pos, neg = _class_sums(labels, weights, *_tie_groups(scores))  # (B, G), ascending scores
    neg_below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    correct = (pos * (neg_below + 0.5 * neg)).sum(1)
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / total, np.nan)


def weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (scikit-learn's definition: sum of precision x recall step over the distinct
    thresholds) of `scores` (n,) for each row of `weights` (B, n). NaN where a row has no positive."""
    pos, neg = _class_sums(labels, weights, *_tie_groups(-scores))  # (B, G), descending scores
    tp, seen = np.cumsum(pos, axis=1), np.cumsum(pos + neg, axis=1)
    positives = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / seen, 0.0)
        recall_step = np.diff(np.concatenate([np.zeros_like(positives), tp], axis=1), axis=1) / positives
        ap = (recall_step * precision).sum(1)
    return np.where(positives[:, 0] > 0, ap, np.nan)


def _metric_draws(name: str, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) the metric of each resample, averaged over the draws (rows) of `scores`."""
    metric = {"auroc": weighted_auroc, "auprc": weighted_average_precision}[name]
    return np.mean([metric(draw, labels, weights) for draw in scores], axis=0)


def _bootstrap(scores_list: list[np.ndarray], labels: np.ndarray, metrics, resamples: int, seed: int) -> dict:
    """{metric: (len(scores_list), resamples)} values of every model on the shared resamples."""
    out = {m: [] for m in metrics}
    for counts in resample_counts(len(labels), resamples, seed):
        for m in metrics:
            out[m].append(np.stack([_metric_draws(m, s, labels, counts) for s in scores_list]))
    return {m: np.concatenate(v, axis=1) for m, v in out.items()}


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def compare_models(models: Mapping[str, np.ndarray], labels, pairs=(), resamples: int = 1000, seed: int = 0,
                   level: float = 0.95, metrics=RANKING_METRICS) -> dict:
    """Bootstrap intervals of every model and paired differences of the `pairs` (a, b): a minus b.

    `models`: name -> scores (n,) or (D, n) for D draws of a model (its value is the mean over
    draws), all on the same patients and scored on the same resamples, so each model's metric is
    computed once per resample whatever the number of pairs. Returns
    `{"models": {name: {metric: {"value", "low", "high"}}}, "pairs": {(a, b): {metric:
    {"difference", "low", "high", "p_value"}}}, "resamples", "level", "seed"}`. Resamples with a
    single class are left out. The p-value is the bootstrap's: twice the smaller share of resamples
    on either side of zero (with the usual +1 so that it is never 0), capped at 1; identical
    predictions differ by exactly 0 on every resample, with p = 1.
    """
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    names = list(models)
    scores = [_as_draws(models[name]) for name in names]
    for s in scores:
        _check(s, labels)
    values = _bootstrap(scores, labels, metrics, resamples, seed)
    ones = np.ones((1, len(labels)))
    point = {m: [float(_metric_draws(m, s, labels, ones)[0]) for s in scores] for m in metrics}
    out = {"models": {}, "pairs": {}, "resamples": resamples, "level": level, "seed": seed}
    for i, name in enumerate(names):
        out["models"][name] = {m: dict(zip(("value", "low", "high"), (point[m][i], *_interval(values[m][i], level))))
                               for m in metrics}
    for a, b in pairs:
        i, j = names.index(a), names.index(b)
        out["pairs"][(a, b)] = {}
        for m in metrics:
            diff = values[m][i] - values[m][j]
            diff = diff[np.isfinite(diff)]
            side = min(int((diff <= 0).sum()), int((diff >= 0).sum()))
            out["pairs"][(a, b)][m] = {"difference": point[m][i] - point[m][j], **dict(zip(
                ("low", "high"), _interval(diff, level))), "p_value": min(1.0, 2 * (side + 1) / (len(diff) + 1))}
    return out


def bootstrap_metrics(scores, labels, resamples: int = 1000, seed: int = 0, level: float = 0.95,
                      metrics=RANKING_METRICS) -> dict:
    """Point value and percentile bootstrap interval of AUROC and AUPRC of one model.

    `scores`: (n,) or (D, n) for D draws of a model (the value is the mean over draws). Returns
    `{metric: {"value", "low", "high"}}` plus `resamples`, `level` and `seed`.
    """
    result = compare_models({"model": scores}, labels, (), resamples, seed, level, metrics)
    return {"resamples": resamples, "level": level, "seed": seed, **result["models"]["model"]}


def paired_bootstrap(scores_a, scores_b, labels, resamples: int = 1000, seed: int = 0, level: float = 0.95,
                     metrics=RANKING_METRICS) -> dict:
    """A minus B on the same resampled patients: `{metric: {"difference", "low", "high", "p_value"}}`
    (see `compare_models`)."""
    result = compare_models({"a": scores_a, "b": scores_b}, labels, [("a", "b")], resamples, seed, level, metrics)
    return {"resamples": resamples, "level": level, "seed": seed, **result["pairs"][("a", "b")]}


# --- calibration and subgroups ------------------------------------------------------------------


def calibration(probabilities, labels, bins: int = 10) -> dict:
    """Calibration of probabilities: intercept and slope of the logistic recalibration
    `logit P(y=1) = intercept + slope * logit(p)` (perfect: 0 and 1), and the expected calibration
    error over `bins` quantile bins (weighted mean |observed rate - mean prediction|).

    Slope and intercept are None when the labels hold one class (they are not defined).
    """
    from sklearn.linear_model import LogisticRegression

    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    _check(p, y)
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    size = np.bincount(which, minlength=bins)
    gap = np.abs(np.bincount(which, y, bins) - np.bincount(which, p, bins))  # |sum y - sum p| per bin
    out = {"ece": float(gap.sum() / len(p)) if len(p) else float("nan"), "calibration_slope": None,
           "calibration_intercept": None}
    if 0 < y.sum() < len(y) and size.any():
        fit = LogisticRegression(C=np.inf).fit(np.log(p / (1 - p))[:, None], y)
        out.update(calibration_slope=float(fit.coef_[0, 0]), calibration_intercept=float(fit.intercept_[0]))
    return out


def age_bands(ages, edges=AGE_BAND_EDGES) -> np.ndarray:
    """Ages in years -> band names ('<18', '18-44', ..., '85+') at the `edges` (years, ascending)."""
    ages = np.asarray(ages, dtype=np.float64)
    names = [f"<{edges[0]}"] + [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"]
    return np.asarray(names, dtype=object)[np.searchsorted(np.asarray(edges), ages, side="right")]


def subgroup_metrics(probabilities, labels, groupings: Mapping[str, np.ndarray], min_class: int = 1) -> list[dict]:
    """Per subgroup (each value of each grouping, e.g. sex, age band): n, positives, prevalence, mean
    prediction, AUROC and calibration.

    AUROC and the calibration fit are None in a subgroup with fewer than `min_class` patients of
    either class: the row still shows n and prevalence, so small subgroups are visible, not hidden.
    """
    from sklearn.metrics import roc_auc_score

    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).astype(np.int64).reshape(-1)
    _check(p, y)
    rows = []
    for grouping, values in groupings.items():
        values = np.asarray(values, dtype=object)
        if len(values) != len(y):
            raise ValueError(f"grouping {grouping!r} has {len(values)} values for {len(y)} patients.")
        for value in sorted(set(values.tolist()), key=_group_order):
            member = values == value
            py, pp = y[member], p[member]
            positives = int(py.sum())
            scorable = min(positives, len(py) - positives) >= max(1, min_class)
            row = {"grouping": grouping, "group": str(value), "n": int(member.sum()), "positives": positives,
                   "prevalence": float(py.mean()), "mean_prediction": float(pp.mean()),
                   "auroc": float(roc_auc_score(py, pp)) if scorable else None}
            row.update(calibration(pp, py) if scorable else
                       {"ece": calibration(pp, py)["ece"], "calibration_slope": None, "calibration_intercept": None})
            rows.append(row)
    return rows


def _group_order(value) -> tuple:
    """Age bands in age order ('<18' first), anything else by name."""
    text = str(value)
    digits = text.lstrip("<").split("-")[0].rstrip("+")
    if digits.isdigit():
        return (0, float(digits) - (0.5 if text.startswith("<") else 0.0), text)
    return (1, 0.0, text)


def format_subgroups(rows: list[dict], title: str = "") -> str:
    """Subgroup rows as a text table; '-' where a value is not defined (a class absent)."""
    def fmt(value, width=7):
        return f"{value:>{width}.3f}" if isinstance(value, float) else f"{'-':>{width}}"

    lines = [f"{title + ' ' if title else ''}{'by':<6} {'group':<8} {'n':>6} {'pos':>5} {'prev':>6} "
             f"{'mean p':>7} {'AUROC':>7} {'slope':>7} {'interc':>7} {'ECE':>7}"]
    indent = " " * (len(title) + 1 if title else 0)
    for r in rows:
        lines.append(f"{indent}{r['grouping']:<6} {r['group']:<8} {r['n']:>6} {r['positives']:>5} "
                     f"{r['prevalence']:>6.3f} {r['mean_prediction']:>7.3f} {fmt(r['auroc'])} "
                     f"{fmt(r['calibration_slope'])} {fmt(r['calibration_intercept'])} {fmt(r['ece'])}")
    return "\n".join(lines)


__all__ = [
    "AGE_BAND_EDGES", "RANKING_METRICS", "age_bands", "bootstrap_metrics", "calibration", "compare_models",
    "format_subgroups",
    "paired_bootstrap", "resample_counts", "subgroup_metrics", "weighted_auroc", "weighted_average_precision",
]
