"""Benchmark the MEDS reader: throughput (events/s) and peak memory on a generated multi-shard dataset.

    python -m behrt_hf.training.benchmark_meds_reader --events 10_000_000 --shards 20 --output_dir /tmp/meds_bench

1. Writes a synthetic MEDS dataset (skipped when `output_dir/meds` already has one of that size):
   `events` rows over `shards` parquet shards, ~`events_per_subject` rows per subject (MEDS_BIRTH,
   a static GENDER code, a static non-visit code, then visits of 1-8 codes from a Zipf-like
   vocabulary of ICD10CM / ATC / LAB codes, labs with a numeric value), plus
   `metadata/{dataset.json, codes.parquet, subject_splits.parquet}`. Generation is vectorised and
   shard by shard, so it needs one shard in memory.
2. Reads it with `load_meds` in a fresh subprocess (a cold cache), so that its peak RSS
   (`ru_maxrss`) is the reader's own: imports, one shard, a batch of patient rows, the Arrow writer.
3. Prints events/s, patients/s and peak RSS, and the same numbers as JSON (`--json_out`).
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SECONDS_PER_DAY = 86400
US = 1_000_000


@dataclass
class BenchmarkArguments:
    output_dir: str = field(metadata={"help": "Folder for the generated MEDS dataset (output_dir/meds) and caches."})
    events: int = field(default=10_000_000, metadata={"help": "Total number of MEDS rows to generate."})
    shards: int = field(default=20, metadata={"help": "Number of parquet shards."})
    events_per_subject: int = field(default=120, metadata={"help": "Mean rows per subject."})
    numeric: str = field(default="drop", metadata={"help": "load_meds numeric mode: 'drop' or 'bin'."})
    seed: int = field(default=0, metadata={"help": "Random seed of the generator."})
    json_out: str | None = field(default=None, metadata={"help": "Also write the results as JSON here."})

    def __post_init__(self):
        if self.events < self.shards * 10:
            raise ValueError("need at least 10 events per shard")
        if self.numeric not in ("drop", "bin"):
            raise ValueError("numeric must be 'drop' or 'bin'")


def _vocabulary(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """~6k codes and whether each is a lab (has a numeric value)."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    icd = [f"ICD10CM//{letters[i % 26]}{(i * 7) % 100:02d}.{i % 10}" for i in range(3000)]
    atc = [f"ATC//{letters[i % 26]}{i % 100:02d}{letters[(i * 3) % 26]}{letters[(i * 5) % 26]}{i % 100:02d}" for i in range(2000)]
    lab = [f"LAB//{50000 + i}" for i in range(1000)]
    codes = np.array(icd + atc + lab, dtype=object)
    return codes, np.array([c.startswith("LAB//") for c in codes])


def _shard_table(rng, first_subject: int, n_rows: int, per_subject: int, codes, is_lab) -> pa.Table:
    """One shard: subjects contiguous, rows sorted by time within a subject (statics first)."""
    n_subjects = max(1, n_rows // per_subject)
    header = 3  # MEDS_BIRTH, GENDER//F|M, EYE_COLOR//...
    body = n_rows - header * n_subjects
    cuts = np.sort(rng.integers(0, body - n_subjects + 1, n_subjects - 1))
    n_body = 1 + np.diff(np.r_[0, cuts, body - n_subjects])  # body rows per subject, at least 1
    subject = np.repeat(np.arange(n_subjects), n_body)
    start = np.r_[0, np.cumsum(n_body)[:-1]]
    rank = np.arange(body) - np.repeat(start, n_body)  # row index within the subject
    # visits of 1..8 codes: a new visit where a random draw says so
    new_visit = (rng.random(body) < 0.3) | (rank == 0)
    visit_no = np.cumsum(new_visit) - 1
    visit_no -= np.repeat(visit_no[start], n_body)
    birth_us = (rng.integers(-60, 20, n_subjects) * 365.25 * SECONDS_PER_DAY * US).astype(np.int64)  # 1910..1990
    first_visit = birth_us + (rng.integers(0, 30, n_subjects) * 365.25 * SECONDS_PER_DAY * US).astype(np.int64)
    gap_us = np.int64(21 * SECONDS_PER_DAY * US)
    time_us = first_visit[subject] + visit_no * gap_us  # the codes of a visit share its time
    which = np.minimum(rng.zipf(1.3, body) - 1, len(codes) - 1)
    which = rng.permutation(len(codes))[which]  # spread the popular codes over the three systems
    code = codes[which]
    value = np.where(is_lab[which], rng.normal(100, 15, body), np.nan).astype(np.float32)

    ids = np.arange(n_subjects)
    head_subject = np.repeat(ids, header)
    head_code = np.empty(n_subjects * header, dtype=object)
    head_code[0::header] = "MEDS_BIRTH"
    head_code[1::header] = np.where(rng.random(n_subjects) < 0.5, "GENDER//F", "GENDER//M")
    head_code[2::header] = np.where(rng.random(n_subjects) < 0.5, "EYE_COLOR//BLUE", "EYE_COLOR//BROWN")
    head_time = np.zeros(n_subjects * header, dtype=np.int64)
    head_time[0::header] = birth_us
    head_null = np.zeros(n_subjects * header, dtype=bool)
    head_null[1::header] = head_null[2::header] = True

    all_subject = np.r_[head_subject, subject]
    all_time = np.r_[head_time, time_us]
    all_null = np.r_[head_null, np.zeros(body, bool)]
    order = np.lexsort((np.r_[np.zeros(n_subjects * header), np.ones(body)], all_subject))  # statics/birth first
    time_arr = pa.array(all_time[order], pa.int64(), mask=all_null[order]).cast(pa.timestamp("us"))
    return pa.table(
        {
            "subject_id": pa.array(first_subject + all_subject[order], pa.int64()),
            "time": time_arr,
            "code": pa.array(np.r_[head_code, code][order], pa.string()),
            "numeric_value": pa.array(np.r_[np.full(n_subjects * header, np.nan, np.float32), value][order], pa.float32(), from_pandas=True),
        }
    )


def generate(args: BenchmarkArguments, root: Path) -> dict:
    rng = np.random.default_rng(args.seed)
    codes, is_lab = _vocabulary(rng)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    per_shard = math.ceil(args.events / args.shards)
    subjects, rows, first = [], 0, 0
    for s in range(args.shards):
        n = min(per_shard, args.events - rows)
        table = _shard_table(rng, first, n, args.events_per_subject, codes, is_lab)
        pq.write_table(table, root / "data" / f"{s}.parquet", row_group_size=256 * 1024)
        ids = np.unique(table.column("subject_id").to_numpy())
        subjects.append(ids)
        first, rows = int(ids.max()) + 1, rows + table.num_rows
    subjects = np.concatenate(subjects)
    split = rng.choice(np.array(["train", "tuning", "held_out"]), len(subjects), p=[0.8, 0.1, 0.1])
    pq.write_table(pa.table({"subject_id": subjects, "split": split}), root / "metadata" / "subject_splits.parquet")
    pq.write_table(
        pa.table({"code": codes.tolist(), "description": [None] * len(codes), "parent_codes": [None] * len(codes)},
                 schema=pa.schema([("code", pa.string()), ("description", pa.string()), ("parent_codes", pa.list_(pa.string()))])),
        root / "metadata" / "codes.parquet",
    )
    info = {"dataset_name": "behrt_hf benchmark", "meds_version": "0.4.1", "events": rows, "shards": args.shards, "subjects": len(subjects)}
    (root / "metadata" / "dataset.json").write_text(json.dumps({k: str(v) for k, v in info.items() if k in ("dataset_name", "meds_version")}))
    (root / "benchmark.json").write_text(json.dumps(info))
    return info


def read_and_measure(meds_dir: str, cache_dir: str, numeric: str) -> dict:
    """Runs in a fresh process: load_meds on a cold cache; wall time and peak RSS."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from behrt_hf.data_builders.meds import load_meds

    after_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    splits = load_meds(meds_dir, numeric=numeric, cache_dir=cache_dir)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    report = splits.drop_report
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_imports_mib": after_import / 1024,
        "rss_at_start_mib": baseline / 1024,
        "patients": sum(len(s) for s in splits.values()),
        "kept": dict(report.kept),
        "filtered": dict(report.filtered),
        "invalid": dict(report.invalid),
    }


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(args=argv)
    run(args)


def run(args: BenchmarkArguments) -> dict:
    """Generate (if needed), read in a subprocess, print and return the measurements."""
    root = Path(args.output_dir) / "meds"
    info_path = root / "benchmark.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    if info is None or info["events"] != args.events or info["shards"] != args.shards:
        start = time.perf_counter()
        info = generate(args, root)
        print(f"generated {info['events']:,} events, {info['subjects']:,} subjects, {args.shards} shards "
              f"in {time.perf_counter() - start:.1f}s -> {root}")
    on_disk = sum(p.stat().st_size for p in (root / "data").rglob("*.parquet"))
    with tempfile.TemporaryDirectory(dir=args.output_dir) as cache:
        code = (
            "import json, sys; from behrt_hf.training.benchmark_meds_reader import read_and_measure; "
            "print(json.dumps(read_and_measure(*sys.argv[1:])))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(root), cache, args.numeric], check=True, capture_output=True, text=True,
            env={**os.environ, "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"},
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        events=info["events"], shards=args.shards, subjects=info["subjects"], parquet_mib=on_disk / 2**20,
        events_per_second=info["events"] / result["seconds"], patients_per_second=result["patients"] / result["seconds"],
    )
    print(
        f"MEDS reader: {result['events']:,} events / {result['shards']} shards / {result['patients']:,} patients "
        f"({result['parquet_mib']:.0f} MiB parquet) in {result['seconds']:.1f}s (CPU {result['cpu_seconds']:.1f}s) = "
        f"{result['events_per_second']:,.0f} events/s, {result['patients_per_second']:,.0f} patients/s; "
        f"peak RSS {result['peak_rss_mib']:.0f} MiB (after imports {result['rss_after_imports_mib']:.0f} MiB)"
    )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
