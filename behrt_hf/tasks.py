"""Prediction tasks: which patients a task includes, their input cut at the index visit, label
subsets, class imbalance and its recalibration, and the predictions and report of a trained model.

A task is a label column and an index-visit column of the patient table (a synthetic cohort has
`label_<task>`, `index_visit_<task>` and the true probability `oracle_<task>`). The input of every
patient is cut at the index visit: nothing recorded after it reaches the model. Patients a task
excludes (label or index visit < 0) are dropped.

Class imbalance: `pos_weight` weighs positives by `negatives / positives` in the BCE loss;
`sampler` draws a class-balanced sample instead (with an unweighted loss); `none` does neither.
Either one multiplies the odds the model learns by `negatives / positives`; after training the
classifier's bias is shifted by `-log(negatives / positives)` (a prior-shift correction), so the
saved model's probabilities are calibrated to the real prevalence again. Ranking metrics are
unchanged by the shift.

    task = Task("heart_failure_1y")
    train = task.encode(task.eligible(cohort["train"]), tokenizer, max_length=256)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from .metrics import compute_binary_metrics
from .stats import age_bands, format_subgroups, subgroup_metrics

CLASS_IMBALANCE = ("pos_weight", "sampler", "none")


@dataclass(frozen=True)
class Task:
    """A binary task over a cohort in the patient schema: `name` and the columns that define it.

    `label`, `index_visit` and `oracle` default to `label_<name>`, `index_visit_<name>` and
    `oracle_<name>` (the synthetic cohorts' columns); the oracle column is optional.
    """

    name: str
    label: str = ""
    index_visit: str = ""
    oracle: str = ""

    def __post_init__(self):
        for column in ("label", "index_visit", "oracle"):
            if not getattr(self, column):
                object.__setattr__(self, column, f"{column}_{self.name}")

    def eligible(self, split: datasets.Dataset) -> datasets.Dataset:
        """Patients the task includes: a label and an index visit, both >= 0."""
        for column in (self.label, self.index_visit):
            if column not in split.column_names:
                raise ValueError(
                    f"Column {column!r} is not in the data ({split.column_names}); the task needs a label and an "
                    "index visit per patient (the input is cut there, so nothing after it leaks in)."
                )
        return split.filter(lambda y, i: y >= 0 and i >= 0, input_columns=[self.label, self.index_visit])

    def require_both_classes(self, split: datasets.Dataset, split_name: str) -> None:
        """Fail before training, not after it, when a split cannot be scored: AUROC needs both classes."""
        labels = np.asarray(split[self.label])
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            raise ValueError(
                f"Task {self.name!r}: the {split_name} split has {len(labels)} eligible patients and {positives} "
                f"positive, so AUROC cannot be computed on it. Use a larger cohort (e.g. --synthetic medium) "
                f"or another task."
            )

    def splits(self, cohort: Mapping[str, datasets.Dataset], names: Iterable[str]) -> dict[str, datasets.Dataset]:
        """The eligible patients of each named split (each once, in the given order), every one scorable."""
        splits = {name: self.eligible(cohort[name]) for name in dict.fromkeys(n for n in names if n)}
        for name, split in splits.items():
            self.require_both_classes(split, name)
        return splits

    def encode(self, split: datasets.Dataset, tokenizer, max_length: int, num_proc: int | None = None,
               desc: str = "") -> datasets.Dataset:
        """Model inputs cut at each patient's index visit, with `labels`, `patient_id` and `oracle` (if any)."""
        keep = {self.label: "labels", self.oracle: "oracle", "patient_id": "patient_id", "sex": "sex"}  # -> new name
        encoded = split.map(
            tokenizer.encode_patients,
            batched=True,
            fn_kwargs={"max_length": max_length, "until_visit": self.index_visit},
            remove_columns=[c for c in split.column_names if c not in keep],
            num_proc=num_proc,
            desc=f"Encoding {desc} up to the index visit",
        )
        return encoded.rename_columns({k: v for k, v in keep.items() if k in encoded.column_names and k != v})


def label_subset(train: datasets.Dataset, fraction: float, label: str, seed: int) -> datasets.Dataset:
    """A seeded, stratified `fraction` of the training patients: that share of each class, at least one."""
    if fraction >= 1.0:
        return train
    labels = np.asarray(train[label])
    rng = np.random.default_rng(seed)
    keep = []
    for value in (0, 1):
        members = np.flatnonzero(labels == value)
        if len(members) == 0:
            raise ValueError(f"label_fraction={fraction}: the training split has no patient with label {value}.")
        keep.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return train.select(np.sort(np.concatenate(keep)).tolist())


# --- class imbalance and recalibration ---------------------------------------------------------


@dataclass(frozen=True)
class ClassBalance:
    """The training labels' classes and how their imbalance is handled (one of CLASS_IMBALANCE)."""

    positives: int
    negatives: int
    strategy: str = "pos_weight"

    @classmethod
    def of(cls, labels, strategy: str) -> ClassBalance:
        if strategy not in CLASS_IMBALANCE:
            raise ValueError(f"class imbalance must be one of {CLASS_IMBALANCE}, got {strategy!r}.")
        labels = np.asarray(labels)
        return cls(int(labels.sum()), int((labels == 0).sum()), strategy)

    @property
    def pos_weight(self) -> float | None:
        """The BCE weight of positives under `pos_weight`, else None."""
        return self.negatives / self.positives if self.strategy == "pos_weight" else None

    @property
    def logit_shift(self) -> float:
        return imbalance_logit_shift(self.strategy, self.positives, self.negatives)


def imbalance_logit_shift(strategy: str, positives: int, negatives: int) -> float:
    """What to add to the trained logits so that probabilities match the real prevalence again.

    Weighing positives by w = negatives / positives (or drawing classes 50/50, the same odds) makes
    the loss minimal at logit(p) + log(w) for a patient whose true probability is p; -log(w) undoes it.
    """
    return 0.0 if strategy == "none" else -math.log(negatives / positives)


def balanced_sampler(labels, seed: int) -> torch.utils.data.WeightedRandomSampler:
    """Draws a class-balanced sample of the training set each epoch (`sampler` imbalance handling)."""
    labels = np.asarray(labels)
    weights = np.where(labels == 1, 0.5 / max(labels.sum(), 1), 0.5 / max((labels == 0).sum(), 1))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(weights.tolist(), len(labels), replacement=True, generator=generator)


def shift_classifier_bias(model, shift: float) -> None:
    """Add `shift` to the trained classifier bias (the PEFT copy under LoRA), so it is saved with it."""
    biases = [p for name, p in model.named_parameters()
              if p.requires_grad and "classifier" in name.split(".") and name.endswith("bias")]
    if len(biases) != 1:
        raise ValueError(f"Expected one trainable classifier bias to recalibrate, found {len(biases)}; "
                         "keep the classifier trainable (e.g. in --lora_modules_to_save).")
    with torch.no_grad():
        biases[0].add_(shift)


def sigmoid(logits) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits)))


def binary_compute_metrics(eval_pred, logit_shift: float = 0.0) -> dict:
    """AUROC, AUPRC, Brier of the probabilities `sigmoid(logit + logit_shift)` (a Trainer's compute_metrics)."""
    logits = np.asarray(eval_pred.predictions).reshape(-1) + logit_shift
    return compute_binary_metrics(sigmoid(logits), eval_pred.label_ids)


# --- predictions and the report ----------------------------------------------------------------


def report_splits(trainer, splits: Mapping[str, datasets.Dataset], model_name: str,
                  output_dir: str | Path | None = None) -> tuple[dict, dict]:
    """Predict every encoded split with `trainer`; score the model (and the oracle, where known).

    Returns the report (split -> {"model", "oracle", "gap_to_oracle_auroc", "subgroups"}) and the
    curves of each split ({model_name or "oracle": (probabilities, labels)}) for
    `plot_binary_predictions`. `subgroups`: the model's AUROC and calibration by sex and age band
    at the index visit (`subgroup_columns`). Writes `predictions_<split>.json` into `output_dir`
    when one is given.
    """
    report, curves = {}, {}
    for name, dataset in splits.items():
        probs = sigmoid(trainer.predict(dataset).predictions.reshape(-1))
        y = np.asarray(dataset["labels"])
        report[name] = {"model": compute_binary_metrics(probs, y)}
        groupings = subgroup_columns(dataset, getattr(trainer, "processing_class", None))
        if groupings:
            report[name]["subgroups"] = subgroup_metrics(probs, y, groupings)
        curves[name] = {model_name: (probs, y)}
        if "oracle" in dataset.column_names:
            oracle = np.asarray(dataset["oracle"], dtype=np.float64)
            report[name]["oracle"] = compute_binary_metrics(oracle, y)
            report[name]["gap_to_oracle_auroc"] = report[name]["oracle"]["auroc"] - report[name]["model"]["auroc"]
            curves[name]["oracle"] = (oracle, y)
        if output_dir is not None:
            write_predictions(Path(output_dir) / f"predictions_{name}.json", dataset, probs)
    return report, curves


def subgroup_columns(dataset: datasets.Dataset, tokenizer=None) -> dict[str, np.ndarray]:
    """The subgroups of an encoded split: `sex` (where kept) and `age` band at the index visit.

    The age is read back from the last token's age id (the index visit's: the input ends there),
    floored to the tokenizer's age step, so bands at whole years are exact.
    """
    groupings = {}
    if "sex" in dataset.column_names:
        groupings["sex"] = np.asarray(dataset["sex"], dtype=object)
    steps = getattr(tokenizer, "age_steps_per_year", None)
    if steps and "age_ids" in dataset.column_names:
        ages = dataset.select_columns(["age_ids"]).with_format("arrow")[:].column("age_ids").combine_chunks()
        ends = ages.offsets.to_numpy()[1:] - 1  # the last token of each row
        last_id = ages.values.to_numpy(zero_copy_only=False)[ends].astype(np.float64)
        groupings["age"] = age_bands((last_id - 1) / steps)
    return groupings


def write_predictions(path: str | Path, dataset: datasets.Dataset, probabilities: np.ndarray) -> None:
    """Per-patient predictions of an encoded split: patient ids, probabilities, labels (and the oracle)."""
    Path(path).write_text(json.dumps({
        "patient_id": list(dataset["patient_id"]), "probability": np.asarray(probabilities).tolist(),
        "label": np.asarray(dataset["labels"]).tolist(),
        **({"oracle": list(dataset["oracle"])} if "oracle" in dataset.column_names else {}),
    }))


def summarize(task: Task, mode: str, report: dict, final_split: str, data: dict, model: dict, training: dict,
              plots: list) -> dict:
    """The run's summary.json: the final split's scores beside the oracle, every split, what was trained."""
    summary = {
        "task": task.name, "mode": mode, "data": data, "model": model, "training": training,
        "eval": report[final_split]["model"], "splits": report, "plots": [str(p) for p in plots],
    }
    if "oracle" in report[final_split]:
        summary["oracle"] = report[final_split]["oracle"]
    return summary


def format_report(report: dict, task: str) -> str:
    """The report as a text table: AUROC, AUPRC and Brier of the model and the oracle per split."""
    lines = [f"{'split':<11} {'who':<7} {'AUROC':>7} {'AUPRC':>7} {'Brier':>7}  ({task})"]
    for split, entry in report.items():
        for who in ("model", "oracle"):
            if who in entry:
                m = entry[who]
                lines.append(f"{split:<11} {who:<7} {m['auroc']:>7.4f} {m['auprc']:>7.4f} {m['brier']:>7.4f}")
    for split, entry in report.items():
        if entry.get("subgroups"):
            lines.append(format_subgroups(entry["subgroups"], title=f"{split:<11} model by subgroup:"))
    return "\n".join(lines)


__all__ = [
    "CLASS_IMBALANCE", "ClassBalance", "Task", "balanced_sampler", "binary_compute_metrics", "format_report",
    "imbalance_logit_shift", "label_subset", "report_splits", "shift_classifier_bias", "subgroup_columns",
    "summarize", "write_predictions",
]
