"""The real MEDS tools around our files: ACES writes label folders we fine-tune on, meds-evaluation
scores our predictions.parquet, and MEDS-DEV's model.yaml (meds_dev/behrt/) runs end to end.

Everything runs on one tiny synthetic MEDS export; the tools run as their command-line programs,
from this virtualenv's bin folder (the `dev` extra installs them).
"""

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from behrt_hf.data_builders.meds_export import export_meds

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "meds_dev" / "behrt"
ACES_TASK = REPO / "meds_dev" / "tasks" / "fall_1y_after_flu_vaccine.yaml"
BIN = Path(sys.executable).parent
TEMPLATE_VARIABLES = {"dataset_dir", "labels_dir", "output_dir", "model_dir", "model_initialization_dir", "split", "demo"}
PREDICTION_COLUMNS = ["subject_id", "prediction_time", "boolean_value", "predicted_boolean_value",
                      "predicted_boolean_probability"]


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{name} is not installed in {BIN}: install the dev extra (pip install -e '.[dev]')"
    return str(path)


def _environment() -> dict:
    """This virtualenv first on PATH, as MEDS-DEV activates a model's virtualenv; single-threaded torch."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(BIN.parent),
            "OMP_NUM_THREADS": "1"}


def _run(command: str, cwd: Path, what: str) -> float:
    """Run `command` with bash (``set -e``), fail with its output's tail; returns the seconds it took."""
    started = time.perf_counter()
    done = subprocess.run(["bash", "-c", "set -e\n" + command], cwd=cwd, env=_environment(), capture_output=True,
                          text=True)
    assert done.returncode == 0, f"{what} failed ({done.returncode}):\n{command}\n{(done.stdout + done.stderr)[-4000:]}"
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def meds_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("meds_tools") / "meds"
    export_meds(root, "tiny", seed=0, subjects_per_shard=64)
    return root


# --- ACES -------------------------------------------------------------------------------------------


def _expected_aces_rows(meds_root: Path) -> dict:
    """The task YAML's meaning computed directly from the data: one row per flu-vaccination time with an
    event more than 365 days later, label = a fall in the 365 days after it (the vaccination excluded)."""
    events = pa.concat_tables([pq.read_table(p) for p in sorted((meds_root / "data").rglob("*.parquet"))])
    events = events.filter(pa.compute.is_valid(events["time"])).to_pylist()
    by_subject = {}
    for e in events:
        by_subject.setdefault(e["subject_id"], []).append((e["time"], e["code"]))
    year = dt.timedelta(days=365)
    rows = {}
    for subject, evs in by_subject.items():
        last = max(t for t, _ in evs)
        falls = [t for t, c in evs if c == "ICD10CM//W19.XXXA"]
        for t in sorted({t for t, c in evs if c == "ATC//J07BB02"}):
            if last > t + year:
                rows[(subject, t)] = any(t < f <= t + year for f in falls)
    return rows


def _run_aces(meds_root: Path, labels_dir: Path) -> None:
    """ACES over every shard, as MEDS-DEV runs a task: <labels_dir>/<split>/<shard>.parquet."""
    _run(
        f"{_tool('aces-cli')} --multirun cohort_name=fall_1y_after_flu_vaccine data=sharded data.standard=meds "
        f"data.root={meds_root}/data \"data.shard=$({_tool('expand_shards')} {meds_root}/data)\" "
        f"config_path={ACES_TASK} 'output_filepath={labels_dir}/${{data.shard}}.parquet' log_dir={labels_dir}/.logs",
        labels_dir.parent, "aces-cli",
    )


@pytest.fixture(scope="module")
def aces_labels(meds_root) -> Path:
    labels_dir = meds_root.parent / "aces_labels"
    _run_aces(meds_root, labels_dir)
    return labels_dir


def test_aces_writes_the_task_our_yaml_describes(meds_root, aces_labels):
    from meds import LabelSchema

    files = sorted(aces_labels.rglob("*.parquet"))
    assert {f.parent.name for f in files} == {"train", "tuning", "held_out"}
    got = {}
    for f in files:
        table = pq.read_table(f)
        # ACES writes every LabelSchema value column, the unused ones all null, which meds 0.4's
        # LabelSchema.validate rejects ("should have no nulls"): readers must drop all-null value columns.
        assert table.column_names == ["subject_id", "prediction_time", "boolean_value", "integer_value",
                                      "float_value", "categorical_value"]
        filled = [c for c in table.column_names if table[c].null_count < len(table) or c == "boolean_value"]
        assert filled == ["subject_id", "prediction_time", "boolean_value"] or not len(table)
        LabelSchema.validate(table.select(filled))
        for r in table.to_pylist():
            assert (r["subject_id"], r["prediction_time"]) not in got
            got[(r["subject_id"], r["prediction_time"])] = r["boolean_value"]
    expected = _expected_aces_rows(meds_root)
    assert got == expected
    assert 0 < sum(got.values()) < len(got)  # both classes: a task worth fine-tuning on


def test_aces_labels_are_read_and_fine_tuned_on(meds_root, aces_labels, tmp_path):
    from transformers import TrainingArguments

    from behrt_hf.labels import read_labels
    from behrt_hf.training import finetune
    from behrt_hf.training.arguments import parse_args

    table, report = read_labels(aces_labels)
    assert table.num_rows == len(_expected_aces_rows(meds_root)) and sum(report.invalid.values()) == 0
    model_args, data_args, training_args = parse_args(
        (finetune.FinetuneModelArguments, finetune.FinetuneDataArguments, TrainingArguments), [
            "--meds_root", str(meds_root), "--labels_dir", str(aces_labels), "--output_dir", str(tmp_path / "ft"),
            "--mode", "full", "--config_overrides", TINY_MODEL, "--max_length", "64", "--do_train",
            "--max_steps", "2", "--per_device_train_batch_size", "8", "--test_split", "", "--report_to", "none",
            "--use_cpu", "--disable_tqdm", "true", "--save_strategy", "no",
        ])
    finetune.run(model_args, data_args, training_args)
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    # ACES wrote one folder per data split (the shards live in data/<split>/): every row is a sample there
    rows = {s: pa.concat_tables([pq.read_table(f) for f in (aces_labels / s).glob("*.parquet")]) for s in ("train", "tuning")}
    assert summary["data"]["train_patients"] == rows["train"].num_rows
    assert summary["data"]["train_positives"] == sum(rows["train"]["boolean_value"].to_pylist())
    assert summary["data"]["eval_patients"] == {"validation": rows["tuning"].num_rows}
    assert summary["training"]["train_loss"] > 0 and (tmp_path / "ft" / "model.safetensors").exists()


# --- MEDS-DEV: meds_dev/behrt/model.yaml ----------------------------------------------------------------

TINY_MODEL = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64"


def meds_dev_full_run(commands: dict, *, dataset_dir, labels_dir, output_dir: Path, dataset_name: str,
                      task_name: str, demo: bool) -> list[tuple[str, Path]]:
    """The commands `meds-dev-model mode=full dataset_type=full` runs, filled as MEDS-DEV fills them
    (`MEDS_DEV.models.model_commands`, read Dec 2026): run modes (train, predict) outer, dataset types
    (unsupervised, supervised) inner, missing commands skipped; output dirs
    `<output>/<dataset>/unsupervised/<mode>` and `<output>/<dataset>/<task>/<mode>`; `str.format` with
    `dataset_dir`, `model_dir` (the entry's folder), `demo` (a Python bool: "True"/"False"), `output_dir`,
    `labels_dir` from the first supervised stage on, `split` = held_out for predict only (absent for train),
    and `model_initialization_dir` = the previous train stage's output dir (absent before). A variable a
    command uses but MEDS-DEV does not give at that stage raises KeyError, as it does there."""
    values = {"dataset_dir": str(dataset_dir), "model_dir": str(MODEL_DIR), "demo": demo}
    filled = []
    for run_mode in ("train", "predict"):
        for dataset_type in ("unsupervised", "supervised"):
            command = (commands.get(dataset_type) or {}).get(run_mode)
            if not command:
                continue
            out = output_dir / dataset_name / (task_name if dataset_type == "supervised" else dataset_type) / run_mode
            if dataset_type == "supervised":
                values["labels_dir"] = str(labels_dir)
            values["output_dir"] = str(out)
            if run_mode == "predict":
                values["split"] = "held_out"
            else:
                values.pop("split", None)
            filled.append((command.format(**values), out))
            if run_mode != "predict":
                values["model_initialization_dir"] = str(out)
    return filled


def _model_yaml() -> dict:
    return yaml.safe_load((MODEL_DIR / "model.yaml").read_text())


def test_model_yaml_has_what_meds_dev_reads():
    entry = _model_yaml()
    assert set(entry) == {"metadata", "commands"}
    meta = entry["metadata"]  # MEDS_DEV.utils.Metadata: description, >= 1 contact with a name, links are URLs
    assert isinstance(meta["description"], str) and meta["description"].strip()
    assert meta["contacts"] and all(isinstance(c["name"], str) and set(c) <= {"name", "email", "github_username"}
                                    for c in meta["contacts"])
    assert all(re.match(r"https?://[\w.-]+\.\w+/", link) for link in meta.get("links") or [])
    commands = entry["commands"]
    assert set(commands) == {"unsupervised", "supervised"}
    assert set(commands["unsupervised"]) == {"train"} and set(commands["supervised"]) == {"train", "predict"}
    used = set()
    for stage in (commands["unsupervised"]["train"], *commands["supervised"].values()):
        used |= set(re.findall(r"(?<!\{)\{(\w+)\}(?!\})", stage))
    assert used <= TEMPLATE_VARIABLES, used - TEMPLATE_VARIABLES
    assert "{output_dir}/predictions.parquet" in _model_yaml_predict_target()


def _model_yaml_predict_target() -> str:
    """Where supervised.predict writes: behrt-predict writes exactly OUT/predictions.parquet."""
    predict = _model_yaml()["commands"]["supervised"]["predict"]
    out = re.search(r'--output_dir "?(\{output_dir\})"?', predict)
    return f"{out.group(1)}/predictions.parquet" if out else ""


def test_model_yaml_fills_for_a_full_run_and_demo_switches_the_size(tmp_path):
    commands = _model_yaml()["commands"]
    runs = {demo: meds_dev_full_run(commands, dataset_dir="/data/meds", labels_dir="/labels/task",
                                    output_dir=tmp_path, dataset_name="ds", task_name="task", demo=demo)
            for demo in (True, False)}
    for demo, filled in runs.items():
        assert [out.relative_to(tmp_path).as_posix() for _, out in filled] == [
            "ds/unsupervised/train", "ds/task/train", "ds/task/predict"]
        pretrain, train, predict = (c for c, _ in filled)
        assert '--meds_root "/data/meds"' in pretrain and "--labels_dir" not in pretrain
        assert f'--model_name_or_path "{tmp_path}/ds/unsupervised/train"' in train and '--labels_dir "/labels/task"' in train
        assert f'--model_name_or_path "{tmp_path}/ds/task/train"' in predict and '--split "held_out"' in predict
        assert all(f'[ "{demo}" = "True" ]' in c for c in (pretrain, train))
    assert "{" not in "".join(c for c, _ in runs[False])


def test_requirements_name_the_package():
    from packaging.requirements import Requirement

    lines = [ln.strip() for ln in (MODEL_DIR / "requirements.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    expanded = [ln.replace("${BEHRT_HF_SOURCE}", REPO.as_uri()) for ln in lines]
    names = {Requirement(ln).name for ln in expanded}
    assert "behrt_hf" in names and Requirement(expanded[0]).url == REPO.as_uri()


@pytest.fixture(scope="module")
def meds_dev_run(meds_root, tmp_path_factory):
    """The model.yaml commands in demo mode, run as MEDS-DEV runs them (a bash script per stage, set -e,
    in its output dir with the model's virtualenv first on PATH), on the export's fall_1y labels folder."""
    output = tmp_path_factory.mktemp("meds_dev")
    seconds = {}
    for command, out in meds_dev_full_run(_model_yaml()["commands"], dataset_dir=meds_root,
                                          labels_dir=meds_root / "labels" / "fall_1y", output_dir=output,
                                          dataset_name="synthetic_tiny", task_name="fall_1y", demo=True):
        out.mkdir(parents=True, exist_ok=True)
        (out / "cmd.sh").write_text("#!/bin/bash\nset -e\n" + command)
        seconds["/".join(out.parts[-2:])] = _run(f"bash {out / 'cmd.sh'}", out, command.split()[0])
        (out / ".done").touch()
    print("MEDS-DEV demo stage seconds:", {k: round(v, 1) for k, v in seconds.items()})
    return output / "synthetic_tiny" / "fall_1y"


def test_meds_dev_demo_run_predicts_every_held_out_label_row(meds_dev_run, meds_root):
    table = pq.read_table(meds_dev_run / "predict" / "predictions.parquet")
    assert table.column_names == PREDICTION_COLUMNS
    # meds-evaluation 0.0.3 (MEDS-DEV's pin) accepts only a float64 probability; 0.0.4+ casts it to float32
    assert table.schema.field("predicted_boolean_probability").type == pa.float64()
    labels = pq.read_table(meds_root / "labels" / "fall_1y" / "held_out" / "0.parquet")
    key = lambda t: sorted(zip(t["subject_id"].to_pylist(), t["prediction_time"].to_pylist(), t["boolean_value"].to_pylist()))
    assert key(table) == key(labels)
    oracle = pq.read_table(meds_root / "oracle" / "fall_1y" / "held_out.parquet")  # compared row by row
    assert key(oracle) == key(table)
    p = table["predicted_boolean_probability"].to_numpy()
    assert np.all((p >= 0) & (p <= 1)) and table["predicted_boolean_value"].null_count == 0


# --- meds-evaluation ---------------------------------------------------------------------------------


def _our_auroc(path: Path) -> float:
    from sklearn.metrics import roc_auc_score

    table = pq.read_table(path)
    return float(roc_auc_score(table["boolean_value"].to_numpy(), table["predicted_boolean_probability"].to_numpy()))


@pytest.fixture(scope="module")
def all_predictions(meds_dev_run, meds_root) -> Path:
    """The MEDS-DEV run's fine-tuned model predicting every split's label rows (more rows than held_out)."""
    from behrt_hf.training import predict

    out = meds_dev_run / "predict_all"
    predict.main(["--model_name_or_path", str(meds_dev_run / "train"), "--meds_root", str(meds_root),
                  "--labels_dir", str(meds_root / "labels" / "fall_1y"), "--split", "all", "--max_length", "64",
                  "--output_dir", str(out)])
    return out / "predictions.parquet"


def test_meds_evaluation_scores_our_predictions_as_we_do(all_predictions, tmp_path):
    import polars as pl
    from meds_evaluation.evaluate import evaluate_binary_classification

    labels = pq.read_table(all_predictions)["boolean_value"].to_pylist()
    assert 0 < sum(labels) < len(labels), "rows of one class: AUROC is undefined"
    ours = _our_auroc(all_predictions)
    api = evaluate_binary_classification(pl.read_parquet(all_predictions))["samples_equally_weighted"]
    assert abs(api["roc_auc_score"] - ours) < 1e-6
    results = tmp_path / "results.json"
    _run(f"{_tool('meds-evaluation-cli')} predictions_path={all_predictions} output_file={results}", tmp_path,
         "meds-evaluation-cli")
    cli = json.loads(results.read_text())["samples_equally_weighted"]
    assert abs(cli["roc_auc_score"] - ours) < 1e-6
    assert set(cli) == {"binary_accuracy", "f1_score", "roc_auc_score", "average_precision_score",
                        "calibration_error", "brier_score"}


def test_meds_evaluation_limits(all_predictions):
    """What meds-evaluation 0.0.6 cannot score: a file with any extra column, and anything but binary
    labels (its only evaluator is binary; regression and multiclass predictions have no columns there)."""
    import polars as pl
    from flexible_schema import SchemaValidationError
    from meds_evaluation.evaluate import evaluate_binary_classification

    predictions = pl.read_parquet(all_predictions)
    with pytest.raises(SchemaValidationError, match="extra columns: oracle"):
        evaluate_binary_classification(predictions.with_columns(pl.lit(0.5).alias("oracle")))
    keys = predictions.select("subject_id", "prediction_time")
    score = pl.col("predicted_boolean_probability")
    regression = predictions.select("subject_id", "prediction_time", score.alias("float_value"),
                                    score.alias("predicted_float_value"))
    with pytest.raises(SchemaValidationError, match="predicted_float_value"):
        evaluate_binary_classification(regression)
    multiclass = keys.with_columns(pl.lit("a").alias("categorical_value"), predictions["predicted_boolean_probability"])
    with pytest.raises(pl.exceptions.ColumnNotFoundError, match="boolean_value"):
        evaluate_binary_classification(multiclass)
