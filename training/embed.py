"""Patient embeddings of a cohort: `embeddings.parquet`, one row per patient.

    behrt-embed --model_name_or_path runs/pretrain --synthetic medium --output_dir runs/embed
    behrt-embed --model_name_or_path runs/lora --synthetic medium --task heart_failure_1y --split test ...
    behrt-embed --model_name_or_path runs/pretrain --meds_root data/meds --pooling cls --output_dir ...

The model may be a pretrained or fine-tuned BEHRT or a LoRA adapter (merged into its base model).
The cohort: `--synthetic`, `--dataset_path` (the patient schema) or `--meds_root` (a MEDS folder,
read by `behrt_hf.load_meds`); `--split` names the splits to embed (default `all`, every split, in
the cohort's order, with a `split` column). Without `--task` each patient's whole record is
embedded and `prediction_time` is its last visit's time; with `--task` (a synthetic task) only the
task's eligible patients are embedded, each history cut at its index visit exactly as for
prediction, and `prediction_time` is the index visit's time. MEDS label files as the prediction
times (one row per label row) come with the MEDS-task work (issue 17).

Outputs in `output_dir`: `embeddings.parquet` (`behrt_hf.embeddings`) and `embed_summary.json`
(patients, seconds, patients/s); the throughput is printed too.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch

from behrt_hf.embeddings import POOLINGS, embed_patients, load_encoder, prediction_times, write_embeddings
from behrt_hf.tasks import Task
from behrt_hf.training.arguments import CohortArguments, comma_list, parse_args

logger = logging.getLogger("behrt_hf.embed")


@dataclass
class EmbedModelArguments:
    model_name_or_path: str = field(
        metadata={"help": "A pretrained or fine-tuned BEHRT, or a LoRA adapter (folder or Hub id)."}
    )
    output_dir: str = field(metadata={"help": "Where the outputs are written."})
    pooling: str = field(
        default="mean", metadata={"help": "cls ([CLS]'s last hidden state), mean (over real tokens; works for every "
                                          "checkpoint) or pooler (the model's pooler; not in masked-LM checkpoints)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Patients per forward pass."})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu, cuda, mps, ..."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' or 'eager'."})

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class EmbedDataArguments(CohortArguments):
    meds_root: str | None = field(
        default=None, metadata={"help": "A MEDS dataset folder (overrides --synthetic and --dataset_path)."}
    )
    split: str = field(default="all", metadata={"help": "Comma-separated splits to embed, or 'all'."})
    task: str | None = field(
        default=None, metadata={"help": "A synthetic task: embed its eligible patients, cut at the index visit."}
    )

    @property
    def source(self) -> str:
        return self.meds_root or super().source

    def load_cohort(self) -> datasets.DatasetDict:
        if self.meds_root:
            from behrt_hf import load_meds

            return load_meds(self.meds_root)
        return super().load_cohort()

    def patients(self, cohort: datasets.DatasetDict) -> tuple[datasets.Dataset, list[str]]:
        """The patients to embed (the chosen splits, each cut to the task's eligible patients) and
        each one's split."""
        names = list(cohort) if self.split == "all" else comma_list(self.split)
        missing = [name for name in names if name not in cohort]
        if missing:
            raise ValueError(f"--split {self.split!r}: {missing} not in the cohort's splits {list(cohort)}.")
        parts = [Task(self.task).eligible(cohort[name]) if self.task else cohort[name] for name in names]
        split = [name for name, part in zip(names, parts) for _ in range(len(part))]
        return datasets.concatenate_datasets(parts), split


def run(model_args: EmbedModelArguments, data_args: EmbedDataArguments) -> dict:
    """Embed the chosen patients and write `embeddings.parquet`; returns the summary."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    device = model_args.torch_device
    model, tokenizer = load_encoder(model_args.model_name_or_path, attn_implementation=model_args.attn_implementation)
    model.to(device)
    patients, split = data_args.patients(data_args.load_cohort())
    task = Task(data_args.task) if data_args.task else None
    max_length = min(data_args.max_length, tokenizer.model_max_length)

    started = time.perf_counter()
    vectors = embed_patients(model, tokenizer, patients, pooling=model_args.pooling, task=task,
                             batch_size=model_args.batch_size, max_length=max_length)
    seconds = time.perf_counter() - started
    output_dir = Path(model_args.output_dir)
    path = write_embeddings(output_dir / "embeddings.parquet", patients["patient_id"], vectors,
                            prediction_times(patients, task), split=split)
    summary = {
        "model": model_args.model_name_or_path, "source": data_args.source, "splits": sorted(set(split)),
        "task": data_args.task, "pooling": model_args.pooling, "patients": len(patients),
        "hidden_size": int(vectors.shape[1]), "max_length": max_length, "batch_size": model_args.batch_size,
        "device": str(device), "seconds": seconds, "patients_per_second": len(patients) / max(seconds, 1e-9),
        "finite": bool(np.isfinite(vectors).all()), "embeddings": str(path),
    }
    (output_dir / "embed_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(patients):,} patients embedded in {seconds:.1f}s ({summary['patients_per_second']:,.0f} patients/s, "
          f"{device}, pooling {model_args.pooling}) -> {path}")
    return summary


def main(argv: list[str] | None = None) -> dict:
    """Parse `argv` (or one .json / .yaml file) and run."""
    return run(*parse_args((EmbedModelArguments, EmbedDataArguments), argv))


def cli() -> None:
    """Console-script entry point (`behrt-embed`)."""
    main()


if __name__ == "__main__":
    cli()
