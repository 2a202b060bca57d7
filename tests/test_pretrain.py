"""The pretraining script: a tiny run end to end, resume after SIGKILL, and 2-process DDP."""

import json
import os
import socket
import subprocess
import sys

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForPreTraining

from behrt_hf import patient_features
from behrt_hf.data_collator import DataCollatorForPretraining
from behrt_hf.tracking import read_jsonl
from behrt_hf.training import pretrain
from tests.helpers import make_patients

TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=37"
COMMON = ["--config_overrides", TINY, "--use_cpu", "--report_to", "none", "--max_length", "48",
          "--disable_tqdm", "true", "--seed", "7"]


def save_cohort(path, patients_train, patients_eval):
    features = patient_features()
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list(patients_train, features=features),
        "validation": datasets.Dataset.from_list(patients_eval, features=features),
    }).save_to_disk(str(path))
    return str(path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    path = tmp_path_factory.mktemp("cohort") / "data"
    return save_cohort(path, make_patients(120, seed=1, max_visits=7), make_patients(30, seed=2, max_visits=7))


def test_pretrain_end_to_end(cohort, tmp_path, capsys):
    out = tmp_path / "run"
    result = pretrain.main(["--dataset_path", cohort, "--output_dir", str(out), "--do_train", "--max_steps", "6",
                            "--per_device_train_batch_size", "8", "--logging_steps", "2", "--eval_strategy", "steps",
                            "--eval_steps", "3", "--save_steps", "3", *COMMON])
    for name in ("summary.json", "metrics.jsonl", "training_curves.png", "README.md", "model.safetensors",
                 "tokenizer.json", "config.json", "checkpoint-6"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "mlm+nvp" and summary["model"]["class"] == "BehrtForPreTraining"
    assert summary["training"]["train_tokens_per_second"] > 0
    for key in ("mlm_accuracy", "mlm_top5_accuracy", "mlm_perplexity", "nvp_average_precision",
                "nvp_micro_auroc", "nvp_macro_auroc", "nvp_recall@10", "nvp_micro_f1"):
        assert f"eval_{key}" in result["eval"] and key in result["baseline"], key
    logged = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6]
    assert any("eval_mlm_accuracy" in r for r in logged) and all("padding_fraction" in r for r in logged)
    assert "frequency baseline" in capsys.readouterr().out
    card = (out / "README.md").read_text()  # rendered by behrt_hf.hub from model_cards/, as behrt-push does
    assert "library_name: transformers" in card and "Not for clinical use" in card
    assert "| metric | model | frequency baseline |" in card and "masked-code modelling" in card
    model = AutoModelForPreTraining.from_pretrained(out)
    assert model.config.vocab_size == summary["data"]["vocab_size"]


@pytest.mark.parametrize("objective", ["mlm", "nvp"])
def test_single_objectives(cohort, tmp_path, objective):
    result = pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path), "--do_train", "--max_steps", "2",
                            "--per_device_train_batch_size", "8", "--objective", objective, *COMMON])
    prefix = "eval_" + objective
    assert any(k.startswith(prefix) for k in result["eval"])
    assert not any(k.startswith("eval_" + ("nvp" if objective == "mlm" else "mlm")) for k in result["eval"])


def test_config_overrides_number_the_tokenizer_ages_too(cohort, tmp_path):
    """age_unit / max_age given as config overrides reach the tokenizer, so that model and tokenizer agree."""
    overrides = TINY + ",age_unit=month,max_age=100,age_encoding=learned+sinusoid"
    common = [c if c != TINY else overrides for c in COMMON]
    pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path), "--do_train", "--max_steps", "2",
                   "--per_device_train_batch_size", "8", *common])
    config = json.loads((tmp_path / "config.json").read_text())
    tokenizer = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["age_unit"], config["max_age"], config["age_encoding"]) == ("month", 100, "learned+sinusoid")
    assert (tokenizer["age_unit"], tokenizer["max_age"]) == ("month", 100)


def test_bad_arguments_are_reported(cohort, tmp_path):
    with pytest.raises(ValueError, match="--objective must be one of"):
        pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path), "--objective", "clm", *COMMON])
    with pytest.raises(ValueError, match="config_overrides"):
        pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path), "--do_train",
                       "--config_overrides", "hidden=3"])


KILLABLE = """
import os, signal, sys
from transformers import TrainerCallback
from behrt_hf.training.pretrain import main

class KillAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == int(os.environ["KILL_AT_STEP"]):
            os.kill(os.getpid(), signal.SIGKILL)

main(sys.argv[1:], callbacks=[KillAt()] if "KILL_AT_STEP" in os.environ else None)
"""


def run(args, env_extra=None, cwd=None, launcher=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    proc = subprocess.run([*(launcher or [sys.executable]), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)
    return proc


def test_resume_after_sigkill_matches_an_uninterrupted_run(cohort, tmp_path):
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    args = ["--dataset_path", cohort, "--do_train", "--max_steps", "6", "--save_steps", "2", "--logging_steps", "1",
            "--per_device_train_batch_size", "8", *COMMON]
    straight = run([str(script), *args, "--output_dir", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = run([str(script), *args, "--output_dir", str(tmp_path / "resumed")], {"KILL_AT_STEP": "3"})
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL, mid-run
    assert (tmp_path / "resumed" / "checkpoint-2").exists()
    assert not (tmp_path / "resumed" / "model.safetensors").exists()

    resumed = run([str(script), *args, "--output_dir", str(tmp_path / "resumed")])  # the same command again
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming from" in resumed.stderr

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    eval_a = json.loads((tmp_path / "straight" / "eval_results.json").read_text())
    eval_b = json.loads((tmp_path / "resumed" / "eval_results.json").read_text())
    for key, value in eval_a.items():
        if not key.endswith(("runtime", "per_second")):
            assert eval_b[key] == value, key
    losses = lambda p: [(r["step"], r["loss"]) for r in read_jsonl(p / "metrics.jsonl") if "loss" in r]
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    """Guards the loss-scaling pitfall: NVP with one possible cut (two visits each) and no dropout is
    deterministic, so 2 processes x 4 patients must follow 1 process x 8 patients."""
    two_visits = [dict(p, visits=p["visits"][:2]) for p in make_patients(200, seed=4, max_visits=6)
                  if len(p["visits"]) >= 2]
    data = save_cohort(tmp_path / "data", two_visits[:64], two_visits[64:80])
    args = ["--dataset_path", data, "--do_train", "--objective", "nvp", "--max_steps", "4", "--logging_steps", "1",
            "--group_by_length", "false", "--save_strategy", "no", "--learning_rate", "1e-3",
            "--config_overrides", TINY + ",hidden_dropout_prob=0,attention_probs_dropout_prob=0",
            "--use_cpu", "--report_to", "none", "--max_length", "48", "--disable_tqdm", "true", "--seed", "7"]
    one = run(["-m", "behrt_hf.training.pretrain", *args, "--output_dir", str(tmp_path / "one"),
               "--per_device_train_batch_size", "8"])
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    two = run(["-m", "behrt_hf.training.pretrain", *args, "--output_dir", str(tmp_path / "two"),
               "--per_device_train_batch_size", "4", "--ddp_backend", "gloo"], launcher=torchrun,
              env_extra={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert "process 1, device cpu" in two.stderr and "distributed distributed" in two.stderr  # two ranks
    losses = lambda p: [r["loss"] for r in read_jsonl(p / "metrics.jsonl") if "loss" in r]
    one_losses, two_losses = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one_losses) == len(two_losses) == 4
    assert one_losses == pytest.approx(two_losses, rel=1e-4), (one_losses, two_losses)
    assert len(set(one_losses)) > 1  # it trained


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementation_is_set_through_the_config(cohort, implementation):
    """A fresh model gets --attn_implementation through BehrtConfig's keyword, as from_pretrained does."""
    from behrt_hf import BehrtTokenizerFast

    tokenizer = BehrtTokenizerFast.build_vocab(make_patients(20, seed=1), model_max_length=48)
    model_args = pretrain.ModelArguments(config_overrides=TINY, attn_implementation=implementation)
    model = pretrain.build_model(model_args, pretrain.DataArguments(dataset_path=cohort, max_length=48), tokenizer)
    assert model.config._attn_implementation == implementation


def test_a_command_without_training_flags_trains_with_the_recipe(cohort, tmp_path):
    """transformers' defaults (batch 8, lr 5e-5, no warm-up) leave a small BEHRT near the frequency
    baseline: `behrt-pretrain` must default to the recipe instead, and flags still override it."""
    from transformers import TrainerCallback

    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen.update({key: getattr(args, key) for key in pretrain.RECIPE})

    pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path / "a"), "--do_train", "--max_steps", "1",
                   *COMMON], callbacks=[Capture()])
    assert seen == pretrain.RECIPE
    assert pretrain.RECIPE["per_device_train_batch_size"] >= 32 and pretrain.RECIPE["learning_rate"] > 5e-5
    pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path / "b"), "--do_train", "--max_steps", "1",
                   "--learning_rate", "1e-4", "--per_device_train_batch_size", "4", *COMMON], callbacks=[Capture()])
    assert seen["learning_rate"] == 1e-4 and seen["per_device_train_batch_size"] == 4


@pytest.mark.parametrize("steps", [100, 1000])
def test_the_recipe_schedule_warms_up_holds_then_decays_over_its_last_fifth(tmp_path, steps):
    """warmup_stable_decay without num_decay_steps decays over the last 20% of whatever the run's
    length is; an explicit num_decay_steps is kept."""
    from behrt_hf import BehrtConfig, BehrtForMaskedLM
    from behrt_hf.training.arguments import parse_config_overrides
    from behrt_hf.training.trainer import BehrtTrainer

    model = BehrtForMaskedLM(BehrtConfig(vocab_size=20, **parse_config_overrides(TINY)))
    args = pretrain.PretrainingArguments(output_dir=str(tmp_path), max_steps=steps, warmup_steps=10,
                                         report_to="none", use_cpu=True)
    trainer = BehrtTrainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    rates = []
    for _ in range(steps):
        rates.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    peak = args.learning_rate
    stable_end = steps - round(0.2 * steps)
    assert rates[5] < peak and rates[10] == pytest.approx(peak) and rates[stable_end - 1] == pytest.approx(peak)
    assert rates[stable_end + 1] < peak and rates[-1] < 0.01 * peak
    explicit = pretrain.PretrainingArguments(output_dir=str(tmp_path), max_steps=steps, warmup_steps=10,
                                             lr_scheduler_kwargs={"num_decay_steps": 5}, report_to="none", use_cpu=True)
    trainer = BehrtTrainer(model=model, args=explicit)
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    assert trainer.args.lr_scheduler_kwargs == {"num_decay_steps": 5}


def test_the_recipe_masks_40_percent_in_training_and_keeps_15_percent_for_validation(cohort, tmp_path):
    """The recipe trains with 40% of codes masked, but validation accuracy stays measured on 15%
    masks, so that figures before and after the recipe are comparable."""
    from transformers import TrainerCallback

    seen = {}

    class Capture(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
            seen["attention_init"] = model.config.attention_init
            seen["mlm_probability"] = train_dataloader.collate_fn.mlm_probability

    pretrain.main(["--dataset_path", cohort, "--output_dir", str(tmp_path / "a"), "--do_train", "--max_steps", "1",
                   *COMMON], callbacks=[Capture()])
    assert seen == {"attention_init": "mimetic_qk", "mlm_probability": 0.4}

    data_args = pretrain.DataArguments(dataset_path=cohort, max_length=48)
    cohort_dict = data_args.load_cohort()
    tokenizer = pretrain.prepare_tokenizer(cohort_dict, data_args, tmp_path / "b", resuming=False)
    _, evaluation = pretrain.build_datasets(cohort_dict, tokenizer, data_args, type("Seed", (), {"seed": 0})())
    first_code = DataCollatorForPretraining(tokenizer).first_code_id
    codes = masked = 0
    for example in evaluation:
        labels, ids = torch.tensor(example["labels"]), torch.tensor(example["input_ids"])
        masked += int((labels != -100).sum())
        codes += int(((labels != -100) | (ids >= first_code)).sum())  # a masked code may show [MASK]
    assert 0.10 < masked / codes < 0.20, masked / codes
    with pytest.raises(ValueError, match="--eval_mlm_probability must be in"):
        pretrain.DataArguments(dataset_path=cohort, eval_mlm_probability=0.0)
