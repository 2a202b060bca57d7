"""The shipped accelerate configs parse, and the CPU one really starts two ranks."""

import subprocess
import sys
from pathlib import Path

import yaml

from behrt_hf.training import pretrain

CONFIGS = Path(pretrain.__file__).resolve().parent / "accelerate"


def test_configs_parse():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.name for f in files} >= {"cpu_multiprocess.yaml", "single_gpu_bf16.yaml", "multi_gpu_bf16.yaml",
                                       "apple_mps.yaml"}
    for f in files:
        config = yaml.safe_load(f.read_text())
        assert config["num_processes"] >= 1 and "distributed_type" in config, f.name


def test_cpu_config_starts_two_ranks(tmp_path):
    from tests.test_pretrain import save_cohort
    from tests.helpers import make_patients

    data = save_cohort(tmp_path / "data", make_patients(40, seed=1, max_visits=4), make_patients(10, seed=2))
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / "cpu_multiprocess.yaml"),
         "-m", "behrt_hf.training.pretrain", "--use_cpu", "--ddp_backend", "gloo", "--dataset_path", data,
         "--output_dir", str(tmp_path / "out"), "--do_train", "--max_steps", "1", "--per_device_train_batch_size", "4",
         "--objective", "mlm", "--config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=4",
         "--report_to", "none", "--disable_tqdm", "true", "--max_length", "32"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "process 0, device cpu" in proc.stderr and "process 1, device cpu" in proc.stderr
