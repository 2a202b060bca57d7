"""PNG charts of binary predictions: ROC, precision-recall and calibration, with the oracle ceiling.

Each chart takes several named prediction sets (e.g. one per fine-tuning mode) so that the
benchmark and a single fine-tuning run draw the same figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]  # name -> (probabilities, labels)


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend: PNGs only, no display needed.

    Every chart of behrt_hf (and its scripts) gets pyplot from here, so the backend is chosen once.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styled(name: str) -> dict:
    return {"color": "black", "linestyle": "--", "linewidth": 1.6} if name.startswith("oracle") else {"linewidth": 1.4}


def plot_roc(curves: Curves, path: str | Path, title: str = "ROC") -> Path:
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, (probs, labels) in curves.items():
        fpr, tpr, _ = roc_curve(labels, probs)
        ax.plot(fpr, tpr, label=f"{name} (AUROC {roc_auc_score(labels, probs):.3f})", **_styled(name))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def plot_precision_recall(curves: Curves, path: str | Path, title: str = "Precision-recall") -> Path:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    prevalence = None
    for name, (probs, labels) in curves.items():
        precision, recall, _ = precision_recall_curve(labels, probs)
        ax.plot(recall, precision, label=f"{name} (AUPRC {average_precision_score(labels, probs):.3f})", **_styled(name))
        prevalence = float(np.mean(labels))
    if prevalence is not None:
        ax.axhline(prevalence, color="grey", linewidth=0.8, linestyle=":", label=f"prevalence {prevalence:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def plot_calibration(curves: Curves, path: str | Path, bins: int = 10, title: str = "Calibration") -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for name, (probs, labels) in curves.items():
        probs, labels = np.asarray(probs), np.asarray(labels)
        edges = np.quantile(probs, np.linspace(0, 1, bins + 1))
        which = np.clip(np.searchsorted(edges, probs, side="right") - 1, 0, bins - 1)
        mean_pred = [probs[which == b].mean() for b in range(bins) if (which == b).any()]
        observed = [labels[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(mean_pred, observed, marker="o", markersize=3, label=name, **_styled(name))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set(xlabel="mean predicted probability (quantile bins)", ylabel="observed rate", title=title)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def plot_binary_predictions(curves: Curves, out_dir: str | Path, prefix: str = "", title: str = "") -> list[Path]:
    """ROC, PR and calibration charts of `curves` into `out_dir`; returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f" — {title}" if title else ""
    return [
        plot_roc(curves, out_dir / f"{prefix}roc.png", "ROC" + suffix),
        plot_precision_recall(curves, out_dir / f"{prefix}pr.png", "Precision-recall" + suffix),
        plot_calibration(curves, out_dir / f"{prefix}calibration.png", title="Calibration" + suffix),
    ]


def _save(fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return Path(path)


__all__ = ["plot_binary_predictions", "plot_calibration", "plot_precision_recall", "plot_roc", "pyplot"]
