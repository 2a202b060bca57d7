"""The pretraining benchmark, run tiny: every arm and fraction, the summary, the charts."""

import json

import datasets

from behrt_hf import patient_features
from behrt_hf.training import benchmark
from tests.helpers import add_toy_task, make_patients


def test_benchmark_runs_every_arm_and_writes_its_report(tmp_path):
    features = patient_features(tasks=["demo"], with_oracle=True)
    data = tmp_path / "data"
    datasets.DatasetDict({
        name: datasets.Dataset.from_list(add_toy_task(make_patients(n, seed=s, max_visits=5), seed=s), features=features)
        for name, n, s in [("train", 120, 1), ("validation", 50, 2), ("test", 50, 3)]
    }).save_to_disk(str(data))
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
        assert set(arms) == {"scratch", "full", "lora", "probe"}
        assert summary["winners"][fraction] in arms
        assert all(a["oracle"]["auroc"] > 0.5 for a in arms.values())
    assert summary["results"]["0.1"]["full"]["train_patients"] < summary["results"]["1"]["full"]["train_patients"]
    text = (out / "SUMMARY.txt").read_text()
    assert "winner" in text and "oracle" in text
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
