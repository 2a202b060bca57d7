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
split. Draw d draws its subsets and trains with seed `seed + d` (at 100% of the labels the draws
differ only by the training seed). Every BEHRT run gets the same budget: at most `--finetune_steps`
optimizer steps, validated every `--eval_every`, stopped once `--early_stopping_patience` validations
in a row found no lower loss. Figures are on the test split,
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

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from behrt_hf.baselines import BASELINES, CountBaseline
from behrt_hf.data_builders.synthetic_ehr import TASKS
from behrt_hf.metrics import compute_binary_metrics
from behrt_hf.plotting import plot_precision_recall, plot_roc, pyplot
from behrt_hf.stats import age_bands, compare_models, format_subgroups, subgroup_metrics
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
    task: str = field(default="fall_1y", metadata={
        "help": "Task of the synthetic cohort: fall_1y, heart_failure_1y, exacerbation_1y, or 'all' (each in its "
                "own folder under --output_dir, from one pretrained model)."})
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
    finetune_steps: int = field(default=finetune.MAX_STEPS, metadata={"help": "Most optimizer steps of a fine-tuning run."})
    eval_every: int = field(default=finetune.EVAL_EVERY, metadata={"help": "Validation every N steps; the best checkpoint is kept."})
    early_stopping_patience: int = field(default=finetune.EARLY_STOPPING_PATIENCE, metadata={
        "help": "Stop a fine-tuning run after this many evaluations without a lower validation loss (0: never)."})
    batch_size: int = field(default=32, metadata={"help": "Patients per step."})
    learning_rate: float = field(default=finetune.LEARNING_RATES["lora"], metadata={"help": "Learning rate of scratch, LoRA and probe."})
    full_finetune_learning_rate: float = field(default=finetune.LEARNING_RATES["full"], metadata={"help": "Learning rate of pretrained + full."})
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
        if self.task == "all" and self.dataset_path:
            raise ValueError("--task all means every task of the synthetic cohort; with --dataset_path name one task.")
        if self.eval_every < 1 or self.early_stopping_patience < 0:
            raise ValueError(f"--eval_every must be positive and --early_stopping_patience >= 0, got "
                             f"{self.eval_every}, {self.early_stopping_patience}.")
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
                           arguments_class=pretrain.PretrainingArguments,
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
        training_arguments(args, output_dir, args.finetune_steps, lr, seed, arguments_class=finetune.FinetuningArguments,
                           **keep_best_checkpoint(args.eval_every, args.early_stopping_patience)),
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


# --- the labelled subsets and the count baselines ----------------------------------------------


@dataclass
class BenchmarkData:
    """What every setting and draw shares: each split's eligible rows and labels, and count features."""

    cohort_path: str
    eligible_rows: dict  # split -> (P,) rows of the split that the task includes
    labels: dict  # split -> (P,) their labels
    features: dict  # split -> CountFeatures of the same patients, in the same order

    @classmethod
    def load(cls, cohort_path: str, task) -> BenchmarkData:
        import datasets

        from behrt_hf.count_features import CountFeaturizer

        cohort = datasets.load_from_disk(cohort_path)
        rows, labels = {}, {}
        for name in ("train", "validation", "test"):
            split = cohort[name].select_columns([task.label, task.index_visit])
            eligible = task.eligible(split.add_column("row", np.arange(len(split))))
            rows[name], labels[name] = np.asarray(eligible["row"]), np.asarray(eligible[task.label])
        featurizer = CountFeaturizer().fit(cohort["train"], task)
        features = {name: featurizer.transform(cohort[name], task) for name in ("train", "validation", "test")}
        for name in features:
            if not np.array_equal(features[name].labels, labels[name]):
                raise ValueError(f"Count features of the {name} split do not follow its eligible patients.")
        return cls(cohort_path, rows, labels, features)

    def subsets(self, setting: Setting, seed: int) -> dict[str, np.ndarray]:
        """The labelled patients of one draw: positions among the eligible training and validation patients."""
        return {name: setting.rows(self.labels[name], seed) for name in ("train", "validation")}


def labelled_cohort(data: BenchmarkData, task, subsets: dict, out: Path) -> str:
    """The cohort a BEHRT run of one draw reads: every patient, labels only on the draw's subsets.

    The other patients' labels become -1, so the task leaves them out, while the training split
    keeps every patient (a from-scratch vocabulary is still built from all of them). The test split
    is the cohort's own, linked, not copied.
    """
    import datasets

    if (out / "dataset_dict.json").exists():
        return str(out)
    cohort = datasets.load_from_disk(data.cohort_path)
    partial = out.with_name(out.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    for name, positions in subsets.items():
        split = cohort[name]
        labels = np.full(len(split), -1, dtype=np.int64)
        keep = data.eligible_rows[name][positions]
        labels[keep] = np.asarray(split[task.label])[keep]
        feature = split.features[task.label]
        split.remove_columns(task.label).add_column(task.label, labels.tolist(), feature=feature).save_to_disk(
            str(partial / name))
    (partial / "test").symlink_to(Path(data.cohort_path, "test").resolve(), target_is_directory=True)
    (partial / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "validation", "test"]}))
    partial.rename(out)
    return str(out)


def run_baseline(out: Path, kind: str, data: BenchmarkData, subsets: dict, seed: int) -> dict:
    """Fit a count baseline on one draw's subsets, predict the test split; its summary (as an arm's)."""
    import datasets

    from behrt_hf.tasks import write_predictions

    summary_path = out / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    train, val = data.features["train"].select(subsets["train"]), data.features["validation"].select(subsets["validation"])
    model = CountBaseline(kind, seed=seed).fit(train.matrix, train.labels, val.matrix, val.labels)
    test = data.features["test"]
    probabilities = model.predict_proba(test.matrix)
    out.mkdir(parents=True, exist_ok=True)
    columns = {"patient_id": test.patient_id, "labels": test.labels.tolist()}
    if test.oracle is not None:
        columns["oracle"] = test.oracle.tolist()
    write_predictions(out / "predictions_test.json", datasets.Dataset.from_dict(columns), probabilities)
    summary = {"mode": kind, "eval": compute_binary_metrics(probabilities, test.labels),
               "data": {"train_patients": len(train.labels), "validation_patients": len(val.labels)},
               "model": {"trainable_parameters": None, "selected": model.selected}}
    if test.oracle is not None:
        summary["oracle"] = compute_binary_metrics(test.oracle, test.labels)
    write_summary(summary_path, summary)
    return summary


def run_setting(args: BenchmarkArguments, root: Path, data: BenchmarkData, task, setting: Setting,
                pretrained: str | None) -> dict[str, list[dict]]:
    """Every arm and baseline on every draw of one setting: contender -> the draws' run summaries."""
    runs: dict[str, list[dict]] = {name: [] for name in args.contenders}
    for draw in range(args.draws):
        seed = args.seed + draw
        subsets = data.subsets(setting, seed)
        cohort = labelled_cohort(data, task, subsets, root / "cohorts" / f"{setting.key}_d{draw}") \
            if args.arm_names else None
        for arm in args.arm_names:
            print(f"== {arm} at {setting.label} labels, draw {draw}", flush=True)
            runs[arm].append(run_arm(args, run_dir(root, arm, setting, draw), arm, cohort, pretrained, seed))
        for kind in args.baseline_names:
            runs[kind].append(run_baseline(run_dir(root, kind, setting, draw), kind, data, subsets, seed))
    return runs


# --- scoring: intervals, paired comparisons, verdicts, subgroups -------------------------------


def aligned_predictions(out: Path, patient_ids: list[str]) -> np.ndarray:
    """A run's test probabilities in the order of `patient_ids` (the test split's eligible patients)."""
    p = load_predictions(out)
    position = {pid: i for i, pid in enumerate(patient_ids)}
    if len(p["patient_id"]) != len(patient_ids) or set(p["patient_id"]) != set(position):
        raise ValueError(f"{out}: its test predictions are not of the benchmark's {len(patient_ids)} test patients.")
    probabilities = np.empty(len(patient_ids))
    probabilities[[position[pid] for pid in p["patient_id"]]] = p["probability"]
    return probabilities


def mean_metrics(draws: list[dict]) -> dict:
    """The mean over draws of each metric of `compute_binary_metrics`."""
    return {key: float(np.mean([d[key] for d in draws])) if key != "num_patients" else draws[0][key]
            for key in draws[0]}


def mean_subgroups(per_draw: list[list[dict]]) -> list[dict]:
    """Subgroup rows averaged over draws (the same test patients: the same groups); None stays None."""
    rows = []
    for same in zip(*per_draw):
        row = dict(same[0])
        for key in ("mean_prediction", "auroc", "ece", "calibration_slope", "calibration_intercept"):
            values = [r[key] for r in same]
            row[key] = None if any(v is None for v in values) else float(np.mean(values))
        rows.append(row)
    return rows


def comparison_pairs(args: BenchmarkArguments, ranking: list[str], best_baseline: str | None) -> list[tuple]:
    """Who is compared with whom: every contender with the best count baseline and with scratch, and
    the winner with the runner-up."""
    pairs = [(c, best_baseline) for c in args.contenders if best_baseline and c != best_baseline]
    pairs += [(c, "scratch") for c in args.contenders if "scratch" in args.arm_names and c != "scratch"]
    if len(ranking) > 1:
        pairs.append((ranking[0], ranking[1]))
    return list(dict.fromkeys(pairs))


def score_setting(args: BenchmarkArguments, root: Path, data: BenchmarkData, setting: Setting,
                  runs: dict[str, list[dict]]) -> dict:
    """One setting's table entries: mean metrics over draws, bootstrap intervals, paired differences,
    subgroups; the best count baseline, the winner and the verdict."""
    test = data.features["test"]
    probs = {c: np.stack([aligned_predictions(run_dir(root, c, setting, d), test.patient_id)
                          for d in range(args.draws)]) for c in args.contenders}
    auroc = {c: float(np.mean([r["eval"]["auroc"] for r in runs[c]])) for c in args.contenders}
    ranking = sorted(args.contenders, key=lambda c: -auroc[c])
    best_baseline = max(args.baseline_names, key=auroc.get) if args.baseline_names else None
    models = {**probs, **({"oracle": test.oracle} if test.oracle is not None else {})}
    compared = compare_models(models, test.labels, comparison_pairs(args, ranking, best_baseline),
                              args.bootstrap_resamples, seed=args.seed)
    groupings = {"sex": test.sex, "age": age_bands(test.age)}
    entries = {}
    for c in args.contenders:
        first = runs[c][0]
        entries[c] = {
            "test": mean_metrics([r["eval"] for r in runs[c]]), "ci": compared["models"][c],
            "auroc_sd": float(np.std([r["eval"]["auroc"] for r in runs[c]], ddof=1)) if args.draws > 1 else None,
            "draws": [r["eval"] for r in runs[c]], "oracle": first.get("oracle"),
            "train_patients": first["data"]["train_patients"],
            "trainable_parameters": first["model"]["trainable_parameters"],
            "vs_best_baseline": compared["pairs"].get((c, best_baseline)),
            "vs_scratch": compared["pairs"].get((c, "scratch")),
            "subgroups": mean_subgroups([subgroup_metrics(p, test.labels, groupings) for p in probs[c]]),
        }
    runner = compared["pairs"].get((ranking[0], ranking[1])) if len(ranking) > 1 else None
    return {"contenders": entries, "oracle_ci": compared["models"].get("oracle"), "best_baseline": best_baseline,
            "winner": ranking[0], "runner_up": ranking[1] if len(ranking) > 1 else None,
            "winner_vs_runner_up": runner, "resamples": args.bootstrap_resamples,
            "verdict": verdict(setting, ranking, compared, runner)}


def verdict(setting: Setting, ranking: list[str], compared: dict, runner: dict | None) -> str:
    """One line: who wins at this setting, and whether its lead over the runner-up is significant."""
    winner = ranking[0]
    line = f"{setting.label:>9}: {winner} wins, AUROC {format_ci(compared['models'][winner]['auroc'])}"
    if runner is None:
        return line + " (the only contender)"
    d = runner["auroc"]
    significant = d["low"] > 0
    return (line + f"; over {ranking[1]} by {format_difference(d)}: "
            + ("significant" if significant else "not significant") + " at 95%")


def format_ci(ci: dict | None) -> str:
    return "-" if ci is None else f"{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def format_difference(d: dict | None) -> str:
    if d is None:
        return "-"
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] p={d['p_value']:.3f}"


# --- main, the summary and the charts ----------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((BenchmarkArguments,), argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    source = args.dataset_path or f"synthetic '{args.synthetic}'"
    args.dataset_path, test_split = saved_cohort(args, root)
    needs_pretrained = any(ARMS[a][0] for a in args.arm_names)
    pretrained = (args.pretrained_model or run_pretraining(args, root)) if needs_pretrained else None
    if args.task != "all":
        return benchmark_task(args, root, source, test_split, pretrained)
    # every task of the synthetic cohort, each in its own folder, all from the one pretrained model
    return {name: benchmark_task(dataclasses.replace(args, task=name), root / name, source, test_split, pretrained)
            for name in TASKS}


def benchmark_task(args: BenchmarkArguments, root: Path, source: str, test_split: str, pretrained: str | None) -> dict:
    """Every setting of `args.task`: its runs, scores, SUMMARY.txt, SUBGROUPS.txt, charts, summary.json in `root`."""
    from behrt_hf.tasks import Task

    root.mkdir(parents=True, exist_ok=True)
    task = Task(args.task)
    data = BenchmarkData.load(args.dataset_path, task)

    scores = {}
    for setting in args.settings:
        runs = run_setting(args, root, data, task, setting, pretrained)
        scores[setting.key] = score_setting(args, root, data, setting, runs)

    table = summary_table(scores, args, source, test_split)
    (root / "SUMMARY.txt").write_text(table + "\n")
    (root / "SUBGROUPS.txt").write_text(subgroups_text(scores, args) + "\n")
    charts = draw_charts(root, scores, args, data)
    summary = {
        "task": args.task, "cohort": source, "test": test_split, "pretrained_model": pretrained,
        "label_fractions": args.fractions, "shots": args.shot_counts, "draws": args.draws,
        "arms": args.arm_names, "baselines": args.baseline_names, "bootstrap_resamples": args.bootstrap_resamples,
        "winners": {key: s["winner"] for key, s in scores.items()},
        "verdicts": {key: s["verdict"] for key, s in scores.items()},
        "results": {key: s["contenders"] for key, s in scores.items()},
        "comparisons": {key: {k: v for k, v in s.items() if k not in ("contenders", "verdict")}
                        for key, s in scores.items()},
        "charts": [str(c) for c in charts],
    }
    write_summary(root / "summary.json", summary)
    print(table)
    print("charts: " + ", ".join(str(c) for c in charts))
    return json.loads((root / "summary.json").read_text())  # as saved: a rerun compares equal


def summary_table(scores: dict, args: BenchmarkArguments, source: str, test_split: str) -> str:
    """SUMMARY.txt: per setting, every contender with its intervals and comparisons; then the verdicts."""
    first = next(iter(scores.values()))
    test_patients = next(iter(first["contenders"].values()))["test"]["num_patients"]
    stopping = (f", stopped after {args.early_stopping_patience} evaluations without a lower validation loss"
                if args.early_stopping_patience else "")
    lines = [f"task {args.task} on {source} ({test_split}: {test_patients} patients), at most {args.finetune_steps} "
             f"steps per BEHRT run{stopping}, {args.draws} draw(s) per setting (mean over draws; sd = spread over draws), "
             f"95% intervals from {args.bootstrap_resamples} bootstrap resamples of the test patients",
             f"{'labels':>9} {'who':<8} {'patients':>8} {'AUROC [95% CI]':<22} {'sd':>6} {'AUPRC [95% CI]':<22} "
             f"{'Brier':>6} {'gap':>6}  {'vs best count: dAUROC [95% CI] p':<36}  vs scratch"]
    for key, s in scores.items():
        label = Setting.from_key(key).label
        oracle = s["oracle_ci"]
        for c, e in s["contenders"].items():
            sd = f"{e['auroc_sd']:6.3f}" if e["auroc_sd"] is not None else f"{'-':>6}"
            gap = f"{oracle['auroc']['value'] - e['ci']['auroc']['value']:6.3f}" if oracle else f"{'-':>6}"
            vs_best = format_difference(e["vs_best_baseline"] and e["vs_best_baseline"]["auroc"])
            vs_scratch = format_difference(e["vs_scratch"] and e["vs_scratch"]["auroc"])
            lines.append(f"{label:>9} {c:<8} {e['train_patients']:>8} {format_ci(e['ci']['auroc']):<22} {sd} "
                         f"{format_ci(e['ci']['auprc']):<22} {e['test']['brier']:6.4f} {gap}  {vs_best:<36}  "
                         f"{vs_scratch}")
        if oracle:
            lines.append(f"{label:>9} {'oracle':<8} {'':>8} {format_ci(oracle['auroc']):<22} {'':>6} "
                         f"{format_ci(oracle['auprc']):<22}")
    lines.append("")
    lines.append(f"who wins (best mean test AUROC; significant: the paired 95% interval of its lead excludes 0); "
                 f"best count baseline per setting: "
                 + ", ".join(f"{Setting.from_key(k).label} {s['best_baseline']}" for k, s in scores.items()
                             if s["best_baseline"]))
    lines += [s["verdict"] for s in scores.values()]
    return "\n".join(lines)


def subgroups_text(scores: dict, args: BenchmarkArguments) -> str:
    """SUBGROUPS.txt: each contender's test AUROC and calibration by sex and age band at the index visit."""
    blocks = [f"task {args.task}: test AUROC and calibration by subgroup (mean over {args.draws} draw(s)); "
              "AUROC and the calibration fit are left out ('-') where a class is absent"]
    for key, s in scores.items():
        for c, e in s["contenders"].items():
            blocks.append(format_subgroups(e["subgroups"], title=f"{Setting.from_key(key).label} {c}"))
    return "\n\n".join(blocks)


def draw_charts(root: Path, scores: dict, args: BenchmarkArguments, data: BenchmarkData) -> list[Path]:
    """ROC and PR curves per setting (draw 0; the legend gives each one's interval over draws), AUROC
    bars with 95% intervals, AUROC against shots, and the BEHRT runs' validation curves."""
    test = data.features["test"]
    charts = []
    for key, s in scores.items():
        setting = Setting.from_key(key)
        mean = "mean of draws " if args.draws > 1 else ""
        title = f"{setting.label} labels" + (", curves of draw 0" if args.draws > 1 else "")
        for metric, plot, suffix in (("auroc", plot_roc, "roc"), ("auprc", plot_precision_recall, "pr")):
            curves = {f"{c}: {mean}{format_ci(e['ci'][metric])}": (
                aligned_predictions(run_dir(root, c, setting, 0), test.patient_id), test.labels)
                for c, e in s["contenders"].items()}
            if s["oracle_ci"]:
                curves[f"oracle: {format_ci(s['oracle_ci'][metric])}"] = (test.oracle, test.labels)
            prefix = f"labels{float(key):g}_" if setting.shots is None else f"shots{setting.shots}_"
            charts.append(plot(curves, root / f"{prefix}{suffix}.png", title=f"{title}; [95% CI]"))
    charts.append(auroc_bars(root, scores, args))
    if args.shot_counts:
        charts.append(auroc_against_shots(root, scores, args))
    if args.arm_names:
        charts.append(training_curves(root, scores, args))
    return charts


def oracle_auroc(scores: dict) -> float | None:
    return next((s["oracle_ci"]["auroc"]["value"] for s in scores.values() if s["oracle_ci"]), None)


def auroc_bars(root: Path, scores: dict, args: BenchmarkArguments) -> Path:
    """Contenders side by side per setting, each bar with its 95% interval; the oracle as a line."""
    plt = pyplot()
    keys, names = list(scores), args.contenders
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(keys) + 2), 4.2))
    for i, name in enumerate(names):
        cis = [scores[k]["contenders"][name]["ci"]["auroc"] for k in keys]
        values = np.array([ci["value"] for ci in cis])
        errors = np.array([[ci["value"] - ci["low"] for ci in cis], [ci["high"] - ci["value"] for ci in cis]])
        ax.bar(np.arange(len(keys)) + i * width, values, width, yerr=errors, capsize=2, label=name,
               hatch="//" if name in args.baseline_names else None)
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, [Setting.from_key(k).label for k in keys])
    ax.set(xlabel="training labels", ylabel="test AUROC (95% CI)", ylim=(0.4, 1.0), title=args.task)
    return finish_chart(fig, ax, scores, root / "auroc_bars.png")


def finish_chart(fig, ax, scores: dict, path: Path) -> Path:
    """The oracle's AUROC as a line, the legend; saved and closed."""
    oracle = oracle_auroc(scores)
    if oracle is not None:
        ax.axhline(oracle, color="black", linestyle="--", label=f"oracle {oracle:.3f}")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def auroc_against_shots(root: Path, scores: dict, args: BenchmarkArguments) -> Path:
    """Few-shot curves: mean AUROC over draws against k per class, with the 95% interval as a band."""
    plt = pyplot()
    keys = [f"k{k}" for k in args.shot_counts]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name in args.contenders:
        cis = [scores[k]["contenders"][name]["ci"]["auroc"] for k in keys]
        line, = ax.plot(args.shot_counts, [ci["value"] for ci in cis], marker="o", markersize=3, label=name,
                        linestyle="--" if name in args.baseline_names else "-")
        ax.fill_between(args.shot_counts, [ci["low"] for ci in cis], [ci["high"] for ci in cis],
                        color=line.get_color(), alpha=0.12)
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.shot_counts, [str(k) for k in args.shot_counts])
    ax.set(xlabel="labelled patients per class (k)", ylabel=f"test AUROC (mean of {args.draws} draws, 95% CI)",
           title=f"{args.task}: few-shot")
    return finish_chart(fig, ax, scores, root / "auroc_shots.png")


def training_curves(root: Path, scores: dict, args: BenchmarkArguments) -> Path:
    """Validation AUROC (on the draw's validation subset) against the step, one panel per setting, draw 0."""
    plt = pyplot()
    keys = list(scores)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    oracle = oracle_auroc(scores)
    for ax, key in zip(axes[0], keys):
        setting = Setting.from_key(key)
        for arm in args.arm_names:
            records = read_jsonl(run_dir(root, arm, setting, 0) / "metrics.jsonl")
            points = [(r["step"], r["eval_auroc"]) for r in records if "eval_auroc" in r]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=3, label=arm)
        if oracle is not None:
            ax.axhline(oracle, color="black", linestyle="--", label="oracle")
        ax.set(title=f"{setting.label} labels", xlabel="step", ylabel="validation-subset AUROC")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(root / "training_curves.png", dpi=110)
    plt.close(fig)
    return root / "training_curves.png"


def cli() -> None:
    """Console-script entry point (`behrt-benchmark`)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
