"""The end-to-end demo on the synthetic default (`make demo`, console script `behrt-demo`).

generate a synthetic cohort -> pretrain a small BEHRT (MLM + NVP) -> LoRA fine-tune it for a
clinical task -> evaluate against the oracle (the best achievable score) -> reload the adapter and
check it reproduces the predictions -> a model-card folder ready to push. Budgeted in optimizer
steps (deterministic), sized to finish within about ten minutes on two CPU cores.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from behrt_hf import load_synthetic
from behrt_hf.data_builders.synthetic_ehr import TASKS
from behrt_hf.training import finetune, pretrain
from behrt_hf.training.arguments import (
    keep_best_checkpoint,
    parse_args,
    pretraining_checkpoints,
    scripted_training_arguments,
)


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where everything is written."})
    synthetic: str = field(default="medium", metadata={"help": "Synthetic cohort: tiny, small, medium or large."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the cohort's size."})
    task: str = field(default="fall_1y", metadata={"help": f"One of {', '.join(TASKS)}, or 'all' (one adapter each)."})
    preset: str = field(default="small", metadata={"help": "Model size preset."})
    pretrain_steps: int = field(default=1000, metadata={"help": "Optimizer steps of pretraining."})
    finetune_steps: int = field(default=finetune.MAX_STEPS, metadata={"help": "Most optimizer steps of LoRA fine-tuning."})
    eval_every: int = field(default=finetune.EVAL_EVERY, metadata={"help": "Validation every N fine-tuning steps."})
    early_stopping_patience: int = field(default=finetune.EARLY_STOPPING_PATIENCE, metadata={
        "help": "Stop fine-tuning after this many evaluations without a lower validation loss (0: never)."})
    finetune_learning_rate: float = field(default=finetune.LEARNING_RATES["lora"], metadata={"help": "Peak learning rate of LoRA fine-tuning."})
    batch_size: int = field(default=32, metadata={"help": "Patients per step."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient."})
    seed: int = field(default=0, metadata={"help": "Seed of the cohort and of every run."})
    use_cpu: bool = field(default=False, metadata={"help": "Stay on the CPU even if an accelerator is present."})

    def __post_init__(self):
        if self.pretrain_steps < 1 or self.finetune_steps < 1 or self.batch_size < 1:
            raise ValueError("pretrain_steps, finetune_steps and batch_size must be positive.")
        if self.eval_every < 1 or self.early_stopping_patience < 0:
            raise ValueError(f"eval_every must be positive and early_stopping_patience >= 0, got {self.eval_every}, "
                             f"{self.early_stopping_patience}.")
        if self.task != "all" and self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS} or 'all', got {self.task!r}.")
        if self.finetune_learning_rate <= 0:
            raise ValueError(f"finetune_learning_rate must be positive, got {self.finetune_learning_rate}.")


def stage(title: str, start: float) -> None:
    print(f"\n[{time.perf_counter() - start:6.0f}s] {title}", flush=True)


def pretrain_arguments(args: DemoArguments, output_dir: Path):
    """The arguments of the demo's pretraining run (MLM + NVP for `pretrain_steps` steps)."""
    return (
        pretrain.ModelArguments(preset=args.preset),
        pretrain.DataArguments(objective="mlm+nvp", **cohort_fields(args)),
        scripted_training_arguments(
            output_dir, max_steps=args.pretrain_steps, learning_rate=pretrain.RECIPE["learning_rate"], seed=args.seed,
            batch_size=args.batch_size, use_cpu=args.use_cpu, logging_steps=max(1, args.pretrain_steps // 10),
            arguments_class=pretrain.PretrainingArguments,  # its defaults are the recipe's optimiser and schedule
            **pretraining_checkpoints(args.pretrain_steps),
        ),
    )


def finetune_arguments(args: DemoArguments, output_dir: Path, pretrained: Path, task: str | None = None):
    """The arguments of the demo's LoRA fine-tuning of `pretrained` for `task` (default `args.task`)."""
    return (
        finetune.FinetuneModelArguments(model_name_or_path=str(pretrained), mode="lora"),
        finetune.FinetuneDataArguments(task=task or args.task, **cohort_fields(args)),
        scripted_training_arguments(
            output_dir, max_steps=args.finetune_steps, learning_rate=args.finetune_learning_rate, seed=args.seed,
            batch_size=args.batch_size, use_cpu=args.use_cpu, logging_steps=args.eval_every,
            arguments_class=finetune.FinetuningArguments,
            **keep_best_checkpoint(args.eval_every, args.early_stopping_patience),
        ),
    )


def cohort_fields(args: DemoArguments) -> dict:
    fields = {"synthetic": args.synthetic, "data_seed_cohort": args.seed, "max_length": args.max_length}
    return {**fields, "num_patients": args.num_patients} if args.num_patients else fields


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((DemoArguments,), argv)
    start = time.perf_counter()
    root = Path(args.output_dir)
    tasks = list(TASKS) if args.task == "all" else [args.task]

    stage(f"1/3 pretraining a '{args.preset}' BEHRT (MLM + next-visit prediction) on the synthetic "
          f"'{args.synthetic}' cohort for {args.pretrain_steps} steps", start)
    pretrained = root / "pretrained"
    pre = pretrain.run(*pretrain_arguments(args, pretrained))

    cohort = load_synthetic(args.synthetic, seed=args.seed, num_patients=args.num_patients)  # cached by pretraining
    results = {}
    for task in tasks:
        stage(f"2/3 LoRA fine-tuning for {task} (at most {args.finetune_steps} steps, stopping once the validation "
              "loss stops falling; inputs cut at each patient's index visit), and a count-based logistic "
              "regression beside it", start)
        adapter = root / f"lora_{task}"
        # The kept checkpoint is the one of lowest validation loss: on a validation split of a few
        # hundred patients AUROC jumps from one evaluation to the next, the loss much less. Small
        # tasks overfit within a few epochs, so the run stops once the loss has not fallen for a while.
        fine = finetune.run(*finetune_arguments(args, adapter, pretrained, task))
        results[task] = {"finetune": fine, "count_baseline": count_baseline(cohort, task, args.seed)}

        stage(f"3/3 reloading the {task} adapter and writing its model card", start)
        results[task]["reload_difference"] = check_adapter_reload(adapter, cohort, task, args.max_length)
        results[task]["card_folder"] = str(write_card_folder(adapter))

    print(f"\n{'=' * 72}\nbehrt_hf demo finished in {time.perf_counter() - start:.0f}s\n{'=' * 72}")
    print_pretraining(pre)
    for task, result in results.items():
        print_task(task, result)
    print(f"pretraining curves: {pretrained / 'training_curves.png'}")
    return {"pretrain": pre, "tasks": results}


def count_baseline(cohort, task_name: str, seed: int) -> dict:
    """What a clinical ML user tries first: L2 logistic regression on code counts (all history and the
    last 90 / 365 days), age and sex, cut at the same index visits; C chosen on validation."""
    from behrt_hf.baselines import CountBaseline
    from behrt_hf.count_features import CountFeaturizer
    from behrt_hf.metrics import compute_binary_metrics
    from behrt_hf.tasks import Task

    task = Task(task_name)
    featurizer = CountFeaturizer().fit(cohort["train"], task)
    train, validation, test = (featurizer.transform(cohort[s], task) for s in ("train", "validation", "test"))
    baseline = CountBaseline("logistic", seed=seed).fit(train.matrix, train.labels, validation.matrix,
                                                             validation.labels)
    return compute_binary_metrics(baseline.predict_proba(test.matrix), test.labels)


def print_pretraining(pre: dict) -> None:
    """Pretraining beside the frequency baseline."""
    pre_eval = pre["eval"]
    rows = [
        ("masked-code accuracy (validation)", pre_eval.get("eval_mlm_accuracy"), pre["baseline"].get("mlm_accuracy")),
        ("next-visit micro-F1 (validation)", pre_eval.get("eval_nvp_micro_f1"), pre["baseline"].get("nvp_micro_f1")),
    ]
    print(f"{'pretraining':<36} {'model':>8} {'frequency baseline':>19}")
    for label, model, base in rows:
        print(f"{label:<36} {model:>8.3f} {base:>19.3f}")


def print_task(task: str, result: dict) -> None:
    """The task's test scores: BEHRT + LoRA, the count baseline and the oracle; plots and the card folder."""
    fine = result["finetune"]
    test = fine["report"]["test"]
    print(f"\n{task} on the test split ({test['model']['num_patients']} patients, "
          f"prevalence {test['model']['prevalence']:.1%})")
    print(f"{'':<36} {'AUROC':>8} {'AUPRC':>8} {'Brier':>8}")
    rows = [("BEHRT + LoRA", test["model"]), ("count logistic regression", result["count_baseline"])]
    if "oracle" in test:
        rows.append(("oracle (Bayes ceiling)", test["oracle"]))
    for label, m in rows:
        print(f"{label:<36} {m['auroc']:>8.3f} {m['auprc']:>8.3f} {m['brier']:>8.3f}")
    if "gap_to_oracle_auroc" in test:
        print(f"{'gap to the oracle (AUROC)':<36} {test['gap_to_oracle_auroc']:>8.3f}")
    percent = 100 * fine["trainable_parameters"] / fine["total_parameters"]
    print(f"LoRA trained {fine['trainable_parameters']:,} of {fine['total_parameters']:,} parameters ({percent:.1f}%); "
          f"adapter reload reproduces the predictions (max difference {result['reload_difference']:.1e})")
    adapter = Path(result["card_folder"])
    print("plots: " + ", ".join(str(adapter / p) for p in ("roc.png", "pr.png", "calibration.png", "training_curves.png")))
    print(f"ready to push: {adapter}  (behrt-push --folder {adapter} --repo_id you/behrt-{task}-lora)")


def check_adapter_reload(adapter: Path, cohort, task_name: str, max_length: int) -> float:
    """Reload the saved adapter with PEFT's Auto class; max |difference| from the saved test predictions."""
    import numpy as np
    import torch
    from peft import AutoPeftModelForSequenceClassification

    from behrt_hf import BehrtTokenizerFast, DataCollatorForBehrt
    from behrt_hf.tasks import Task

    saved = json.loads((adapter / "predictions_test.json").read_text())
    model = AutoPeftModelForSequenceClassification.from_pretrained(adapter, num_labels=1).eval()
    tokenizer = BehrtTokenizerFast.from_pretrained(adapter)
    task = Task(task_name)
    test = task.encode(task.eligible(cohort["test"]), tokenizer, max_length=max_length, desc="test")
    n = min(16, len(test))
    batch = DataCollatorForBehrt(tokenizer.pad_token_id)([test[i] for i in range(n)])
    batch.pop("labels")
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**batch).logits).reshape(-1).numpy()
    return float(np.abs(probabilities - np.asarray(saved["probability"][:n])).max())


def write_card_folder(adapter: Path) -> Path:
    """The adapter folder with its model card (README.md): what `push_to_hub` would upload."""
    from behrt_hf.hub import render_model_card

    summary = json.loads((adapter / "summary.json").read_text())
    card = render_model_card(adapter, summary, kind="adapter", base_model=summary["model"]["base_model"])
    card.save(adapter / "README.md")
    return adapter


def cli() -> None:
    """Console-script entry point (`behrt-demo`)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
