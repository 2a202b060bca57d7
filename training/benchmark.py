"""Does pretraining pay off, and does BEHRT beat counting codes? Fine-tuning modes against training
from scratch and against count-based baselines, at several label fractions and few-shot counts.

    behrt-benchmark --output_dir runs/benchmark --synthetic medium --task fall_1y
    behrt-benchmark --output_dir runs/fewshot --synthetic medium --task fall_1y --label_fractions 1.0 \
        --shots 1,2,4,8,16,32,64,128 --draws 5

On one generated cohort, with the same seeds: (a) from scratch, (b) pretrained + full fine-tuning,
(c) pretrained + LoRA, (d) pretrained + probe, and the count baselines (`behrt_hf.baselines`:
logistic regression and gradient-boosted trees on `behrt_hf.count_features`, the same cut history),
each at label fractions (1%, 10%, 100% of the training split) and, with `--shots`, at k labelled
patients per class (EHRSHOT's few-shot protocol), `--draws` subsets each.

Selection uses labels a low-label user would have: each subset of the training labels comes with
a validation subset drawn the same way (the same fraction of the validation split, or k patients
per class), and every run picks its checkpoint (BEHRT: lowest validation loss) or its
hyperparameters (baselines: validation AUROC) on that subset only, never on the full validation
split. Every BEHRT run gets the same number of optimizer steps. Figures are on the test split,
beside the oracle (the Bayes ceiling). On a synthetic cohort the test split is, by default, every
patient of an independent cohort of the same preset (seed + 1): about ten times the cohort's own
test split, so that arms a few hundredths of AUROC apart can be ranked.

Uncertainty (`behrt_hf.stats`): every AUROC / AUPRC gets a 95% bootstrap interval (test patients
resampled, seeded); each arm is compared with the best count baseline and with scratch by a paired
bootstrap on the same resamples (difference, interval, p-value). With several draws, a figure is
the mean over draws and the spread (sd) over draws is shown beside it.

Writes into `output_dir`: `SUMMARY.txt` (table, one verdict line per setting: who wins and whether
significantly), `SUBGROUPS.txt` (AUROC and calibration by sex and age band), `summary.json`, and
charts: ROC and PR curves per setting, AUROC bars with intervals, AUROC against shots, and
validation-AUROC training curves, with the oracle on every chart. The pretrained model is made
with `behrt-pretrain` unless `--pretrained_model` names one.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behrt_hf.baselines import BASELINES, CountBaseline
from behrt_hf.metrics import compute_binary_metrics
from behrt_hf.plotting import plot_precision_recall, plot_roc, pyplot
from behrt_hf.stats import age_bands, bootstrap_metrics, format_subgroups, paired_bootstrap, subgroup_metrics
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
    shots: str = field(
        default="", metadata={"help": "Comma-separated labelled patients per class, e.g. 1,2,4,8,16,32,64,128 "
                                      "(EHRSHOT's few-shot settings); validation gets as many per class."})
    draws: int = field(default=1, metadata={"help": "Subsets drawn per label fraction / shot count (use >= 5 with "
                                                    "--shots): figures are means over draws, with their spread."})
    arms: str = field(default="scratch,full,lora,probe", metadata={"help": f"Comma-separated, of {list(ARMS)}."})
    baselines: str = field(default="logistic,gbm", metadata={"help": f"Count baselines, of {list(BASELINES)}."})
    bootstrap_resamples: int = field(default=1000, metadata={"help": "Bootstrap resamples of the test patients."})
    preset: str = field(default="small", metadata={"help": "Model size."})
    config_overrides: str | None = field(default=None, metadata={"help": "Config fields over the preset."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient."})
    seed: int = field(default=0, metadata={"help": "Seed of the cohort, the subsets and every run (+ draw)."})
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
        self.shot_counts = comma_list(self.shots, int)
        self.arm_names = comma_list(self.arms)
        self.baseline_names = comma_list(self.baselines)
        for kind, names, known in (("arms", self.arm_names, ARMS), ("baselines", self.baseline_names, BASELINES)):
            unknown = set(names) - set(known)
            if unknown:
                raise ValueError(f"Unknown {kind} {sorted(unknown)}; choose from {list(known)}.")
        if not self.arm_names and not self.baseline_names:
            raise ValueError("Give at least one arm or baseline.")
        if any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"label fractions must be in (0, 1], got {self.fractions}.")
        if any(k < 1 for k in self.shot_counts):
            raise ValueError(f"shots must be >= 1 patient per class, got {self.shot_counts}.")
        if not self.fractions and not self.shot_counts:
            raise ValueError("Give --label_fractions or --shots.")
        if self.draws < 1 or self.bootstrap_resamples < 10:
            raise ValueError(f"--draws must be >= 1 and --bootstrap_resamples >= 10, got {self.draws}, "
                             f"{self.bootstrap_resamples}.")

    @property
    def settings(self) -> list[Setting]:
        return [Setting(fraction=f) for f in self.fractions] + [Setting(shots=k) for k in self.shot_counts]

    @property
    def contenders(self) -> list[str]:
        """Every arm and baseline, in table order."""
        return self.arm_names + self.baseline_names


@dataclass(frozen=True)
class Setting:
    """How many training labels a run gets: a fraction of the training split, or k patients per class."""

    fraction: float | None = None
    shots: int | None = None

    @property
    def key(self) -> str:
        return f"{self.fraction:g}" if self.shots is None else f"k{self.shots}"

    @property
    def label(self) -> str:
        return f"{self.fraction:.0%}" if self.shots is None else f"{self.shots}/class"

    @classmethod
    def from_key(cls, key: str) -> Setting:
        return cls(shots=int(key[1:])) if key.startswith("k") else cls(fraction=float(key))

    def rows(self, labels: np.ndarray, seed: int) -> np.ndarray:
        """Rows of `labels` (one split's eligible patients) that keep their label: stratified, seeded."""
        if self.shots is None:
            return fraction_rows(labels, self.fraction, seed)
        rng = np.random.default_rng(seed)
        keep = []
        for value in (0, 1):
            members = np.flatnonzero(labels == value)
            if len(members) == 0:
                raise ValueError(f"{self.shots} shots: the split has no eligible patient with label {value}.")
            keep.append(rng.choice(members, size=min(self.shots, len(members)), replace=False))
        return np.sort(np.concatenate(keep))


def fraction_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows `tasks.label_subset` keeps (its rule, called on a table of row numbers)."""
    import datasets

    from behrt_hf.tasks import label_subset

    table = datasets.Dataset.from_dict({"y": np.asarray(labels), "row": np.arange(len(labels))})
    return np.asarray(label_subset(table, fraction, "y", seed)["row"], dtype=np.int64)


def training_arguments(args: BenchmarkArguments, output_dir: Path, steps: int, learning_rate: float, seed: int | None
                       = None, **settings):
    """The TrainingArguments of one of the benchmark's runs: the same seed, batch and logging for all."""
    return scripted_training_arguments(
        output_dir, max_steps=steps, learning_rate=learning_rate, seed=args.seed if seed is None else seed,
        batch_size=args.batch_size, use_cpu=args.use_cpu, logging_steps=max(1, args.eval_every // 2), **settings,
    )


def cohort_fields(args: BenchmarkArguments, dataset_path: str | None = None) -> dict:
    """The cohort arguments of every run: the saved cohort (or `dataset_path`), or the synthetic one."""
    fields = {"data_seed_cohort": args.seed, "max_length": args.max_length}
    if dataset_path or args.dataset_path:
        return {**fields, "dataset_path": dataset_path or args.dataset_path}
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
    save_complete(datasets.DatasetDict(train=cohort["train"], validation=cohort["validation"], test=test), path)
    return str(path)


def save_complete(cohort, path: Path) -> None:
    """Save a DatasetDict so that only a complete one is ever read back (written aside, then renamed)."""
    partial = path.with_name(path.name + ".partial")
    cohort.save_to_disk(str(partial))
    partial.rename(path)


def saved_cohort(args: BenchmarkArguments, root: Path) -> tuple[str, str]:
    """(path of the saved cohort every run reads, what its test split is)."""
    if args.dataset_path:
        return args.dataset_path, "test split"
    if args.independent_test:
        return cohort_with_independent_test(args, root), f"all of cohort seed {args.seed + 1} as test"
    path = root / "cohort"
    if not (path / "dataset_dict.json").exists():
        from behrt_hf import load_synthetic

        save_complete(load_synthetic(args.synthetic, seed=args.seed, num_patients=args.num_patients), path)
    return str(path), "test split"


def pretraining_arguments(args: BenchmarkArguments, output_dir: Path):
    """The arguments of the pretraining run (MLM + NVP) every pretrained arm starts from."""
    return (
        pretrain.ModelArguments(preset=args.preset, config_overrides=args.config_overrides),
        pretrain.DataArguments(objective="mlm+nvp", **cohort_fields(args)),
        training_arguments(args, output_dir, args.pretrain_steps, args.pretrain_learning_rate, eval_strategy="no",
                           **pretraining_checkpoints(args.pretrain_steps)),
    )


def arm_arguments(args: BenchmarkArguments, output_dir: Path, arm: str, cohort: str, pretrained: str | None,
                  seed: int | None = None):
    """The arguments of one arm's fine-tuning on a labelled cohort (`labelled_cohort`: its subsets hold
    the only labels, so every label of it is used)."""
    uses_pretrained, mode = ARMS[arm]
    if uses_pretrained:
        model_args = finetune.FinetuneModelArguments(model_name_or_path=pretrained, mode=mode)
    else:
        model_args = finetune.FinetuneModelArguments(preset=args.preset, config_overrides=args.config_overrides,
                                                     mode=mode)
    lr = args.full_finetune_learning_rate if arm == "full" else args.learning_rate
    return (
        model_args,
        finetune.FinetuneDataArguments(task=args.task, label_fraction=1.0, **cohort_fields(args, cohort)),
        training_arguments(args, output_dir, args.finetune_steps, lr, seed, **keep_best_checkpoint(args.eval_every)),
    )


def run_pretraining(args: BenchmarkArguments, root: Path) -> str:
    out = root / "pretrained"
    if not (out / "model.safetensors").exists():
        pretrain.run(*pretraining_arguments(args, out))
    return str(out)


def run_dir(root: Path, name: str, setting: Setting, draw: int) -> Path:
    return root / "runs" / (f"{name}_{setting.key}" + (f"_d{draw}" if draw else ""))


def run_arm(args: BenchmarkArguments, out: Path, arm: str, cohort: str, pretrained: str | None, seed: int) -> dict:
    summary_path = out / "summary.json"
    if not summary_path.exists():  # finished earlier: a rerun of the benchmark resumes
        finetune.run(*arm_arguments(args, out, arm, cohort, pretrained, seed))
    return json.loads(summary_path.read_text())


def load_predictions(run_dir: Path, split: str = "test") -> dict:
    return json.loads((run_dir / f"predictions_{split}.json").read_text())
