"""Write a synthetic cohort as a MEDS dataset (https://github.com/Medical-Event-Data-Standard/meds).

    behrt-synthetic-export --output_dir out/meds_small --synthetic small --seed 0   (behrt_hf.training.synthetic_export)
    export_meds("out/meds_tiny", "tiny")

Layout (validated with the ``meds`` package's schemas)::

    data/{train,tuning,held_out}/<k>.parquet   subject_id, time, code, numeric_value
    metadata/codes.parquet                     code, description, parent_codes
    metadata/dataset.json
    metadata/subject_splits.parquet            subject_id, split
    labels/<task>/<split>/0.parquet            MEDS label files (``meds.LabelSchema``, exactly its columns):
                                               subject_id, prediction_time, boolean_value
    oracle/<task>/<split>.parquet              the generator's true probability of each label row, in
                                               meds-evaluation's prediction format (see below)

Each task (`behrt_hf.data_builders.synthetic.TASKS`) is written as ACES writes a task:
``labels/<task>/`` is a labels folder to pass as ``--labels_dir`` (or MEDS-DEV's ``{labels_dir}``), one
row per patient the task applies to (``index_visit_<task> >= 0``), ``prediction_time`` = the index
visit's time (every event of that visit may be used, none later) and ``boolean_value`` =
``label_<task>``. Label files allow no extra columns, so the oracle (``oracle_<task>``, the label's
Bayes-optimal probability given that history) lives outside the labels folder, as a file
meds-evaluation can score directly: ``subject_id, prediction_time, boolean_value,
predicted_boolean_value (oracle >= 0.5), predicted_boolean_probability (oracle, float64)``, the same rows as
``labels/<task>/<split>/0.parquet``. ``meds-evaluation-cli predictions_path=<out>/oracle/<task>/held_out.parquet
output_file=oracle.json`` gives the best score any model can reach on the held-out label rows; join a
model's ``predictions.parquet`` on (subject_id, prediction_time) to compare row by row.

Conventions (`behrt_hf.schema`), so that cohort -> MEDS -> reader is an exact round trip:
``subject_id`` is the patient index (``patient_id`` is its decimal string); sex is a static event
(null time) ``GENDER//F`` / ``GENDER//M``; birth is ``MEDS_BIRTH`` at the birth datetime (midnight,
strictly before the first visit); a visit is the events sharing one timestamp, written in the
visit's code order; visit times are distinct and increasing; ``numeric_value`` is null (no lab
values are generated). Subjects are contiguous and sorted by ``subject_id`` then time in each file.

The exporter generates patients itself (a record depends only on (seed, index)), streaming: memory
is bounded by ``subjects_per_shard`` per split, whatever the cohort size.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from behrt_hf.schema import MEDS_BIRTH_CODE, MEDS_GENDER_PREFIX, MEDS_SPLIT_NAMES

from .synthetic import TASKS, simulate_patient
from .synthetic.codes import code_table
from .synthetic_ehr import CONFIG_SIZES, SPLITS, SyntheticEHRConfig, generator_code_hash, split_of

_EPOCH = dt.datetime(1970, 1, 1)
_US = dt.timedelta(microseconds=1)


def _micros(t: dt.datetime) -> int:
    return (t - _EPOCH) // _US


class _ShardWriter:
    """Buffers one split's events and writes ``data/<split>/<k>.parquet`` every ``limit`` subjects."""

    def __init__(self, root: str, split: str, limit: int):
        self.dir = os.path.join(root, "data", split)
        os.makedirs(self.dir, exist_ok=True)
        self.limit, self.k, self.files = limit, 0, []
        self._reset()

    def _reset(self):
        self.subjects, self.ids, self.times, self.codes = 0, [], [], []

    def add(self, subject_id: int, sex: str, birth: dt.datetime, times: list, codes_by_visit: list) -> None:
        ids, tms, cds = self.ids, self.times, self.codes
        ids += [subject_id, subject_id]
        tms += [None, _micros(birth)]
        cds += [MEDS_GENDER_PREFIX + sex, MEDS_BIRTH_CODE]
        for t, codes in zip(times, codes_by_visit):
            us = _micros(t)
            ids += [subject_id] * len(codes)
            tms += [us] * len(codes)
            cds += codes
        self.subjects += 1
        if self.subjects >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.subjects:
            return
        n = len(self.ids)
        table = pa.table({
            "subject_id": pa.array(self.ids, pa.int64()),
            "time": pa.array(self.times, pa.int64()).cast(pa.timestamp("us")),
            "code": pa.array(self.codes, pa.string()),
            "numeric_value": pa.nulls(n, pa.float32()),
        })
        from meds import DataSchema

        DataSchema.validate(table)
        path = os.path.join(self.dir, f"{self.k}.parquet")
        pq.write_table(table, path)
        self.files.append(path)
        self.k += 1
        self._reset()


def _parent(code: str) -> list:
    system, _, value = code.partition("//")
    if system == "ICD10CM":
        import simple_icd_10_cm as cm

        parent = cm.get_parent(value)
        return [f"ICD10CM//{parent}"] if parent else []
    if system == "ATC" and len(value) == 7:
        return [f"ATC//{value[:5]}"]
    return []


def codes_metadata() -> pa.Table:
    """metadata/codes.parquet: every code the generator can emit, plus birth and gender codes."""
    table = dict(code_table())
    table[MEDS_BIRTH_CODE] = "Birth"
    table[MEDS_GENDER_PREFIX + "F"] = "Female"
    table[MEDS_GENDER_PREFIX + "M"] = "Male"
    codes = sorted(table)
    return pa.table({
        "code": pa.array(codes, pa.string()),
        "description": pa.array([table[c] for c in codes], pa.string()),
        "parent_codes": pa.array([_parent(c) for c in codes], pa.list_(pa.string())),
    })


class _TaskRows:
    """One task's label rows of one split, collected while the cohort streams past (four columns)."""

    def __init__(self):
        self.ids, self.times, self.labels, self.oracle = [], [], [], []

    def add(self, subject_id: int, time: dt.datetime, label: int, oracle: float) -> None:
        self.ids.append(subject_id)
        self.times.append(_micros(time))
        self.labels.append(bool(label))
        self.oracle.append(oracle)

    def labels_table(self) -> pa.Table:
        """The MEDS label rows: exactly ``subject_id, prediction_time, boolean_value``."""
        return pa.table({
            "subject_id": pa.array(self.ids, pa.int64()),
            "prediction_time": pa.array(self.times, pa.int64()).cast(pa.timestamp("us")),
            "boolean_value": pa.array(self.labels, pa.bool_()),
        })

    def oracle_table(self) -> pa.Table:
        """The same rows scored by the oracle, in meds-evaluation's prediction columns. The probability is
        the generator's float32 widened to float64 (exact): meds-evaluation 0.0.3, which MEDS-DEV pins,
        accepts only float64 there; 0.0.4+ casts it to float32."""
        probability = pa.array(self.oracle, pa.float32()).cast(pa.float64())
        return self.labels_table().append_column(
            "predicted_boolean_value", pc.greater_equal(probability, 0.5)
        ).append_column("predicted_boolean_probability", probability)


def _write_task_files(output_dir: str, task: str, rows_by_split: dict) -> None:
    """labels/<task>/<split>/0.parquet (validated with ``meds.LabelSchema``) and oracle/<task>/<split>.parquet.

    Every MEDS split gets its file, empty when the task has no rows there, so the layout never depends
    on the cohort size.
    """
    from meds import LabelSchema

    for split, rows in rows_by_split.items():
        meds_split = MEDS_SPLIT_NAMES[split]
        labels = rows.labels_table()
        LabelSchema.validate(labels)
        label_dir = os.path.join(output_dir, "labels", task, meds_split)
        os.makedirs(label_dir, exist_ok=True)
        pq.write_table(labels, os.path.join(label_dir, "0.parquet"))
        oracle_dir = os.path.join(output_dir, "oracle", task)
        os.makedirs(oracle_dir, exist_ok=True)
        pq.write_table(rows.oracle_table(), os.path.join(oracle_dir, f"{meds_split}.parquet"))


def _write_metadata(output_dir: str, name: str, config: SyntheticEHRConfig, split_ids: list, split_names: list) -> None:
    """metadata/{subject_splits.parquet, codes.parquet, dataset.json}, each validated."""
    from meds import CodeMetadataSchema, DatasetMetadataSchema, SubjectSplitSchema

    splits_table = pa.table({"subject_id": pa.array(split_ids, pa.int64()), "split": pa.array(split_names)})
    SubjectSplitSchema.validate(splits_table)
    pq.write_table(splits_table, os.path.join(output_dir, "metadata", "subject_splits.parquet"))
    codes_table = codes_metadata()
    CodeMetadataSchema.validate(codes_table)
    pq.write_table(codes_table, os.path.join(output_dir, "metadata", "codes.parquet"))

    import meds

    import behrt_hf

    metadata = {
        "dataset_name": f"behrt_hf_synthetic_ehr_{name}",
        "dataset_version": f"{name}-n{config.num_patients}-seed{config.seed}-{generator_code_hash()}",
        "etl_name": "behrt_hf.data_builders.meds_export",
        "etl_version": behrt_hf.__version__,
        "meds_version": meds.__version__,
        "created_at": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
        "license": "Apache-2.0 (synthetic data; not real patients, not for clinical use)",
    }
    DatasetMetadataSchema.validate(metadata)
    with open(os.path.join(output_dir, "metadata", "dataset.json"), "w") as f:
        json.dump(metadata, f, indent=2)


def export_meds(
    output_dir: str,
    name: str = "small",
    seed: int = 0,
    num_patients: int | None = None,
    split_fractions=(0.8, 0.1, 0.1),
    subjects_per_shard: int = 10000,
    overwrite: bool = False,
) -> dict:
    """Generate a synthetic cohort and write it to ``output_dir`` as a MEDS dataset, its tasks as label folders.

    Returns a summary: subjects per split, events, data files written, label rows per task and split
    (keyed by MEDS split name).
    """
    if name not in CONFIG_SIZES:
        raise ValueError(f"unknown config {name!r}; choose one of {list(CONFIG_SIZES)}")
    if not isinstance(subjects_per_shard, int) or subjects_per_shard <= 0:
        raise ValueError(f"subjects_per_shard must be a positive integer, got {subjects_per_shard!r}")
    config = SyntheticEHRConfig(name=name, num_patients=num_patients or CONFIG_SIZES[name], seed=seed,
                                split_fractions=split_fractions)
    if os.path.exists(output_dir) and os.listdir(output_dir):
        if not overwrite:
            raise FileExistsError(f"{output_dir} is not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(output_dir)
    os.makedirs(os.path.join(output_dir, "metadata"), exist_ok=True)

    writers = {s: _ShardWriter(output_dir, MEDS_SPLIT_NAMES[s], subjects_per_shard) for s in SPLITS}
    split_ids, split_names = [], []
    task_rows = {t: {s: _TaskRows() for s in SPLITS} for t in TASKS}
    counts = {s: 0 for s in SPLITS}
    for index in range(config.num_patients):
        split = split_of(index, config.split_fractions)
        record = simulate_patient(config.seed, index)
        times = record.visit_times()
        writers[split].add(index, record.sex, record.birth, times, record.codes)
        split_ids.append(index)
        split_names.append(MEDS_SPLIT_NAMES[split])
        counts[split] += 1
        for task in TASKS:
            idx, label, oracle = record.tasks[task]
            if idx >= 0:
                task_rows[task][split].add(index, times[idx], label, oracle)
    for w in writers.values():
        w.flush()

    _write_metadata(output_dir, name, config, split_ids, split_names)
    for task, rows_by_split in task_rows.items():
        _write_task_files(output_dir, task, rows_by_split)
    files = [p for w in writers.values() for p in w.files]
    events = sum(pq.ParquetFile(p).metadata.num_rows for p in files)
    label_rows = {t: {MEDS_SPLIT_NAMES[s]: len(r.ids) for s, r in by_split.items()} for t, by_split in task_rows.items()}
    return {"subjects": counts, "events": events, "files": files, "label_rows": label_rows, "output_dir": output_dir}


__all__ = ["codes_metadata", "export_meds"]
