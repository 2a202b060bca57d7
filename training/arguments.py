"""Arguments of the training scripts: parsing, the cohort arguments every script shares, and the
`TrainingArguments` that the demo and the benchmark give each run they start."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import HfArgumentParser, TrainingArguments

from behrt_hf import BehrtConfig


def parse_args(dataclass_types, argv: list[str] | None = None):
    """Command-line arguments, or a single .json / .yaml file holding them all."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def comma_list(text: str, cast=str) -> list:
    """'a, b,,c' -> ['a', 'b', 'c']: the value of a comma-separated argument, blanks left out."""
    return [cast(item.strip()) for item in text.split(",") if item.strip()]


def parse_config_overrides(text: str | None) -> dict:
    """'hidden_size=64,pooling=mean' -> typed keyword arguments of BehrtConfig."""
    if not text:
        return {}
    fields = {f.name for f in dataclasses.fields(BehrtConfig)}
    kwargs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in fields:
            raise ValueError(f"config_overrides: {item!r} is not 'field=value' with a BehrtConfig field.")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a bare string such as pooling=mean
    return kwargs


def config_for_tokenizer(preset: str, tokenizer, config_overrides: str | None = None, **fields) -> BehrtConfig:
    """A new model's config: `preset` with `tokenizer`'s vocabulary size, age ids and padding id, then
    `fields`, then `config_overrides` ('name=value,...') over all of them."""
    return BehrtConfig.from_preset(preset, **{
        "vocab_size": len(tokenizer), "age_unit": tokenizer.age_unit, "max_age": tokenizer.max_age,
        "pad_token_id": tokenizer.pad_token_id, **fields, **parse_config_overrides(config_overrides)})


@dataclass
class CohortArguments:
    """Where the patients come from and how they are encoded: shared by pretraining and fine-tuning."""

    synthetic: str | None = field(
        default="small", metadata={"help": "Synthetic cohort to generate: tiny, small, medium or large."}
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "A DatasetDict in the patient schema saved with save_to_disk (overrides --synthetic)."},
    )
    meds_root: str | None = field(
        default=None,
        metadata={"help": "A MEDS dataset folder (data/**/*.parquet + metadata/), read with the MEDS reader "
                          "(overrides --synthetic and --dataset_path)."},
    )
    num_patients: int | None = field(default=None, metadata={"help": "Override the synthetic cohort's size."})
    data_seed_cohort: int = field(default=0, metadata={"help": "Seed of the synthetic cohort."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient; older visits are dropped."})
    eval_split: str = field(default="validation", metadata={"help": "Split evaluated during training."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of datasets.map."})

    def __post_init__(self):
        if self.synthetic is None and self.dataset_path is None and self.meds_root is None:
            raise ValueError("Give --synthetic NAME, --dataset_path PATH or --meds_root DIR.")
        if self.max_length < 8:
            raise ValueError(f"--max_length must be at least 8, got {self.max_length}.")

    @property
    def source(self) -> str:
        """The cohort as the run summaries name it."""
        return self.meds_root or self.dataset_path or f"synthetic:{self.synthetic}"

    def load_cohort(self) -> datasets.DatasetDict:
        """`--meds_root` (read with `load_meds`), `--dataset_path` (a DatasetDict saved with
        save_to_disk) or the synthetic cohort `--synthetic`."""
        return load_cohort(self)


def load_cohort(args) -> datasets.DatasetDict:
    """The cohort named by `args.meds_root`, else `args.dataset_path`, else the synthetic
    `args.synthetic` (any object with CohortArguments' source fields, e.g. the speed benchmark's)."""
    if getattr(args, "meds_root", None):
        from behrt_hf import load_meds

        return load_meds(args.meds_root)
    if args.dataset_path:
        return datasets.load_from_disk(args.dataset_path)
    from behrt_hf import load_synthetic

    return load_synthetic(args.synthetic, seed=args.data_seed_cohort, num_patients=args.num_patients)


# --- runs started by the demo and the benchmark -----------------------------------------------


def scripted_training_arguments(
    output_dir: str | Path, *, max_steps: int, learning_rate: float, seed: int, batch_size: int, use_cpu: bool,
    arguments_class: type[TrainingArguments] = TrainingArguments, **settings,
) -> TrainingArguments:
    """The `TrainingArguments` (or `arguments_class`) of a run the demo or the benchmark starts: a budget
    of optimizer steps, evaluation batches of 64, no tracker or progress bar; `settings` add or replace
    any field."""
    return arguments_class(**{
        "output_dir": str(output_dir), "do_train": True, "max_steps": max_steps, "learning_rate": learning_rate,
        "seed": seed, "per_device_train_batch_size": batch_size, "per_device_eval_batch_size": 64,
        "report_to": "none", "disable_tqdm": True, "use_cpu": use_cpu, **settings,
    })


def keep_best_checkpoint(every: int, patience: int | None = None) -> dict:
    """Fields of `FinetuningArguments` that evaluate and save every `every` steps and end on the
    checkpoint of lowest validation loss (validation AUROC on a few hundred patients is too noisy to
    pick by); with `patience`, training stops once that many evaluations in a row found no lower loss."""
    return {
        "eval_strategy": "steps", "eval_steps": every, "save_strategy": "steps", "save_steps": every,
        "save_total_limit": 1, "load_best_model_at_end": True, "metric_for_best_model": "loss",
        "greater_is_better": False, **({"early_stopping_patience": patience} if patience else {}),
    }


def pretraining_checkpoints(steps: int) -> dict:
    """`TrainingArguments` fields of a scripted pretraining run: one checkpoint kept, and the recipe's
    100 warm-up steps capped at a tenth of a short run (the demo's 1,000 steps warmed up for 50 at
    first: 0.571 masked-code accuracy on validation against 0.608 with 100)."""
    return {
        "save_strategy": "steps", "save_steps": max(1, steps // 2), "save_total_limit": 1,
        "warmup_steps": max(1, min(100, steps // 10)),  # pretrain.RECIPE["warmup_steps"]
    }
