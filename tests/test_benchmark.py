"""The pretraining benchmark, run tiny: every arm and fraction, the summary, the charts."""

import json
from pathlib import Path

import datasets
import numpy as np
import pytest

from behrt_hf import patient_features
from behrt_hf.training import benchmark, finetune, pretrain
from behrt_hf.training.arguments import parse_args
from tests.helpers import add_toy_task, make_patients


def save_toy_cohort(path: Path, **sizes: int) -> Path:
    """A saved DatasetDict of toy patients with the `demo` task and its oracle; `sizes`: split -> patients."""
    features = patient_features(tasks=["demo"], with_oracle=True)
    datasets.DatasetDict({
        name: datasets.Dataset.from_list(add_toy_task(make_patients(n, seed=s, max_visits=5), seed=s), features=features)
        for s, (name, n) in enumerate(sizes.items(), start=1)
    }).save_to_disk(str(path))
    return path


def test_benchmark_runs_every_arm_and_writes_its_report(tmp_path):
    data = save_toy_cohort(tmp_path / "data", train=120, validation=50, test=50)
    summary = benchmark.main([
        "--output_dir", str(tmp_path / "bench"), "--dataset_path", str(data), "--task", "demo",
        "--label_fractions", "0.1,1.0", "--config_overrides",
        "hidden_size=32,num_hidden_layers=1,num_attention_heads=4,intermediate_size=37",
        "--pretrain_steps", "4", "--finetune_steps", "4", "--eval_every", "2", "--batch_size", "16",
        "--max_length", "48", "--use_cpu", "true",
    ])
    out = tmp_path / "bench"
    assert set(summary["results"]) == {"0.1", "1"}
    for fraction, arms in summary["results"].items():
        assert set(arms) == {"scratch", "full", "lora", "probe", "logistic", "gbm"}
        assert summary["winners"][fraction] in arms
        assert all(a["oracle"]["auroc"] > 0.5 for a in arms.values())
        for name, a in arms.items():
            ci = a["ci"]["auroc"]
            assert ci["low"] <= a["test"]["auroc"] <= ci["high"] and ci["value"] == pytest.approx(a["test"]["auroc"])
            assert (a["vs_best_baseline"] is None) == (name == summary["comparisons"][fraction]["best_baseline"])
            assert (a["vs_scratch"] is None) == (name == "scratch")
            assert {r["grouping"] for r in a["subgroups"]} == {"sex", "age"}
    assert summary["results"]["0.1"]["full"]["train_patients"] < summary["results"]["1"]["full"]["train_patients"]
    text = (out / "SUMMARY.txt").read_text()
    assert "wins" in text and "oracle" in text and "logistic" in text and "95% CI" in text
    verdicts = text.split("who wins")[1].splitlines()[1:]
    assert len(verdicts) == 2 and all("significant at 95%" in v for v in verdicts)
    subgroups = (out / "SUBGROUPS.txt").read_text()
    assert all(f"10% {name}" in subgroups for name in ("scratch", "lora", "logistic", "gbm"))
    assert " sex    F " in subgroups and " age " in subgroups
    for chart in ("auroc_bars.png", "training_curves.png", "labels0.1_roc.png", "labels1_pr.png"):
        assert (out / chart).exists(), chart
    assert json.loads((out / "summary.json").read_text())["arms"] == ["scratch", "full", "lora", "probe"]
    # a rerun resumes: finished runs are read back, not trained again
    again = benchmark.main(["--output_dir", str(out), "--dataset_path", str(data), "--task", "demo",
                            "--label_fractions", "0.1,1.0", "--use_cpu", "true"])
    assert again["results"] == summary["results"]


def test_independent_test_split_is_a_second_cohort_of_the_same_preset(tmp_path):
    """By default a synthetic benchmark tests on all of cohort seed + 1: ten times the patients, none shared."""
    from behrt_hf import load_synthetic

    args = benchmark.BenchmarkArguments(synthetic="tiny", seed=4)
    path = benchmark.cohort_with_independent_test(args, tmp_path)
    saved = datasets.load_from_disk(path)
    own, other = load_synthetic("tiny", seed=4), load_synthetic("tiny", seed=5)
    for name in ("train", "validation"):
        assert saved[name]["patient_id"] == own[name]["patient_id"]
        assert saved[name]["visits"] == own[name]["visits"]
    assert len(saved["test"]) == sum(len(split) for split in other.values())
    assert saved["test"][0]["visits"] == other["train"][0]["visits"]
    assert saved["test"][0]["patient_id"] == "seed5-" + other["train"][0]["patient_id"]
    assert not set(saved["test"]["patient_id"]) & set(saved["train"]["patient_id"])
    assert benchmark.cohort_with_independent_test(args, tmp_path) == path  # made once, then read back
    assert not (tmp_path / "cohort.partial").exists()


def former_flags(args: benchmark.BenchmarkArguments, output_dir: Path, steps: int, dataset_path=None) -> list[str]:
    """The flags every run of the benchmark got before it built argument dataclasses (the reference)."""
    flags = ["--output_dir", str(output_dir), "--do_train", "--max_steps", str(steps), "--seed", str(args.seed),
             "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "64",
             "--max_length", str(args.max_length), "--report_to", "none", "--disable_tqdm", "true",
             "--logging_steps", str(max(1, args.eval_every // 2)), "--data_seed_cohort", str(args.seed)]
    if dataset_path or args.dataset_path:
        flags += ["--dataset_path", dataset_path or args.dataset_path]
    else:
        flags += ["--synthetic", args.synthetic] + (["--num_patients", str(args.num_patients)] if args.num_patients else [])
    if args.use_cpu:
        flags += ["--use_cpu"]
    return flags


def former_pretraining_flags(args, out):
    flags = former_flags(args, out, args.pretrain_steps) + [
        "--objective", "mlm+nvp", "--preset", args.preset, "--learning_rate", str(args.pretrain_learning_rate),
        "--eval_strategy", "no", "--save_strategy", "steps", "--save_steps", str(args.pretrain_steps // 2),
        "--save_total_limit", "1", "--warmup_steps", str(max(1, min(100, args.pretrain_steps // 10))),
    ]
    # the recipe's optimiser and schedule (Adam beta2 0.95, WSD) come from PretrainingArguments' defaults
    return flags + (["--config_overrides", args.config_overrides] if args.config_overrides else [])


def former_arm_flags(args, out, arm, cohort, pretrained):
    """Since the benchmark draws the labelled subsets itself, every run reads its draw's cohort with all labels."""
    uses_pretrained, mode = benchmark.ARMS[arm]
    lr = args.full_finetune_learning_rate if arm == "full" else args.learning_rate
    flags = former_flags(args, out, args.finetune_steps, dataset_path=cohort) + [
        "--task", args.task, "--mode", mode, "--label_fraction", "1.0", "--learning_rate", str(lr),
        "--eval_strategy", "steps", "--eval_steps", str(args.eval_every), "--save_strategy", "steps",
        "--save_steps", str(args.eval_every), "--save_total_limit", "1", "--load_best_model_at_end", "true",
        "--metric_for_best_model", "loss", "--greater_is_better", "false",
    ] + (["--early_stopping_patience", str(args.early_stopping_patience)] if args.early_stopping_patience else [])
    if uses_pretrained:
        return flags + ["--model_name_or_path", pretrained]
    return flags + ["--preset", args.preset] + (["--config_overrides", args.config_overrides] if args.config_overrides else [])


@pytest.mark.parametrize("flags", [
    [],
    ["--dataset_path", "saved", "--use_cpu", "true", "--seed", "2", "--config_overrides", "hidden_size=32",
     "--preset", "medium", "--eval_every", "7", "--batch_size", "8", "--max_length", "64",
     "--early_stopping_patience", "0"],
    ["--num_patients", "500", "--pretrain_steps", "33", "--finetune_steps", "21", "--learning_rate", "1e-3"],
])
def test_runs_get_the_settings_of_the_former_command_lines(tmp_path, flags):
    """Building the runs' argument dataclasses passes exactly what the flag lists passed before."""
    (args,) = parse_args((benchmark.BenchmarkArguments,), ["--output_dir", str(tmp_path), *flags])
    pretraining = (pretrain.ModelArguments, pretrain.DataArguments, pretrain.PretrainingArguments)
    finetuning = (finetune.FinetuneModelArguments, finetune.FinetuneDataArguments, finetune.FinetuningArguments)
    cases = [(benchmark.pretraining_arguments(args, tmp_path / "pre"),
              parse_args(pretraining, former_pretraining_flags(args, tmp_path / "pre")))]
    for arm in benchmark.ARMS:
        for setting in args.settings:
            out, cohort = tmp_path / f"{arm}_{setting.key}", str(tmp_path / "cohorts" / setting.key)
            cases.append((benchmark.arm_arguments(args, out, arm, cohort, "pretrained/model"),
                          parse_args(finetuning, former_arm_flags(args, out, arm, cohort, "pretrained/model"))))
    for built, parsed in cases:
        assert built[:2] == parsed[:2]
        assert built[2].to_dict() == parsed[2].to_dict()


def test_subsets_follow_label_subset_for_fractions_and_take_k_per_class_for_shots():
    from behrt_hf.tasks import label_subset

    labels = np.array([0] * 70 + [1] * 10)
    table = datasets.Dataset.from_dict({"y": labels, "row": np.arange(80)})
    rows = benchmark.Setting(fraction=0.2).rows(labels, seed=3)
    assert rows.tolist() == label_subset(table, 0.2, "y", 3)["row"]
    shots = benchmark.Setting(shots=4).rows(labels, seed=3)
    assert np.bincount(labels[shots]).tolist() == [4, 4]
    assert shots.tolist() == benchmark.Setting(shots=4).rows(labels, seed=3).tolist()
    assert shots.tolist() != benchmark.Setting(shots=4).rows(labels, seed=4).tolist()
    assert np.bincount(labels[benchmark.Setting(shots=64).rows(labels, seed=0)]).tolist() == [64, 10]  # all there are
    assert benchmark.Setting.from_key("k8") == benchmark.Setting(shots=8) and benchmark.Setting(shots=8).label == "8/class"
    with pytest.raises(ValueError, match="shots"):
        parse_args((benchmark.BenchmarkArguments,), ["--shots", "0"])


def test_few_shot_draws_select_on_a_validation_subset_of_the_same_size(tmp_path):
    """Each draw's runs see only k labelled patients per class in training and in validation."""
    data = save_toy_cohort(tmp_path / "data", train=80, validation=40, test=60)
    summary = benchmark.main([
        "--output_dir", str(tmp_path / "bench"), "--dataset_path", str(data), "--task", "demo",
        "--label_fractions", "", "--shots", "2,4", "--draws", "2", "--arms", "scratch", "--bootstrap_resamples", "50",
        "--config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=4,intermediate_size=37",
        "--finetune_steps", "2", "--eval_every", "1", "--batch_size", "8", "--max_length", "48", "--use_cpu", "true",
    ])
    out = tmp_path / "bench"
    assert set(summary["results"]) == {"k2", "k4"} and summary["shots"] == [2, 4]
    for k in (2, 4):
        for name, entry in summary["results"][f"k{k}"].items():
            assert entry["train_patients"] == 2 * k and len(entry["draws"]) == 2 and entry["auroc_sd"] is not None
        for draw in (0, 1):
            run = json.loads((out / "runs" / ("scratch_k%d" % k + ("_d1" if draw else "")) / "summary.json").read_text())
            assert run["data"]["train_patients"] == 2 * k
            assert run["data"]["eval_patients"]["validation"] == 2 * k  # never the full validation split
            logistic = json.loads((out / "runs" / ("logistic_k%d" % k + ("_d1" if draw else "")) / "summary.json")
                                  .read_text())
            assert logistic["data"] == {"train_patients": 2 * k, "validation_patients": 2 * k}
    cohorts = [datasets.load_from_disk(str(out / "cohorts" / f"k2_d{d}")) for d in (0, 1)]
    labelled = [[p for p, y in zip(c["train"]["patient_id"], c["train"]["label_demo"]) if y >= 0] for c in cohorts]
    assert len(labelled[0]) == 4 and labelled[0] != labelled[1]
    assert len(cohorts[0]["train"]) == 80 and (out / "cohorts" / "k2_d0" / "test").is_symlink()
    text = (out / "SUMMARY.txt").read_text()
    assert "  2/class:" in text and "  4/class:" in text
    assert (out / "auroc_shots.png").exists() and (out / "shots2_roc.png").exists()


def test_count_baselines_alone_need_no_pretraining_and_still_get_a_verdict(tmp_path):
    data = save_toy_cohort(tmp_path / "data", train=120, validation=50, test=80)
    summary = benchmark.main(["--output_dir", str(tmp_path / "bench"), "--dataset_path", str(data), "--task", "demo",
                              "--label_fractions", "0.5,1.0", "--arms", "", "--bootstrap_resamples", "100"])
    assert summary["pretrained_model"] is None and not (tmp_path / "bench" / "pretrained").exists()
    assert not (tmp_path / "bench" / "cohorts").exists()
    for key in ("0.5", "1"):
        assert set(summary["results"][key]) == {"logistic", "gbm"}
        loser = ({"logistic", "gbm"} - {summary["winners"][key]}).pop()
        lead = summary["comparisons"][key]["winner_vs_runner_up"]["auroc"]
        assert lead["difference"] == pytest.approx(summary["results"][key][summary["winners"][key]]["test"]["auroc"]
                                                   - summary["results"][key][loser]["test"]["auroc"])
        assert summary["verdicts"][key].startswith(("      50%: ", "     100%: "))
    with pytest.raises(ValueError, match="at least one arm or baseline"):
        parse_args((benchmark.BenchmarkArguments,), ["--arms", "", "--baselines", ""])


def test_task_all_benchmarks_every_synthetic_task_in_its_own_folder(tmp_path):
    from behrt_hf.data_builders.synthetic_ehr import TASKS

    summaries = benchmark.main(["--output_dir", str(tmp_path / "bench"), "--synthetic", "small", "--task", "all",
                                "--label_fractions", "1.0", "--arms", "", "--baselines", "logistic",
                                "--bootstrap_resamples", "50"])
    assert list(summaries) == list(TASKS)
    for name, summary in summaries.items():
        assert summary["task"] == name and (tmp_path / "bench" / name / "SUMMARY.txt").exists()
        assert 0 <= summary["results"]["1"]["logistic"]["test"]["auroc"] <= 1  # small test splits: any value
    with pytest.raises(ValueError, match="--task all means every task of the synthetic cohort"):
        parse_args((benchmark.BenchmarkArguments,), ["--task", "all", "--dataset_path", "saved"])
