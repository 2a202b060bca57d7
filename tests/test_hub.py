"""Publishing: model cards, and pushes of models, LoRA adapters and cohorts to a loopback fake Hub.

Nothing here reaches the network. The test process stays offline (conftest.py); the pushes and
the loads run in client subprocesses whose environment points huggingface_hub at the fake Hub
(`FakeHub.client_env`: HF_ENDPOINT=http://127.0.0.1:<port>, online, Xet off, a fake token) and
which call `guard_network()` first, so they cannot resolve or connect to anything else.
"""

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import datasets
import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model

from behrt_hf import BehrtForSequenceClassification
from behrt_hf.data_builders.meds import load_meds
from behrt_hf.data_builders.synthetic_ehr import is_synthetic_cohort, load_synthetic
from behrt_hf.hub import (
    DEFAULT_IGNORE_PATTERNS,
    check_folder,
    detect_kind,
    files_to_push,
    per_patient_entries,
    push_dataset_to_hub,
    push_folder_to_hub,
    render_model_card,
)
from behrt_hf.schema import patient_features
from behrt_hf.tasks import LabelKind, save_label_kind
from behrt_hf.training.push_to_hub import PushArguments, parse_args
from tests._readers_testutils import write_meds
from tests.fake_hub import FakeHub
from tests.helpers import make_patients, tiny_config

ROOT = Path(__file__).resolve().parents[1]
INPUTS = {
    "input_ids": [[2, 7, 8, 3, 9, 3], [2, 11, 3, 12, 13, 3]],
    "age_ids": [[40, 40, 40, 40, 41, 41], [60, 60, 60, 62, 62, 62]],
    "segment_ids": [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]],
    "attention_mask": [[1] * 6, [1, 1, 1, 1, 1, 0]],
}
MODEL, PUBLIC, ADAPTER, COHORT = "alice/behrt-tiny", "alice/behrt-tiny-public", "alice/behrt-tiny-lora", "alice/cohort"
SYNTHETIC = "alice/synthetic-cohort"
PREDICTIONS = {"patient_id": ["17", "42"], "probability": [0.12, 0.81], "label": [0, 1]}  # what finetune writes

FINETUNE_SUMMARY = {
    "task": "heart_failure_1y",
    "mode": "full",
    "data": {"source": "synthetic:tiny", "train_patients": 80, "eval_patients": 20, "vocab_size": 99},
    "model": {"class": "BehrtForSequenceClassification", "preset": "small", "parameters": 51234,
              "trainable_parameters": 51234, "base_model": None},
    "eval": {"auroc": 0.71, "auprc": 0.42, "brier": 0.19, "loss": 0.55, "runtime": 1.2},
    "oracle": {"auroc": 0.83, "auprc": 0.61},
    "training": {"learning_rate": 5e-4, "num_train_epochs": 1, "wall_time_seconds": 12.5},
}
PRETRAIN_SUMMARY = {  # the shape training/pretrain.py writes
    "objective": "mlm+nvp",
    "data": {"source": "synthetic:small", "train_patients": 800, "eval_patients": 100, "vocab_size": 412,
             "max_length": 256},
    "model": {"class": "BehrtForPreTraining", "preset": "small", "parameters": 490000,
              "config": {"hidden_size": 128, "num_hidden_layers": 2}},
    "training": {"wall_time_seconds": 30.0, "train_loss": 4.2, "train_tokens_per_second": 9000.0},
    "eval": {"eval_loss": 4.0, "eval_mlm_accuracy": 0.21, "eval_nvp_micro_auroc": 0.88, "eval_runtime": 0.5,
             "eval_mlm_num_masked": 1000, "epoch": 1.0},
    "frequency_baseline": {"mlm_accuracy": 0.08, "nvp_micro_auroc": 0.81},
}


def lora_summary() -> dict:
    summary = json.loads(json.dumps(FINETUNE_SUMMARY))
    summary["mode"] = "lora"
    summary["model"].update(trainable_parameters=1234, base_model=MODEL)
    return summary


def save_tiny_classifier(folder: Path, seed: int = 0) -> BehrtForSequenceClassification:
    torch.manual_seed(seed)
    model = BehrtForSequenceClassification(tiny_config(num_labels=2)).eval()
    model.save_pretrained(folder)
    return model


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**{k: torch.tensor(v) for k, v in INPUTS.items()}).logits


def tiny_cohort() -> datasets.DatasetDict:
    """Rows built by hand: nothing marks them synthetic, so they stand for real patients' records."""
    features = patient_features(tasks=["hf"], with_oracle=True)
    rows = [
        {**p, "label_hf": i % 2, "oracle_hf": 0.25 + 0.5 * (i % 2), "index_visit_hf": len(p["visits"]) - 1}
        for i, p in enumerate(make_patients(9, seed=3))
    ]
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows[:6], features=features),
        "test": datasets.Dataset.from_list(rows[6:], features=features),
    })


# ---- client processes ---------------------------------------------------------------------------

PUSH_SCRIPT = """
import json, sys
from tests.fake_hub import guard_network
guard_network()
import datasets
from behrt_hf.hub import push_dataset_to_hub
from behrt_hf.training.push_to_hub import main

args = json.loads(sys.argv[1])
out = {
    "model": main(["--folder", args["model"], "--repo_id", "%(MODEL)s", "--token", args["token"]]),
    "public": main(["--folder", args["model"], "--repo_id", "%(PUBLIC)s", "--public"]),
    "adapter": main(["--folder", args["adapter"], "--repo_id", "%(ADAPTER)s", "--base_model", "%(MODEL)s",
                     "--datasets", "%(COHORT)s"]),
    "dataset": push_dataset_to_hub(datasets.load_from_disk(args["cohort"]), "%(COHORT)s", token=args["token"],
                                   allow_real_data=True),
    "synthetic": push_dataset_to_hub(datasets.load_from_disk(args["synthetic"]), "%(SYNTHETIC)s"),
}
print(json.dumps(out))
""" % dict(MODEL=MODEL, PUBLIC=PUBLIC, ADAPTER=ADAPTER, COHORT=COHORT, SYNTHETIC=SYNTHETIC)

# Loads everything back where `import behrt_hf` fails: the Hub repos alone must suffice.
LOAD_SCRIPT = """
import json, sys
sys.modules["behrt_hf"] = None
try:
    import behrt_hf  # noqa: F401
    raise SystemExit("behrt_hf is importable; the test would prove nothing")
except ImportError:
    pass
from tests.fake_hub import guard_network
guard_network()
import pathlib
import datasets, torch
from huggingface_hub import ModelCard, snapshot_download
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification

args = json.loads(sys.argv[1])
inputs = {k: torch.tensor(v) for k, v in args["inputs"].items()}

def logits(model):
    assert "behrt_hf" not in type(model).__module__, type(model).__module__
    with torch.no_grad():
        return model.eval()(**inputs).logits.tolist()

load_base = lambda: AutoModelForSequenceClassification.from_pretrained("%(MODEL)s", trust_remote_code=True)
result = {
    "model": logits(load_base()),
    "auto_peft": logits(AutoPeftModelForSequenceClassification.from_pretrained("%(ADAPTER)s", trust_remote_code=True)),
    "peft": logits(PeftModel.from_pretrained(load_base(), "%(ADAPTER)s")),
    "cards": {repo: ModelCard.load(repo).data.to_dict() for repo in ("%(MODEL)s", "%(ADAPTER)s")},
    "snapshot": sorted(p.name for p in pathlib.Path(snapshot_download("%(MODEL)s")).iterdir()),
}
datasets.load_dataset("%(COHORT)s").save_to_disk(args["cohort_out"])
print(json.dumps(result))
""" % dict(MODEL=MODEL, ADAPTER=ADAPTER, COHORT=COHORT)


def run_client(hub: FakeHub, script: str, args: dict, tmp: Path) -> dict:
    (tmp / "client.py").write_text(textwrap.dedent(script))
    env = hub.client_env()
    env.update(PYTHONPATH=str(ROOT), HF_MODULES_CACHE=str(tmp / "modules"), HF_HOME=str(tmp / "hf_home"))
    proc = subprocess.run([sys.executable, str(tmp / "client.py"), json.dumps(args)], capture_output=True,
                          text=True, env=env, cwd=tmp, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not hub.unhandled, f"the fake Hub got requests it does not implement: {hub.unhandled}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fake_hub():
    with FakeHub() as hub:
        assert urlsplit(hub.url).hostname == "127.0.0.1", hub.url  # nothing but loopback
        yield hub


@pytest.fixture(scope="module")
def published(fake_hub, tmp_path_factory):
    """A tiny classifier, a LoRA adapter on it and a tiny cohort, saved and pushed by one client process."""
    tmp = tmp_path_factory.mktemp("publish")
    base = save_tiny_classifier(tmp / "model")
    (tmp / "model" / "summary.json").write_text(json.dumps(FINETUNE_SUMMARY))
    (tmp / "model" / "checkpoint-1").mkdir()
    (tmp / "model" / "checkpoint-1" / "optimizer.pt").write_bytes(b"\0" * 64)  # must not be uploaded
    for split in ("test", "validation"):  # patient-level: must not be uploaded either
        (tmp / "model" / f"predictions_{split}.json").write_text(json.dumps(PREDICTIONS))

    lora_base = BehrtForSequenceClassification.from_pretrained(tmp / "model")
    peft_model = get_peft_model(lora_base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                      target_modules=["query", "value"]))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    peft_model.save_pretrained(tmp / "adapter")  # base_model_name_or_path: the local folder, for now
    (tmp / "adapter" / "summary.json").write_text(json.dumps(lora_summary()))

    cohort = tiny_cohort()
    cohort.save_to_disk(tmp / "cohort")
    load_synthetic("tiny", num_patients=12, cache_dir=str(tmp / "synthetic_cache")).save_to_disk(tmp / "synthetic")
    pushed = run_client(fake_hub, PUSH_SCRIPT,
                        {"model": str(tmp / "model"), "adapter": str(tmp / "adapter"), "cohort": str(tmp / "cohort"),
                         "synthetic": str(tmp / "synthetic"), "token": fake_hub.token}, tmp)
    return dict(tmp=tmp, pushed=pushed, cohort=cohort, model_logits=logits(base), adapter_logits=logits(peft_model))


@pytest.fixture(scope="module")
def reloaded(fake_hub, published):
    tmp = published["tmp"]
    result = run_client(fake_hub, LOAD_SCRIPT, {"inputs": INPUTS, "cohort_out": str(tmp / "cohort_out")}, tmp)
    result["cohort"] = datasets.load_from_disk(tmp / "cohort_out")
    return result


def test_model_reloads_from_the_hub_without_behrt_hf(published, reloaded):
    torch.testing.assert_close(torch.tensor(reloaded["model"]), published["model_logits"])


def test_adapter_reloads_from_the_hub(fake_hub, published, reloaded):
    adapter_config = json.loads(fake_hub.read("model", ADAPTER, "adapter_config.json"))
    assert adapter_config["base_model_name_or_path"] == MODEL  # the Hub id, not the local folder
    expected = published["adapter_logits"]
    assert not torch.allclose(expected, published["model_logits"])  # the adapter matters
    torch.testing.assert_close(torch.tensor(reloaded["auto_peft"]), expected)
    torch.testing.assert_close(torch.tensor(reloaded["peft"]), expected)


def test_cards_round_trip(reloaded):
    model, adapter = reloaded["cards"][MODEL], reloaded["cards"][ADAPTER]
    assert model["library_name"] == "transformers" and adapter["library_name"] == "peft"
    assert adapter["base_model"] == MODEL and "base_model" not in model
    assert adapter["datasets"] == [COHORT]
    for card in (model, adapter):
        assert card["license"] == "apache-2.0"
        assert {"behrt", "ehr", "medical", "clinical-prediction", "heart-failure-1y"} <= set(card["tags"])
        (index,) = card["model-index"]
        metrics = {m["type"]: m["value"] for result in index["results"] for m in result["metrics"]}
        assert metrics == {"auroc": 0.71, "auprc": 0.42, "brier": 0.19}
    assert {"peft", "lora"} <= set(adapter["tags"])


def test_repos_are_private_unless_public_is_asked(fake_hub, published):
    assert fake_hub.repo("model", MODEL).private
    assert fake_hub.repo("model", ADAPTER).private
    assert fake_hub.repo("dataset", COHORT).private
    assert not fake_hub.repo("model", PUBLIC).private
    assert published["pushed"]["model"].endswith(f"/{MODEL}")


def test_private_repos_are_invisible_without_the_token(fake_hub, published):
    def status(path, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to loopback
            with opener.open(urllib.request.Request(fake_hub.url + path, headers=headers)) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code

    assert status(f"/api/models/{MODEL}") == 404
    assert status(f"/api/models/{MODEL}", fake_hub.token) == 200
    assert status(f"/api/models/{PUBLIC}") == 200


def test_push_uploads_weights_as_lfs_and_leaves_checkpoints_out(fake_hub, published):
    files = fake_hub.repo("model", MODEL).head.files
    assert files["model.safetensors"].lfs and not files["config.json"].lfs
    assert {"README.md", "config.json", "configuration_behrt.py", "modeling_behrt.py", "summary.json"} <= set(files)
    assert not any(path.startswith("checkpoint-") for path in files)


def test_push_leaves_patient_level_files_on_the_machine(fake_hub, published):
    assert (published["tmp"] / "model" / "predictions_test.json").is_file()  # they were in the folder
    for repo in (MODEL, PUBLIC):
        files = set(fake_hub.repo("model", repo).head.files)
        assert not any("predictions" in path for path in files), files
        assert files == {".gitattributes", "README.md", "config.json", "configuration_behrt.py",
                         "model.safetensors", "modeling_behrt.py", "summary.json"}
    card = fake_hub.read("model", MODEL, "README.md").decode()
    assert card.startswith("---\n") and "Not for clinical use" in card


def test_snapshot_download_gets_the_published_files(fake_hub, reloaded):
    assert reloaded["snapshot"] == sorted(fake_hub.repo("model", MODEL).head.files)


def test_dataset_round_trip(fake_hub, published, reloaded):
    original, loaded = published["cohort"], reloaded["cohort"]
    assert set(loaded) == set(original)
    for split in original:
        assert loaded[split].features == original[split].features
        assert loaded[split].to_list() == original[split].to_list()
    card = fake_hub.read("dataset", COHORT, "README.md").decode()
    assert "dataset_info" in card  # our text, plus push_to_hub's metadata
    # rows built by hand, pushed with allow_real_data=True: the card does not call them synthetic
    assert "A cohort of electronic health records" in card and "- synthetic" not in card


def test_a_synthetic_cohort_goes_up_without_being_told(fake_hub, published):
    files = set(fake_hub.repo("dataset", SYNTHETIC).head.files)
    assert any(path.endswith(".parquet") for path in files), files
    card = fake_hub.read("dataset", SYNTHETIC, "README.md").decode()
    assert "A **synthetic** cohort" in card and "- synthetic" in card


# ---- in-process: cards and checks, no Hub ------------------------------------------------------


def test_pretrain_summary_renders(tmp_path):
    save_tiny_classifier(tmp_path)
    card = render_model_card(tmp_path, PRETRAIN_SUMMARY, "model", repo_id="me/behrt-small")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers"
    assert {"pretraining", "masked-code-modelling", "next-visit-prediction", "synthetic-data"} <= set(data["tags"])
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results == {"mlm_accuracy": 0.21, "nvp_micro_auroc": 0.88}  # no loss, runtime, counts or epoch
    assert {r.task_type for r in card.data.eval_results} == {"fill-mask"}
    text = card.text
    for expected in ("Not for clinical use", "Synthetic data", "vocabulary size", "412 tokens",
                     "frequency baseline", "| mlm_accuracy | 0.21 | 0.08 |", "me/behrt-small", "## Citation"):
        assert expected in text, expected
    assert ModelCard(str(card)).data.to_dict() == data  # the YAML header parses back


def test_adapter_card_has_base_model_and_oracle(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "SEQ_CLS", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"],
         "base_model_name_or_path": "me/behrt-small"}))
    card = render_model_card(folder, lora_summary(), "adapter", repo_id="me/lora")
    assert card.data.library_name == "peft"
    assert card.data.base_model == "me/behrt-small"  # adapter_config.json's, which peft loads, over the summary's
    assert "AutoPeftModelForSequenceClassification" in card.text
    assert "| auroc | 0.71 | 0.83 |" in card.text and "| rank r | 4 |" in card.text
    assert "| fine-tuning | lora |" in card.text


def test_card_states_the_recalibration_and_reads_like_prose(tmp_path):
    """What finetune writes: patients per split, the class-imbalance handling and its bias shift;
    PEFT's repeated modules_to_save names appear once."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 8, "target_modules": ["query"], "base_model_name_or_path": "me/behrt-small",
         "modules_to_save": ["classifier", "classifier", "score"]}))
    summary = lora_summary()
    summary["data"].update(eval_patients={"test": 682, "validation": 1740}, class_imbalance="pos_weight",
                           calibration_logit_shift=-2.279)
    text = render_model_card(folder, summary, "adapter", repo_id="me/lora").text
    assert "| evaluation patients | test 682, validation 1,740 |" in text
    assert "| class imbalance | pos_weight; classifier bias shifted by -2.279 after training" in text
    assert "| trained in full | `classifier`, `score` |" in text


def test_missing_summary_keys_are_left_out(tmp_path):
    save_tiny_classifier(tmp_path)
    card = render_model_card(tmp_path, {}, "model")
    assert not card.data.eval_results and "## Evaluation" not in card.text
    assert "| vocabulary size | 99 tokens" in card.text  # from config.json
    assert "Synthetic data" not in card.text


def test_folders_without_configs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="config.json.*adapter_config.json"):
        detect_kind(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"missing weights \(model.safetensors"):
        check_folder(tmp_path, "model")
    with pytest.raises(ValueError, match="missing adapter_config.json, adapter weights"):
        check_folder(tmp_path, "adapter")
    with pytest.raises(ValueError, match="missing adapter_config.json"):
        push_folder_to_hub(tmp_path, "me/x", kind="adapter", token="unused")  # fails before any request


def test_adapter_on_a_local_base_needs_a_hub_base_model(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path)}))
    (tmp_path / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="local path.*base_model"):
        push_folder_to_hub(tmp_path, "me/x", token="unused")  # fails before any request


def test_network_guard_refuses_anything_but_loopback(fake_hub):
    script = (
        "import socket\n"
        "from tests.fake_hub import guard_network\n"
        "guard_network()\n"
        "try:\n"
        "    socket.create_connection(('huggingface.co', 443), timeout=1)\n"
        "except ConnectionRefusedError as e:\n"
        "    print('refused', e)\n"
    )
    env = dict(fake_hub.client_env(), PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("refused network guard"), proc.stdout + proc.stderr


def test_cli_is_private_by_default():
    base = ["--folder", "out", "--repo_id", "me/x"]
    assert parse_args(PushArguments, base)[0].private is True
    assert parse_args(PushArguments, [*base, "--public"])[0].private is False
    with pytest.raises(ValueError, match="not used"):  # private is the default, not a flag
        parse_args(PushArguments, [*base, "--private"])
    with pytest.raises(ValueError, match="namespace/name"):
        parse_args(PushArguments, ["--folder", "out", "--repo_id", "me/x/y"])
    assert parse_args(PushArguments, ["--folder", "out", "--repo_id", "x"])[0].repo_id == "x"  # the user's namespace
    with pytest.raises(ValueError, match="--include"):
        parse_args(PushArguments, [*base, "--allow_patient_data"])
    args = parse_args(PushArguments, [*base, "--include", "notes.txt", "eval/table.csv", "--exclude", "*.log"])[0]
    assert args.include == ["notes.txt", "eval/table.csv"] and args.exclude == ["*.log"]


# ---- what may leave the machine: in-process, refused before any request -------------------------


def _finetuned_folder(folder: Path) -> Path:
    """What behrt-finetune leaves: the model, its summary and plots, the predictions, a checkpoint."""
    save_tiny_classifier(folder)
    (folder / "summary.json").write_text(json.dumps(FINETUNE_SUMMARY))
    save_label_kind(folder, LabelKind())
    (folder / "roc.png").write_bytes(b"\x89PNG")
    (folder / "training_args.bin").write_bytes(b"\0")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"\0")
    for split in ("test", "validation"):
        (folder / f"predictions_{split}.json").write_text(json.dumps(PREDICTIONS))
    return folder


def test_the_allow_list_leaves_out_predictions_and_says_so(tmp_path, caplog):
    folder = _finetuned_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="behrt_hf.hub"):
        files = files_to_push(folder)
    assert files == ["config.json", "configuration_behrt.py", "label_kind.json", "model.safetensors",
                     "modeling_behrt.py", "roc.png", "summary.json"]
    assert "predictions_test.json, predictions_validation.json" in caplog.text  # left out, not silently
    assert "checkpoint-2/ (1 files), training_args.bin" in caplog.text


def test_unknown_files_are_refused_unless_named(tmp_path):
    folder = _finetuned_folder(tmp_path)
    (folder / "notes.txt").write_text("my notes")
    (folder / "eval").mkdir()
    (folder / "eval" / "table.md").write_text("| a |")
    with pytest.raises(ValueError, match=r"eval/table.md, notes.txt would go up.*--include FILE.*--exclude"):
        files_to_push(folder)
    with pytest.raises(ValueError, match="notes.txt"):
        push_folder_to_hub(folder, "me/x", token="unused")  # fails before any request
    assert {"notes.txt", "eval/table.md"} <= set(files_to_push(folder, extra_files=["notes.txt", "eval/table.md"]))
    left_out = files_to_push(folder, ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, "notes.txt", "eval/*"])
    assert "notes.txt" not in left_out and "eval/table.md" not in left_out
    with pytest.raises(ValueError, match="extra_files not found in the folder: missing.txt"):
        files_to_push(folder, extra_files=["missing.txt"])


@pytest.mark.parametrize("name", ["predictions_test.json", "embeddings.parquet", "cohort.csv"])
def test_patient_level_files_go_up_only_when_named_and_allowed(tmp_path, name):
    folder = _finetuned_folder(tmp_path)
    (folder / name).write_bytes(b"patient rows")
    assert name not in files_to_push(folder)
    with pytest.raises(ValueError, match=f"{name} hold.*patient-level data.*allow_patient_data=True"):
        files_to_push(folder, extra_files=[name])
    with pytest.raises(ValueError, match="patient-level"):
        push_folder_to_hub(folder, "me/x", token="unused", extra_files=[name])  # fails before any request
    assert name in files_to_push(folder, extra_files=[name], allow_patient_data=True)


def test_summaries_must_hold_aggregates_only(tmp_path):
    assert per_patient_entries(FINETUNE_SUMMARY) == per_patient_entries(PRETRAIN_SUMMARY) == []
    assert per_patient_entries({"log_history": [{"loss": 1.0, "step": s} for s in range(1000)]}) == []
    folder = _finetuned_folder(tmp_path)
    leaky = {**FINETUNE_SUMMARY, "splits": {"test": {"patient_id": ["17", "42"], "auroc": 0.7}}}
    (folder / "summary.json").write_text(json.dumps(leaky))
    with pytest.raises(ValueError, match=r"per-patient data \(splits.test.patient_id\); a published summary.json"):
        push_folder_to_hub(folder, "me/x", token="unused")  # fails before any request
    leaky = {**FINETUNE_SUMMARY, "eval": {**FINETUNE_SUMMARY["eval"], "probabilities": [0.5] * 300}}
    (folder / "summary.json").write_text(json.dumps(leaky))
    with pytest.raises(ValueError, match=r"eval.probabilities \(300 values\)"):
        files_to_push(folder)
    assert "summary.json" not in files_to_push(folder, ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, "summary.json"])


def test_a_cohort_not_marked_synthetic_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not marked synthetic.*allow_real_data=True"):
        push_dataset_to_hub(tiny_cohort(), "me/x", token="unused")  # fails before any request
    events = [(1, dt.datetime(1980, 1, 1), "MEDS_BIRTH"), (1, None, "GENDER//F"), (1, dt.datetime(2020, 1, 1), "ICD10CM//I10")]
    read = load_meds(write_meds(tmp_path / "meds", {"0": events}), cache_dir=str(tmp_path / "cache"))
    assert not is_synthetic_cohort(read)
    with pytest.raises(ValueError, match="not marked synthetic"):
        push_dataset_to_hub(read, "me/x", token="unused")
    cohort = load_synthetic("tiny", num_patients=12, cache_dir=str(tmp_path / "synthetic"))
    assert is_synthetic_cohort(cohort) and is_synthetic_cohort(cohort["train"].filter(lambda row: True))
    assert not is_synthetic_cohort(datasets.Dataset.from_list(cohort["train"].to_list(), features=cohort["train"].features))

