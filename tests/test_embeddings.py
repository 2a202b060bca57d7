"""Patient embeddings: the parquet's layout, determinism, the poolings, padding, no leakage past the
index visit, every kind of checkpoint (pretraining, classification, LoRA adapter, masked LM), the CLI."""

import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from behrt_hf import (
    BehrtConfig,
    BehrtForMaskedLM,
    BehrtForPreTraining,
    BehrtForSequenceClassification,
    BehrtTokenizerFast,
    patient_features,
)
from behrt_hf.embeddings import (
    embed_patients,
    load_encoder,
    prediction_times,
    read_embeddings,
    write_embeddings,
)
from behrt_hf.tasks import Task
from tests.helpers import CODES, add_toy_task, make_patients


def save_tiny_behrt(path, tokenizer, model_class=BehrtForPreTraining, seed: int = 0, **config):
    """A tiny BEHRT (hidden 32, 2 layers, random weights) and its tokenizer saved in `path`."""
    config = BehrtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=tokenizer.model_max_length,
                         age_unit=tokenizer.age_unit, max_age=tokenizer.max_age, **config)
    torch.manual_seed(seed)
    model = model_class(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.eval()


@pytest.fixture(scope="module")
def patients():
    """30 patients with the toy task `demo` (index visit = the second-to-last; one-visit patients excluded)."""
    rows = add_toy_task(make_patients(30, seed=4, max_visits=6))
    return datasets.Dataset.from_list(rows, features=patient_features(tasks=["demo"], with_oracle=True))


@pytest.fixture(scope="module")
def tokenizer(patients):
    return BehrtTokenizerFast.build_vocab(patients, model_max_length=64)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp("pretrained")
    return str(path), save_tiny_behrt(path, tokenizer)


def embed(model, tokenizer, patients, **kwargs):
    return embed_patients(model, tokenizer, patients, progress=False, **kwargs)


def test_parquet_layout_and_values(pretrained, tokenizer, patients, tmp_path):
    _, model = pretrained
    vectors = embed(model, tokenizer, patients, pooling="mean")
    assert vectors.shape == (len(patients), 32) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    path = write_embeddings(tmp_path, patients["patient_id"], vectors, prediction_times(patients))
    assert path.name == "embeddings.parquet"
    schema = pq.read_schema(path)
    assert schema.names == ["subject_id", "patient_id", "prediction_time", "embedding"]
    assert schema.field("subject_id").type == pa.int64() and schema.field("patient_id").type == pa.string()
    assert schema.field("prediction_time").type == pa.timestamp("us")
    assert schema.field("embedding").type == pa.list_(pa.float32(), 32)  # fixed-size list
    table, matrix = read_embeddings(path)
    np.testing.assert_array_equal(matrix, vectors)
    assert table["subject_id"].to_pylist() == [int(p) for p in patients["patient_id"]]
    last_times = [p["visits"][-1]["time"] for p in patients]
    assert table["prediction_time"].to_pylist() == last_times

    written = write_embeddings(tmp_path / "named.parquet", [f"p{i}" for i in range(len(patients))], vectors)
    assert pq.read_schema(written).names == ["patient_id", "embedding"]  # ids that are not integers: no subject_id


def test_embeddings_are_deterministic_and_batch_independent(pretrained, tokenizer, patients):
    _, model = pretrained
    model.train()  # embedding switches dropout off and restores the mode
    first = embed(model, tokenizer, patients, pooling="cls", batch_size=4)
    assert model.training
    np.testing.assert_array_equal(embed(model, tokenizer, patients, pooling="cls", batch_size=4), first)
    np.testing.assert_allclose(embed(model, tokenizer, patients, pooling="cls", batch_size=64), first, atol=1e-5)
    np.testing.assert_allclose(embed(model, tokenizer, list(patients), pooling="cls", batch_size=7), first, atol=1e-5)


def test_poolings_differ_and_padding_is_ignored(pretrained, tokenizer, patients):
    _, model = pretrained
    vectors = {p: embed(model, tokenizer, patients, pooling=p) for p in ("cls", "mean", "pooler")}
    for a, b in [("cls", "mean"), ("cls", "pooler"), ("mean", "pooler")]:
        assert not np.allclose(vectors[a], vectors[b], atol=1e-3), (a, b)

    lengths = [len(tokenizer.encode_patient(p, max_length=64)["input_ids"]) for p in patients]
    short, long = int(np.argmin(lengths)), int(np.argmax(lengths))
    assert lengths[short] < lengths[long]  # together in one batch, the short one is padded
    pair = patients.select([short, long])
    for pooling in ("mean", "cls", "pooler"):
        alone = embed(model, tokenizer, patients.select([short]), pooling=pooling)
        padded = embed(model, tokenizer, pair, pooling=pooling, batch_size=2)
        np.testing.assert_allclose(padded[0], alone[0], atol=1e-5)
        np.testing.assert_allclose(padded[0], vectors[pooling][short], atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be one of"):
        embed(model, tokenizer, patients, pooling="max")


def test_nothing_after_the_index_visit_reaches_the_embedding(pretrained, tokenizer, patients):
    """A marker code added after the index visit changes the whole-record embedding, not the task's."""
    _, model = pretrained
    task = Task("demo")
    eligible = task.eligible(patients)
    changed = eligible.map(lambda p: {"visits": p["visits"][:-1] + [
        dict(p["visits"][-1], codes=p["visits"][-1]["codes"] + [CODES[1], CODES[5]])]})
    cut, cut_changed = (embed(model, tokenizer, d, pooling="mean", task=task) for d in (eligible, changed))
    np.testing.assert_array_equal(cut_changed, cut)
    whole, whole_changed = (embed(model, tokenizer, d, pooling="mean") for d in (eligible, changed))
    assert not np.allclose(whole_changed, whole, atol=1e-4)
    np.testing.assert_array_equal(embed(model, tokenizer, eligible, pooling="mean", task=task.index_visit), cut)

    times = prediction_times(eligible, task).to_pylist()
    assert times == [p["visits"][p["index_visit_demo"]]["time"] for p in eligible]
    assert times != prediction_times(eligible).to_pylist()


def test_a_classification_checkpoint_and_a_lora_adapter_embed(pretrained, tokenizer, patients, tmp_path):
    from peft import LoraConfig, TaskType, get_peft_model

    path, pretrained_model = pretrained
    classifier = save_tiny_behrt(tmp_path / "classifier", tokenizer, BehrtForSequenceClassification, seed=1,
                                 num_labels=1)
    encoder, loaded_tokenizer = load_encoder(str(tmp_path / "classifier"))
    assert len(loaded_tokenizer) == len(tokenizer) and encoder.pooler is not None
    np.testing.assert_allclose(embed(encoder, tokenizer, patients, pooling="pooler"),
                               embed(classifier, tokenizer, patients, pooling="pooler"), atol=1e-6)

    base = BehrtForSequenceClassification.from_pretrained(path, num_labels=1)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "key", "value", "dense"],
                      modules_to_save=["classifier"], init_lora_weights=False)  # non-zero B: the adapter matters
    torch.manual_seed(2)
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(tmp_path / "adapter")
    tokenizer.save_pretrained(tmp_path / "adapter")
    in_memory = embed(peft_model, tokenizer, patients, pooling="pooler")
    encoder, _ = load_encoder(str(tmp_path / "adapter"))
    np.testing.assert_allclose(embed(encoder, tokenizer, patients, pooling="pooler"), in_memory, atol=1e-5)
    assert not np.allclose(in_memory, embed(pretrained_model, tokenizer, patients, pooling="pooler"), atol=1e-3)


def test_a_masked_lm_checkpoint_has_no_pooler(tokenizer, patients, tmp_path):
    model = save_tiny_behrt(tmp_path, tokenizer, BehrtForMaskedLM)
    encoder, _ = load_encoder(str(tmp_path))
    assert encoder.pooler is None  # not a randomly initialised one
    for candidate in (model, encoder):
        with pytest.raises(ValueError, match="no trained pooler"):
            embed(candidate, tokenizer, patients, pooling="pooler")
    np.testing.assert_allclose(embed(encoder, tokenizer, patients, pooling="mean"),
                               embed(model, tokenizer, patients, pooling="mean"), atol=1e-6)
    with pytest.raises(TypeError, match="Expected a BEHRT model"):
        embed(torch.nn.Linear(2, 2), tokenizer, patients)


@pytest.fixture(scope="module")
def synthetic_model(tmp_path_factory):
    """A tiny BEHRT with a vocabulary of the tiny synthetic cohort's training split."""
    from behrt_hf import load_synthetic

    cohort = load_synthetic("tiny", seed=0)
    tokenizer = BehrtTokenizerFast.build_vocab(cohort["train"], model_max_length=64)
    path = tmp_path_factory.mktemp("synthetic_model")
    save_tiny_behrt(path, tokenizer, seed=7)  # not the report's random baseline (seed 0)
    return str(path), cohort


def test_cli_end_to_end_on_the_tiny_synthetic_cohort(synthetic_model, tmp_path):
    from behrt_hf.training import embed as embed_cli

    path, cohort = synthetic_model
    summary = embed_cli.main(["--model_name_or_path", path, "--synthetic", "tiny", "--output_dir", str(tmp_path / "all"),
                              "--batch_size", "16", "--max_length", "64"])
    table, matrix = read_embeddings(tmp_path / "all" / "embeddings.parquet")
    assert matrix.shape == (sum(len(s) for s in cohort.values()), 32) and np.isfinite(matrix).all()
    assert table["split"].to_pylist() == [name for name in cohort for _ in range(len(cohort[name]))]
    assert table["patient_id"].to_pylist() == [i for name in cohort for i in cohort[name]["patient_id"]]
    assert summary["patients"] == len(matrix) and summary["patients_per_second"] > 0
    assert json.loads((tmp_path / "all" / "embed_summary.json").read_text())["pooling"] == "mean"

    task = Task("heart_failure_1y")
    summary = embed_cli.main(["--model_name_or_path", path, "--synthetic", "tiny", "--output_dir", str(tmp_path / "task"),
                              "--task", task.name, "--split", "test", "--pooling", "pooler", "--max_length", "64"])
    eligible = task.eligible(cohort["test"])
    table, matrix = read_embeddings(tmp_path / "task" / "embeddings.parquet")
    assert table["patient_id"].to_pylist() == eligible["patient_id"] and summary["splits"] == ["test"]
    assert table["prediction_time"].to_pylist() == [p["visits"][p[task.index_visit]]["time"] for p in eligible]
    with pytest.raises(ValueError, match="not in the cohort's splits"):
        embed_cli.main(["--model_name_or_path", path, "--synthetic", "tiny", "--output_dir", str(tmp_path / "x"),
                        "--split", "tuning"])
