"""The README's main command, run small: generate -> pretrain -> LoRA fine-tune -> oracle -> card."""

import math


def test_demo_runs_end_to_end(tmp_path, capsys):
    from behrt_hf.training import demo

    result = demo.main(["--output_dir", str(tmp_path / "demo"), "--cohort", "small", "--task", "fall_1y",
                        "--pretrain_steps", "3", "--finetune_steps", "4", "--batch_size", "16", "--use_cpu", "true"])
    test = result["finetune"]["report"]["test"]
    assert math.isfinite(test["model"]["auroc"]) and "oracle" in test
    assert result["reload_difference"] < 1e-5
    adapter = tmp_path / "demo" / "lora_fall_1y"
    for name in ("adapter_model.safetensors", "adapter_config.json", "README.md", "roc.png", "summary.json"):
        assert (adapter / name).exists(), name
    out = capsys.readouterr().out
    assert "oracle (Bayes ceiling)" in out and "ready to push" in out
