"""Patient embeddings: one vector per patient from a BEHRT encoder, to use elsewhere.

    model, tokenizer = load_encoder("runs/pretrain")            # a checkpoint, a head or a LoRA adapter
    vectors = embed_patients(model, tokenizer, cohort["test"], pooling="mean")     # (N, H) float32
    write_embeddings("out/embeddings.parquet", cohort["test"]["patient_id"], vectors,
                     prediction_times(cohort["test"]))

The input is cut exactly as for prediction (`behrt_hf.tasks`): with a task (or an index-visit
column) each patient's history ends at its index visit, so nothing recorded later reaches the
vector; without one the whole record is embedded. Poolings:

- `"cls"`: the last hidden state of [CLS];
- `"mean"`: the mean of the last hidden states over real tokens (the attention mask), padding left out;
- `"pooler"`: the model's pooler output (`config.pooling`, then dense + tanh), the input of the
  classification and next-visit heads. A masked-LM checkpoint has no trained pooler: asking for it
  is an error, not random numbers.

Memory is bounded by the batch: patients are encoded from Arrow `batch_size * CHUNK_BATCHES` at a
time, sorted by length inside that chunk (less padding), padded by `DataCollatorForBehrt` and run
under `torch.inference_mode` on the model's device; only the (N, H) result grows with the cohort.

`embeddings.parquet` has `subject_id` (int64, when every patient id is a decimal integer, as in
MEDS), `patient_id`, `prediction_time` (timestamp[us]: the index visit's time with a task, else the
last visit's) and `embedding` (fixed_size_list<float32>[H]). Such files hold a row per patient:
`behrt_hf.hub` never pushes a file named `*embeddings*`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from .data_collator import DataCollatorForBehrt
from .encoding import TOKEN_COLUMNS

POOLINGS = ("cls", "mean", "pooler")
CHUNK_BATCHES = 16  # batches encoded at once and sorted by length inside the chunk


def encoder_of(model):
    """The BEHRT encoder (`BehrtModel`) inside `model`: itself, a head's `.behrt`, or either one
    wrapped by PEFT (whose LoRA layers sit inside the base model's modules, so they apply)."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    encoder = getattr(model, "behrt", model)
    if getattr(getattr(encoder, "config", None), "model_type", None) != "behrt" or not hasattr(encoder, "encoder"):
        raise TypeError(f"Expected a BEHRT model (BehrtModel, a BehrtFor* head or a PEFT model of one), "
                        f"got {type(model).__name__}.")
    return encoder


def index_visit_column(task) -> str | None:
    """The column that cuts each history: a `Task`'s index visit, a column name as it is, or None."""
    return task if task is None or isinstance(task, str) else task.index_visit


def as_dataset(patients) -> datasets.Dataset:
    """`patients` as a `datasets.Dataset` (a list of patient dicts is converted once)."""
    return patients if isinstance(patients, datasets.Dataset) else datasets.Dataset.from_list(list(patients))


def arrow_batches(patients: datasets.Dataset, size: int) -> Iterator[pa.Table]:
    """Consecutive Arrow tables of at most `size` patients."""
    arrow = patients.with_format("arrow")
    for start in range(0, len(patients), size):
        yield arrow[start:start + size]


def encoded_rows(encoded: pa.Table) -> list[dict[str, np.ndarray]]:
    """The tokenizer's Arrow output as one dict of per-token arrays per patient (views, no copy)."""
    offsets, values = None, {}
    for name in TOKEN_COLUMNS:
        column = encoded.column(name).combine_chunks()
        offsets = column.offsets.to_numpy()
        values[name] = column.values.to_numpy()
    return [{name: v[offsets[i]:offsets[i + 1]] for name, v in values.items()} for i in range(len(offsets) - 1)]


def pool(outputs, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, H) patient vectors from a `BehrtModel` output."""
    if pooling == "cls":
        return outputs.last_hidden_state[:, 0]
    if pooling == "pooler":
        return outputs.pooler_output
    mask = attention_mask.unsqueeze(-1).to(outputs.last_hidden_state.dtype)  # (B, T, 1)
    return (outputs.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def embed_patients(
    model,
    tokenizer,
    patients,
    *,
    pooling: str = "cls",
    task=None,
    batch_size: int = 64,
    max_length: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """One vector per patient, in the order of `patients`: an (N, hidden_size) float32 array.

    Args:
        model: a `BehrtModel`, any BEHRT head (its `.behrt` is used) or a PEFT model of one.
        tokenizer: the model's `BehrtTokenizerFast`.
        patients: a `datasets.Dataset` in the patient schema, or a list of patient dicts.
        pooling: `"cls"`, `"mean"` or `"pooler"` (see the module docstring).
        task: None (the whole record), a `Task` or an index-visit column name: each history is cut
            at that visit, as for prediction. Every patient needs an index visit >= 0
            (`Task.eligible` keeps those).
        batch_size: patients per forward pass.
        max_length: tokens per patient (default: the tokenizer's `model_max_length`); older visits
            are dropped first.
        progress: show a progress bar.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    encoder = encoder_of(model)
    if pooling == "pooler" and encoder.pooler is None:
        raise ValueError("This model has no trained pooler (a masked-LM checkpoint has none): use pooling='cls' "
                         "or 'mean'.")
    patients = as_dataset(patients)
    until = index_visit_column(task)
    device = next(encoder.parameters()).device
    collate = DataCollatorForBehrt(pad_token_id=tokenizer.pad_token_id)
    out = np.empty((len(patients), encoder.config.hidden_size), dtype=np.float32)
    was_training, done = encoder.training, 0
    encoder.eval()
    try:
        with torch.inference_mode(), tqdm(total=len(patients), unit="patient", desc="Embedding",
                                          disable=not progress) as bar:
            for chunk in arrow_batches(patients, batch_size * CHUNK_BATCHES):
                rows = encoded_rows(tokenizer.encode_patients(chunk, max_length, until))
                order = np.argsort([len(row["input_ids"]) for row in rows], kind="stable")
                for start in range(0, len(rows), batch_size):
                    take = order[start:start + batch_size]
                    batch = {k: v.to(device) for k, v in collate([rows[i] for i in take]).items()}
                    vectors = pool(encoder(**batch, return_dict=True), batch["attention_mask"], pooling)
                    out[done + take] = vectors.float().cpu().numpy()
                    bar.update(len(take))
                done += len(rows)
    finally:
        encoder.train(was_training)
    return out


def cut_positions(table: pa.Table, task=None) -> tuple[pa.ListArray, np.ndarray]:
    """The `visits` of an Arrow batch and, per patient, the index of the visit its history ends at:
    the index visit under `task` (a `Task` or an index-visit column), else the last visit."""
    until = index_visit_column(task)
    visits = table.column("visits").combine_chunks()
    last = pc.list_value_length(visits).to_numpy() - 1
    index = last if until is None else table.column(until).to_numpy()
    bad = (index < 0) | (index > last)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"patient {table.column('patient_id')[row].as_py()!r}: visit {index[row]} to cut at is "
                         f"outside its {last[row] + 1} visits.")
    return visits, index


def cut_visit_values(patients, task=None, field: str = "time") -> pa.Array:
    """`field` (e.g. `time`, `age`) of the visit each patient's history ends at (see `cut_positions`)."""
    parts = []
    for table in arrow_batches(as_dataset(patients), 4096):
        visits, index = cut_positions(table, task)
        values = pc.struct_field(visits.values, field)  # `values` and `offsets` both ignore a slice's offset
        parts.append(values.take(pa.array(visits.offsets.to_numpy()[:-1] + index)))
    return pa.concat_arrays(parts) if parts else pa.array([])


def prediction_times(patients, task=None) -> pa.Array:
    """Each patient's prediction time (timestamp[us]): its index visit's time under `task` (a `Task`
    or an index-visit column), else its last visit's. Times stored as numbers (integer days) stay so."""
    times = cut_visit_values(patients, task, "time")
    return times.cast(pa.timestamp("us")) if pa.types.is_temporal(times.type) or pa.types.is_null(times.type) else times


def embeddings_table(patient_ids: Sequence, embeddings: np.ndarray, prediction_time=None, **columns) -> pa.Table:
    """The table of `write_embeddings`; `columns` (e.g. `split`) go before `embedding`."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(patient_ids):
        raise ValueError(f"embeddings must be (patients, hidden) = ({len(patient_ids)}, H), got {embeddings.shape}.")
    ids = pa.array([str(i) for i in patient_ids], pa.string())
    table = {}
    subject_ids = integer_ids(ids)
    if subject_ids is not None:
        table["subject_id"] = subject_ids
    table["patient_id"] = ids
    if prediction_time is not None:
        times = prediction_time if isinstance(prediction_time, (pa.Array, pa.ChunkedArray)) else pa.array(prediction_time)
        table["prediction_time"] = times.cast(pa.timestamp("us")) if pa.types.is_temporal(times.type) else times
    table.update(columns)
    table["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
    return pa.table(table)


def integer_ids(ids: pa.Array) -> pa.Array | None:
    """`ids` as int64 when each is the decimal string of an integer (MEDS `subject_id`s), else None."""
    if not len(ids) or not pc.all(pc.match_substring_regex(ids, r"^-?(0|[1-9][0-9]{0,17})$")).as_py():
        return None
    return pc.cast(ids, pa.int64())


def write_embeddings(path: str | Path, patient_ids: Sequence, embeddings: np.ndarray, prediction_time=None,
                     **columns) -> Path:
    """Write `embeddings.parquet` (see the module docstring); a folder `path` gets that file name."""
    path = Path(path)
    if path.suffix != ".parquet":
        path = path / "embeddings.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(embeddings_table(patient_ids, embeddings, prediction_time, **columns), path)
    return path


def read_embeddings(path: str | Path) -> tuple[pa.Table, np.ndarray]:
    """`embeddings.parquet` -> (its other columns, the (N, H) float32 embeddings)."""
    table = pq.read_table(path)
    column = table.column("embedding").combine_chunks()
    matrix = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return table.drop_columns(["embedding"]), matrix


# --- loading a model to embed with ----------------------------------------------------------------


def load_encoder(name_or_path: str, **from_pretrained_kwargs):
    """(The `BehrtModel` of a checkpoint, its tokenizer) for a pretrained or fine-tuned model, or a
    LoRA adapter of `behrt-finetune` (merged into its base model).

    A checkpoint without pooler weights (masked-LM pretraining) gets `pooler = None`, so asking for
    `pooling="pooler"` fails instead of returning the output of a randomly initialised layer.
    """
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.utils import find_adapter_config_file

    if find_adapter_config_file(name_or_path):
        from peft import PeftConfig, PeftModel

        adapter = PeftConfig.from_pretrained(name_or_path)
        if adapter.task_type != "SEQ_CLS":
            raise ValueError(f"{name_or_path}: only sequence-classification adapters (behrt-finetune's) are supported, "
                             f"this one has task_type {adapter.task_type!r}.")
        base, info = AutoModelForSequenceClassification.from_pretrained(
            adapter.base_model_name_or_path, num_labels=adapter_num_labels(name_or_path), output_loading_info=True,
            **from_pretrained_kwargs,
        )
        model = PeftModel.from_pretrained(base, name_or_path).merge_and_unload().behrt
        tokenizer = load_behrt_tokenizer(name_or_path, adapter.base_model_name_or_path)
    else:
        model, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True, **from_pretrained_kwargs)
        tokenizer = load_behrt_tokenizer(name_or_path)
    if any(key.startswith(("pooler.", "behrt.pooler.")) for key in info["missing_keys"]):
        model.pooler = None
    tokenizer.check_compatible(model.config)
    return model.eval(), tokenizer


def adapter_num_labels(name_or_path: str) -> int:
    """The number of outputs of the classifier saved with a LoRA adapter (1 if it saved none)."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    weights = cached_file(name_or_path, "adapter_model.safetensors", _raise_exceptions_for_missing_entries=False)
    if weights is None:
        return 1
    with safe_open(weights, "pt") as f:
        for key in f.keys():
            if key.endswith("classifier.weight"):
                return int(f.get_slice(key).get_shape()[0])
    return 1


def load_behrt_tokenizer(*sources: str):
    """The BEHRT tokenizer saved in the first of `sources` that holds one."""
    from transformers import AutoTokenizer

    from .tokenization_behrt import BehrtTokenizerFast

    for source in sources:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError):
            continue
        if isinstance(tokenizer, BehrtTokenizerFast):
            return tokenizer
    raise ValueError(f"No BEHRT tokenizer found in {', '.join(sources)}.")


__all__ = [
    "POOLINGS",
    "embed_patients",
    "embeddings_table",
    "encoder_of",
    "load_encoder",
    "prediction_times",
    "read_embeddings",
    "write_embeddings",
]
