"""Auto classes, and trust_remote_code loading in a process where behrt_hf cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
)

from behrt_hf import (
    BehrtConfig,
    BehrtForMaskedLM,
    BehrtForPreTraining,
    BehrtForSequenceClassification,
    BehrtModel,
)
from behrt_hf.modeling_behrt import AUTO_MAP
from tests.helpers import tiny_config


def test_auto_classes_resolve_behrt(tmp_path):
    BehrtForPreTraining(tiny_config()).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), BehrtConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is BehrtModel
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path)) is BehrtForMaskedLM
    assert type(AutoModelForPreTraining.from_pretrained(tmp_path)) is BehrtForPreTraining
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path)) is BehrtForSequenceClassification
    assert type(AutoModel.from_config(tiny_config())) is BehrtModel


def test_saved_config_has_a_complete_auto_map(tmp_path):
    BehrtModel(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP
    assert config["model_type"] == "behrt"


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["behrt_hf"] = None  # make `import behrt_hf` fail in this process
    try:
        import behrt_hf  # noqa: F401
        raise SystemExit("behrt_hf is importable; the test would prove nothing")
    except ImportError:
        pass
    from transformers import (
        AutoModel, AutoModelForMaskedLM, AutoModelForPreTraining, AutoModelForSequenceClassification
    )
    path = sys.argv[1]
    inputs = {k: torch.tensor(v) for k, v in json.load(open(sys.argv[2])).items()}
    result = {}
    autos = [("base", AutoModel), ("mlm", AutoModelForMaskedLM), ("cls", AutoModelForSequenceClassification),
             ("pretraining", AutoModelForPreTraining)]
    for name, auto in autos:
        model = auto.from_pretrained(path, trust_remote_code=True).eval()
        assert "behrt_hf" not in type(model).__module__, type(model).__module__
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)  # passed through **kwargs to the backbone
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1, name
        result[name] = [type(model).__name__, out[0].tolist()]  # without labels: logits / last_hidden_state
    print(json.dumps(result))
    """
)


def test_trust_remote_code_loading_without_behrt_hf(tmp_path):
    config = tiny_config(position_encoding="visit_sinusoidal", num_labels=3)
    torch.manual_seed(0)
    model = BehrtForMaskedLM(config).eval()
    model.save_pretrained(tmp_path / "model")
    inputs = {
        "input_ids": [[2, 7, 8, 3, 9, 3]],
        "age_ids": [[40, 40, 40, 40, 41, 41]],
        "segment_ids": [[0, 0, 0, 0, 1, 1]],
        "visit_ids": [[0, 1, 1, 1, 2, 2]],
        "attention_mask": [[1] * 6],
    }
    (tmp_path / "inputs.json").write_text(json.dumps(inputs))
    (tmp_path / "script.py").write_text(REMOTE_SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "model"), str(tmp_path / "inputs.json")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [result[k][0] for k in ("base", "mlm", "cls", "pretraining")] == [
        "BehrtModel", "BehrtForMaskedLM", "BehrtForSequenceClassification", "BehrtForPreTraining"]
    with torch.no_grad():
        expected = model(**{k: torch.tensor(v) for k, v in inputs.items()}).logits
    torch.testing.assert_close(torch.tensor(result["mlm"][1]), expected)
