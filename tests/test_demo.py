"""The README's main command, run small: generate -> pretrain -> LoRA fine-tune -> oracle -> card."""

import math
from pathlib import Path

import pytest

from behrt_hf.training import demo, finetune, pretrain
from behrt_hf.training.arguments import parse_args


def test_demo_runs_end_to_end(tmp_path, capsys):
    result = demo.main(["--output_dir", str(tmp_path / "demo"), "--synthetic", "small", "--task", "fall_1y",
                        "--pretrain_steps", "3", "--finetune_steps", "4", "--batch_size", "16", "--use_cpu", "true"])
    assert list(result["tasks"]) == ["fall_1y"]
    task = result["tasks"]["fall_1y"]
    test = task["finetune"]["report"]["test"]
    assert math.isfinite(test["model"]["auroc"]) and "oracle" in test
    assert 0.5 < task["count_baseline"]["auroc"] <= 1 and task["count_baseline"]["num_patients"] == test["model"]["num_patients"]
    assert task["reload_difference"] < 1e-5
    adapter = tmp_path / "demo" / "lora_fall_1y"
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "roc.png", "summary.json"):
        assert (adapter / name).exists(), name
    out = capsys.readouterr().out
    assert "oracle (Bayes ceiling)" in out and "count logistic regression" in out and "ready to push" in out


def test_demo_takes_every_task_or_a_known_one(tmp_path):
    with pytest.raises(ValueError, match="--task must be one of"):
        parse_args((demo.DemoArguments,), ["--task", "stroke_1y"])
    (args,) = parse_args((demo.DemoArguments,), ["--task", "all"])
    built = demo.finetune_arguments(args, tmp_path / "x", tmp_path / "pretrained", "exacerbation_1y")
    assert built[1].task == "exacerbation_1y"


def flag_lists(args: demo.DemoArguments) -> tuple[list[str], list[str]]:
    """The command lines the demo passed to behrt-pretrain and behrt-finetune before it built their
    argument dataclasses (kept here, verbatim, as the reference the dataclasses must equal)."""
    root = Path(args.output_dir)
    common = ["--synthetic", args.synthetic, "--data_seed_cohort", str(args.seed), "--seed", str(args.seed),
              "--max_length", str(args.max_length), "--per_device_train_batch_size", str(args.batch_size),
              "--per_device_eval_batch_size", "64", "--report_to", "none", "--disable_tqdm", "true", "--do_train"]
    if args.num_patients:
        common += ["--num_patients", str(args.num_patients)]
    if args.use_cpu:
        common += ["--use_cpu"]
    pre = common + [
        "--output_dir", str(root / "pretrained"), "--objective", "mlm+nvp", "--preset", args.preset,
        "--max_steps", str(args.pretrain_steps),  # learning rate, betas, weight decay: behrt-pretrain's recipe defaults
        "--warmup_steps", str(max(1, min(100, args.pretrain_steps // 10))),
        "--logging_steps", str(max(1, args.pretrain_steps // 10)),
        "--save_strategy", "steps", "--save_steps", str(max(1, args.pretrain_steps // 2)), "--save_total_limit", "1",
    ]
    eval_every = args.eval_every
    fine = common + [
        "--output_dir", str(root / f"lora_{args.task}"), "--model_name_or_path", str(root / "pretrained"),
        "--task", args.task, "--mode", "lora", "--max_steps", str(args.finetune_steps),
        "--learning_rate", str(args.finetune_learning_rate),
        "--eval_strategy", "steps", "--eval_steps", str(eval_every), "--save_strategy", "steps",
        "--save_steps", str(eval_every), "--save_total_limit", "1", "--load_best_model_at_end", "true",
        "--metric_for_best_model", "loss", "--greater_is_better", "false", "--logging_steps", str(eval_every),
    ] + (["--early_stopping_patience", str(args.early_stopping_patience)] if args.early_stopping_patience else [])
    return pre, fine


def assert_same_arguments(built, parsed):
    *built_args, built_training = built
    *parsed_args, parsed_training = parsed
    assert built_args == parsed_args
    assert built_training.to_dict() == parsed_training.to_dict()


@pytest.mark.parametrize("flags", [[], ["--num_patients", "300", "--use_cpu", "true", "--seed", "4",
                                        "--pretrain_steps", "7", "--finetune_steps", "13", "--preset", "medium",
                                        "--finetune_learning_rate", "5e-4", "--synthetic", "tiny"]])
def test_demo_runs_get_the_settings_of_its_former_command_lines(tmp_path, flags):
    (args,) = parse_args((demo.DemoArguments,), ["--output_dir", str(tmp_path), *flags])
    pre_flags, fine_flags = flag_lists(args)
    root = tmp_path
    assert_same_arguments(
        demo.pretrain_arguments(args, root / "pretrained"),
        parse_args((pretrain.ModelArguments, pretrain.DataArguments, pretrain.PretrainingArguments), pre_flags))
    assert_same_arguments(
        demo.finetune_arguments(args, root / f"lora_{args.task}", root / "pretrained"),
        parse_args((finetune.FinetuneModelArguments, finetune.FinetuneDataArguments, finetune.FinetuningArguments),
                   fine_flags))
