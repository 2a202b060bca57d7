"""Figures for the README: behrt-predict label rows/s beside the model's own forward rate, and the data.

    python tests/measure_predict_speed.py prepare OUT [ROWS_PER_PATIENT]        # e.g. /tmp/pm 120
    /usr/bin/time -v behrt-predict --model_name_or_path OUT/model_small --dataset_path OUT/data \
        --labels_dir OUT/labels.parquet --split all --output_dir OUT/pred_small --device cpu

`prepare` writes the synthetic `small` cohort (2,000 patients) with decimal patient ids, a label file
with up to `rows_per_patient` prediction times per patient (visit times and visit times + 1 day, so
many rows cut inside history), and an untrained classifier of each preset with its tokenizer. The
predict summary (`predict_summary.json`) holds `rows`, `seconds` and `model_forward_seconds`: the
model's own rate is rows / model_forward_seconds, the pipeline's (reading, joining, cutting,
encoding, padding, writing) rows / (seconds - model_forward_seconds).
"""

import sys
from datetime import timedelta
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from behrt_hf import BehrtConfig, BehrtForSequenceClassification, BehrtTokenizerFast, load_synthetic


def prepare(out: Path, rows_per_patient: int = 12, presets=("small", "medium")) -> None:
    cohort = load_synthetic("small", seed=0)
    datasets.DatasetDict(cohort).save_to_disk(str(out / "data"))
    rng = np.random.default_rng(0)
    subjects, times = [], []
    for split in cohort.values():
        for p in split.select_columns(["patient_id", "visits"]):
            visit_times = [v["time"] for v in p["visits"]]
            chosen = sorted(rng.choice(len(visit_times), size=min(len(visit_times), rows_per_patient // 2), replace=False))
            for i in chosen:
                subjects += [int(p["patient_id"])] * 2
                times += [visit_times[i], visit_times[i] + timedelta(days=1)]
    labels = pa.table({"subject_id": pa.array(subjects, pa.int64()), "prediction_time": pa.array(times, pa.timestamp("us")),
                       "boolean_value": pa.array(rng.random(len(subjects)) < 0.2)})
    pq.write_table(labels, out / "labels.parquet")
    tokenizer = BehrtTokenizerFast.build_vocab(cohort["train"], model_max_length=256)
    for preset in presets:
        config = BehrtConfig.from_preset(preset, vocab_size=len(tokenizer), max_position_embeddings=256, num_labels=1,
                                         problem_type="multi_label_classification")
        torch.manual_seed(0)
        BehrtForSequenceClassification(config).save_pretrained(out / f"model_{preset}")
        tokenizer.save_pretrained(out / f"model_{preset}")
    print(f"{labels.num_rows} label rows of {len(set(subjects))} patients in {out / 'labels.parquet'}")


if __name__ == "__main__":
    prepare(Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 12)
