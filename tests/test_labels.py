"""MEDS label files: reading and validating them, the cut at each prediction time (no leakage inside a
visit), fine-tuning on them in every mode and kind, and behrt-predict's predictions.parquet."""

from datetime import datetime, timedelta

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from _readers_testutils import write_meds

from behrt_hf import BehrtConfig, BehrtForPreTraining, BehrtForSequenceClassification, BehrtTokenizerFast
from behrt_hf.data_builders import ReaderError
from behrt_hf.data_builders.meds import load_meds
from behrt_hf.data_collator import DataCollatorForBehrt
from behrt_hf.labels import LabelFileError, read_labels
from behrt_hf.tasks import Task, encode_samples, join_labels
from behrt_hf.training import finetune, predict
from tests.helpers import save_task_cohort

T = datetime
TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=37"
COMMON = ["--use_cpu", "--report_to", "none", "--disable_tqdm", "true", "--max_length", "64",
          "--per_device_train_batch_size", "16", "--seed", "3", "--save_strategy", "no"]


def labels_table(subjects, times, **values) -> pa.Table:
    return pa.table({"subject_id": pa.array(subjects, pa.int64()), "prediction_time": pa.array(times, pa.timestamp("us")),
                     **values})


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("float_type", [pa.float32(), pa.float64()])  # meds 0.4.x / 0.3.x
def test_folder_of_shards_and_both_meds_versions_dtypes(tmp_path, float_type):
    """Every **/*.parquet of a folder in natural order; optional columns absent; float32 or float64."""
    for split, shard, subjects in [("train", "0", [1, 2]), ("train", "10", [5]), ("train", "2", [3]), ("held_out", "0", [4])]:
        (tmp_path / split).mkdir(exist_ok=True)
        table = labels_table(subjects, [T(2020, 1, s) for s in subjects],
                             float_value=pa.array([s / 2 for s in subjects], float_type))
        pq.write_table(table, tmp_path / split / f"{shard}.parquet")
    table, report = read_labels(tmp_path)
    assert table.column_names == ["subject_id", "prediction_time", "float_value"]
    assert table.schema.field("float_value").type == pa.float64()
    assert table.column("subject_id").to_pylist() == [4, 1, 2, 3, 5]  # held_out/0, train/0, train/2, train/10
    assert not report.counts and report.kept["label rows"] == 5
    single, _ = read_labels(tmp_path / "train" / "2.parquet")
    assert single.column("subject_id").to_pylist() == [3]


def test_bad_rows_are_counted_with_examples_or_raise_when_strict():
    table = labels_table([1, 1, 2, None, 3], [T(2020, 1, 1), T(2020, 1, 1), None, T(2020, 1, 1), T(2020, 1, 2)],
                         boolean_value=[True, False, True, True, None],
                         integer_value=pa.array([None] * 5, pa.int64()))  # present but empty: not the task
    kept, report = read_labels(table)
    assert kept.column_names == ["subject_id", "prediction_time", "boolean_value"]
    assert kept.num_rows == 1
    assert report.invalid == {
        "label row repeating an earlier (subject_id, prediction_time) (first kept)": 1,
        "label row with a null prediction_time": 1, "label row with a null subject_id": 1,
        "label row with a null boolean_value": 1}
    assert report.examples["label row with a null prediction_time"] == ["<table> row 3 (subject_id 2, prediction_time None)"]
    with pytest.raises(ReaderError, match="null subject_id: <table> row 4"):
        read_labels(table, strict=True)


@pytest.mark.parametrize("table, problem", [
    (labels_table([1], [T(2020, 1, 1)], boolean_value=[True], note=["x"]), r"extra column\(s\) \['note'\]"),
    (labels_table([1], [T(2020, 1, 1)], boolean_value=[1]), "'boolean_value' has type int64; meds.LabelSchema wants bool"),
    (pa.table({"subject_id": ["1"], "prediction_time": [T(2020, 1, 1)], "boolean_value": [True]}),
     "'subject_id' has type string"),
    (pa.table({"subject_id": [1], "boolean_value": [True]}), "missing column 'prediction_time'"),
    (labels_table([1], [T(2020, 1, 1)]), "no label values"),
    (labels_table([1], [T(2020, 1, 1)], boolean_value=[True], float_value=[0.5]), "several value columns"),
])
def test_unusable_files_raise_naming_the_file_and_problem(tmp_path, table, problem):
    pq.write_table(table, tmp_path / "0.parquet")
    with pytest.raises(LabelFileError, match=f"{tmp_path / '0.parquet'}: .*{problem}"):
        read_labels(tmp_path)


def test_empty_folder_and_non_parquet_files_raise(tmp_path):
    with pytest.raises(LabelFileError, match="holds no parquet file"):
        read_labels(tmp_path)
    (tmp_path / "0.parquet").write_text("not parquet")
    with pytest.raises(LabelFileError, match="0.parquet: not a readable parquet file"):
        read_labels(tmp_path)
    with pytest.raises(LabelFileError, match="no such label file or folder"):
        read_labels(tmp_path / "missing")


# --- the cut: no leakage inside a visit, several prediction times per patient --------------------


@pytest.fixture(scope="module")
def stays(tmp_path_factory):
    """A MEDS patient with one windowed visit (events 1 h apart) and one hospital stay whose marker code
    is stamped at discharge; and a patient whose subject is never labelled."""
    root = tmp_path_factory.mktemp("meds")
    t0, t1 = T(2020, 1, 1, 8), T(2020, 6, 1, 10)
    write_meds(root / "m", {"0": [
        (1, T(1960, 1, 1), "MEDS_BIRTH"),
        (1, t0, "LAB//A"), (1, t0 + timedelta(hours=1), "LAB//B"), (1, t0 + timedelta(hours=2), "MARKER//WINDOW"),
        (1, t1, "HOSPITAL_ADMISSION//EW"), (1, t1 + timedelta(hours=3), "LAB//C"),
        (1, t1 + timedelta(days=2), "MARKER//STAY"), (1, t1 + timedelta(days=2), "HOSPITAL_DISCHARGE//HOME"),
        (2, T(1970, 1, 1), "MEDS_BIRTH"), (2, t0, "LAB//A"),
    ]})
    return root / "m", t0, t1


def cut_codes(cohort, labels, tokenizer):
    table, report = read_labels(labels)
    patients, samples, _ = join_labels(cohort, table, report)
    encoded = datasets.concatenate_datasets(
        [encode_samples(s, patients, tokenizer, max_length=64) for s in samples.values() if len(s)])
    return [[t for t in tokenizer.convert_ids_to_tokens(row) if t not in ("[CLS]", "[SEP]")]
            for row in encoded["input_ids"]], report


def test_no_code_after_the_prediction_time_reaches_the_input(stays):
    """Window and encounter visits straddling the prediction time keep only their earlier codes, and
    several prediction times of one patient give several differently cut inputs (time <= t inclusive)."""
    root, t0, t1 = stays
    cohort = load_meds(root, visit_window=timedelta(hours=3), visit_start_codes=["HOSPITAL_ADMISSION//"],
                       visit_end_codes=["HOSPITAL_DISCHARGE//"])
    tokenizer = BehrtTokenizerFast.build_vocab(datasets.concatenate_datasets(list(cohort.values())))
    times = [t0, t0 + timedelta(hours=1), t0 + timedelta(hours=2), t1 + timedelta(hours=4), t1 + timedelta(days=2),
             t0 - timedelta(days=1)]
    rows, report = cut_codes(cohort, labels_table([1] * 6 + [99], times + [t0], boolean_value=[True] * 7), tokenizer)
    assert rows == [
        ["LAB//A"],
        ["LAB//A", "LAB//B"],
        ["LAB//A", "LAB//B", "MARKER//WINDOW"],
        ["LAB//A", "LAB//B", "MARKER//WINDOW", "HOSPITAL_ADMISSION//EW", "LAB//C"],
        ["LAB//A", "LAB//B", "MARKER//WINDOW", "HOSPITAL_ADMISSION//EW", "LAB//C", "MARKER//STAY", "HOSPITAL_DISCHARGE//HOME"],
    ]
    assert report.invalid == {"label row of a subject not in the data": 1,
                              "label row whose prediction_time is before the subject's first event": 1}
    assert report.examples["label row of a subject not in the data"] == [f"subject_id 99, prediction_time {t0}"]


# --- one path for the synthetic columns and label files -----------------------------------------


@pytest.fixture(scope="module")
def task_cohort(tmp_path_factory):
    return save_task_cohort(tmp_path_factory.mktemp("task") / "data")


def column_labels(cohort, value="boolean_value") -> pa.Table:
    """The synthetic `demo` task written as a MEDS label table (prediction time = the index visit's time)."""
    rows = [(int(p["patient_id"]), p["visits"][p["index_visit_demo"]]["time"], p["label_demo"])
            for split in cohort.values() for p in split if p["label_demo"] >= 0]
    subjects, times, labels = zip(*rows)
    values = {"boolean_value": pa.array([bool(y) for y in labels]),
              "float_value": pa.array([float(y) + 0.5 for y in labels]),
              "categorical_value": pa.array([("a", "b", "c")[y + (s % 2)] for s, y in zip(subjects, labels)])}[value]
    return labels_table(list(subjects), list(times), **{value: values})


def test_label_path_and_column_path_give_identical_inputs_and_predictions(task_cohort, tmp_path):
    path, splits = task_cohort
    cohort = datasets.load_from_disk(path)
    # patient ids repeat across the toy splits: keep one split so that subject ids are unique
    cohort = datasets.DatasetDict({"test": cohort["test"]})
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=64)
    by_columns = Task("demo").encode(Task("demo").eligible(cohort["test"]), tokenizer, max_length=64)
    table, report = read_labels(column_labels(cohort))
    patients, samples, kind = join_labels(cohort, table, report)
    by_labels = encode_samples(samples["test"], patients, tokenizer, max_length=64)
    assert len(by_labels) == len(by_columns) > 0 and not report.counts
    for column in ("input_ids", "age_ids", "segment_ids", "visit_ids", "attention_mask", "labels", "patient_id"):
        assert by_labels[column] == by_columns[column], column

    config = BehrtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64, num_labels=1)
    torch.manual_seed(0)
    model = BehrtForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    collate = DataCollatorForBehrt(pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**{k: v for k, v in collate(list(by_columns)).items() if k != "labels"}).logits.reshape(-1)
    cohort.save_to_disk(str(tmp_path / "data"))
    pq.write_table(table, tmp_path / "labels.parquet")
    predict.main(["--model_name_or_path", str(tmp_path / "model"), "--dataset_path", str(tmp_path / "data"),
                  "--labels_dir", str(tmp_path / "labels.parquet"), "--split", "held_out", "--batch_size", "7",
                  "--max_length", "64", "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    written = pq.read_table(tmp_path / "out" / "predictions.parquet")
    assert written.column_names == ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                                    "predicted_boolean_probability"]
    assert written.column("subject_id").to_pylist() == [int(p) for p in by_columns["patient_id"]]
    probabilities = np.asarray(written.column("predicted_boolean_probability"))
    np.testing.assert_allclose(probabilities, torch.sigmoid(logits).numpy(), rtol=1e-5, atol=1e-6)
    assert written.column("predicted_boolean_value").to_pylist() == (probabilities >= 0.5).tolist()
    assert written.column("boolean_value").to_pylist() == [bool(y) for y in by_columns["labels"]]


# --- fine-tuning on label files: every mode, every kind, then predicting -------------------------


@pytest.fixture(scope="module")
def label_setup(task_cohort, tmp_path_factory):
    """The toy cohort with unique subject ids across splits, its task as label files of each kind, and
    a tiny 'pretrained' model."""
    path, splits = task_cohort
    root = tmp_path_factory.mktemp("labels")
    cohort = datasets.load_from_disk(path)
    offset = {"train": 0, "validation": 1000, "test": 2000}
    cohort = datasets.DatasetDict({name: split.map(lambda p, o=offset[name]: {"patient_id": str(int(p) + o)},
                                                    input_columns="patient_id") for name, split in cohort.items()})
    cohort.save_to_disk(str(root / "data"))
    for value in ("boolean_value", "float_value", "categorical_value"):
        pq.write_table(column_labels(cohort, value), root / f"{value}.parquet")
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=64)
    config = BehrtConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    BehrtForPreTraining(config).save_pretrained(root / "pretrained")
    tokenizer.save_pretrained(root / "pretrained")
    return root


@pytest.mark.parametrize("mode", ["lora", "full", "probe", "two_stage"])
def test_every_mode_fine_tunes_on_a_label_file_and_predicts(label_setup, tmp_path, mode):
    out = tmp_path / "run"
    result = finetune.main(["--dataset_path", str(label_setup / "data"), "--labels_dir",
                            str(label_setup / "boolean_value.parquet"), "--output_dir", str(out), "--do_train",
                            "--model_name_or_path", str(label_setup / "pretrained"), "--mode", mode,
                            "--max_steps", "2", "--head_epochs", "0.1", *COMMON])
    assert {"auroc", "auprc", "brier"} <= set(result["report"]["test"]["model"])
    summary = predict.main(["--model_name_or_path", str(out), "--dataset_path", str(label_setup / "data"),
                            "--labels_dir", str(label_setup / "boolean_value.parquet"), "--split", "held_out",
                            "--max_length", "64", "--output_dir", str(tmp_path / "pred"), "--device", "cpu"])
    written = pq.read_table(tmp_path / "pred" / "predictions.parquet")
    assert written.num_rows == summary["rows"] == len(datasets.load_from_disk(str(label_setup / "data"))["test"]
                                                      .filter(lambda y: y >= 0, input_columns="label_demo"))
    assert summary["problem"] == "binary"
    from behrt_hf.metrics import compute_binary_metrics  # predict reproduces the fine-tuning report's AUROC

    auroc = compute_binary_metrics(np.asarray(written.column("predicted_boolean_probability")),
                                   np.asarray(written.column("boolean_value"), dtype=int))["auroc"]
    assert auroc == pytest.approx(result["report"]["test"]["model"]["auroc"], abs=1e-6)


@pytest.mark.parametrize("value, problem, metric", [("float_value", "regression", "mse"),
                                                    ("categorical_value", "multiclass", "accuracy")])
def test_the_filled_value_column_chooses_the_problem(label_setup, tmp_path, value, problem, metric):
    out = tmp_path / "run"
    result = finetune.main(["--dataset_path", str(label_setup / "data"), "--labels_dir",
                            str(label_setup / f"{value}.parquet"), "--output_dir", str(out), "--do_train",
                            "--model_name_or_path", str(label_setup / "pretrained"), "--mode", "full",
                            "--max_steps", "2", *COMMON])
    assert metric in result["report"]["test"]["model"]
    model = BehrtForSequenceClassification.from_pretrained(out)
    assert model.config.problem_type == {"regression": "regression", "multiclass": "single_label_classification"}[problem]
    assert model.config.num_labels == (3 if problem == "multiclass" else 1)
    predict.main(["--model_name_or_path", str(out), "--dataset_path", str(label_setup / "data"),
                  "--labels_dir", str(label_setup / f"{value}.parquet"), "--split", "held_out", "--max_length", "64",
                  "--output_dir", str(tmp_path / "pred"), "--device", "cpu"])
    written = pq.read_table(tmp_path / "pred" / "predictions.parquet")
    expected = {"regression": ["predicted_float_value"],
                "multiclass": ["predicted_categorical_value", "predicted_class_probabilities"]}[problem]
    assert written.column_names == ["subject_id", "prediction_time", value, *expected]
    if problem == "multiclass":
        assert set(written.column("predicted_categorical_value").to_pylist()) <= {"a", "b", "c"}
        np.testing.assert_allclose([sum(p) for p in written.column("predicted_class_probabilities").to_pylist()], 1,
                                   rtol=1e-5)


def test_max_length_is_capped_at_the_models_tokens(task_cohort):
    """The default --max_length (256) must not outrun a model pretrained at fewer tokens."""
    from behrt_hf.tasks import fitted_max_length

    _, splits = task_cohort
    tokenizer = BehrtTokenizerFast.build_vocab(splits["train"], model_max_length=16)
    assert fitted_max_length(256, tokenizer) == 16
    assert fitted_max_length(12, tokenizer) == 12
    patient = splits["train"][0]
    assert len(tokenizer.encode_patient(patient, fitted_max_length(256, tokenizer))["input_ids"]) <= 16
