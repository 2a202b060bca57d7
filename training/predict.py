"""Predict the rows of a MEDS label file with a BEHRT model: `OUT/predictions.parquet` for meds-evaluation.

    behrt-predict --model_name_or_path runs/mine --meds_root meds/ --labels_dir labels/mine \
        --split held_out --output_dir runs/mine/predict

`--model_name_or_path` is a fine-tuned model, a LoRA adapter (merged into its base for inference)
or a base (pretrained) model, whose classification head is then untrained (a warning says so).
Each usable label row of the split is one sample: the patient's history cut at its
`prediction_time` (`behrt_hf.encoding.cut_at_times`), encoded, predicted in batches of
`--batch_size` and written as it goes (memory bounded by the batch, not the cohort), in label-file
order. Unusable rows are skipped and counted (the drop report is printed and saved as
`drop_report.json`); `--strict_labels` fails instead.

Columns of `predictions.parquet`, exactly (meds-evaluation rejects extra ones):

- binary (`boolean_value` labels): `subject_id`, `prediction_time`, `boolean_value`,
  `predicted_boolean_value` (probability >= 0.5), `predicted_boolean_probability`;
- multiclass: `subject_id`, `prediction_time`, the label column (`categorical_value` or
  `integer_value`), `predicted_<label column>` (the most probable class) and
  `predicted_class_probabilities` (a list, in the order of the model's `label_kind.json` classes);
- regression: `subject_id`, `prediction_time`, `float_value`, `predicted_float_value`.

meds-evaluation scores the binary file (AUROC, AUPRC, Brier, calibration, ...); it has no
multiclass or regression metrics, so those files are for your own scoring.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer
from transformers.utils import find_adapter_config_file

from behrt_hf import BehrtForSequenceClassification, BehrtTokenizerFast
from behrt_hf.data_collator import pad_features
from behrt_hf.embeddings import encoded_rows
from behrt_hf.labels import read_labels
from behrt_hf.schema import MEDS_SPLIT_NAMES
from behrt_hf.tasks import (
    SPLIT_FROM_MEDS,
    LabelKind,
    encode_sample_batch,
    fitted_max_length,
    join_labels,
    load_label_kind,
    softmax,
)
from behrt_hf.training.arguments import CohortArguments, parse_args

logger = logging.getLogger("behrt_hf.predict")
PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class PredictArguments(CohortArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A fine-tuned BEHRT, a LoRA adapter or a base model (folder or Hub id)."}
    )
    labels_dir: str | None = field(
        default=None, metadata={"help": "MEDS labels: a folder of **/*.parquet or one parquet file."}
    )
    split: str = field(default="held_out", metadata={"help": "Split to predict: held_out / tuning / train (MEDS "
                                                             "names; test / validation too) or 'all'."})
    output_dir: str | None = field(default=None, metadata={"help": "Where predictions.parquet is written."})
    batch_size: int = field(default=256, metadata={"help": "Label rows per forward pass."})
    label_split_column: str | None = field(
        default=None, metadata={"help": "A column of the label files naming each row's split (default: the "
                                        "patient's split from the data)."}
    )
    strict_labels: bool = field(default=False, metadata={"help": "Fail on the first unusable label row."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda if available), 'cpu', 'cuda', 'mps'."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' or 'eager'."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("model_name_or_path", "labels_dir", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"--{name} is required.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def load_classifier(source: str, kind: LabelKind, attn_implementation: str = "sdpa"):
    """The model to predict with, in eval mode: a fine-tuned classifier, a LoRA adapter merged into its
    base, or a base model with a fresh (untrained) head."""
    head = kind.head()
    if find_adapter_config_file(source):
        from peft import PeftConfig, PeftModel

        base = BehrtForSequenceClassification.from_pretrained(
            PeftConfig.from_pretrained(source).base_model_name_or_path, attn_implementation=attn_implementation, **head)
        model = PeftModel.from_pretrained(base, source).merge_and_unload()
    else:
        model = BehrtForSequenceClassification.from_pretrained(source, attn_implementation=attn_implementation, **head)
        if not _has_head(source):
            logger.warning("%s has no fine-tuned classifier: its predictions come from an untrained head", source)
    return model.eval()


def _has_head(source: str) -> bool:
    """Whether a local model folder holds classifier weights (Hub ids: assumed fine-tuned)."""
    weights = Path(source, "model.safetensors")
    if not weights.is_file():
        return True
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return any(k.startswith("classifier.") for k in f.keys())


def output_schema(kind: LabelKind) -> pa.Schema:
    value = kind.value_column
    value_type = {"boolean_value": pa.bool_(), "integer_value": pa.int64(), "float_value": pa.float64(),
                  "categorical_value": pa.string()}[value]
    fields = [("subject_id", pa.int64()), ("prediction_time", pa.timestamp("us")), (value, value_type)]
    if kind.problem == "binary":
        fields += [("predicted_boolean_value", pa.bool_()), ("predicted_boolean_probability", pa.float64())]
    elif kind.problem == "regression":
        fields += [("predicted_float_value", pa.float64())]
    else:
        fields += [(f"predicted_{value}", value_type), ("predicted_class_probabilities", pa.list_(pa.float32()))]
    return pa.schema(fields)


def predictions_table(batch: pa.Table, logits: np.ndarray, kind: LabelKind, schema: pa.Schema) -> pa.Table:
    """One batch of predictions.parquet rows from the samples and the model's logits."""
    value = kind.value_column
    columns = {"subject_id": batch.column("patient_id").cast(pa.int64()), "prediction_time": batch.column("prediction_time"),
               value: batch.column(value)}
    if kind.problem == "binary":
        probability = 1.0 / (1.0 + np.exp(-logits.reshape(-1).astype(np.float64)))
        columns.update(predicted_boolean_value=probability >= 0.5, predicted_boolean_probability=probability)
    elif kind.problem == "regression":
        columns["predicted_float_value"] = logits.reshape(-1).astype(np.float64)
    else:
        probabilities = softmax(logits).astype(np.float32)
        columns[f"predicted_{value}"] = pa.array(np.asarray(kind.classes, dtype=object)[probabilities.argmax(1)].tolist())
        columns["predicted_class_probabilities"] = pa.array(list(probabilities))
    return pa.table(columns).cast(schema)


def run(args: PredictArguments) -> dict:
    """Predict the label rows of `args.split`; write predictions.parquet and drop_report.json; the summary."""
    logging.basicConfig(level=logging.WARNING)
    started = time.time()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    kind = load_label_kind(args.model_name_or_path) or LabelKind()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    if not isinstance(tokenizer, BehrtTokenizerFast):
        raise ValueError(f"{args.model_name_or_path} holds a {type(tokenizer).__name__}, not a BEHRT tokenizer.")
    model = load_classifier(args.model_name_or_path, kind, args.attn_implementation)
    tokenizer.check_compatible(model.config)
    device = args.torch_device()
    model.to(device)

    max_length = fitted_max_length(args.max_length, tokenizer)
    cohort = args.load_cohort()
    labels, report = read_labels(args.labels_dir, strict=args.strict_labels, split_column=args.label_split_column)
    patients, samples, kind = join_labels(cohort, labels, report, kind, split_column=args.label_split_column)
    names = list(samples) if args.split == "all" else [SPLIT_FROM_MEDS.get(args.split, args.split)]
    missing = [n for n in names if n not in samples]
    if missing:
        raise ValueError(f"--split {args.split!r}: the data has no split {missing[0]!r} (it has "
                         f"{[MEDS_SPLIT_NAMES.get(n, n) for n in samples]}).")
    chosen = [samples[n] for n in names]
    rows = sum(len(s) for s in chosen)
    print(report.summary())
    report.save(output_dir / "drop_report.json")

    schema = output_schema(kind)
    forward_seconds, loop_started = 0.0, time.perf_counter()
    with pq.ParquetWriter(output_dir / PREDICTIONS_FILE, schema) as writer, \
            tqdm(total=rows, desc="Predicting", unit="rows") as progress, torch.inference_mode():
        for split in chosen:
            for start in range(0, len(split), args.batch_size):
                batch = split.with_format("arrow")[start:start + args.batch_size]
                encoded = encode_sample_batch(batch, patients, tokenizer, max_length)
                inputs = {k: v.to(device) for k, v in pad_features(encoded_rows(encoded), tokenizer.pad_token_id).items()}
                tick = time.perf_counter()
                logits = model(**inputs).logits.float().cpu().numpy()
                forward_seconds += time.perf_counter() - tick
                writer.write_table(predictions_table(batch, logits, kind, schema))
                progress.update(batch.num_rows)
    pipeline_seconds = time.perf_counter() - loop_started - forward_seconds  # gather, cut, encode, pad, write
    summary = {"model": args.model_name_or_path, "source": args.source, "labels": args.labels_dir, "split": args.split,
               "problem": kind.problem, "rows": rows, "skipped": dict(report.counts), "seconds": time.time() - started,
               "model_forward_seconds": forward_seconds, "pipeline_seconds": pipeline_seconds,
               "output": str(output_dir / PREDICTIONS_FILE)}
    (output_dir / "predict_summary.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {rows} predictions to {output_dir / PREDICTIONS_FILE}: model {rows / max(forward_seconds, 1e-9):,.0f} "
          f"rows/s, the pipeline around it {rows / max(pipeline_seconds, 1e-9):,.0f} rows/s")
    return summary


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` (or one .json / .yaml file) and run."""
    (args,) = parse_args((PredictArguments,), argv)
    return run(args)


def cli() -> None:
    """Console-script entry point (`behrt-predict`)."""
    main()


if __name__ == "__main__":
    cli()
