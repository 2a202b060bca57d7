"""Embedding quality on a synthetic cohort: does a BEHRT's patient embedding know what each patient has?

    behrt-embedding-report --model_name_or_path runs/pretrain --synthetic medium --output_dir runs/embedding_report
    behrt-embedding-report --model_name_or_path runs/lora --synthetic medium --task heart_failure_1y ...

For every chronic condition of the generator with at least `--min_positives` patients with and
without it: silhouette, precision@10 and a linear probe's AUROC of the model's embeddings beside a
randomly initialised BEHRT of the same config and a truncated SVD of bag-of-codes counts (see
`behrt_hf.embedding_report`); a 2-D map of the patients and one of the code embeddings.
`--split` (default `test`: patients the model was not trained on; comma-separate several) is
embedded, at most `--max_patients` of them (a seeded sample). With `--task` only the task's
eligible patients, each cut at its index visit, with conditions recorded up to that visit.

Outputs in `output_dir`: `report.json`, `patient_map.png`, `code_map.png`; the table is printed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behrt_hf.embedding_report import MAP_METHODS, embedding_report, format_table
from behrt_hf.embeddings import load_encoder
from behrt_hf.tasks import Task
from behrt_hf.training.arguments import comma_list, parse_args
from behrt_hf.training.embed import EmbedDataArguments, EmbedModelArguments

logger = logging.getLogger("behrt_hf.embedding_report")


@dataclass
class ReportDataArguments(EmbedDataArguments):
    split: str = field(default="test", metadata={"help": "Comma-separated splits to evaluate, or 'all'."})
    max_patients: int = field(default=5000, metadata={"help": "Evaluate at most this many patients (seeded sample)."})
    min_positives: int = field(
        default=20, metadata={"help": "A condition is scored when at least this many patients have it and lack it."}
    )
    map_patients: int = field(default=2000, metadata={"help": "Patients drawn on the 2-D map."})
    map_method: str = field(default="auto", metadata={"help": "auto (umap if umap-learn is installed, else tsne), umap, tsne or pca."})
    map_conditions: str = field(default="t2d,hf,ckd", metadata={"help": "Conditions coloured on the patient map."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample, the random BEHRT, the SVD and the probes."})

    def __post_init__(self):
        super().__post_init__()
        if self.map_method not in MAP_METHODS:
            raise ValueError(f"--map_method must be one of {MAP_METHODS}, got {self.map_method!r}.")
        if min(self.max_patients, self.min_positives, self.map_patients) < 1:
            raise ValueError("--max_patients, --min_positives and --map_patients must be >= 1.")


def run(model_args: EmbedModelArguments, data_args: ReportDataArguments) -> dict:
    """Evaluate, write report.json and the maps, print the table; returns the report."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    model, tokenizer = load_encoder(model_args.model_name_or_path, attn_implementation=model_args.attn_implementation)
    model.to(model_args.torch_device)
    patients, _ = data_args.patients(data_args.load_cohort())
    if len(patients) > data_args.max_patients:
        rng = np.random.default_rng(data_args.seed)
        patients = patients.select(np.sort(rng.choice(len(patients), data_args.max_patients, replace=False)))
    report = embedding_report(
        model, tokenizer, patients, model_args.output_dir, pooling=model_args.pooling,
        task=Task(data_args.task) if data_args.task else None,
        max_length=min(data_args.max_length, tokenizer.model_max_length), batch_size=model_args.batch_size,
        seed=data_args.seed, min_positives=data_args.min_positives,
        map_conditions=comma_list(data_args.map_conditions), map_patients=data_args.map_patients,
        map_method=data_args.map_method,
    )
    report = {"model": model_args.model_name_or_path, "source": data_args.source, "split": data_args.split, **report}
    path = Path(model_args.output_dir) / "report.json"
    path.write_text(json.dumps(report, indent=2))
    print(format_table(report["conditions"], list(report["dimensions"])))
    if report["skipped"]:
        print(f"skipped (fewer than {data_args.min_positives} patients with or without): "
              + ", ".join(f"{name} ({n})" for name, n in report["skipped"].items()))
    codes = ", ".join(f"{m} {s['group_precision_at_5']:.3f}" for m, s in report["code_map"].items())
    print(f"code neighbours in the same chapter/system (P@5; chance {next(iter(report['code_map'].values()))['chance']:.3f}): "
          f"{codes}")
    print(f"report: {path}; maps: {', '.join(report['plots'])}")
    return report


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` (or one .json / .yaml file) and run."""
    return run(*parse_args((EmbedModelArguments, ReportDataArguments), argv))


def cli() -> None:
    """Console-script entry point (`behrt-embedding-report`)."""
    main()


if __name__ == "__main__":
    cli()
