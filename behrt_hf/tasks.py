"""Prediction tasks: samples (patient, prediction time, label), their input cut at the prediction
time, label subsets, class imbalance and its recalibration, and the predictions and report of a
trained model.

A sample is one row of a label table: the patient's history as known at `prediction_time`, and a
label. Two sources, one cut (`behrt_hf.encoding.cut_at_times`, MEDS' `time <= prediction_time`,
later codes inside a straddling visit included in what is cut):

- a MEDS label file (`behrt_hf.labels.read_labels`) joined to a cohort with `join_labels`: many
  rows per patient are normal; the filled value column decides the problem (`LabelKind`);
- the synthetic columns (`Task`): `label_<task>`, `index_visit_<task>` and the true probability
  `oracle_<task>`; `Task.samples` makes one row per eligible patient with prediction time = the
  index visit's time (visit times are distinct), so nothing recorded after that visit reaches the
  model. Patients a task excludes (label or index visit < 0) are dropped.

`encode_samples` turns samples of either source into model inputs.

Class imbalance: `pos_weight` weighs positives by `negatives / positives` in the BCE loss;
`sampler` draws a class-balanced sample instead (with an unweighted loss); `none` does neither.
Either one multiplies the odds the model learns by `negatives / positives`; after training the
classifier's bias is shifted by `-log(negatives / positives)` (a prior-shift correction), so the
saved model's probabilities are calibrated to the real prevalence again. Ranking metrics are
unchanged by the shift.

    task = Task("heart_failure_1y")
    train = task.encode(task.eligible(cohort["train"]), tokenizer, max_length=256)

    labels, report = read_labels("labels/heart_failure_1y")
    patients, samples, kind = join_labels(cohort, labels, report)
    train = encode_samples(samples["train"], patients, tokenizer, max_length=256)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from .encoding import cut_at_times, exclusive_cumsum, first_event_times, visits_array
from .labels import PROBLEMS, TIMESTAMP, value_column
from .metrics import compute_binary_metrics
from .schema import MEDS_SPLIT_NAMES
from .stats import age_bands, format_subgroups, subgroup_metrics

logger = logging.getLogger(__name__)

SPLIT_FROM_MEDS = {meds_name: name for name, meds_name in MEDS_SPLIT_NAMES.items()}

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

    def samples(self, split: datasets.Dataset) -> datasets.Dataset:
        """The task as samples: one row per patient with a label and an index visit (both >= 0), with
        `patient_index` (its row in `split`), `patient_id`, `prediction_time` (the index visit's
        time), `labels` and `oracle` (when the data has it)."""
        columns = [c for c in ("patient_id", "visits", self.label, self.index_visit, self.oracle)
                   if c in split.column_names]
        table = split.select_columns(columns).with_format("arrow")[:]
        labels, index = (table.column(c).to_numpy(zero_copy_only=False) for c in (self.label, self.index_visit))
        keep = np.flatnonzero((labels >= 0) & (index >= 0))
        visits = visits_array(table)
        nv = pc.list_value_length(visits).fill_null(0).to_numpy()
        if (index[keep] >= nv[keep]).any():
            row = int(keep[np.flatnonzero(index[keep] >= nv[keep])[0]])
            raise ValueError(f"patient {table.column('patient_id')[row].as_py()!r}: {self.index_visit}="
                             f"{index[row]} is outside its {nv[row]} visits")
        times = pc.struct_field(pc.list_flatten(visits), "time").take(pa.array(exclusive_cumsum(nv)[keep] + index[keep]))
        if times.null_count:
            raise ValueError(f"Task {self.name!r}: an index visit has no time, so the input cannot be cut there.")
        out = {"patient_index": pa.array(keep), "patient_id": table.column("patient_id").take(pa.array(keep)),
               "prediction_time": times, "labels": pa.array(labels[keep].astype(np.int64))}
        if self.oracle in table.column_names:
            out["oracle"] = table.column(self.oracle).take(pa.array(keep))
        return datasets.Dataset(pa.table(out))

    def encode(self, split: datasets.Dataset, tokenizer, max_length: int, num_proc: int | None = None,
               desc: str = "") -> datasets.Dataset:
        """Model inputs cut at each patient's index visit, with `labels`, `patient_id`, `prediction_time`
        and `oracle` (if any): `encode_samples` of `samples`."""
        return encode_samples(self.samples(split), split, tokenizer, max_length, num_proc=num_proc, desc=desc)

def label_subset(train: datasets.Dataset, fraction: float, label: str, seed: int,
                 problem: str = "binary") -> datasets.Dataset:
    """A seeded `fraction` of the training samples: stratified by class (that share of each class, at
    least one) for classification, a plain random share for regression."""
    if fraction >= 1.0:
        return train
    labels = np.asarray(train[label])
    rng = np.random.default_rng(seed)
    if problem == "regression":
        return train.select(np.sort(rng.choice(len(labels), size=max(1, round(fraction * len(labels))),
                                               replace=False)).tolist())
    keep = []
    for value in ((0, 1) if problem == "binary" else np.unique(labels).tolist()):
        members = np.flatnonzero(labels == value)
        if len(members) == 0:
            raise ValueError(f"label_fraction={fraction}: the training split has no patient with label {value}.")
        keep.append(rng.choice(members, size=max(1, round(fraction * len(members))), replace=False))
    return train.select(np.sort(np.concatenate(keep)).tolist())

# --- samples: (patient, prediction time, label) rows, and their inputs cut at the prediction time --

SAMPLE_COLUMNS = ("patient_index", "patient_id", "prediction_time", "labels")


@dataclass(frozen=True)
class LabelKind:
    """What a label table asks the model for, from its filled value column (`behrt_hf.labels`):
    `boolean_value` -> binary (one logit, BCE), `integer_value` / `categorical_value` ->
    multiclass over `classes` (the values seen in training, sorted), `float_value` -> regression."""

    value_column: str = "boolean_value"
    classes: tuple = ()

    @property
    def problem(self) -> str:
        return PROBLEMS[self.value_column]

    @classmethod
    def of(cls, value_column: str, train_values: pa.Array | None = None) -> LabelKind:
        if PROBLEMS[value_column] != "multiclass":
            return cls(value_column)
        classes = tuple(sorted(pc.unique(train_values.drop_null()).to_pylist())) if train_values is not None else ()
        if len(classes) < 2:
            raise ValueError(f"A multiclass task ({value_column}) needs at least two classes in its training labels, "
                             f"found {list(classes)}.")
        return cls(value_column, classes)

    def head(self) -> dict:
        """`BehrtConfig` fields of the matching classification head."""
        if self.problem == "binary":
            return dict(num_labels=1, problem_type="multi_label_classification")
        if self.problem == "regression":
            return dict(num_labels=1, problem_type="regression")
        return dict(num_labels=len(self.classes), problem_type="single_label_classification",
                    id2label={i: str(c) for i, c in enumerate(self.classes)},
                    label2id={str(c): i for i, c in enumerate(self.classes)})

    def targets(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(model targets, usable mask): 0/1 int64, class index int64 (-1: a class unseen in training)
        or float32."""
        if self.problem == "binary":
            return values.cast(pa.int64()).to_numpy(zero_copy_only=False), np.ones(len(values), bool)
        if self.problem == "regression":
            return values.cast(pa.float32()).to_numpy(zero_copy_only=False), np.ones(len(values), bool)
        index = pc.index_in(values, value_set=pa.array(list(self.classes), values.type))
        known = index.is_valid().to_numpy(zero_copy_only=False)
        return index.fill_null(-1).cast(pa.int64()).to_numpy(zero_copy_only=False), known


def _subject_ids(patient_ids: pa.ChunkedArray | pa.Array, split: str) -> pa.Array:
    """MEDS subject ids of the patients: `patient_id` is the decimal string of `subject_id`."""
    try:
        return pc.cast(patient_ids, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
        raise ValueError(f"The {split} split's patient ids are not decimal MEDS subject ids ({error}); label files "
                         "join on subject_id = int(patient_id).") from error


def _patient_index(patients: datasets.Dataset, batch_size: int = 10_000) -> pa.Table:
    """(subject_id, row, first event time) of every patient, read in batches."""
    parts, row = [], 0
    for batch in patients.select_columns(["patient_id", "visits"]).with_format("arrow").iter(batch_size):
        parts.append(pa.table({"subject_id": _subject_ids(batch.column("patient_id"), "cohort"),
                               "row": pa.array(np.arange(row, row + batch.num_rows)),
                               "first": first_event_times(batch).cast(TIMESTAMP)}))
        row += batch.num_rows
    return pa.concat_tables(parts) if parts else pa.table({"subject_id": pa.array([], pa.int64())})


def join_labels(cohort: Mapping[str, datasets.Dataset], labels: pa.Table, report, kind: LabelKind | None = None,
                split_column: str | None = None) -> tuple[datasets.Dataset, dict[str, datasets.Dataset], LabelKind]:
    """Join a label table (`behrt_hf.labels.read_labels`) to the patients of `cohort`.

    Returns the patients of all splits in one dataset, the samples of each split (rows of
    `patient_index` into those patients, `patient_id`, `prediction_time`, `labels` (the model's
    targets) and the original value column, in label-file order) and the `LabelKind` (from the
    train split's labels unless `kind` is given, e.g. by a trained model). A row's split is its
    patient's (`subject_splits.parquet`), or `split_column`'s (MEDS names train / tuning /
    held_out). Skipped and counted in `report`: subjects not in the data, prediction times before
    the subject's first event (so before birth too: nothing would be left to see), classes not seen
    in training, split names the cohort lacks.
    """
    from .data_builders._drop_report import INVALID

    names = [name for name in cohort if len(cohort[name])]
    everyone = datasets.concatenate_datasets([cohort[n] for n in names]) if names else None
    split_of_row = np.repeat(np.arange(len(names)), [len(cohort[n]) for n in names])
    who = _patient_index(everyone) if everyone is not None else pa.table({"subject_id": pa.array([], pa.int64())})
    value = value_column(labels)
    times = labels.column("prediction_time")
    where = pc.index_in(labels.column("subject_id"), value_set=who.column("subject_id"))

    def describe(i: int) -> str:
        return f"subject_id {labels.column('subject_id')[i].as_py()}, prediction_time {times[i].as_py()}"

    unknown = where.is_null().to_numpy(zero_copy_only=False)
    report.add_where(INVALID, "label row of a subject not in the data", unknown, describe)
    rows = where.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    ok = ~unknown
    if len(who.column("subject_id")):
        first = who.column("first").take(pa.array(rows)).cast(pa.int64()).fill_null(np.iinfo(np.int64).max)
        early = ok & (times.cast(pa.int64()).to_numpy(zero_copy_only=False) < first.to_numpy(zero_copy_only=False))
        report.add_where(INVALID, "label row whose prediction_time is before the subject's first event", early, describe)
        ok &= ~early
        rows = who.column("row").to_numpy()[rows] if len(rows) else rows
    split = split_of_row[rows] if len(rows) else rows
    if split_column:
        wanted = np.array([SPLIT_FROM_MEDS.get(s, s) for s in labels.column(split_column).to_pylist()], dtype=object)
        lookup = {n: i for i, n in enumerate(names)}
        split = np.array([lookup.get(s, -1) for s in wanted.tolist()], np.int64)
        report.add_where(INVALID, f"label row whose {split_column} names a split the data lacks", ok & (split < 0),
                         describe)
        ok &= split >= 0
    if kind is None:
        train = ok & (split == (names.index("train") if "train" in names else -1))
        kind = LabelKind.of(value, labels.column(value).filter(pa.array(train)))
    targets, known = kind.targets(labels.column(value))
    report.add_where(INVALID, "label row with a class not seen in training", ok & ~known, describe)
    ok &= known
    report.kept["samples"] += int(ok.sum())
    samples = pa.table({
        "patient_index": pa.array(rows), "patient_id": labels.column("subject_id").cast(pa.string()),
        "prediction_time": times, "labels": targets, value: labels.column(value),
    })
    out = {name: datasets.Dataset(samples.filter(pa.array(ok & (split == i)))) for i, name in enumerate(names)}
    return everyone, out, kind


def encode_samples(samples: datasets.Dataset, patients: datasets.Dataset, tokenizer, max_length: int,
                   num_proc: int | None = None, desc: str = "") -> datasets.Dataset:
    """Model inputs of `samples` (rows with `patient_index` into `patients` and a `prediction_time`):
    each patient's history cut at the row's prediction time (`encoding.cut_at_times`), encoded by
    `tokenizer`; the samples' other columns are kept (`patient_index` is dropped)."""
    return samples.with_format("arrow").map(
        encode_sample_batch, batched=True, num_proc=num_proc,
        fn_kwargs={"patients": patients, "tokenizer": tokenizer, "max_length": max_length},
        remove_columns=["patient_index"], desc=f"Encoding {desc} up to the prediction time",
    ).with_format(None)


def encode_sample_batch(batch: pa.Table, patients: datasets.Dataset, tokenizer, max_length: int) -> pa.Table:
    """One batch of `encode_samples` (also the batches `behrt-predict` streams): gather, cut, encode."""
    rows = batch.column("patient_index").to_numpy(zero_copy_only=False)
    gathered = patients.with_format("arrow")[rows.tolist()] if len(rows) else patients.with_format("arrow")[:0]
    cut = cut_at_times(gathered.select(["patient_id", "sex", "visits"]), batch.column("prediction_time"))
    encoded = tokenizer.encode_patients(cut, max_length)
    if "sex" not in batch.column_names:  # kept for the subgroup reports
        encoded = encoded.append_column("sex", gathered.column("sex"))
    for name in batch.column_names:
        if name != "patient_index":
            encoded = encoded.append_column(name, batch.column(name))
    return encoded


LABEL_KIND_FILE = "label_kind.json"


def save_label_kind(folder: str | Path, kind: LabelKind) -> None:
    """Write what a fine-tuned model predicts (`label_kind.json`) beside it, for `behrt-predict`."""
    Path(folder, LABEL_KIND_FILE).write_text(json.dumps({"value_column": kind.value_column,
                                                         "classes": list(kind.classes)}))


def load_label_kind(folder: str | Path) -> LabelKind | None:
    """The `LabelKind` saved beside a fine-tuned model (a local folder); None when there is none."""
    path = Path(folder, LABEL_KIND_FILE)
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return LabelKind(saved["value_column"], tuple(saved.get("classes", ())))


def require_both_classes(labels, kind: LabelKind, task: str, split_name: str) -> None:
    """Fail before training when a classification split cannot be scored (AUROC needs two classes)."""
    labels = np.asarray(labels)
    if kind.problem != "regression" and len(np.unique(labels)) < 2:
        raise ValueError(f"Task {task!r}: the {split_name} split has {len(labels)} samples, all of class "
                         f"{labels[0] if len(labels) else None}, so AUROC cannot be computed on it.")


def score(kind: LabelKind, logits: np.ndarray, labels: np.ndarray, logit_shift: float = 0.0) -> dict:
    """The metrics of one split: binary (AUROC, AUPRC, Brier), multiclass (accuracy, macro one-vs-rest
    AUROC), regression (MSE, MAE, R2)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

    logits = np.asarray(logits, dtype=np.float64)
    if kind.problem == "binary":
        return compute_binary_metrics(sigmoid(logits.reshape(-1) + logit_shift), labels)
    if kind.problem == "regression":
        predicted = logits.reshape(-1)
        return {"mse": float(mean_squared_error(labels, predicted)), "mae": float(mean_absolute_error(labels, predicted)),
                "r2": float(r2_score(labels, predicted))}
    probabilities = softmax(logits)
    metrics = {"accuracy": float(np.mean(probabilities.argmax(1) == labels))}
    present = np.unique(labels)
    if len(present) == probabilities.shape[1]:
        metrics["auroc_macro"] = float(roc_auc_score(labels, probabilities, multi_class="ovr", average="macro"))
    return metrics


def softmax(logits) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp / exp.sum(1, keepdims=True)


def score_compute_metrics(eval_pred, kind: LabelKind = LabelKind(), logit_shift: float = 0.0) -> dict:
    """A Trainer's compute_metrics for any label kind (`score`)."""
    return score(kind, eval_pred.predictions, np.asarray(eval_pred.label_ids), logit_shift)


def report_scores(trainer, splits: Mapping[str, datasets.Dataset], kind: LabelKind) -> dict:
    """Multiclass / regression: predict every encoded split and score it (binary: `report_splits`)."""
    return {name: {"model": score(kind, trainer.predict(dataset).predictions, np.asarray(dataset["labels"]))}
            for name, dataset in splits.items()}


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
    "CLASS_IMBALANCE", "ClassBalance", "LabelKind", "SAMPLE_COLUMNS", "Task", "encode_sample_batch", "encode_samples",
    "join_labels", "load_label_kind", "report_scores", "require_both_classes", "save_label_kind", "score",
    "score_compute_metrics", "softmax", "balanced_sampler", "binary_compute_metrics", "format_report",
    "imbalance_logit_shift", "label_subset", "report_splits", "shift_classifier_bias", "summarize",
    "subgroup_columns", "write_predictions",
]


def fitted_max_length(requested: int, tokenizer) -> int:
    """`requested`, capped at the tokens the model was built for (`tokenizer.model_max_length`): a model
    pretrained at 64 tokens cannot read 256, and the default `--max_length` must not make it try."""
    if requested > tokenizer.model_max_length:
        logger.warning("--max_length %d exceeds the model's %d tokens: using %d", requested,
                       tokenizer.model_max_length, tokenizer.model_max_length)
        return tokenizer.model_max_length
    return requested
