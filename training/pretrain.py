"""Pretrain BEHRT with masked-code modelling (MLM), next-visit prediction (NVP), or both.

    behrt-pretrain --output_dir runs/pretrain --synthetic small --objective mlm+nvp --preset small
    accelerate launch -m behrt_hf.training.pretrain --output_dir ...     # one or several devices
    behrt-pretrain config.json                                            # or config.yaml

`run(model_args, data_args, training_args)` follows transformers' run_mlm.py: log, detect the
last checkpoint, seed, data, tokenizer (vocabulary from the training split only), model,
collator, Trainer, train, evaluate, save metrics, model card; `main(argv)` parses and runs it. Rerunning the same command resumes from the last checkpoint in
`output_dir`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import SchedulerType, TrainingArguments

from behrt_hf import (
    BehrtForMaskedLM,
    BehrtForNextVisitPrediction,
    BehrtForPreTraining,
    BehrtTokenizerFast,
)
from behrt_hf.data_collator import TOKEN_COLUMNS, DataCollatorForPretraining, static_pretraining_targets
from behrt_hf.encoding import count_visits
from behrt_hf.hub import render_model_card
from behrt_hf.objectives import Objective
from behrt_hf.sampler import CutLengthGroupedSampler, SetEpochCallback
from behrt_hf.metrics.pretraining import PretrainingEvaluator, frequency_baseline
from behrt_hf.tokenization_behrt import CODE_HIERARCHIES, tokenizer_settings_for_preset
from behrt_hf.tracking import RunTrackerCallback, write_summary
from behrt_hf.training.arguments import CohortArguments, config_for_tokenizer, parse_args, parse_config_overrides
from behrt_hf.training.trainer import WSD_DECAY_FRACTION, BehrtTrainer, start_run

logger = logging.getLogger("behrt_hf.pretrain")

MODEL_CLASSES = {"mlm": BehrtForMaskedLM, "nvp": BehrtForNextVisitPrediction, "mlm+nvp": BehrtForPreTraining}

# The pretraining recipe's optimiser and schedule (README "Pretraining recipe"; chosen with
# `behrt-benchmark-pretraining`): the defaults of `behrt-pretrain` and the demo's pretraining run.
# Its model side is in the config's defaults (the mimetic query-key initialisation,
# `BehrtConfig.attention_init`) and the presets, its masking (40% of codes) in `DataArguments`.
RECIPE: dict = {
    "per_device_train_batch_size": 32,
    "learning_rate": 2e-3,
    "warmup_steps": 100,
    "weight_decay": 0.0,
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "lr_scheduler_type": "warmup_stable_decay",  # decaying over the last WSD_DECAY_FRACTION of the steps
}


@dataclass
class ModelArguments:
    preset: str = field(default="small", metadata={"help": "Model size: small, medium, large or original."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Config fields over the preset, e.g. 'hidden_size=64,num_hidden_layers=2,pooling=mean'."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from these weights (a folder or Hub id) instead of a fresh model."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' (default) or 'eager'."})


@dataclass
class DataArguments(CohortArguments):
    objective: str = field(default="mlm+nvp", metadata={"help": "mlm, nvp or mlm+nvp."})
    min_code_frequency: int = field(default=1, metadata={"help": "Rarer codes map to [UNK]."})
    max_vocab_size: int | None = field(default=None, metadata={"help": "Keep only the most frequent codes."})
    code_hierarchy: str | None = field(
        default=None,
        metadata={"help": "'category': ICD codes coarsened to their 3-character category (a smaller, denser vocabulary)."},
    )
    mlm_probability: float = field(
        default=0.4, metadata={"help": "Share of codes masked per training sequence (the recipe: 0.4; BERT used 0.15)."}
    )
    eval_mlm_probability: float = field(
        default=0.15,
        metadata={"help": "Share of codes masked in the fixed validation targets: the yardstick, whatever the training masking."},
    )
    max_eval_patients: int | None = field(default=None, metadata={"help": "Cap the evaluation set."})
    group_by_length: bool = field(
        default=True,
        metadata={"help": "Batch patients of similar length (less padding); false keeps --train_sampling_strategy."},
    )

    def __post_init__(self):
        self.objective = Objective.parse(self.objective, "--objective")
        super().__post_init__()
        for name in ("mlm_probability", "eval_mlm_probability"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"--{name} must be in (0, 1), got {getattr(self, name)}.")
        if self.code_hierarchy not in CODE_HIERARCHIES:
            raise ValueError(f"--code_hierarchy must be one of {CODE_HIERARCHIES[1:]} (or unset), got {self.code_hierarchy!r}.")


def _recipe_field(name: str, help: str):
    return field(default=RECIPE[name], metadata={"help": f"{help} (the recipe's default)."})


@dataclass
class PretrainingArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the pretraining recipe (`RECIPE`): a command that gives
    no training flags trains as the README's figures were measured, not at transformers' defaults
    (batch 8, learning rate 5e-5, no warm-up), which leave a small BEHRT near the frequency baseline."""

    per_device_train_batch_size: int = _recipe_field("per_device_train_batch_size", "Patients per step and device")
    learning_rate: float = _recipe_field("learning_rate", "Peak learning rate of AdamW")
    warmup_steps: float = _recipe_field("warmup_steps", "Linear warm-up steps (a value below 1: a share of the steps)")
    weight_decay: float = _recipe_field("weight_decay", "AdamW weight decay")
    adam_beta1: float = _recipe_field("adam_beta1", "AdamW beta1")
    adam_beta2: float = _recipe_field("adam_beta2", "AdamW beta2")
    lr_scheduler_type: SchedulerType | str = _recipe_field(
        "lr_scheduler_type", "Learning-rate schedule; warmup_stable_decay: warm-up, constant, then a cosine decay")
    decay_fraction: float = field(default=WSD_DECAY_FRACTION, metadata={
        "help": "warmup_stable_decay: share of the steps the decay spans (unless --lr_scheduler_kwargs sets "
                "num_decay_steps)."})


def encode_split(split: datasets.Dataset, tokenizer: BehrtTokenizerFast, data_args: DataArguments, desc: str):
    """Patients -> model inputs, plus `length` (for length-grouped batches) and `num_visits`."""

    def encode(batch):
        out = tokenizer.encode_patients(batch, max_length=data_args.max_length)
        out["length"] = [len(ids) for ids in out["input_ids"]]
        out["num_visits"] = count_visits(out["visit_ids"]).tolist()
        return out

    return split.map(
        encode, batched=True, remove_columns=split.column_names, num_proc=data_args.preprocessing_num_workers,
        desc=f"Encoding {desc}",
    )


def build_datasets(cohort, tokenizer, data_args, training_args):
    train = encode_split(cohort["train"], tokenizer, data_args, "train")
    evaluation = encode_split(cohort[data_args.eval_split], tokenizer, data_args, data_args.eval_split)
    if data_args.objective.nvp:  # a next visit needs at least two visits
        before = (len(train), len(evaluation))
        train = train.filter(lambda n: n >= 2, input_columns="num_visits")
        evaluation = evaluation.filter(lambda n: n >= 2, input_columns="num_visits")
        logger.info("NVP: kept %d/%d train and %d/%d eval patients with two or more visits",
                    len(train), before[0], len(evaluation), before[1])
    if data_args.max_eval_patients is not None:
        evaluation = evaluation.select(range(min(data_args.max_eval_patients, len(evaluation))))
    # Evaluation scores fixed masks and cuts, the same at every evaluation.
    evaluation = evaluation.map(
        static_pretraining_targets, with_indices=True, remove_columns=evaluation.column_names,
        fn_kwargs=dict(tokenizer=tokenizer, objective=data_args.objective, seed=training_args.seed,
                       mlm_probability=data_args.eval_mlm_probability),
        desc="Fixing evaluation targets",
    )
    train = train.remove_columns([c for c in train.column_names if c not in (*TOKEN_COLUMNS, "length")])
    train = train.add_column("example_id", list(range(len(train))))  # seeds the per-example draws
    return train, evaluation


def build_model(model_args: ModelArguments, data_args: DataArguments, tokenizer: BehrtTokenizerFast):
    cls = MODEL_CLASSES[data_args.objective]
    if model_args.model_name_or_path:
        model = cls.from_pretrained(model_args.model_name_or_path, attn_implementation=model_args.attn_implementation)
    else:
        model = cls(config_for_tokenizer(model_args.preset, tokenizer, model_args.config_overrides,
                                         attn_implementation=model_args.attn_implementation,
                                         max_position_embeddings=data_args.max_length))
    tokenizer.check_compatible(model.config)
    return model


def prepare_tokenizer(cohort, data_args, output_dir: Path, resuming: bool, preset: str = "small",
                      config_overrides: str | None = None) -> BehrtTokenizerFast:
    """Vocabulary from the training split only; on resume it must equal the one saved with the run.
    The `original` preset encodes as the BEHRT code did, and ages are numbered as the preset and
    `config_overrides` say (`tokenizer_settings_for_preset`)."""
    tokenizer = BehrtTokenizerFast.build_vocab(
        cohort["train"], min_frequency=data_args.min_code_frequency, max_size=data_args.max_vocab_size,
        model_max_length=data_args.max_length, code_hierarchy=data_args.code_hierarchy,
        **tokenizer_settings_for_preset(preset, parse_config_overrides(config_overrides)),
    )
    saved = output_dir / "tokenizer.json"
    if resuming and saved.exists():
        if BehrtTokenizerFast.from_pretrained(output_dir).get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                f"The vocabulary built from the data differs from the one saved in {output_dir}: the data changed "
                "since the checkpoint. Use a new --output_dir, or delete this one, to start over."
            )
    return tokenizer


def run(model_args: ModelArguments, data_args: DataArguments, training_args: TrainingArguments,
        callbacks: list | None = None) -> dict:
    """Pretrain (and evaluate) as the arguments say; returns the train and eval metrics and the baseline."""
    adapt_training_arguments(training_args, data_args)
    checkpoint = start_run(training_args, logger)  # logging, last checkpoint, seed
    output_dir = Path(training_args.output_dir)
    started = time.time()

    # data and vocabulary
    with training_args.main_process_first(desc="data"):
        cohort = data_args.load_cohort()
        tokenizer = prepare_tokenizer(cohort, data_args, output_dir, resuming=checkpoint is not None,
                                      preset=model_args.preset, config_overrides=model_args.config_overrides)
        train_dataset, eval_dataset = build_datasets(cohort, tokenizer, data_args, training_args)
    logger.info("vocabulary %d tokens; %d train / %d eval patients", len(tokenizer), len(train_dataset), len(eval_dataset))

    # model, collator, Trainer
    model = build_model(model_args, data_args, tokenizer)
    collator = DataCollatorForPretraining(tokenizer, objective=data_args.objective,
                                          mlm_probability=data_args.mlm_probability, seed=training_args.seed)
    evaluator = PretrainingEvaluator(data_args.objective, collator.first_code_id)
    trainer = BehrtTrainer(
        train_sampler=cut_length_sampler(training_args, collator, train_dataset),
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=evaluator.compute_metrics,
        preprocess_logits_for_metrics=evaluator.preprocess_logits_for_metrics,
        callbacks=[RunTrackerCallback(output_dir, collator), SetEpochCallback(collator), *(callbacks or [])],
    )
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(output_dir)

    # train; evaluate beside the frequency baseline
    train_metrics = train(trainer, checkpoint, collator) if training_args.do_train else {}
    eval_metrics = trainer.evaluate() if training_args.do_eval or training_args.do_train else {}
    baseline = frequency_baseline(train_dataset, eval_dataset, tokenizer, data_args.objective)

    # metrics, summary, model card
    if trainer.is_world_process_zero():
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        print(format_comparison(eval_metrics, baseline), flush=True)
        summary = {
            "objective": data_args.objective.value,
            "data": {"source": data_args.source, "train_patients": len(train_dataset),
                     "eval_patients": len(eval_dataset), "vocab_size": len(tokenizer),
                     "max_length": data_args.max_length},
            "model": {"class": type(model).__name__, "preset": model_args.preset,
                      "parameters": model.num_parameters(), "config": model.config.to_dict()},
            "training": {"wall_time_seconds": time.time() - started, **train_metrics},
            "eval": eval_metrics,
            "frequency_baseline": baseline,
        }
        write_summary(output_dir / "summary.json", summary)
        render_model_card(output_dir, summary, kind="model").save(output_dir / "README.md")
    return {"train": train_metrics, "eval": eval_metrics, "baseline": baseline}


def adapt_training_arguments(training_args: TrainingArguments, data_args: DataArguments) -> None:
    """What pretraining needs of the Trainer whatever the command line says."""
    training_args.remove_unused_columns = False  # the collator needs next_visit_codes etc.
    if data_args.group_by_length and training_args.train_sampling_strategy == "random":
        training_args.train_sampling_strategy = "group_by_length"
    if training_args.include_num_input_tokens_seen in (None, "no", False):
        training_args.include_num_input_tokens_seen = "non_padding"


def cut_length_sampler(training_args, collator, train_dataset) -> CutLengthGroupedSampler | None:
    """With NVP and length grouping, batches grouped by each epoch's cut lengths (None: the Trainer's)."""
    if training_args.train_sampling_strategy != "group_by_length" or not collator.objective.nvp:
        return None
    return CutLengthGroupedSampler(
        collator, train_dataset.with_format("arrow")["visit_ids"], train_dataset["example_id"],
        training_args.train_batch_size * training_args.gradient_accumulation_steps, seed=training_args.seed,
    )


def train(trainer: BehrtTrainer, checkpoint: str | None, collator: DataCollatorForPretraining) -> dict:
    """Train (resuming from `checkpoint`), save the model, the state and the train metrics."""
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    metrics = dict(result.metrics)
    tokens = trainer.state.num_input_tokens_seen
    metrics["train_tokens_per_second"] = tokens / max(metrics.get("train_runtime", 0), 1e-9)
    metrics["train_padding_fraction"] = collator.padding_fraction
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    return metrics


COMPARED = [
    ("mlm_accuracy", "masked-code accuracy"),
    ("mlm_top5_accuracy", "masked-code top-5 accuracy"),
    ("mlm_perplexity", "masked-code perplexity"),
    ("nvp_average_precision", "NVP average precision (per patient)"),
    ("nvp_micro_auroc", "NVP micro AUROC"),
    ("nvp_macro_auroc", "NVP macro AUROC"),
    ("nvp_recall@10", "NVP recall@10"),
    ("nvp_micro_f1", "NVP best-threshold micro-F1"),
]


def format_comparison(eval_metrics: dict, baseline: dict) -> str:
    rows = [(label, eval_metrics.get(f"eval_{key}"), baseline.get(key)) for key, label in COMPARED if key in baseline]
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {'model':>9}  {'frequency baseline':>18}"]
    lines += [f"{label:<{width}}  {model:>9.4f}  {base:>18.4f}" for label, model, base in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    """Parse `argv` (or one .json / .yaml file) and run."""
    return run(*parse_args((ModelArguments, DataArguments, PretrainingArguments), argv), callbacks=callbacks)


def cli() -> None:
    """Console-script entry point (`behrt-pretrain`): main() without its return value."""
    main()


if __name__ == "__main__":
    cli()
