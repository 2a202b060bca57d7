"""Fine-tune BEHRT for a clinical prediction task: full, LoRA, linear probe, or two-stage.

    behrt-finetune --output_dir runs/hf --model_name_or_path runs/pretrain --task heart_failure_1y --mode lora
    behrt-finetune --output_dir runs/scratch --task heart_failure_1y --mode full      # from scratch
    behrt-finetune --output_dir runs/eval --model_name_or_path runs/hf --task heart_failure_1y  # evaluate only
    behrt-finetune --output_dir runs/mine --model_name_or_path runs/pretrain --meds_root meds/ --labels_dir labels/mine

A task is either the synthetic columns (`--task`: label_<task>, index_visit_<task>) or a MEDS label
file / folder (`--labels_dir`): its filled value column makes the task binary (`boolean_value`),
multiclass (`categorical_value` / `integer_value`, classes from the training labels) or regression
(`float_value`); each label row is one sample, the patient's history cut at its prediction_time.

The task's logic (the cut at the index visit, who is eligible, label subsets, class imbalance and
the prior-shift recalibration, predictions and the report) is `behrt_hf.tasks`; this script wires
it to the Trainer in run_mlm.py's order: `run(model_args, data_args, training_args)` logs,
detects the last checkpoint, seeds, prepares the data, builds the model, trains, evaluates and
writes the summary; `main(argv)` parses and runs it.

Outputs in `output_dir`: the model (or the LoRA adapter) and tokenizer, `summary.json`,
`metrics.jsonl`, ROC / PR / calibration plots with the oracle's curve when the data has an
`oracle_<task>` column, and `predictions_<split>.json`.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, EarlyStoppingCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import find_adapter_config_file

from behrt_hf import BehrtForSequenceClassification, BehrtTokenizerFast, DataCollatorForBehrt
from behrt_hf.plotting import plot_binary_predictions
from behrt_hf.labels import read_labels
from behrt_hf.tasks import (
    CLASS_IMBALANCE,
    ClassBalance,
    LabelKind,
    Task,
    balanced_sampler,
    encode_samples,
    fitted_max_length,
    format_report,
    join_labels,
    label_subset,
    report_scores,
    report_splits,
    require_both_classes,
    save_label_kind,
    score_compute_metrics,
    shift_classifier_bias,
    summarize,
)
from behrt_hf.tokenization_behrt import tokenizer_settings_for_preset
from behrt_hf.tracking import RunTrackerCallback, write_summary
from behrt_hf.training.arguments import (
    CohortArguments,
    comma_list,
    config_for_tokenizer,
    parse_args,
    parse_config_overrides,
)
from behrt_hf.training.trainer import BehrtTrainer, start_run

logger = logging.getLogger("behrt_hf.finetune")

MODES = ("full", "lora", "probe", "two_stage")


# The fine-tuning recipe's peak learning rate by mode (`--learning_rate` overrides it): a LoRA
# adapter, a probe or a model trained from scratch moves far from its start; a pretrained encoder
# trained in full keeps its features at a tenth of that. The demo and `behrt-benchmark` use the same.
LEARNING_RATES = {"lora": 2e-3, "probe": 2e-3, "two_stage": 2e-3, "full": 2e-4, "scratch": 2e-3}


# The budget of the runs the demo and `behrt-benchmark` start: at most MAX_STEPS steps, validation every
# EVAL_EVERY steps, stopping after EARLY_STOPPING_PATIENCE evaluations without a lower validation loss, then
# back to the best checkpoint. Small tasks overfit within a few epochs (README, "Fine-tuning").
MAX_STEPS, EVAL_EVERY, EARLY_STOPPING_PATIENCE = 600, 50, 6


@dataclass
class FinetuningArguments(TrainingArguments):
    """`TrainingArguments` whose defaults are the fine-tuning recipe: transformers' defaults (batch 8,
    learning rate 5e-5) leave a LoRA adapter close to where it started."""

    per_device_train_batch_size: int = field(default=32, metadata={"help": "Patients per step and device (the recipe's 32)."})
    learning_rate: float | None = field(
        default=None,
        metadata={"help": "Peak learning rate; by default the recipe's for the mode: " + ", ".join(
            f"{mode} {lr:g}" for mode, lr in LEARNING_RATES.items()) + " (full from a pretrained model; scratch = full without one)."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop once this many evaluations in a row found no lower validation loss "
                                        "(with --eval_strategy steps/epoch and --load_best_model_at_end, which "
                                        "then restores the best checkpoint)."})

    def __post_init__(self):
        super().__post_init__()
        if self.early_stopping_patience is not None:
            if self.early_stopping_patience < 1:
                raise ValueError(f"--early_stopping_patience must be >= 1, got {self.early_stopping_patience}.")
            if self.eval_strategy == "no" or not self.load_best_model_at_end:
                raise ValueError("--early_stopping_patience needs evaluations to compare and a best checkpoint to "
                                 "return to: add --eval_strategy steps (or epoch), a matching --save_strategy "
                                 "and --load_best_model_at_end true.")


def recipe_learning_rate(model_args: "FinetuneModelArguments") -> float:
    """The recipe's learning rate for `model_args` (`LEARNING_RATES`)."""
    if model_args.mode == "full" and not model_args.model_name_or_path:
        return LEARNING_RATES["scratch"]
    return LEARNING_RATES[model_args.mode]


@dataclass
class FinetuneModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained or fine-tuned BEHRT, or a LoRA adapter (folder or Hub id). "
                                   "None trains from scratch."}
    )
    preset: str = field(default="small", metadata={"help": "Size of a from-scratch model."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "Config fields, e.g. 'pooling=last'; over a pretrained model only the pooling and dropouts."})
    mode: str = field(default="lora", metadata={"help": "full, lora, probe (frozen encoder) or two_stage."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch (PEFT's default)."})
    lora_target_modules: str = field(
        default="query,key,value,dense", metadata={"help": "Comma-separated module names LoRA adapts."}
    )
    lora_modules_to_save: str = field(
        default="classifier", metadata={"help": "Comma-separated modules trained in full and saved with the adapter."}
    )
    head_epochs: float = field(default=1.0, metadata={"help": "two_stage: epochs of head warm-up, encoder frozen."})
    encoder_lr_factor: float = field(
        default=0.1, metadata={"help": "two_stage: learning rate of stage 2 = learning_rate x this."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "'sdpa' or 'eager'."})

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {MODES}, got {self.mode!r}.")
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}.")

    @property
    def target_modules(self) -> list[str]:
        return comma_list(self.lora_target_modules)

    @property
    def modules_to_save(self) -> list[str]:
        return comma_list(self.lora_modules_to_save)


@dataclass
class FinetuneDataArguments(CohortArguments):
    task: str = field(default="heart_failure_1y", metadata={
        "help": "Task name: uses label_<task>, index_visit_<task> (synthetic: heart_failure_1y, fall_1y, exacerbation_1y)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default label_<task>)."})
    index_visit_column: str | None = field(
        default=None, metadata={"help": "Column with each patient's index visit (default index_visit_<task>)."}
    )
    labels_dir: str | None = field(
        default=None, metadata={"help": "MEDS labels: a folder of **/*.parquet (as ACES writes them) or one parquet "
                                        "file; replaces the --task columns."}
    )
    label_split_column: str | None = field(
        default=None, metadata={"help": "A column of the label files naming each row's split (train / tuning / "
                                        "held_out); default: the patient's split from the data."}
    )
    strict_labels: bool = field(default=False, metadata={"help": "Fail on the first unusable label row."})
    label_fraction: float = field(default=1.0, metadata={"help": "Share of the training split with labels used."})
    class_imbalance: str = field(default="pos_weight", metadata={"help": "pos_weight, sampler or none."})
    test_split: str = field(default="test", metadata={"help": "Split of the final report ('' to skip)."})

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"--label_fraction must be in (0, 1], got {self.label_fraction}.")
        if self.class_imbalance not in CLASS_IMBALANCE:
            raise ValueError(f"--class_imbalance must be one of {CLASS_IMBALANCE}, got {self.class_imbalance!r}.")

    def as_task(self) -> Task:
        return Task(self.task, label=self.label_column or "", index_visit=self.index_visit_column or "")

    @property
    def task_name(self) -> str:
        return Path(self.labels_dir).stem if self.labels_dir else self.task


def task_samples(data_args: FinetuneDataArguments, cohort, kind: LabelKind | None = None):
    """(label kind, the patients each split's samples index into, the samples of train, the eval and the
    test split) from `--labels_dir` or the `--task` columns; every classification split scorable."""
    names = list(dict.fromkeys(n for n in ["train", data_args.eval_split, data_args.test_split] if n))
    if not data_args.labels_dir:
        task = data_args.as_task()
        splits = task.splits(cohort, names)
        return LabelKind(), splits, {name: task.samples(split) for name, split in splits.items()}
    labels, report = read_labels(data_args.labels_dir, strict=data_args.strict_labels,
                                 split_column=data_args.label_split_column)
    patients, samples, kind = join_labels(cohort, labels, report, kind, split_column=data_args.label_split_column)
    logger.warning("%s", report.summary())
    missing = [name for name in names if not len(samples.get(name, ()))]
    if missing:
        raise ValueError(f"{data_args.labels_dir}: no usable label row in the {missing} split(s) of "
                         f"{data_args.source} (splits: { {k: len(v) for k, v in samples.items()} }).")
    for name in names:
        require_both_classes(samples[name]["labels"], kind, data_args.task_name, name)
    return kind, {name: patients for name in names}, {name: samples[name] for name in names}


# --- main ---------------------------------------------------------------------------------------


def run(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments, training_args: TrainingArguments,
        callbacks: list | None = None) -> dict:
    """Fine-tune (or only evaluate) as the arguments say; returns the report and the parameter counts."""
    training_args.remove_unused_columns = False  # the collator picks its columns
    if training_args.learning_rate is None:
        training_args.learning_rate = recipe_learning_rate(model_args)
    if training_args.train_sampling_strategy == "random" and data_args.class_imbalance != "sampler":
        training_args.train_sampling_strategy = "group_by_length"
    checkpoint = start_run(training_args, logger)  # logging, last checkpoint, seed
    output_dir = Path(training_args.output_dir)
    started = time.time()

    # data: the task's samples, each patient's history cut at the prediction time
    cohort = data_args.load_cohort()
    kind, patients, samples = task_samples(data_args, cohort, saved_label_kind(model_args, training_args))
    tokenizer = load_tokenizer(model_args, data_args, cohort)
    encode = functools.partial(encode_samples, tokenizer=tokenizer,
                               max_length=fitted_max_length(data_args.max_length, tokenizer),
                               num_proc=data_args.preprocessing_num_workers)
    labelled_train = label_subset(samples["train"], data_args.label_fraction, "labels", training_args.seed,
                                  kind.problem)
    train = encode(labelled_train, patients["train"], desc="train")
    evaluated = {name: encode(split, patients[name], desc=name) for name, split in samples.items() if name != "train"}
    balance = class_balance(train["labels"], data_args.class_imbalance, kind)
    logger.warning("task %s (%s): %d training samples (%d positive), pos_weight %s", data_args.task_name,
                   kind.problem, len(train), balance.positives, f"{balance.pos_weight:.2f}" if balance.pos_weight else None)

    # model
    model = build_model(model_args, tokenizer, balance.pos_weight, trainable=training_args.do_train, kind=kind)
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%), mode {model_args.mode}")

    # collator, Trainer(s), training
    collator = DataCollatorForBehrt(pad_token_id=tokenizer.pad_token_id)
    training_shift = balance.logit_shift if training_args.do_train else 0.0  # a model only evaluated is used as it is

    def make_trainer(args, extra_callbacks=()):
        sampler = balanced_sampler(train["labels"], args.seed) if data_args.class_imbalance == "sampler" else None
        return BehrtTrainer(
            train_sampler=sampler, model=model, args=args, train_dataset=train,
            eval_dataset=evaluated.get(data_args.eval_split), processing_class=tokenizer, data_collator=collator,
            compute_metrics=functools.partial(score_compute_metrics, kind=kind, logit_shift=training_shift),
            callbacks=[RunTrackerCallback(args.output_dir), *extra_callbacks],
        )

    if training_args.do_train:
        trainer, train_metrics = train_model(make_trainer, model, model_args, training_args, checkpoint,
                                             balance.logit_shift, callbacks, kind)
    else:
        trainer, train_metrics = make_trainer(training_args, callbacks or ()), {}
    tokenizer.save_pretrained(output_dir)
    save_label_kind(output_dir, kind)
    trainable, total = model.num_parameters(only_trainable=True), model.num_parameters()  # two_stage ends unfrozen

    # evaluate against the oracle; predictions, plots, summary
    is_main = trainer.is_world_process_zero()
    if kind.problem == "binary":
        report, curves = report_splits(trainer, evaluated, model_args.mode, output_dir if is_main else None)
    else:
        report, curves = report_scores(trainer, evaluated, kind), {}
    if is_main:
        final = data_args.test_split or data_args.eval_split
        plots = (plot_binary_predictions(curves[final], output_dir, title=f"{data_args.task_name}, {final} split")
                 if kind.problem == "binary" else [])
        summary = summarize(
            Task(data_args.task_name), model_args.mode if training_args.do_train else "evaluate", report, final,
            data=data_summary(data_args, len(train), balance, evaluated, len(tokenizer), training_shift),
            model=model_summary(model_args, output_dir, trainable, total),
            training={"wall_time_seconds": time.time() - started, **train_metrics}, plots=plots,
        )
        write_summary(output_dir / "summary.json", summary)
        print(format_report(report, data_args.task_name) if kind.problem == "binary" else json.dumps(report, indent=1))
        print("plots: " + ", ".join(str(p) for p in plots))
    return {"report": report, "trainable_parameters": trainable, "total_parameters": total,
            "output_dir": str(output_dir)}


def saved_label_kind(model_args: FinetuneModelArguments, training_args: TrainingArguments) -> LabelKind | None:
    """The label kind of a model fine-tuned before (its classes fixed); None: decide from the labels."""
    from behrt_hf.tasks import load_label_kind

    source = model_args.model_name_or_path
    return load_label_kind(source) if source and not training_args.do_train else None


def class_balance(labels, strategy: str, kind: LabelKind) -> ClassBalance:
    """The class balance of binary training labels; multiclass and regression use none."""
    if kind.problem == "binary":
        return ClassBalance.of(labels, strategy)
    if strategy != "none":
        logger.warning("--class_imbalance %s applies to binary tasks; a %s task trains without it", strategy,
                       kind.problem)
    return ClassBalance(0, 0, "none")


def load_tokenizer(model_args: FinetuneModelArguments, data_args: FinetuneDataArguments, cohort) -> BehrtTokenizerFast:
    """The tokenizer saved with `model_name_or_path`; from scratch, a vocabulary of the whole training
    split (codes, not labels)."""
    if not model_args.model_name_or_path:
        return BehrtTokenizerFast.build_vocab(cohort["train"], model_max_length=data_args.max_length,
                                              **tokenizer_settings_for_preset(
                                                  model_args.preset, parse_config_overrides(model_args.config_overrides)))
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if not isinstance(tokenizer, BehrtTokenizerFast):
        raise ValueError(f"{model_args.model_name_or_path} holds a {type(tokenizer).__name__}, not a BEHRT tokenizer.")
    return tokenizer


def train_model(make_trainer, model, model_args: FinetuneModelArguments, training_args: TrainingArguments,
                checkpoint: str | None, logit_shift: float, callbacks: list | None, kind: LabelKind = LabelKind()):
    """Train (two_stage: the head first, encoder frozen), recalibrate the classifier, save; the Trainer and
    its train metrics."""
    if model_args.mode == "two_stage":
        stage1_dir = Path(training_args.output_dir) / "stage1_head"
        fields = {**training_args.to_dict(), "output_dir": str(stage1_dir), "num_train_epochs": model_args.head_epochs,
                  "max_steps": -1}
        fields.pop("early_stopping_patience", None)  # the head warm-up runs its epochs; stopping applies to stage 2
        stage1 = TrainingArguments(**fields)
        if not (stage1_dir / "done").exists():
            make_trainer(stage1).train(resume_from_checkpoint=get_last_checkpoint(str(stage1_dir))
                                       if stage1_dir.is_dir() else None)
            (stage1_dir / "done").write_text("head warm-up finished\n")
        set_encoder_trainable(model, True)
        training_args.learning_rate *= model_args.encoder_lr_factor
    patience = getattr(training_args, "early_stopping_patience", None)
    stopping = [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []
    trainer = make_trainer(training_args, [*(callbacks or ()), *stopping])
    result = trainer.train(resume_from_checkpoint=checkpoint)
    if kind.problem == "binary":
        shift_classifier_bias(model, logit_shift)  # checkpoints keep the training logits; the saved model is calibrated
    trainer.compute_metrics = functools.partial(score_compute_metrics, kind=kind)  # logits need no shift any more
    trainer.save_model()
    trainer.save_state()
    return trainer, dict(result.metrics)


def model_summary(model_args: FinetuneModelArguments, output_dir: Path, trainable: int, total: int) -> dict:
    summary = {"class": "BehrtForSequenceClassification", "preset": model_args.preset,
               "base_model": model_args.model_name_or_path, "parameters": total,
               "trainable_parameters": trainable, "trainable_percent": 100 * trainable / total}
    if model_args.mode == "lora":
        adapter = output_dir / "adapter_model.safetensors"
        summary["adapter_bytes"] = adapter.stat().st_size if adapter.exists() else None
    return summary


def data_summary(data_args: FinetuneDataArguments, train_patients: int, balance: ClassBalance, evaluated: dict,
                 vocab_size: int, logit_shift: float) -> dict:
    return {"source": data_args.source, "label_fraction": data_args.label_fraction, "train_patients": train_patients,
            "train_positives": balance.positives, "eval_patients": {k: len(v) for k, v in evaluated.items()},
            "vocab_size": vocab_size, "max_length": data_args.max_length,
            "class_imbalance": data_args.class_imbalance, "pos_weight": balance.pos_weight,
            "calibration_logit_shift": logit_shift}


# --- model ------------------------------------------------------------------------------------


def build_model(model_args: FinetuneModelArguments, tokenizer, pos_weight: float | None, trainable: bool = True,
                kind: LabelKind = LabelKind()):
    """The classifier to train or evaluate. `model_name_or_path` may be a pretrained or fine-tuned model,
    or a LoRA adapter (adapter_config.json), which is loaded onto its base model and trained further
    (`trainable`) or evaluated as it is: never wrapped in a second, fresh adapter."""
    head = dict(kind.head(), pos_weight=None if pos_weight is None else [pos_weight])
    source = model_args.model_name_or_path
    if source and find_adapter_config_file(source):
        if model_args.config_overrides:
            raise ValueError(f"--config_overrides {model_args.config_overrides!r}: {source} is a trained LoRA "
                             "adapter, whose base model's config cannot change under it.")
        return load_adapter(model_args, tokenizer, head, trainable)
    untrained_pooler = False
    if source:
        model, loading = BehrtForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, attn_implementation=model_args.attn_implementation,
            output_loading_info=True, **head, **head_overrides(model_args.config_overrides, source)
        )
        untrained_pooler = any(key.startswith("behrt.pooler.") for key in loading["missing_keys"])
    else:
        model = BehrtForSequenceClassification(config_for_tokenizer(
            model_args.preset, tokenizer, model_args.config_overrides, max_position_embeddings=tokenizer.model_max_length,
            attn_implementation=model_args.attn_implementation, **head))
    tokenizer.check_compatible(model.config)
    if not trainable:  # evaluated as it is
        return model.requires_grad_(False)
    if model_args.mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        modules_to_save, excluded = model_args.modules_to_save, None
        if untrained_pooler:  # freshly initialised (a masked-LM base has none): part of the head, saved with it
            modules_to_save, excluded = [*modules_to_save, "pooler"], ["pooler.dense"]
            logger.warning("%s has no trained pooler: the new pooler is trained in full and saved with the "
                           "adapter", source)
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout, target_modules=model_args.target_modules,
            modules_to_save=modules_to_save, exclude_modules=excluded,
        )
        model = get_peft_model(model, lora)
    elif model_args.mode in ("probe", "two_stage"):
        set_encoder_trainable(model, False)
    return model


# Config fields a pretrained encoder can be fine-tuned under: how it pools and how much it drops out.
# Any other field (sizes, vocabulary, age layout, positions) would not match the trained weights.
HEAD_OVERRIDES = ("pooling", "classifier_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")


def head_overrides(config_overrides: str | None, source: str) -> dict:
    """The `--config_overrides` a pretrained model takes (`HEAD_OVERRIDES`); any other field is an error."""
    overrides = parse_config_overrides(config_overrides)
    fixed = sorted(set(overrides) - set(HEAD_OVERRIDES))
    if fixed:
        raise ValueError(f"--config_overrides sets {', '.join(fixed)}, which {source}'s trained weights fix; over a "
                         f"pretrained model only {', '.join(HEAD_OVERRIDES)} can change (the rest apply from scratch).")
    return overrides


def load_adapter(model_args: FinetuneModelArguments, tokenizer, head: dict, trainable: bool):
    from peft import PeftConfig, PeftModel

    source = model_args.model_name_or_path
    if model_args.mode != "lora":
        raise ValueError(f"{source} is a LoRA adapter: it continues with --mode lora; for --mode "
                         f"{model_args.mode}, merge it into its base model first (PeftModel.merge_and_unload).")
    base_path = PeftConfig.from_pretrained(source).base_model_name_or_path
    base = BehrtForSequenceClassification.from_pretrained(
        base_path, attn_implementation=model_args.attn_implementation, **head
    )
    tokenizer.check_compatible(base.config)
    logger.warning("%s is a LoRA adapter on %s: its own LoRA settings apply, not the --lora_* arguments",
                   source, base_path)
    return PeftModel.from_pretrained(base, source, is_trainable=trainable)


def set_encoder_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze embeddings and transformer layers; the pooler and classifier stay trainable
    (the pooler is the head's first layer: a masked-LM checkpoint has none)."""
    for name, parameter in model.named_parameters():
        if name.startswith(("behrt.embeddings.", "behrt.encoder.")):
            parameter.requires_grad = trainable


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    """Parse `argv` (or one .json / .yaml file) and run."""
    return run(*parse_args((FinetuneModelArguments, FinetuneDataArguments, FinetuningArguments), argv),
               callbacks=callbacks)


def cli() -> None:
    """Console-script entry point (`behrt-finetune`)."""
    main()


if __name__ == "__main__":
    cli()
