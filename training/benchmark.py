"""Does pretraining pay off? Fine-tuning modes against training from scratch, at several label fractions.

    behrt-benchmark --output_dir runs/benchmark --synthetic medium --task fall_1y

On one generated cohort, with the same seeds: (a) from scratch, (b) pretrained + full fine-tuning,
(c) pretrained + LoRA, (d) pretrained + probe, each at label fractions 1%, 10% and 100% of the
training split. Every run gets the same number of optimizer steps and keeps its checkpoint of
lowest validation loss; figures are on the test split, beside the oracle (the Bayes ceiling). On
a synthetic cohort the test split is, by default, every patient of an independent cohort of the
same preset (seed + 1): about ten times the cohort's own test split, so that arms a few
hundredths of AUROC apart can be ranked (the README gives the figures).

Writes into `output_dir`: `SUMMARY.txt` (table, winner per fraction), `summary.json`, and
charts: ROC and PR curves per fraction, AUROC bars, and validation-AUROC training curves, with the
oracle on every chart. The pretrained model is made with `behrt-pretrain` unless
`--pretrained_model` names one.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behrt_hf.plotting import plot_binary_predictions, pyplot
from behrt_hf.tracking import read_jsonl, write_summary
from behrt_hf.training import finetune, pretrain
from behrt_hf.training.arguments import (
    comma_list,
    keep_best_checkpoint,
    parse_args,
    pretraining_checkpoints,
    scripted_training_arguments,
)

logger = logging.getLogger("behrt_hf.benchmark")

ARMS = {  # name -> (uses the pretrained model, fine-tuning mode)
    "scratch": (False, "full"),
    "full": (True, "full"),
    "lora": (True, "lora"),
    "probe": (True, "probe"),
}


@dataclass
class BenchmarkArguments:
    output_dir: str = field(default="runs/benchmark", metadata={"help": "Where runs, charts and summaries go."})
    synthetic: str = field(
        default="medium",
        metadata={"help": "Synthetic cohort: tiny, small, medium or large (small's test split is too small to rank arms)."},
    )
    dataset_path: str | None = field(default=None, metadata={"help": "A saved DatasetDict instead of --synthetic."})
    independent_test: bool = field(
        default=True,
        metadata={"help": "Synthetic cohorts: test on every patient of an independent cohort (seed + 1) instead of "
                          "the cohort's own, ten times smaller test split."},
    )
    num_patients: int | None = field(default=None, metadata={"help": "Override the cohort's size."})
    task: str = field(default="fall_1y", metadata={"help": "Task of the synthetic cohort."})
    label_fractions: str = field(default="0.01,0.1,1.0", metadata={"help": "Comma-separated label fractions."})
    arms: str = field(default="scratch,full,lora,probe", metadata={"help": f"Comma-separated, of {list(ARMS)}."})
    preset: str = field(default="small", metadata={"help": "Model size."})
    config_overrides: str | None = field(default=None, metadata={"help": "Config fields over the preset."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient."})
    seed: int = field(default=0, metadata={"help": "Seed of the cohort, the subsets and every run."})
    pretrained_model: str | None = field(default=None, metadata={"help": "Use this pretrained model (skip pretraining)."})
    pretrain_steps: int = field(default=4000, metadata={"help": "Optimizer steps of pretraining (mlm+nvp)."})
    pretrain_learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate of pretraining."})
    finetune_steps: int = field(default=600, metadata={"help": "Optimizer steps of every fine-tuning run."})
    eval_every: int = field(default=100, metadata={"help": "Validation every N steps; the best checkpoint is kept."})
    batch_size: int = field(default=32, metadata={"help": "Patients per step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Learning rate of scratch, LoRA and probe."})
    full_finetune_learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate of pretrained + full."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on CPU even if an accelerator is present."})

    def __post_init__(self):
        self.fractions = comma_list(self.label_fractions, float)
        self.arm_names = comma_list(self.arms)
        unknown = set(self.arm_names) - set(ARMS)
        if unknown:
            raise ValueError(f"Unknown arms {sorted(unknown)}; choose from {list(ARMS)}.")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {self.fractions}.")


def training_arguments(args: BenchmarkArguments, output_dir: Path, steps: int, learning_rate: float, **settings):
    """The TrainingArguments of one of the benchmark's runs: the same seed, batch and logging for all."""
    return scripted_training_arguments(
        output_dir, max_steps=steps, learning_rate=learning_rate, seed=args.seed, batch_size=args.batch_size,
        use_cpu=args.use_cpu, logging_steps=max(1, args.eval_every // 2), **settings,
    )


def cohort_fields(args: BenchmarkArguments) -> dict:
    """The cohort arguments of every run: the saved cohort, or the synthetic one."""
    fields = {"data_seed_cohort": args.seed, "max_length": args.max_length}
    if args.dataset_path:
        return {**fields, "dataset_path": args.dataset_path}
    return {**fields, "synthetic": args.synthetic, **({"num_patients": args.num_patients} if args.num_patients else {})}


def cohort_with_independent_test(args: BenchmarkArguments, root: Path) -> str:
    """Save the synthetic cohort (seed) with its test split replaced by all of cohort seed + 1; its path.

    The generating process is the same for every seed (only the patients' random draws differ), so
    the second cohort is a fresh sample of the same population. Its patient ids get a prefix.
    """
    import datasets

    from behrt_hf import load_synthetic

    path = root / "cohort"
    if (path / "dataset_dict.json").exists():
        return str(path)
    cohort = load_synthetic(args.synthetic, seed=args.seed, num_patients=args.num_patients)
    other_seed = args.seed + 1
    other = load_synthetic(args.synthetic, seed=other_seed, num_patients=args.num_patients)
    test = datasets.concatenate_datasets([other[name] for name in other]).map(
        lambda pid: {"patient_id": f"seed{other_seed}-{pid}"}, input_columns="patient_id",
        desc=f"Independent test patients (cohort seed {other_seed})",
    )
    partial = root / "cohort.partial"
    datasets.DatasetDict(train=cohort["train"], validation=cohort["validation"], test=test).save_to_disk(str(partial))
    partial.rename(path)  # only a complete cohort is ever read back
    return str(path)


def pretraining_arguments(args: BenchmarkArguments, output_dir: Path):
    """The arguments of the pretraining run (MLM + NVP) every pretrained arm starts from."""
    return (
        pretrain.ModelArguments(preset=args.preset, config_overrides=args.config_overrides),
        pretrain.DataArguments(objective="mlm+nvp", **cohort_fields(args)),
        training_arguments(args, output_dir, args.pretrain_steps, args.pretrain_learning_rate, eval_strategy="no",
                           **pretraining_checkpoints(args.pretrain_steps)),
    )


def arm_arguments(args: BenchmarkArguments, output_dir: Path, arm: str, fraction: float, pretrained: str | None):
    """The arguments of one arm's fine-tuning at one label fraction."""
    uses_pretrained, mode = ARMS[arm]
    if uses_pretrained:
        model_args = finetune.FinetuneModelArguments(model_name_or_path=pretrained, mode=mode)
    else:
        model_args = finetune.FinetuneModelArguments(preset=args.preset, config_overrides=args.config_overrides,
                                                     mode=mode)
    lr = args.full_finetune_learning_rate if arm == "full" else args.learning_rate
    return (
        model_args,
        finetune.FinetuneDataArguments(task=args.task, label_fraction=fraction, **cohort_fields(args)),
        training_arguments(args, output_dir, args.finetune_steps, lr, **keep_best_checkpoint(args.eval_every)),
    )


def run_pretraining(args: BenchmarkArguments, root: Path) -> str:
    out = root / "pretrained"
    if not (out / "model.safetensors").exists():
        pretrain.run(*pretraining_arguments(args, out))
    return str(out)


def run_arm(args: BenchmarkArguments, root: Path, arm: str, fraction: float, pretrained: str | None) -> dict:
    out = root / "runs" / f"{arm}_{fraction:g}"
    summary_path = out / "summary.json"
    if not summary_path.exists():  # finished earlier: a rerun of the benchmark resumes
        finetune.run(*arm_arguments(args, out, arm, fraction, pretrained))
    return json.loads(summary_path.read_text())


def load_predictions(run_dir: Path, split: str = "test") -> dict:
    return json.loads((run_dir / f"predictions_{split}.json").read_text())


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((BenchmarkArguments,), argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    source, test_split = args.dataset_path or f"synthetic '{args.synthetic}'", "test split"
    if args.independent_test and not args.dataset_path:
        args.dataset_path = cohort_with_independent_test(args, root)
        test_split = f"all of cohort seed {args.seed + 1} as test"
    needs_pretrained = any(ARMS[a][0] for a in args.arm_names)
    pretrained = (args.pretrained_model or run_pretraining(args, root)) if needs_pretrained else None

    results: dict[str, dict[str, dict]] = {}
    for fraction in args.fractions:
        for arm in args.arm_names:
            print(f"== {arm} at {fraction:.0%} of the labels", flush=True)
            results.setdefault(f"{fraction:g}", {})[arm] = run_arm(args, root, arm, fraction, pretrained)

    table, winners = summary_table(results, args, source, test_split)
    (root / "SUMMARY.txt").write_text(table + "\n")
    charts = draw_charts(root, results, args)
    summary = {
        "task": args.task, "cohort": source, "test": test_split,
        "pretrained_model": pretrained,
        "label_fractions": args.fractions, "arms": args.arm_names, "winners": winners,
        "results": {f: {arm: {"test": s["eval"], "oracle": s.get("oracle"), "trainable_parameters":
                              s["model"]["trainable_parameters"], "train_patients": s["data"]["train_patients"]}
                        for arm, s in arms.items()} for f, arms in results.items()},
        "charts": [str(c) for c in charts],
    }
    write_summary(root / "summary.json", summary)
    print(table)
    print("charts: " + ", ".join(str(c) for c in charts))
    return summary


def summary_table(results: dict, args: BenchmarkArguments, source: str, test_split: str) -> tuple[str, dict]:
    test_patients = next(iter(next(iter(results.values())).values()))["eval"]["num_patients"]
    lines = [f"task {args.task} on {source} ({test_split}: {test_patients} patients), "
             f"{args.finetune_steps} steps per run",
             f"{'labels':>7} {'arm':<8} {'patients':>8} {'AUROC':>7} {'AUPRC':>7} {'Brier':>7} {'gap':>7}"]
    winners = {}
    for fraction, arms in results.items():
        oracle = next((s["oracle"] for s in arms.values() if s.get("oracle")), None)
        for arm, s in arms.items():
            m = s["eval"]
            gap = f"{oracle['auroc'] - m['auroc']:7.4f}" if oracle else "      -"
            lines.append(f"{float(fraction):>7.0%} {arm:<8} {s['data']['train_patients']:>8} "
                         f"{m['auroc']:>7.4f} {m['auprc']:>7.4f} {m['brier']:>7.4f} {gap}")
        if oracle:
            lines.append(f"{float(fraction):>7.0%} {'oracle':<8} {'':>8} {oracle['auroc']:>7.4f} {oracle['auprc']:>7.4f} "
                         f"{oracle['brier']:>7.4f}")
        winners[fraction] = max(arms, key=lambda a: arms[a]["eval"]["auroc"])
        lines.append(f"{'':>7} winner: {winners[fraction]}")
    return "\n".join(lines), winners


def draw_charts(root: Path, results: dict, args: BenchmarkArguments) -> list[Path]:
    plt = pyplot()
    charts = []
    oracle_auroc = None
    for fraction, arms in results.items():
        curves = {}
        for arm in arms:
            p = load_predictions(root / "runs" / f"{arm}_{float(fraction):g}")
            curves[arm] = (np.asarray(p["probability"]), np.asarray(p["label"]))
            if "oracle" in p:
                curves.setdefault("oracle", (np.asarray(p["oracle"]), np.asarray(p["label"])))
        charts += plot_binary_predictions(curves, root, prefix=f"labels{float(fraction):g}_",
                                          title=f"{float(fraction):.0%} labels")[:2]
        oracle_auroc = next((s["oracle"]["auroc"] for s in arms.values() if s.get("oracle")), oracle_auroc)

    # AUROC bars: arms side by side per fraction, oracle as a line
    fractions = list(results)
    width = 0.8 / len(args.arm_names)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, arm in enumerate(args.arm_names):
        values = [results[f][arm]["eval"]["auroc"] for f in fractions]
        ax.bar(np.arange(len(fractions)) + i * width, values, width, label=arm)
    if oracle_auroc is not None:
        ax.axhline(oracle_auroc, color="black", linestyle="--", label=f"oracle {oracle_auroc:.3f}")
    ax.set_xticks(np.arange(len(fractions)) + width * (len(args.arm_names) - 1) / 2,
                  [f"{float(f):.0%}" for f in fractions])
    ax.set(xlabel="share of training labels", ylabel="test AUROC", ylim=(0.4, 1.0), title=args.task)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(root / "auroc_bars.png", dpi=110)
    plt.close(fig)
    charts.append(root / "auroc_bars.png")

    # training curves: validation AUROC against the step, one panel per fraction
    fig, axes = plt.subplots(1, len(fractions), figsize=(4.2 * len(fractions), 3.4), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for arm in args.arm_names:
            records = read_jsonl(root / "runs" / f"{arm}_{float(fraction):g}" / "metrics.jsonl")
            points = [(r["step"], r["eval_auroc"]) for r in records if "eval_auroc" in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=arm)
        if oracle_auroc is not None:
            ax.axhline(oracle_auroc, color="black", linestyle="--", label="oracle")
        ax.set(title=f"{float(fraction):.0%} labels", xlabel="step", ylabel="validation AUROC")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "training_curves.png", dpi=110)
    plt.close(fig)
    charts.append(root / "training_curves.png")
    return charts


def cli() -> None:
    """Console-script entry point (`behrt-benchmark`)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
