"""Fine-tune BEHRT for a clinical prediction task: full, LoRA, linear probe, or two-stage.

    behrt-finetune --output_dir runs/hf --model_name_or_path runs/pretrain --task heart_failure_1y --mode lora
    behrt-finetune --output_dir runs/scratch --task heart_failure_1y --mode full      # from scratch
    behrt-finetune --output_dir runs/eval --model_name_or_path runs/hf --task heart_failure_1y  # evaluate only

The input of every patient is cut at the task's index visit (`index_visit_<task>`): nothing
recorded after it reaches the model. Patients a task excludes (label or index visit < 0) are
dropped. Class imbalance: by default the BCE loss weighs positives by `negatives / positives` of
the training labels (`--class_imbalance pos_weight`); `sampler` draws a class-balanced sample
instead (with an unweighted loss), `none` does neither. Never both. Either one multiplies the
odds the model learns by `negatives / positives`; after training the classifier's bias is shifted
by `-log(negatives / positives)` (a prior-shift correction), so the saved model's probabilities are
calibrated to the real prevalence again. Ranking metrics are unchanged by the shift.

Outputs in `output_dir`: the model (or the LoRA adapter) and tokenizer, `summary.json`,
`metrics.jsonl`, ROC / PR / calibration plots with the oracle's curve when the data has an
`oracle_<task>` column, and `predictions_<split>.json`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import AutoTokenizer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint
from transformers.utils import find_adapter_config_file

from behrt_hf import BehrtConfig, BehrtForSequenceClassification, BehrtTokenizerFast, DataCollatorForBehrt
from behrt_hf.metrics import compute_binary_metrics
from behrt_hf.plotting import plot_binary_predictions
from behrt_hf.tracking import RunTrackerCallback, write_summary
from behrt_hf.training.common import (
    BehrtTrainer,
    last_checkpoint,
    load_cohort,
    no_pinned_memory_on_cpu,
    parse_args,
    parse_config_overrides,
    setup_logging,
)

logger = logging.getLogger("behrt_hf.finetune")

MODES = ("full", "lora", "probe", "two_stage")
IMBALANCE = ("pos_weight", "sampler", "none")


@dataclass
class FinetuneModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Pretrained or fine-tuned BEHRT, or a LoRA adapter (folder or Hub id). "
                                   "None trains from scratch."}
    )
    preset: str = field(default="small", metadata={"help": "Size of a from-scratch model."})
    config_overrides: str | None = field(default=None, metadata={"help": "Config fields, e.g. 'pooling=mean'."})
    mode: str = field(default="lora", metadata={"help": "full, lora, probe (frozen encoder) or two_stage."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the LoRA branch (PEFT's default; 0.1 trained slower and worse here)."}
    )
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
        return [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]

    @property
    def modules_to_save(self) -> list[str]:
        return [m.strip() for m in self.lora_modules_to_save.split(",") if m.strip()]


@dataclass
class FinetuneDataArguments:
    synthetic: str | None = field(default="small", metadata={"help": "Synthetic cohort: tiny, small, medium, large."})
    dataset_path: str | None = field(default=None, metadata={"help": "A DatasetDict saved with save_to_disk."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the synthetic cohort's size."})
    data_seed_cohort: int = field(default=0, metadata={"help": "Seed of the synthetic cohort."})
    task: str = field(default="heart_failure_1y", metadata={"help": "Task name: uses label_<task>, index_visit_<task>."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default label_<task>)."})
    index_visit_column: str | None = field(
        default=None, metadata={"help": "Column with each patient's index visit (default index_visit_<task>)."}
    )
    label_fraction: float = field(default=1.0, metadata={"help": "Share of the training split with labels used."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient; older visits are dropped."})
    class_imbalance: str = field(default="pos_weight", metadata={"help": "pos_weight, sampler or none."})
    eval_split: str = field(default="validation", metadata={"help": "Split evaluated during training."})
    test_split: str = field(default="test", metadata={"help": "Split of the final report ('' to skip)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "num_proc of datasets.map."})

    def __post_init__(self):
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"--label_fraction must be in (0, 1], got {self.label_fraction}.")
        if self.class_imbalance not in IMBALANCE:
            raise ValueError(f"--class_imbalance must be one of {IMBALANCE}, got {self.class_imbalance!r}.")

    @property
    def label(self) -> str:
        return self.label_column or f"label_{self.task}"

    @property
    def index_visit(self) -> str:
        return self.index_visit_column or f"index_visit_{self.task}"

    @property
    def oracle(self) -> str:
        return f"oracle_{self.task}"


# --- data -------------------------------------------------------------------------------------


def eligible(split: datasets.Dataset, data_args: FinetuneDataArguments) -> datasets.Dataset:
    """Patients the task includes: a label and an index visit, both >= 0."""
    for column in (data_args.label, data_args.index_visit):
        if column not in split.column_names:
            raise ValueError(
                f"Column {column!r} is not in the data ({split.column_names}); the task needs a label and an "
                "index visit per patient (the input is cut there, so nothing after it leaks in)."
            )
    return split.filter(lambda y, i: y >= 0 and i >= 0, input_columns=[data_args.label, data_args.index_visit])


def require_both_classes(split: datasets.Dataset, name: str, data_args: FinetuneDataArguments) -> None:
    """Fail before training, not after it, when a split cannot be scored: AUROC needs both classes."""
    labels = np.asarray(split[data_args.label])
    positives = int(labels.sum())
    if positives == 0 or positives == len(labels):
        raise ValueError(
            f"Task {data_args.task!r}: the {name} split has {len(labels)} eligible patients and {positives} "
            f"positive, so AUROC cannot be computed on it. Use a larger cohort (e.g. --synthetic medium) "
            f"or another task."
        )


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


def encode(split: datasets.Dataset, tokenizer, data_args: FinetuneDataArguments, desc: str) -> datasets.Dataset:
    keep = {data_args.label: "labels", data_args.oracle: "oracle", "patient_id": "patient_id"}
    encoded = split.map(
        tokenizer.encode_patients,
        batched=True,
        fn_kwargs={"max_length": data_args.max_length, "until_visit": data_args.index_visit},
        remove_columns=[c for c in split.column_names if c not in keep],
        num_proc=data_args.preprocessing_num_workers,
        desc=f"Encoding {desc} up to the index visit",
    )
    return encoded.rename_columns({k: v for k, v in keep.items() if k in encoded.column_names and k != v})


# --- model ------------------------------------------------------------------------------------


def build_model(model_args: FinetuneModelArguments, tokenizer, pos_weight: float | None, trainable: bool = True):
    """The classifier to train or evaluate. `model_name_or_path` may be a pretrained or fine-tuned model,
    or a LoRA adapter (adapter_config.json), which is loaded onto its base model and trained further
    (`trainable`) or evaluated as it is: never wrapped in a second, fresh adapter."""
    head = dict(num_labels=1, problem_type="multi_label_classification",
                pos_weight=None if pos_weight is None else [pos_weight])
    source = model_args.model_name_or_path
    if source and find_adapter_config_file(source):
        return load_adapter(model_args, tokenizer, head, trainable)
    if source:
        model = BehrtForSequenceClassification.from_pretrained(
            model_args.model_name_or_path, attn_implementation=model_args.attn_implementation, **head
        )
    else:
        config = BehrtConfig.from_preset(
            model_args.preset, vocab_size=len(tokenizer), age_unit=tokenizer.age_unit, max_age=tokenizer.max_age,
            max_position_embeddings=tokenizer.model_max_length, pad_token_id=tokenizer.pad_token_id,
            **head, **parse_config_overrides(model_args.config_overrides),
        )
        config._attn_implementation = model_args.attn_implementation
        model = BehrtForSequenceClassification(config)
    tokenizer.check_compatible(model.config)
    if not trainable:  # evaluated as it is
        return model.requires_grad_(False)
    if model_args.mode == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS, r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout, target_modules=model_args.target_modules,
            modules_to_save=model_args.modules_to_save,
        )
        model = get_peft_model(model, lora)
    elif model_args.mode in ("probe", "two_stage"):
        set_encoder_trainable(model, False)
    return model


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


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


class BalancedSamplerTrainer(BehrtTrainer):
    """Draws a class-balanced sample of the training set each epoch (--class_imbalance sampler)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        labels = np.asarray(dataset["labels"])
        weights = np.where(labels == 1, 0.5 / max(labels.sum(), 1), 0.5 / max((labels == 0).sum(), 1))
        generator = torch.Generator().manual_seed(self.args.seed)
        return torch.utils.data.WeightedRandomSampler(weights.tolist(), len(labels), replacement=True,
                                                      generator=generator)


def binary_compute_metrics(eval_pred, logit_shift: float = 0.0) -> dict:
    """AUROC, AUPRC, Brier of the probabilities `sigmoid(logit + logit_shift)`."""
    logits = np.asarray(eval_pred.predictions).reshape(-1) + logit_shift
    return compute_binary_metrics(1.0 / (1.0 + np.exp(-logits)), eval_pred.label_ids)


def imbalance_logit_shift(data_args: FinetuneDataArguments, positives: int, negatives: int) -> float:
    """What to add to the trained logits so that probabilities match the real prevalence again.

    Weighing positives by w = negatives / positives (or drawing classes 50/50, the same odds) makes
    the loss minimal at logit(p) + log(w) for a patient whose true probability is p; -log(w) undoes it.
    """
    return 0.0 if data_args.class_imbalance == "none" else -math.log(negatives / positives)


def shift_classifier_bias(model, shift: float) -> None:
    """Add `shift` to the trained classifier bias (the PEFT copy under LoRA), so it is saved with it."""
    biases = [p for name, p in model.named_parameters()
              if p.requires_grad and "classifier" in name.split(".") and name.endswith("bias")]
    if len(biases) != 1:
        raise ValueError(f"Expected one trainable classifier bias to recalibrate, found {len(biases)}; "
                         "keep the classifier trainable (e.g. in --lora_modules_to_save).")
    with torch.no_grad():
        biases[0].add_(shift)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, callbacks: list | None = None) -> dict:
    model_args, data_args, training_args = parse_args(
        (FinetuneModelArguments, FinetuneDataArguments, TrainingArguments), argv
    )
    training_args.remove_unused_columns = False  # the collator picks its columns
    no_pinned_memory_on_cpu(training_args)
    if training_args.train_sampling_strategy == "random" and data_args.class_imbalance != "sampler":
        training_args.train_sampling_strategy = "group_by_length"

    # 1. logging, 2. last checkpoint
    setup_logging(training_args, logger)
    checkpoint = last_checkpoint(training_args, logger)
    output_dir = Path(training_args.output_dir)

    # 3. seed
    set_seed(training_args.seed)
    started = time.time()

    # 4. data
    cohort = load_cohort(data_args)
    splits = {"train": eligible(cohort["train"], data_args)}
    for name in dict.fromkeys(n for n in (data_args.eval_split, data_args.test_split) if n):  # in order
        splits[name] = eligible(cohort[name], data_args)
    for name, split in splits.items():
        require_both_classes(split, name, data_args)
    labelled_train = label_subset(splits["train"], data_args.label_fraction, data_args.label, training_args.seed)

    if model_args.model_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
        if not isinstance(tokenizer, BehrtTokenizerFast):
            raise ValueError(f"{model_args.model_name_or_path} holds a {type(tokenizer).__name__}, not a BEHRT tokenizer.")
    else:  # vocabulary from the whole training split: codes, not labels
        tokenizer = BehrtTokenizerFast.build_vocab(cohort["train"], model_max_length=data_args.max_length)
    train = encode(labelled_train, tokenizer, data_args, "train")
    evaluated = {name: encode(splits[name], tokenizer, data_args, name) for name in splits if name != "train"}

    labels = np.asarray(train["labels"])
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    pos_weight = negatives / positives if data_args.class_imbalance == "pos_weight" else None
    logit_shift = imbalance_logit_shift(data_args, positives, negatives)
    logger.warning("task %s: %d training patients (%d positive), pos_weight %s", data_args.task, len(train),
                   positives, f"{pos_weight:.2f}" if pos_weight else None)

    # 5. model
    model = build_model(model_args, tokenizer, pos_weight, trainable=training_args.do_train)
    trainable, total = count_parameters(model)
    print(f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%), mode {model_args.mode}")

    # 6. Trainer(s) and 7. training
    trainer_class = BalancedSamplerTrainer if data_args.class_imbalance == "sampler" else BehrtTrainer
    collator = DataCollatorForBehrt(pad_token_id=tokenizer.pad_token_id)

    training_shift = logit_shift if training_args.do_train else 0.0  # a model only evaluated is used as it is

    def make_trainer(args, extra_callbacks=()):
        return trainer_class(
            model=model, args=args, train_dataset=train, eval_dataset=evaluated.get(data_args.eval_split),
            processing_class=tokenizer, data_collator=collator,
            compute_metrics=functools.partial(binary_compute_metrics, logit_shift=training_shift),
            callbacks=[RunTrackerCallback(args.output_dir), *extra_callbacks],
        )

    train_metrics = {}
    if training_args.do_train:
        if model_args.mode == "two_stage":
            stage1 = TrainingArguments(**{**training_args.to_dict(), "output_dir": str(output_dir / "stage1_head"),
                                          "num_train_epochs": model_args.head_epochs, "max_steps": -1})
            stage1_dir = Path(stage1.output_dir)
            if not (stage1_dir / "done").exists():
                make_trainer(stage1).train(resume_from_checkpoint=get_last_checkpoint(str(stage1_dir))
                                           if stage1_dir.is_dir() else None)
                (stage1_dir / "done").write_text("head warm-up finished\n")
            set_encoder_trainable(model, True)
            training_args.learning_rate *= model_args.encoder_lr_factor
        trainer = make_trainer(training_args, callbacks or ())
        result = trainer.train(resume_from_checkpoint=checkpoint)
        train_metrics = dict(result.metrics)
        shift_classifier_bias(model, logit_shift)  # checkpoints keep the training logits; the saved model is calibrated
        trainer.compute_metrics = binary_compute_metrics  # its logits need no shift any more
        trainer.save_model()
        trainer.save_state()
    else:
        trainer = make_trainer(training_args, callbacks or ())
    tokenizer.save_pretrained(output_dir)

    trainable, total = count_parameters(model)  # two_stage ends with the encoder unfrozen

    # 8. evaluate against the oracle
    report = {}
    curves_by_split = {}
    for name, dataset in evaluated.items():
        logits = trainer.predict(dataset).predictions.reshape(-1)
        probs = 1.0 / (1.0 + np.exp(-logits))
        y = np.asarray(dataset["labels"])
        report[name] = {"model": compute_binary_metrics(probs, y)}
        curves = {model_args.mode: (probs, y)}
        if "oracle" in dataset.column_names:
            oracle = np.asarray(dataset["oracle"], dtype=np.float64)
            report[name]["oracle"] = compute_binary_metrics(oracle, y)
            report[name]["gap_to_oracle_auroc"] = report[name]["oracle"]["auroc"] - report[name]["model"]["auroc"]
            curves["oracle"] = (oracle, y)
        curves_by_split[name] = curves
        if trainer.is_world_process_zero():
            (output_dir / f"predictions_{name}.json").write_text(json.dumps({
                "patient_id": list(dataset["patient_id"]), "probability": probs.tolist(), "label": y.tolist(),
                **({"oracle": list(dataset["oracle"])} if "oracle" in dataset.column_names else {}),
            }))
    final = data_args.test_split or data_args.eval_split
    if trainer.is_world_process_zero():
        plots = plot_binary_predictions(curves_by_split[final], output_dir, title=f"{data_args.task}, {final} split")
        summary = {
            "task": data_args.task,
            "mode": model_args.mode if training_args.do_train else "evaluate",
            "data": {"source": data_args.dataset_path or f"synthetic:{data_args.synthetic}",
                     "label_fraction": data_args.label_fraction, "train_patients": len(train),
                     "train_positives": positives, "eval_patients": {k: len(v) for k, v in evaluated.items()},
                     "vocab_size": len(tokenizer), "max_length": data_args.max_length,
                     "class_imbalance": data_args.class_imbalance, "pos_weight": pos_weight,
                     "calibration_logit_shift": training_shift},
            "model": {"class": "BehrtForSequenceClassification", "preset": model_args.preset,
                      "base_model": model_args.model_name_or_path, "parameters": total,
                      "trainable_parameters": trainable, "trainable_percent": 100 * trainable / total},
            "training": {"wall_time_seconds": time.time() - started, **train_metrics},
            "eval": report[final]["model"],
            "splits": report,
            "plots": [str(p) for p in plots],
        }
        if "oracle" in report[final]:
            summary["oracle"] = report[final]["oracle"]
        if model_args.mode == "lora":
            adapter = output_dir / "adapter_model.safetensors"
            summary["model"]["adapter_bytes"] = adapter.stat().st_size if adapter.exists() else None
        write_summary(output_dir / "summary.json", summary)
        print(format_report(report, data_args.task))
        print("plots: " + ", ".join(str(p) for p in plots))
    return {"report": report, "trainable_parameters": trainable, "total_parameters": total,
            "output_dir": str(output_dir)}


def format_report(report: dict, task: str) -> str:
    lines = [f"{'split':<11} {'who':<7} {'AUROC':>7} {'AUPRC':>7} {'Brier':>7}  ({task})"]
    for split, entry in report.items():
        for who in ("model", "oracle"):
            if who in entry:
                m = entry[who]
                lines.append(f"{split:<11} {who:<7} {m['auroc']:>7.4f} {m['auprc']:>7.4f} {m['brier']:>7.4f}")
    return "\n".join(lines)


def cli() -> None:
    """Console-script entry point (`behrt-finetune`)."""
    main()


if __name__ == "__main__":
    cli()
