"""The README's main command, run small: generate -> encode -> model -> train steps -> save -> reload."""

import math

from behrt_hf.training import demo


def test_demo_runs_end_to_end(tmp_path, capsys):
    result = demo.main(["--output_dir", str(tmp_path / "demo"), "--steps", "3", "--batch_size", "8"])
    assert len(result["losses"]) == 3 and all(math.isfinite(x) for x in result["losses"])
    assert result["max_logit_difference"] <= 1e-5
    saved = {p.name for p in (tmp_path / "demo").iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= saved
    assert "reloaded with AutoModelForSequenceClassification" in capsys.readouterr().out
