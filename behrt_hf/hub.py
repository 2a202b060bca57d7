"""Publish BEHRT models, LoRA adapters and cohorts on the Hugging Face Hub, with model cards.

    card = render_model_card("runs/finetune", summary, "adapter", base_model="me/behrt-small")
    push_folder_to_hub("runs/pretrain", "me/behrt-small")            # private by default
    push_folder_to_hub("runs/finetune", "me/behrt-small-hf-lora")    # adapter: detected from the files
    push_dataset_to_hub(cohort, "me/synthetic-ehr-small")

Cards are rendered from the Jinja/Markdown templates in `behrt_hf/model_cards/` with
`ModelCard.from_template`: the YAML metadata (library, tags, license, datasets, base model,
eval results as a model-index) comes from `ModelCardData`, the body from the training
summary (`summary.json` of behrt-pretrain / finetune): whatever keys it holds are rendered,
missing ones are left out.

Nothing patient-level leaves the machine: a folder push uploads an allow-list (`files_to_push`:
weights, configs, code, tokenizer, card, aggregate summaries and plots), leaves predictions and
embeddings out, and refuses any other file unless it is named; a cohort push refuses a cohort that
is not marked synthetic unless `allow_real_data=True`.

Everything goes through `HfApi`, so `HF_ENDPOINT` (and `HF_TOKEN`) choose the Hub and the
account, as for any huggingface_hub client. Repos are created private unless told otherwise.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    DatasetCardData,
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    RepoUrl,
)

from .modeling_behrt import AUTO_MAP
from .objectives import Objective

logger = logging.getLogger(__name__)

KINDS = ("model", "adapter")
TEMPLATES = {"model": "model_card.md", "adapter": "adapter_card.md", "dataset": "dataset_card.md"}
# What each kind of folder must hold: (description, alternatives; one of them must exist).
REQUIRED_FILES = {
    "model": [("config.json", ("config.json",)),
              ("weights", ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"))],
    "adapter": [("adapter_config.json", ("adapter_config.json",)),
                ("adapter weights", ("adapter_model.safetensors", "adapter_model.bin"))],
}
BASE_TAGS = ["behrt", "ehr", "medical"]
# Training outputs that are not part of a published model: resumable checkpoints, TensorBoard
# runs, the pickled TrainingArguments, two_stage fine-tuning's head warm-up folder.
DEFAULT_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "training_args.bin", "*.lock",
                           "stage1_head/**"]
# Keys of an eval block that are bookkeeping, not metrics.
_NOT_METRICS = ("runtime", "per_second", "epoch", "num_", "samples", "steps", "threshold")
_PEFT_AUTO = {"SEQ_CLS": "AutoPeftModelForSequenceClassification", "TOKEN_CLS": "AutoPeftModelForTokenClassification",
              "FEATURE_EXTRACTION": "AutoPeftModelForFeatureExtraction"}
_AUTO_FOR_CLASS = {path.split(".")[-1]: auto for auto, path in AUTO_MAP.items() if auto != "AutoConfig"}
SYNTHETIC_DATASET_TAGS = ["synthetic", *BASE_TAGS]


# ---- inspecting a folder ----------------------------------------------------------------------


def detect_kind(folder: str | Path) -> str:
    """`"adapter"` if `folder` holds a PEFT adapter (adapter_config.json), `"model"` if a transformers model."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():
        return "adapter"
    if (folder / "config.json").is_file():
        return "model"
    raise ValueError(
        f"{folder} holds neither config.json (a model) nor adapter_config.json (a PEFT adapter): "
        "is it the output folder of behrt-pretrain or finetune?"
    )


def check_folder(folder: str | Path, kind: str) -> None:
    """Raise a ValueError naming every file that a `kind` folder lacks."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder.")
    missing = [
        name if len(options) == 1 else f"{name} ({' or '.join(options)})"
        for name, options in REQUIRED_FILES[kind]
        if not any((folder / option).is_file() for option in options)
    ]
    if missing:
        raise ValueError(f"{folder} is not a saved {kind}: missing {', '.join(missing)}.")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_summary(folder: str | Path) -> dict:
    """The folder's summary.json (written by behrt-pretrain and finetune), or {} if it has none."""
    return _read_json(Path(folder) / "summary.json")


# ---- the model card ---------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, (list, tuple, set)):  # each name once (PEFT repeats modules_to_save), sets sorted
        return ", ".join(f"`{v}`" for v in dict.fromkeys(sorted(value) if isinstance(value, set) else value))
    if isinstance(value, Mapping):  # e.g. patients per split: "test 682, validation 740"
        return ", ".join(f"{key} {_fmt(v)}" for key, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] = ("", ""), numeric: bool = False) -> str:
    """A Markdown table; `numeric` right-aligns every column but the first."""
    align = ["---", *(("---:" if numeric else "---") for _ in header[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_of(block: Mapping[str, Any] | None) -> dict[str, float]:
    """The finite numeric metrics of an eval block, `eval_` prefixes dropped, bookkeeping left out."""
    metrics = {}
    for key, value in (block or {}).items():
        name = key[len("eval_"):] if key.startswith("eval_") else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if any(part in name for part in _NOT_METRICS):
            continue
        metrics[name] = float(value)
    return metrics


def _metric_table(summary: Mapping[str, Any]) -> tuple[str, str]:
    """The evaluation table (model beside any frequency baseline / oracle) and a note on the columns."""
    model = metrics_of(summary.get("eval"))
    if not model:
        return "", ""
    references = [
        (label, metrics_of(summary.get(key)))
        for key, label in (("frequency_baseline", "frequency baseline"), ("oracle", "oracle"))
    ]
    references = [(label, values) for label, values in references if set(values) & set(model)]
    header = ["metric", "model", *(label for label, _ in references)]
    rows = [[name, value, *(values.get(name, "") for _, values in references)] for name, value in model.items()]
    notes = []
    if any(label == "frequency baseline" for label, _ in references):
        notes.append("*frequency baseline*: predicts codes by their frequency in the training split.")
    if any(label == "oracle" for label, _ in references):
        notes.append("*oracle*: the synthetic generator's true label probabilities, a ceiling for any model.")
    return _table(rows, header, numeric=True), " ".join(notes)


def _task_type(summary: Mapping[str, Any]) -> str:
    if "objective" in summary:  # pretraining
        return "fill-mask" if Objective.parse(summary["objective"]).mlm else "feature-extraction"
    return "tabular-classification"


def _dataset_name(summary: Mapping[str, Any]) -> str:
    source = str(summary.get("data", {}).get("source", "EHR cohort"))
    return f"synthetic EHR cohort ({source.split(':', 1)[1]})" if source.startswith("synthetic:") else source


def eval_results_of(summary: Mapping[str, Any], datasets: Sequence[str] | None = None) -> list[EvalResult]:
    """One `EvalResult` per metric of the summary's eval block (the loss left out)."""
    task = summary.get("task") or summary.get("objective")
    source = str(summary.get("data", {}).get("source", "ehr"))
    dataset_type = datasets[0] if datasets else source.replace(":", "-").replace("/", "-")
    return [
        EvalResult(
            task_type=_task_type(summary), task_name=task, dataset_type=dataset_type,
            dataset_name=_dataset_name(summary), dataset_split=summary.get("data", {}).get("eval_split"),
            metric_type=name, metric_name=name.replace("_", " "), metric_value=round(value, 6),
        )
        for name, value in metrics_of(summary.get("eval")).items()
        if name != "loss"
    ]


def _objectives(summary: Mapping[str, Any]) -> list[str]:
    """The pretraining objectives named in the summary ("mlm+nvp" -> both), in words."""
    return Objective.parse(summary["objective"]).in_words if "objective" in summary else []


def _task_tags(summary: Mapping[str, Any], kind: str) -> list[str]:
    tags = []
    if "objective" in summary:
        tags += ["pretraining", *(name.replace(" ", "-") for name in _objectives(summary))]
    if summary.get("task"):
        tags += ["clinical-prediction", str(summary["task"]).replace("_", "-")]
    if str(summary.get("data", {}).get("source", "")).startswith("synthetic"):
        tags.append("synthetic-data")
    if kind == "adapter":
        tags += ["peft", "lora"]
    return tags


def _rows(mapping: Mapping[str, Any] | None, names: Mapping[str, str]) -> list[tuple[str, Any]]:
    mapping = mapping or {}
    return [(label, mapping[key]) for key, label in names.items() if mapping.get(key) not in (None, "", [], {})]


def _details(summary: Mapping[str, Any], config: Mapping[str, Any], adapter: Mapping[str, Any]) -> str:
    """The Markdown of the tables: adapter, training data, training configuration, evaluation."""
    data, model, training = summary.get("data", {}), summary.get("model", {}), summary.get("training", {})
    model_config = {**config, **model.get("config", {})}
    vocab_size = data.get("vocab_size") or model_config.get("vocab_size")
    sections = []
    adapter_rows = _rows(adapter, {"peft_type": "method", "r": "rank r", "lora_alpha": "alpha",
                                   "lora_dropout": "dropout", "target_modules": "target modules",
                                   "modules_to_save": "trained in full", "base_model_name_or_path": "base model"})
    if adapter_rows:
        sections.append("## Adapter\n\n" + _table(adapter_rows))
    data_rows = _rows(data, {"source": "source", "train_patients": "training patients",
                             "eval_patients": "evaluation patients", "max_length": "tokens per patient"})
    if vocab_size:
        data_rows.append(("vocabulary size", f"{vocab_size:,} tokens (codes and special tokens)"))
    if data.get("class_imbalance") not in (None, "none"):
        shift = data.get("calibration_logit_shift")
        data_rows.append(("class imbalance", f"{data['class_imbalance']}" + (
            f"; classifier bias shifted by {shift:.3f} after training, so probabilities match the prevalence"
            if shift else "")))
    if data_rows:
        sections.append("## Training data\n\n" + _table(data_rows))
    config_rows = _rows(summary, {"task": "task", "mode": "fine-tuning", "objective": "objective"})
    config_rows += _rows(model, {"class": "model class", "preset": "preset", "parameters": "parameters",
                                 "trainable_parameters": "trainable parameters", "base_model": "initialised from"})
    config_rows += _rows(model_config, {"hidden_size": "hidden size", "num_hidden_layers": "layers",
                                        "num_attention_heads": "attention heads",
                                        "intermediate_size": "intermediate size",
                                        "position_encoding": "positions", "pooling": "pooling"})
    config_rows += [(key.replace("_", " "), value) for key, value in training.items()
                    if isinstance(value, (int, float, str)) and not key.endswith(("per_second", "fraction", "flos"))]
    if config_rows:
        sections.append("## Training configuration\n\n" + _table(config_rows))
    metrics, notes = _metric_table(summary)
    if metrics:
        patients = data.get("eval_patients")
        title = f"## Evaluation ({patients:,} patients)" if isinstance(patients, int) else "## Evaluation"
        sections.append(f"{title}\n\n{metrics}" + (f"\n\n{notes}" if notes else ""))
    return "\n\n".join(sections)


def _description(summary: Mapping[str, Any], kind: str, model_class: str | None, base_model: str | None) -> str:
    data, model = summary.get("data", {}), summary.get("model", {})
    what = f"A BEHRT LoRA adapter for `{base_model}`" if kind == "adapter" else f"A BEHRT `{model_class or 'model'}`"
    if _objectives(summary):
        what += f" pretrained with {' and '.join(_objectives(summary))}"
    if summary.get("task"):
        what += f" fine-tuned to predict `{summary['task']}`"
        if summary.get("mode"):
            what += f" ({summary['mode']})"
    if data.get("source"):
        what += f" on {_dataset_name(summary)}"
    if model.get("parameters"):
        what += f"; {model['parameters'] / 1e6:.2f}M parameters"
    return (
        what + ". BEHRT (Li et al., 2020) is a BERT over a patient's history of medical codes, with age and "
        "visit embeddings; this one was trained with behrt_hf."
    )


def render_model_card(
    folder: str | Path,
    summary: Mapping[str, Any] | None,
    kind: str = "model",
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    *,
    repo_id: str | None = None,
) -> ModelCard:
    """Render the model card of a saved model or LoRA adapter from its training summary.

    Args:
        folder: the saved model (config.json) or adapter (adapter_config.json); its configs fill the
            architecture / adapter tables.
        summary: the run's summary.json as a dict (pretrain or finetune); missing keys are left out.
        kind: `"model"` (library_name transformers) or `"adapter"` (library_name peft).
        base_model: Hub id of the base model. For adapters it defaults to adapter_config.json's
            `base_model_name_or_path`, then to summary["model"]["base_model"]; for models it is only
            written into the metadata when given (a full fine-tune of a Hub model).
        datasets: Hub ids of the training datasets, for the metadata.
        license: the license id of the metadata.
        repo_id: where the card will live; names the model and fills the usage snippets.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    folder, summary = Path(folder), dict(summary or {})
    config = _read_json(folder / "config.json")
    adapter = _read_json(folder / "adapter_config.json")
    if kind == "adapter":  # what peft will load the adapter onto comes first
        base_model = base_model or adapter.get("base_model_name_or_path") or summary.get("model", {}).get("base_model")
    model_name = repo_id or folder.resolve().name
    model_class = (config.get("architectures") or [summary.get("model", {}).get("class")])[0]
    datasets = list(datasets) if datasets else None
    eval_results = eval_results_of(summary, datasets)
    card_data = ModelCardData(
        model_name=model_name,
        library_name="peft" if kind == "adapter" else "transformers",
        license=license,
        tags=[*BASE_TAGS, *_task_tags(summary, kind)],
        datasets=datasets,
        base_model=base_model,
        eval_results=eval_results or None,
    )
    template = resources.files("behrt_hf.model_cards").joinpath(TEMPLATES[kind])
    with resources.as_file(template) as template_path:
        return ModelCard.from_template(
            card_data,
            template_path=str(template_path),
            title=model_name.split("/")[-1],
            description=_description(summary, kind, model_class, base_model),
            repo_id=model_name,
            base_model=base_model,
            auto_class=_AUTO_FOR_CLASS.get(model_class or "", "AutoModel"),
            peft_auto_class=_PEFT_AUTO.get(adapter.get("task_type"), "AutoPeftModel"),
            has_tokenizer=(folder / "tokenizer.json").is_file(),
            synthetic_data=str(summary.get("data", {}).get("source", "")).startswith("synthetic"),
            details=_details(summary, config, adapter),
        )


# ---- pushing ----------------------------------------------------------------------------------


def _create_repo(api: HfApi, repo_id: str, repo_type: str, private: bool, token: str | None) -> RepoUrl:
    """Create the repo (private unless told otherwise); warn when an existing repo's visibility differs."""
    url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, token=token)
    info = api.repo_info(url.repo_id, repo_type=repo_type, token=token)
    if info.private is not None and info.private != private:
        logger.warning(
            "%s already exists and is %s; its visibility was left unchanged (change it in the repo settings).",
            url.repo_id, "private" if info.private else "PUBLIC",
        )
    return url


def _is_local_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists()


def _point_adapter_at(folder: Path, base_model: str | None) -> str:
    """Make adapter_config.json's base_model_name_or_path a Hub id, so that the pushed adapter loads."""
    path = folder / "adapter_config.json"
    adapter = json.loads(path.read_text())
    current = adapter.get("base_model_name_or_path")
    if base_model is None:
        if current and _is_local_path(current):
            raise ValueError(
                f"{path}: base_model_name_or_path is the local path {current!r}, which the pushed adapter could "
                "not load from the Hub. Push the base model first and pass its repo id as base_model."
            )
        return current
    if current != base_model:
        logger.info("%s: base_model_name_or_path %r -> %r", path, current, base_model)
        adapter["base_model_name_or_path"] = base_model
        path.write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
    return base_model


# ---- what a push publishes --------------------------------------------------------------------

# The files of a folder that a push publishes (top level only): what behrt-pretrain and
# behrt-finetune write for a model or an adapter, and the aggregates of the run.
PUBLISHED_FILES = (
    # weights and configuration (transformers, PEFT; sharded weights with their index)
    "config.json", "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json",
    "pytorch_model.bin", "pytorch_model-*-of-*.bin", "pytorch_model.bin.index.json",
    "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin",
    # the code `trust_remote_code` loads, the tokenizer, the card
    "configuration_behrt.py", "modeling_behrt.py",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "README.md",
    # what a fine-tuned model predicts (its label column and classes), read by behrt-predict
    "label_kind.json",
    # aggregates of the run (checked by `per_patient_entries`) and plots of them
    "summary.json", "all_results.json", "train_results.json", "eval_results.json", "trainer_state.json",
    "metrics.jsonl", "training_curves.png", "*roc.png", "*pr.png", "*calibration.png",
)
# Files that hold a row per patient (ids, labels, probabilities, embeddings, tables of a cohort):
# on real data, health data. Left out of every push; published only when named in `extra_files`
# and `allow_patient_data=True`.
PATIENT_LEVEL_FILES = (
    "*predictions*", "*embeddings*", "*explanation*", "*.parquet", "*.arrow", "*.csv", "*.csv.gz", "*.tsv",
    "*.npy", "*.npz", "*.pkl", "*.pickle",
)
# Published files that must hold aggregates only.
AGGREGATE_FILES = ("summary.json", "all_results.json", "train_results.json", "eval_results.json",
                   "trainer_state.json", "metrics.jsonl")
# Keys that name a patient, and the longest list of plain values an aggregate may hold.
PATIENT_KEYS = frozenset({"patient_id", "patient_ids", "subject_id", "subject_ids", "prediction_time"})
MAX_AGGREGATE_LIST = 256


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def per_patient_entries(value: Any, where: str = "") -> list[str]:
    """Where a JSON value holds per-patient data: a key naming patients (`PATIENT_KEYS`), or a list
    of more than `MAX_AGGREGATE_LIST` numbers or strings (a value per patient). Aggregates (metrics,
    counts, configs, the Trainer's log history) hold neither."""
    found = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            found += [path] if str(key).lower() in PATIENT_KEYS else per_patient_entries(item, path)
    elif isinstance(value, list):
        if len(value) > MAX_AGGREGATE_LIST and not any(isinstance(v, (Mapping, list)) for v in value):
            return [f"{where or 'the file'} ({len(value):,} values)"]
        for i, item in enumerate(value):
            found += per_patient_entries(item, f"{where}[{i}]")
    return found


def _check_aggregates(folder: Path, files: Sequence[str]) -> None:
    """Raise if a published summary / metrics file holds per-patient entries."""
    for name in files:
        if name not in AGGREGATE_FILES:
            continue
        text = (folder / name).read_text()
        if name.endswith(".jsonl"):
            values = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            values = json.loads(text)
        found = per_patient_entries(values)
        if found:
            raise ValueError(
                f"{folder / name} holds per-patient data ({', '.join(found[:5])}); a published {name} must hold "
                f"aggregates only. Remove those entries, or leave the file out (ignore_patterns / --exclude {name})."
            )


def _by_top_folder(paths: Sequence[str]) -> str:
    """'checkpoint-2/ (11 files), training_args.bin': a short list of what was left out."""
    counts: dict[str, int] = {}
    for path in paths:
        top = path.split("/", 1)[0] + ("/" if "/" in path else "")
        counts[top] = counts.get(top, 0) + 1
    return ", ".join(f"{top} ({n} files)" if top.endswith("/") else top for top, n in counts.items())


def files_to_push(
    folder: str | Path,
    *,
    extra_files: Sequence[str] = (),
    ignore_patterns: Sequence[str] = tuple(DEFAULT_IGNORE_PATTERNS),
    allow_patient_data: bool = False,
) -> list[str]:
    """The files of `folder` a push uploads (paths relative to it, sorted); what is left out is logged.

    Uploaded: the allow-list `PUBLISHED_FILES` and the files named in `extra_files`. Left out and
    logged: files matching `ignore_patterns` (checkpoints, TensorBoard runs, pickled arguments) and
    patient-level files (`PATIENT_LEVEL_FILES`: predictions, embeddings, tables). Refused with a
    ValueError naming them: any other file (name it in `extra_files` to publish it, or match it
    with `ignore_patterns` to leave it out); a patient-level file named in `extra_files` without
    `allow_patient_data=True`; a summary or metrics file holding per-patient entries.
    """
    folder = Path(folder)
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    named = sorted({Path(name).as_posix() for name in extra_files})
    missing = sorted(set(named) - set(present))
    if missing:
        raise ValueError(f"{folder}: extra_files not found in the folder: {', '.join(missing)}.")
    patient_named = [name for name in named if _matches(name, PATIENT_LEVEL_FILES)]
    if patient_named and not allow_patient_data:
        raise ValueError(
            f"{folder}: {', '.join(patient_named)} hold(s) patient-level data (one row per patient); on real data a "
            "push would publish health data, private repo or not. Only if these may be published, pass "
            "allow_patient_data=True (--allow_patient_data) as well as naming them."
        )
    if patient_named:
        logger.warning("%s: pushing patient-level files %s as asked (allow_patient_data=True).", folder, patient_named)
    published, ignored, patient, unknown = list(named), [], [], []
    for path in present:
        if path in named:
            continue
        if _matches(path, ignore_patterns):
            ignored.append(path)
        elif _matches(path, PATIENT_LEVEL_FILES):
            patient.append(path)
        elif "/" not in path and _matches(path, PUBLISHED_FILES):
            published.append(path)
        else:
            unknown.append(path)
    if unknown:
        raise ValueError(
            f"{folder}: {', '.join(unknown)} would go up but are not part of a published model or adapter. "
            "Name the ones to publish (extra_files=[...] / --include FILE) and leave the rest out "
            "(ignore_patterns / --exclude PATTERN)."
        )
    if patient:
        logger.warning("%s: not pushing patient-level files: %s (name them and pass allow_patient_data=True to "
                       "publish them).", folder, ", ".join(patient))
    if ignored:
        logger.info("%s: not pushing training byproducts: %s", folder, _by_top_folder(ignored))
    _check_aggregates(folder, published)
    return sorted(published)


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    summary: Mapping[str, Any] | None = None,
    kind: str | None = None,
    private: bool = True,
    token: str | None = None,
    commit_message: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = "apache-2.0",
    ignore_patterns: Sequence[str] = tuple(DEFAULT_IGNORE_PATTERNS),
    extra_files: Sequence[str] = (),
    allow_patient_data: bool = False,
) -> str:
    """Write the model card into `folder` as README.md and upload the folder's publishable files to `repo_id`.

    What goes up is an allow-list (`files_to_push`): weights, configs, code files, tokenizer, card,
    adapter files, aggregate summaries and plots. Patient-level files (predictions, embeddings) are
    left out and logged; any other file is refused unless named in `extra_files` or matched by
    `ignore_patterns`. Nothing is sent before these checks pass.

    Args:
        folder: a saved model (`save_pretrained`: config.json + weights) or PEFT adapter
            (adapter_config.json + adapter weights), e.g. the output folder of behrt-pretrain/finetune.
        repo_id: `namespace/name` on the Hub.
        summary: the training summary for the card; defaults to the folder's summary.json.
        kind: `"model"` or `"adapter"`; detected from the files when None.
        private: create the repo private (default). An existing repo keeps its visibility.
        token: a Hub token; defaults to the one huggingface_hub finds (HF_TOKEN, `hf auth login`).
        commit_message: defaults to "Upload BEHRT <kind>".
        base_model: the Hub id of the base model. For an adapter it is written into the card and,
            when it differs, into the folder's adapter_config.json, so that the adapter loads from
            the Hub; for a model (a full fine-tune of a Hub model) into the card's metadata.
        datasets: Hub ids of the training datasets, for the card.
        license: license id for the card.
        ignore_patterns: files not to upload (checkpoints, TensorBoard runs, pickled arguments).
        extra_files: files outside the allow-list to upload too (paths relative to `folder`).
        allow_patient_data: let patient-level files named in `extra_files` go up; only for data
            that may be published (synthetic, or de-identified with the right to share).

    Returns:
        The URL of the repo.
    """
    folder = Path(folder)
    kind = kind or detect_kind(folder)
    check_folder(folder, kind)
    files = files_to_push(folder, extra_files=extra_files, ignore_patterns=ignore_patterns,
                          allow_patient_data=allow_patient_data)
    if kind == "adapter":
        base_model = _point_adapter_at(folder, base_model)
    summary = read_summary(folder) if summary is None else summary
    api = HfApi(token=token)
    repo_url = _create_repo(api, repo_id, "model", private, token)
    repo_id = repo_url.repo_id
    card = render_model_card(folder, summary, kind, base_model=base_model, datasets=datasets, license=license,
                             repo_id=repo_id)
    card.save(folder / "README.md")
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name))
                  for name in sorted({*files, "README.md"})]
    commit = api.create_commit(repo_id=repo_id, operations=operations, token=token,
                               commit_message=commit_message or f"Upload BEHRT {kind}")
    logger.info("pushed %d files of %s to %s (%s)", len(operations), folder, repo_id, commit.commit_url)
    return str(repo_url)


def render_dataset_card(dataset_dict, repo_id: str, card_text: str | None = None,
                        license: str = "apache-2.0", synthetic: bool = True) -> DatasetCard:
    """A dataset card: metadata (license, tags, pretty name) and `card_text`, or the default text."""
    card_data = DatasetCardData(
        license=license, pretty_name=repo_id.split("/")[-1],
        tags=SYNTHETIC_DATASET_TAGS if synthetic else BASE_TAGS,
    )
    if card_text is not None:
        return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{card_text.strip()}\n")
    splits = {name: len(split) for name, split in dataset_dict.items()}
    columns = next(iter(dataset_dict.values())).column_names if splits else []
    template = resources.files("behrt_hf.model_cards").joinpath(TEMPLATES["dataset"])
    with resources.as_file(template) as template_path:
        return DatasetCard.from_template(
            card_data, template_path=str(template_path), title=repo_id.split("/")[-1], repo_id=repo_id,
            details=_table([(name, n) for name, n in splits.items()], ("split", "patients"), numeric=True),
            tasks=sorted(c[len("label_"):] for c in columns if c.startswith("label_")), synthetic=synthetic,
        )


def push_dataset_to_hub(
    dataset_dict,
    repo_id: str,
    *,
    private: bool = True,
    card_text: str | None = None,
    token: str | None = None,
    license: str = "apache-2.0",
    allow_real_data: bool = False,
    commit_message: str = "Upload cohort",
) -> str:
    """Push a `DatasetDict` in the patient schema as Parquet shards, with a dataset card.

    Only a synthetic cohort goes up unless told otherwise: one whose splits carry the synthetic
    builder's marker (`behrt_hf.data_builders.synthetic_ehr.is_synthetic_cohort`). Any other
    cohort (read from MEDS, MIMIC, Synthea, or rebuilt from rows) is refused before anything is
    sent, unless `allow_real_data=True`.

    The card goes first; `DatasetDict.push_to_hub` then adds the data and the `configs` /
    `dataset_info` metadata to it, so that `datasets.load_dataset(repo_id)` returns the same
    splits and features.

    Args:
        dataset_dict: the cohort (e.g. `behrt_hf.load_synthetic("small")`).
        repo_id: `namespace/name` of the dataset repo.
        private: create the repo private (default). An existing repo keeps its visibility.
        card_text: Markdown body of the card; defaults to a description of the cohort.
        token: a Hub token; defaults to the one huggingface_hub finds.
        license: license id of the card.
        allow_real_data: push a cohort that is not marked synthetic; only for data that may be
            published (de-identified, with the right to share). Its card is not tagged synthetic.

    Returns:
        The URL of the dataset repo.
    """
    from behrt_hf.data_builders.synthetic_ehr import SYNTHETIC_MARKER, is_synthetic_cohort

    synthetic = is_synthetic_cohort(dataset_dict)
    if not synthetic and not allow_real_data:
        raise ValueError(
            f"Refusing to push to {repo_id}: the cohort is not marked synthetic (its splits' info.description lacks "
            f"{SYNTHETIC_MARKER!r}, which behrt_hf's synthetic builder writes), so it may hold real patients' records. "
            "Only if the data may be published (de-identified, with the right to share), pass allow_real_data=True."
        )
    if not synthetic:
        logger.warning("pushing a cohort that is not marked synthetic to %s (allow_real_data=True).", repo_id)
    api = HfApi(token=token)
    repo_url = _create_repo(api, repo_id, "dataset", private, token)
    repo_id = repo_url.repo_id
    card = render_dataset_card(dataset_dict, repo_id, card_text, license=license, synthetic=synthetic)
    api.upload_file(path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=repo_id,
                    repo_type="dataset", commit_message="Add dataset card", token=token)
    dataset_dict.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message)
    return str(repo_url)


__all__ = [
    "DEFAULT_IGNORE_PATTERNS",
    "PATIENT_LEVEL_FILES",
    "PUBLISHED_FILES",
    "check_folder",
    "detect_kind",
    "eval_results_of",
    "files_to_push",
    "metrics_of",
    "per_patient_entries",
    "push_dataset_to_hub",
    "push_folder_to_hub",
    "read_summary",
    "render_dataset_card",
    "render_model_card",
]
