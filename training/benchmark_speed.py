"""Speed, side by side: BEHRT against BERT, length-grouped batches against padding to the maximum,
model FLOP utilisation, the input pipeline, synthetic generation, peak memory and inference.

    behrt-benchmark-speed --quick                                   # CPU, under two minutes
    behrt-benchmark-speed --output_json runs/speed/cpu.json         # the full CPU run
    behrt-benchmark-speed --device cuda --bf16 --compile            # on a GPU

Every comparison runs in one process on the same batches, interleaved (A B, then B A, ...) and
repeated; a figure is the median over rounds and a comparison is the median of the per-round
ratios, so drift on a shared machine cancels. Prints one table per section and writes them all as
JSON (`--output_json`). Sections:

1. train-step throughput (forward + backward + AdamW) of `BehrtForMaskedLM` and transformers'
   `BertForMaskedLM` of identical sizes (SDPA attention both), per preset;
2. non-padding tokens/s of length-grouped batches (the training scripts' default) against every
   batch padded to `max_length`, on the cohort's length distribution, and padding fractions (MLM,
   and MLM+NVP whose random cut shortens each patient after grouping);
3. model FLOP utilisation: FLOPs of the training steps of (1) per second against a dense matmul
   peak measured in the same run;
4. the input pipeline: tokenising (`datasets.map`, both formats, `num_proc`), fetching and
   collating batches, against the tokens/s the model consumes;
5. synthetic cohort generation, patients/s;
6. peak memory (RSS on CPU, `max_memory_allocated` on GPU) per preset at `memory_batch_sizes`,
   each in a fresh process;
7. inference: patient embeddings per second (`BehrtModel`, no grad) per preset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM
from transformers.trainer_pt_utils import LengthGroupedSampler

from behrt_hf import BehrtConfig, BehrtForMaskedLM, BehrtModel, BehrtTokenizerFast, DataCollatorForBehrt
from behrt_hf.data_collator import DataCollatorForPretraining
from behrt_hf.training.arguments import comma_list, config_for_tokenizer, load_cohort, parse_args

logger = logging.getLogger("behrt_hf.benchmark_speed")

FLOP_FORMULA = (
    "FLOPs per token (forward + backward) = 6 * N + 12 * L * H * T, N = L * (4 * H^2 + 2 * H * I) + H^2 + H * V "
    "(weights of every matmul: attention q/k/v/output, feed-forward, MLM transform and decoder; biases, "
    "norms, embeddings lookups and softmax not counted), T = padded sequence length of the batch"
)

# --quick replaces the sizes still at their full-run defaults with these.
QUICK = dict(
    num_patients=400, max_length=128, batch_size=8, repeats=3, warmup=1,
    padding_preset="small", matmul_size=1024, generation_patients=200, num_proc="1", inference_batches=2,
)
TARGETS = {"behrt_vs_bert": 0.95, "grouped_vs_padded": 1.5, "pipeline_vs_model": 10.0}


@dataclass
class SpeedArguments:
    output_json: str = field(default="runs/benchmark_speed.json", metadata={"help": "Where the results go."})
    quick: bool = field(default=False, metadata={"help": "Small sizes: a CPU run under two minutes."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast (GPU); the matmul peak in bfloat16 too."})
    compile: bool = field(default=False, metadata={"help": "torch.compile the models (dynamic shapes)."})
    presets: str = field(default="small,medium,large", metadata={"help": "Model sizes, comma-separated."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Config fields over every preset, e.g. 'hidden_size=32,num_hidden_layers=1'."}
    )
    synthetic: str = field(default="medium", metadata={"help": "Synthetic cohort whose lengths are used."})
    dataset_path: str | None = field(default=None, metadata={"help": "A saved DatasetDict in the patient schema instead."})
    num_patients: int | None = field(default=None, metadata={"help": "Cohort size (default: the config's)."})
    data_seed_cohort: int = field(default=0, metadata={"help": "Seed of the synthetic cohort."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient (training scripts' default)."})
    batch_size: int = field(default=32, metadata={"help": "Patients per batch."})
    repeats: int = field(
        default=6, metadata={"help": "Timed rounds per comparison: each candidate takes one step on the round's batch."}
    )
    warmup: int = field(
        default=2,
        metadata={"help": "Untimed steps per candidate before timing, at least one on each of its batches."},
    )
    padding_preset: str = field(default="medium", metadata={"help": "Model of the padding comparison (section 2)."})
    memory_batch_sizes: str = field(default="32,64", metadata={"help": "Batch sizes of the peak-memory probes."})
    num_proc: str = field(default="1,2", metadata={"help": "num_proc values of the tokenising map."})
    matmul_size: int | None = field(
        default=None, metadata={"help": "Side of the square matrices of the matmul peak (default 2048 on CPU, 8192 on GPU)."}
    )
    generation_patients: int = field(default=1000, metadata={"help": "Patients generated in section 5."})
    inference_batches: int = field(default=2, metadata={"help": "Batches per timed inference round."})
    seed: int = field(default=0, metadata={"help": "Seed of models, samplers and collators."})

    def __post_init__(self):
        if self.quick:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for key, value in QUICK.items():
                if getattr(self, key) == defaults[key]:
                    setattr(self, key, value)
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu or cuda, got {self.device!r}.")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False).")
        if self.matmul_size is None:
            self.matmul_size = 8192 if self.device == "cuda" else 2048
        for name in ("batch_size", "repeats", "matmul_size", "generation_patients", "inference_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be at least 0, got {self.warmup}.")
        if self.max_length < 8:
            raise ValueError(f"--max_length must be at least 8, got {self.max_length}.")

    @property
    def preset_list(self) -> list[str]:
        return comma_list(self.presets)

    @property
    def memory_batch_size_list(self) -> list[int]:
        return comma_list(self.memory_batch_sizes, int)

    @property
    def num_proc_list(self) -> list[int]:
        return comma_list(self.num_proc, int)


# --- counting -----------------------------------------------------------------------------------


def matmul_parameters(hidden: int, layers: int, intermediate: int, vocab: int) -> int:
    """Weights that take part in a matmul per token (see FLOP_FORMULA)."""
    return layers * (4 * hidden * hidden + 2 * hidden * intermediate) + hidden * hidden + hidden * vocab


def train_flops(config, batch_size: int, seq_len: int) -> int:
    """FLOPs of one forward + backward pass of a masked-LM model of `config` on a (batch_size, seq_len) batch."""
    n = matmul_parameters(config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size)
    per_token = 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return per_token * batch_size * seq_len


def matmul_peak(size: int, device: torch.device, dtype: torch.dtype, repeats: int = 5) -> dict:
    """Dense matmul FLOP/s of two (size, size) matrices: best and median of `repeats` timings."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    rates = []
    for _ in range(repeats):
        seconds = timed(lambda: a @ b, device)
        rates.append(2 * size**3 / seconds)
    return {"size": size, "dtype": str(dtype).replace("torch.", ""), "peak_flops": max(rates),
            "median_flops": statistics.median(rates)}


# --- timing -------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(rounds: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each candidate's round, `repeats` times, alternating the order (A B, B A, ...)."""
    names = list(rounds)
    seconds = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            seconds[name].append(timed(rounds[name], device))
    return seconds


def rates(amount: float, seconds: Sequence[float]) -> list[float]:
    return [amount / s for s in seconds]


# --- models and batches -------------------------------------------------------------------------


def behrt_config(preset: str, args: SpeedArguments, tokenizer: BehrtTokenizerFast) -> BehrtConfig:
    return config_for_tokenizer(preset, tokenizer, args.config_overrides, max_position_embeddings=args.max_length)


def bert_twin(config: BehrtConfig) -> BertConfig:
    """A BERT of identical sizes, SDPA attention."""
    return BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.hidden_size, num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act, hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings, type_vocab_size=config.type_vocab_size,
        layer_norm_eps=config.layer_norm_eps, pad_token_id=config.pad_token_id, attn_implementation="sdpa",
    )


def for_bert(batch: dict) -> dict:
    """The same batch as BERT takes it: segments are token types; no ages or visits."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "token_type_ids": batch["segment_ids"], "labels": batch["labels"]}


def prepare(model: torch.nn.Module, args: SpeedArguments, device: torch.device) -> torch.nn.Module:
    model = model.to(device)
    return torch.compile(model, dynamic=True) if args.compile else model


def autocast(args: SpeedArguments, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)


class TrainSteps:
    """forward + backward + AdamW step of `model`; each call takes one step on the next of `batches`
    (cycling), so candidates timed in the same round step on the same batch."""

    def __init__(self, model, batches: list[dict], args: SpeedArguments, device: torch.device):
        self.model = prepare(model, args, device).train()
        # The fused kernel where there is one (as the Trainer's default optimizer on GPU).
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
        self.batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
        self.args, self.device, self.calls = args, device, 0

    def step(self, batch: dict) -> None:
        with autocast(self.args, self.device):
            loss = self.model(**batch).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def warmup(self, steps: int) -> None:
        """`steps` untimed steps, and at least one on each batch: the first step on a new shape pays
        one-off costs (memory growth, kernel choice), 15-20% of a `large` CPU step, and would land
        on whichever candidate happens to go first in that round."""
        for i in range(max(steps, len(self.batches))):
            self.step(self.batches[i % len(self.batches)])

    def __call__(self) -> None:
        self.step(self.batches[self.calls % len(self.batches)])
        self.calls += 1


def per_round(values: Sequence[float], rounds: int) -> list[float]:
    """The value of the batch each round steps on (batches cycle over rounds)."""
    return [values[r % len(values)] for r in range(rounds)]


def throughput(amounts: Sequence[float], seconds: Sequence[float]) -> float:
    """Total amount over total time, across rounds."""
    return sum(amounts) / sum(seconds)


def round_ratio(amounts_a, seconds_a, amounts_b, seconds_b) -> float:
    """Median over rounds of the rate ratio a / b, both measured in the same round."""
    return statistics.median((x / s) / (y / t) for x, s, y, t in zip(amounts_a, seconds_a, amounts_b, seconds_b))


def chunks(indices: Sequence[int], size: int) -> list[list[int]]:
    indices = list(indices)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def grouped_batches(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """An epoch of the Trainer's `train_sampling_strategy="group_by_length"`, as index batches."""
    sampler = LengthGroupedSampler(batch_size, lengths=list(lengths), generator=torch.Generator().manual_seed(seed))
    return chunks(list(sampler), batch_size)


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    return chunks(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist(), batch_size)


def padding_fraction(batches: list[list[int]], lengths: np.ndarray, pad_to: int | None = None) -> float:
    """Share of padding when each batch is padded to its longest row (or to `pad_to`)."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * (pad_to or int(lengths[b].max())) for b in batches)
    return 1.0 - real / padded


def sample(batches: list, k: int, seed: int) -> list:
    """k batches drawn uniformly from an epoch (the first of a grouped epoch is its longest)."""
    picks = np.random.default_rng(seed).choice(len(batches), size=min(k, len(batches)), replace=False)
    return [batches[i] for i in sorted(picks.tolist())]


# --- the sections -------------------------------------------------------------------------------


@dataclass
class Context:
    args: SpeedArguments
    device: torch.device
    tokenizer: BehrtTokenizerFast
    patients: datasets.Dataset  # training split, patient schema
    encoded: datasets.Dataset  # token columns + length + example_id
    lengths: np.ndarray

    def collate(self, indices: list[int], objective: str = "mlm", pad_to: int | None = None) -> dict:
        collator = DataCollatorForPretraining(self.tokenizer, objective=objective, seed=self.args.seed,
                                              pad_to_multiple_of=pad_to)
        return collator(rows(self.encoded, indices))


def prepare_data(args: SpeedArguments) -> Context:
    cohort = load_cohort(args)
    patients = cohort["train"]
    tokenizer = BehrtTokenizerFast.build_vocab(patients, model_max_length=args.max_length)
    encoded = patients.with_format("arrow").map(
        tokenizer.encode_patients, batched=True, fn_kwargs={"max_length": args.max_length}, desc="Encoding",
    ).with_format(None)
    lengths = pc.list_value_length(encoded.with_format("arrow")["input_ids"]).to_numpy().astype(np.int64)
    encoded = encoded.add_column("length", lengths.tolist()).add_column("example_id", list(range(len(encoded))))
    return Context(args, torch.device(args.device), tokenizer, patients, encoded, lengths)


def rows(dataset: datasets.Dataset, indices: list[int]) -> list[dict]:
    """Rows as the Trainer's DataLoader fetches a batch (`Dataset.__getitems__`: one read for the batch)."""
    return dataset.__getitems__(indices)


def length_summary(lengths: np.ndarray) -> dict:
    return {"patients": int(len(lengths)), "mean": float(lengths.mean()), "median": float(np.median(lengths)),
            "p90": float(np.percentile(lengths, 90)), "max": int(lengths.max())}


def bench_training(ctx: Context) -> dict:
    """Section 1 (and the measurements of section 3): BEHRT against BERT per preset, on the same
    `repeats` length-grouped batches drawn from an epoch."""
    args, device = ctx.args, ctx.device
    batches = [ctx.collate(b) for b in sample(grouped_batches(ctx.lengths, args.batch_size, args.seed),
                                              args.repeats, args.seed)]
    padded = per_round([b["attention_mask"].numel() for b in batches], args.repeats)
    real = per_round([int(b["attention_mask"].sum()) for b in batches], args.repeats)
    results = {}
    for preset in args.preset_list:
        config = behrt_config(preset, args, ctx.tokenizer)
        torch.manual_seed(args.seed)
        behrt = TrainSteps(BehrtForMaskedLM(config), batches, args, device)
        bert = TrainSteps(BertForMaskedLM(bert_twin(config)), [for_bert(b) for b in batches], args, device)
        behrt.warmup(args.warmup)
        bert.warmup(args.warmup)
        seconds = interleaved({"behrt": behrt, "bert": bert}, args.repeats, device)
        flops = per_round([train_flops(config, *b["input_ids"].shape) for b in batches], args.repeats)
        models = ("behrt", "bert")
        results[preset] = {
            "parameters": {"behrt": behrt.model.num_parameters(), "bert": bert.model.num_parameters()},
            "tokens_per_second": {m: throughput(padded, seconds[m]) for m in models},
            "non_padding_tokens_per_second": {m: throughput(real, seconds[m]) for m in models},
            "ratio_behrt_vs_bert": round_ratio(padded, seconds["behrt"], padded, seconds["bert"]),
            "flops_per_token": sum(flops) / sum(padded),
            "achieved_flops": {m: throughput(flops, seconds[m]) for m in models},
            "seconds": seconds,
        }
        del behrt, bert
    return {"batches": len(batches), "batch_size": args.batch_size, "rounds": args.repeats,
            "mean_padded_length": sum(padded) / (len(padded) * args.batch_size), "presets": results}


def bench_mfu(training: dict, peak: dict) -> dict:
    """Section 3: achieved FLOP/s of the training steps of section 1 against the matmul peak."""
    out = {"formula": FLOP_FORMULA, "matmul_peak": peak, "presets": {}}
    for preset, r in training["presets"].items():
        out["presets"][preset] = {
            "flops_per_token": r["flops_per_token"],
            "achieved_flops": r["achieved_flops"],
            "mfu": {m: r["achieved_flops"][m] / peak["peak_flops"] for m in ("behrt", "bert")},
        }
    return out


def bench_padding(ctx: Context) -> dict:
    """Section 2: length-grouped batches against padding every batch to max_length (MLM), and NVP."""
    args, device = ctx.args, ctx.device
    n = len(ctx.lengths)
    grouped = grouped_batches(ctx.lengths, args.batch_size, args.seed)
    shuffled = random_batches(n, args.batch_size, args.seed)
    fractions = {"grouped": padding_fraction(grouped, ctx.lengths),
                 "padded_to_max_length": padding_fraction(grouped, ctx.lengths, args.max_length),
                 "random_order": padding_fraction(shuffled, ctx.lengths)}

    chosen = sample(grouped, args.repeats, args.seed + 1)  # the same patients for grouped and padded
    candidates = {
        "grouped": [ctx.collate(b) for b in chosen],
        "padded_to_max_length": [ctx.collate(b, pad_to=args.max_length) for b in chosen],
        "random_order": [ctx.collate(b) for b in sample(shuffled, args.repeats, args.seed + 1)],
    }
    config = behrt_config(args.padding_preset, args, ctx.tokenizer)
    torch.manual_seed(args.seed)
    model = BehrtForMaskedLM(config)
    runners = {}
    for name, batches in candidates.items():
        runners[name] = TrainSteps(model, batches, args, device)  # one model: only the batches differ
        runners[name].warmup(args.warmup)
    seconds = interleaved(runners, args.repeats, device)
    real = {name: per_round([int(b["attention_mask"].sum()) for b in batches], args.repeats)
            for name, batches in candidates.items()}
    return {
        "preset": args.padding_preset,
        "padding_fraction_mlm": fractions,
        "non_padding_tokens_per_second": {k: throughput(real[k], seconds[k]) for k in candidates},
        "ratio_grouped_vs_padded": round_ratio(real["grouped"], seconds["grouped"],
                                               real["padded_to_max_length"], seconds["padded_to_max_length"]),
        "ratio_grouped_vs_random_order": round_ratio(real["grouped"], seconds["grouped"],
                                                     real["random_order"], seconds["random_order"]),
        "seconds": seconds,
        "nvp": bench_nvp_padding(ctx),
    }


def bench_nvp_padding(ctx: Context) -> dict:
    """Padding with MLM+NVP over one epoch: the collator cuts each patient at a random visit, after
    the sampler grouped them by their uncut length. `grouped_by_cut_length` groups by the length
    after this epoch's cut instead (the cut is a function of seed, epoch and example_id, so it can be
    known before batching): the cheap fix, measured."""
    args = ctx.args
    two_visits = [i for i, v in enumerate(ctx.encoded["visit_ids"]) if v and v[-1] >= 2]
    dataset = ctx.encoded.select(two_visits)
    lengths = ctx.lengths[two_visits]
    collator = DataCollatorForPretraining(ctx.tokenizer, objective="mlm+nvp", seed=args.seed)
    cut_lengths = collator.cut_lengths(dataset["visit_ids"], dataset["example_id"])

    def epoch_fraction(batches):
        c = DataCollatorForPretraining(ctx.tokenizer, objective="mlm+nvp", seed=args.seed)
        for b in batches:
            c(rows(dataset, b))
        return c.padding_fraction

    return {
        "patients": len(two_visits),
        "padding_fraction": {
            "grouped_by_length": epoch_fraction(grouped_batches(lengths, args.batch_size, args.seed)),
            "random_order": epoch_fraction(random_batches(len(lengths), args.batch_size, args.seed)),
            "grouped_by_cut_length": epoch_fraction(grouped_batches(cut_lengths, args.batch_size, args.seed)),
        },
        "mean_length": {"uncut": float(lengths.mean()), "cut": float(np.mean(cut_lengths))},
    }


def bench_pipeline(ctx: Context, model_rate: float) -> dict:
    """Section 4: tokenising, fetching and collating, against `model_rate` (non-padding tokens/s)."""
    args = ctx.args
    tokens = int(ctx.lengths.sum())
    n = len(ctx.lengths)

    def tokenise(fmt: str, num_proc: int) -> Callable[[], object]:
        source = ctx.patients.with_format("arrow") if fmt == "arrow" else ctx.patients
        kwargs = dict(batched=True, fn_kwargs={"max_length": args.max_length}, load_from_cache_file=False,
                      num_proc=num_proc if num_proc > 1 else None)
        if fmt == "python":
            kwargs["remove_columns"] = ctx.patients.column_names
        return lambda: source.map(ctx.tokenizer.encode_patients, **kwargs)

    datasets.disable_progress_bars()
    candidates = {f"{fmt} num_proc={p}": tokenise(fmt, p) for fmt in ("arrow", "python") for p in args.num_proc_list}
    seconds = interleaved(candidates, max(1, min(args.repeats, 3)), ctx.device)
    tokenising = {name: {"patients_per_second": statistics.median(rates(n, s)),
                         "tokens_per_second": statistics.median(rates(tokens, s))} for name, s in seconds.items()}

    batches = grouped_batches(ctx.lengths, args.batch_size, args.seed)
    as_numpy = ctx.encoded.with_format("numpy")
    fetched = [rows(ctx.encoded, b) for b in batches]
    fetched_numpy = [rows(as_numpy, b) for b in batches]
    mlm = DataCollatorForPretraining(ctx.tokenizer, objective="mlm", seed=args.seed)
    two_visits = [[f for f in b if f["visit_ids"][-1] >= 2] for b in fetched]
    nvp = DataCollatorForPretraining(ctx.tokenizer, objective="mlm+nvp", seed=args.seed)
    stages = {
        "fetch rows (lists)": lambda: [rows(ctx.encoded, b) for b in batches],
        "collate mlm (lists)": lambda: [mlm(f) for f in fetched],
        "collate mlm+nvp (lists)": lambda: [nvp(f) for f in two_visits if f],
        "fetch rows (numpy format)": lambda: [rows(as_numpy, b) for b in batches],
        "collate mlm (numpy rows)": lambda: [mlm(f) for f in fetched_numpy],
    }
    seconds = interleaved(stages, max(1, min(args.repeats, 3)), ctx.device)
    nvp_patients = sum(len(f) for f in two_visits)
    nvp_tokens = sum(len(x["input_ids"]) for f in two_visits for x in f)
    amounts = {name: (n, tokens) for name in stages} | {"collate mlm+nvp (lists)": (nvp_patients, nvp_tokens)}
    collating = {name: {"patients_per_second": statistics.median(rates(amounts[name][0], s)),
                        "tokens_per_second": statistics.median(rates(amounts[name][1], s))} for name, s in seconds.items()}
    for fmt, fetch, collate in (("lists", "fetch rows (lists)", "collate mlm (lists)"),
                                ("numpy format", "fetch rows (numpy format)", "collate mlm (numpy rows)")):
        serial = [1.0 / (1.0 / a + 1.0 / b) for a, b in zip(rates(tokens, seconds[fetch]), rates(tokens, seconds[collate]))]
        collating[f"fetch + collate mlm ({fmt})"] = {"patients_per_second": statistics.median(serial) * n / tokens,
                                                     "tokens_per_second": statistics.median(serial)}
    best_tokenising = max(v["tokens_per_second"] for v in tokenising.values())
    return {
        "tokenising": tokenising,
        "batches": collating,
        "model_non_padding_tokens_per_second": model_rate,
        "ratio_batches_vs_model": collating["fetch + collate mlm (lists)"]["tokens_per_second"] / model_rate,
        "ratio_batches_numpy_format_vs_model":
            collating["fetch + collate mlm (numpy format)"]["tokens_per_second"] / model_rate,
        "ratio_tokenising_vs_model": best_tokenising / model_rate,
        "note": "batches: one process, as the Trainer's main process with dataloader_num_workers=0 (lists: the "
                "default format, what the training scripts feed; numpy format: dataset.with_format('numpy')); the "
                "model rate is the fastest preset's BEHRT train step (non-padding tokens/s).",
    }


def bench_generation(args: SpeedArguments) -> dict:
    """Section 5: synthetic cohort generation, from nothing (a fresh cache folder)."""
    try:
        from behrt_hf import load_synthetic
    except (ImportError, AttributeError) as error:  # the builder is not installed
        return {"error": str(error)}
    with tempfile.TemporaryDirectory(prefix="behrt_speed_gen_") as cache_dir:
        start = time.perf_counter()
        cohort = load_synthetic(args.synthetic, seed=args.data_seed_cohort + 1, num_patients=args.generation_patients,
                                cache_dir=cache_dir)
        seconds = time.perf_counter() - start
    patients = sum(len(split) for split in cohort.values())
    return {"config": args.synthetic, "patients": patients, "seconds": seconds, "patients_per_second": patients / seconds}


def process_memory_mib() -> dict[str, float]:
    """This process's resident memory now (`rss`) and at its peak (`peak`), MiB (Linux /proc; else getrusage)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return {"rss": int(fields["VmRSS"].split()[0]) / 1024, "peak": int(fields["VmHWM"].split()[0]) / 1024}
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux
        return {"rss": float("nan"), "peak": peak}


def memory_probe(spec: dict) -> dict:
    """Peak memory of a few AdamW steps of one preset at one batch size; run in a fresh process."""
    device = torch.device(spec["device"])
    args = SpeedArguments(**spec["args"])
    config = BehrtConfig.from_dict(spec["config"])
    batch_size, seq_len = spec["batch_size"], args.max_length
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, config.vocab_size, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
             "age_ids": torch.randint(1, config.age_vocab_size, (batch_size, seq_len), generator=generator),
             "segment_ids": torch.zeros_like(input_ids), "labels": input_ids}
    before = process_memory_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    # One step on a single row creates AdamW's state; the full step then holds weights, gradients,
    # optimizer state and activations at once: the training peak.
    TrainSteps(BehrtForMaskedLM(config), [{k: v[:1] for k, v in batch.items()}, batch], args, device).warmup(2)
    synchronize(device)
    after = process_memory_mib()
    out = {"preset": spec["preset"], "batch_size": batch_size, "seq_len": seq_len, "peak_rss_mib": after["peak"],
           "rss_before_model_mib": before["rss"], "peak_rss_above_start_mib": after["peak"] - before["rss"]}
    if device.type == "cuda":
        out["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def bench_memory(ctx: Context) -> dict:
    """Section 6: each (preset, batch size) in a fresh process, every row padded to max_length.

    Processes run two at a time on CPU (a process's peak RSS does not depend on its neighbours;
    only the wall time would), one at a time on a GPU."""
    args = ctx.args
    specs = []
    for preset in args.preset_list:
        config = behrt_config(preset, args, ctx.tokenizer)
        for batch_size in args.memory_batch_size_list:
            specs.append({"device": args.device, "preset": preset, "batch_size": batch_size,
                          "args": dataclasses.asdict(args) | {"quick": False}, "config": config.to_dict()})
    probes = run_probes(specs, parallel=1 if args.device == "cuda" else 2)
    return {"seq_len": args.max_length, "probes": probes,
            "note": "each probe: a fresh process builds BehrtForMaskedLM and takes AdamW steps on a full-length "
                    "batch; peak_rss is the process's high-water mark (torch + transformers + behrt_hf imports "
                    "included), peak_rss_above_start subtracts its resident memory just before the model."}


def run_probes(specs: list[dict], parallel: int) -> list[dict]:
    code = ("import json, sys; from behrt_hf.training.benchmark_speed import memory_probe; "
            "print('PROBE', json.dumps(memory_probe(json.loads(sys.argv[1]))))")
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    results: list[dict | None] = [None] * len(specs)
    running: list[tuple[int, subprocess.Popen]] = []
    pending = list(enumerate(specs))
    while pending or running:
        while pending and len(running) < parallel:
            i, spec = pending.pop(0)
            running.append((i, subprocess.Popen([sys.executable, "-c", code, json.dumps(spec)], env=env, text=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        i, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("PROBE ")]
        results[i] = (json.loads(lines[-1][len("PROBE "):]) if proc.returncode == 0 and lines else
                      {"preset": specs[i]["preset"], "batch_size": specs[i]["batch_size"], "error": stderr[-2000:]})
    return results


def bench_inference(ctx: Context) -> dict:
    """Section 7: pooled patient embeddings per second, no grad, per preset (interleaved)."""
    args, device = ctx.args, ctx.device
    collate = DataCollatorForBehrt(pad_token_id=ctx.tokenizer.pad_token_id)
    chosen = sample(grouped_batches(ctx.lengths, args.batch_size, args.seed), args.inference_batches, args.seed + 2)
    batches = [{k: v.to(device) for k, v in collate(rows(ctx.encoded, b)).items()} for b in chosen]
    patients = sum(len(b) for b in chosen)
    models = {}
    for preset in args.preset_list:
        torch.manual_seed(args.seed)
        models[preset] = prepare(BehrtModel(behrt_config(preset, args, ctx.tokenizer)), args, device).eval()

    def embed(model):
        def run():
            with torch.inference_mode(), autocast(args, device):
                for batch in batches:
                    model(**batch).pooler_output
        return run

    for model in models.values():
        for _ in range(max(1, args.warmup)):
            embed(model)()
    seconds = interleaved({p: embed(m) for p, m in models.items()}, args.repeats, device)
    return {"batch_size": args.batch_size, "batches": len(batches),
            "patients_per_second": {p: throughput([patients] * len(s), s) for p, s in seconds.items()},
            "seconds": seconds}


# --- report -------------------------------------------------------------------------------------


def table(title: str, headers: list[str], rows: list[list]) -> str:
    def text(value):
        if isinstance(value, float):
            return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
        return str(value)

    cells = [[text(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([title, line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def report(results: dict) -> str:
    out = []
    meta = results["meta"]
    out.append(f"behrt-benchmark-speed on {meta['device_name']} ({meta['device']}, bf16={meta['bf16']}, "
               f"compile={meta['compile']}, torch {meta['torch']}, {meta['threads']} threads, load average "
               f"{meta['load_average_start'][0]:.1f} at the start); "
               f"cohort {meta['cohort']}: {results['data']['patients']} patients, tokens/patient mean "
               f"{results['data']['mean']:.0f}, p90 {results['data']['p90']:.0f}, max {results['data']['max']}")
    tr = results["train_throughput"]
    out.append(table(
        f"1. train step (fwd+bwd+AdamW), {tr['rounds']} rounds over {tr['batches']} grouped batches of {tr['batch_size']} "
        f"(mean padded length {tr['mean_padded_length']:.0f}), tokens/s incl. padding",
        ["preset", "params", "BEHRT", "BERT", "BEHRT/BERT"],
        [[p, r["parameters"]["behrt"], r["tokens_per_second"]["behrt"], r["tokens_per_second"]["bert"],
          r["ratio_behrt_vs_bert"]] for p, r in tr["presets"].items()]))
    pad = results["padding"]
    out.append(table(
        f"2. padding ({pad['preset']} model, MLM): non-padding tokens/s and padding fraction",
        ["batches", "non-pad tok/s", "padding", "vs padded"],
        [[name, pad["non_padding_tokens_per_second"][name], pad["padding_fraction_mlm"][name],
          pad["non_padding_tokens_per_second"][name] / pad["non_padding_tokens_per_second"]["padded_to_max_length"]]
         for name in ("grouped", "padded_to_max_length", "random_order")]
        + [["ratio grouped/padded (paired median)", "", "", pad["ratio_grouped_vs_padded"]]]))
    nvp = pad["nvp"]
    out.append(table("   MLM+NVP padding fraction over an epoch (random cut per patient)", ["batches", "padding"],
                     [[k, v] for k, v in nvp["padding_fraction"].items()]))
    mfu = results["mfu"]
    peak = mfu["matmul_peak"]
    out.append(table(
        f"3. model FLOP utilisation against a {peak['size']}^2 {peak['dtype']} matmul peak of "
        f"{peak['peak_flops'] / 1e9:,.1f} GFLOP/s",
        ["preset", "GFLOP/token", "BEHRT GFLOP/s", "BEHRT MFU", "BERT MFU"],
        [[p, r["flops_per_token"] / 1e9, r["achieved_flops"]["behrt"] / 1e9, r["mfu"]["behrt"], r["mfu"]["bert"]]
         for p, r in mfu["presets"].items()]))
    pipe = results["pipeline"]
    rows = [[f"tokenise {k}", v["patients_per_second"], v["tokens_per_second"]] for k, v in pipe["tokenising"].items()]
    rows += [[k, v["patients_per_second"], v["tokens_per_second"]] for k, v in pipe["batches"].items()]
    rows += [["model consumes (fastest preset)", "", pipe["model_non_padding_tokens_per_second"]],
             ["ratio fetch+collate (lists) / model", "", pipe["ratio_batches_vs_model"]],
             ["ratio fetch+collate (numpy format) / model", "", pipe["ratio_batches_numpy_format_vs_model"]],
             ["ratio tokenise / model", "", pipe["ratio_tokenising_vs_model"]]]
    out.append(table("4. input pipeline (one process)", ["stage", "patients/s", "tokens/s"], rows))
    gen = results["generation"]
    out.append("5. synthetic generation: " + (
        f"{gen['patients_per_second']:,.0f} patients/s ({gen['patients']} patients of '{gen['config']}' "
        f"in {gen['seconds']:.1f}s)" if "error" not in gen else f"unavailable ({gen['error']})"))
    mem = results["memory"]
    key = "max_memory_allocated_mib" if meta["device"] == "cuda" else "peak_rss_mib"
    out.append(table(f"6. peak memory, sequences of {mem['seq_len']} (MiB; RSS includes the imports)",
                     ["preset", "batch", key, "above start"],
                     [[r["preset"], r["batch_size"], r.get(key, "error"), r.get("peak_rss_above_start_mib", "")]
                      for r in mem["probes"]]))
    inf = results["inference"]
    out.append(table(f"7. inference (BehrtModel, no grad), batch {inf['batch_size']}", ["preset", "patients/s"],
                     [[p, v] for p, v in inf["patients_per_second"].items()]))
    out.append(table("targets", ["target", "value", "goal", "met"],
                     [[t["name"], t["value"], t["goal"], "yes" if t["met"] else "NO"] for t in results["targets"]]))
    return "\n\n".join(out)


def targets(results: dict) -> list[dict]:
    rows = [{"name": f"BEHRT/BERT {p}", "value": r["ratio_behrt_vs_bert"], "goal": TARGETS["behrt_vs_bert"]}
            for p, r in results["train_throughput"]["presets"].items()]
    rows.append({"name": "grouped/padded", "value": results["padding"]["ratio_grouped_vs_padded"],
                 "goal": TARGETS["grouped_vs_padded"]})
    rows.append({"name": "pipeline/model", "value": results["pipeline"]["ratio_batches_vs_model"],
                 "goal": TARGETS["pipeline_vs_model"]})
    for row in rows:
        row["met"] = bool(row["value"] >= row["goal"])
    return rows


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((SpeedArguments,), argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    datasets.disable_progress_bars()
    started = time.perf_counter()
    ctx = prepare_data(args)
    device = ctx.device
    peak_dtype = torch.bfloat16 if args.bf16 else torch.float32
    results = {"meta": {
        "device": args.device, "device_name": device_name(device), "bf16": args.bf16, "compile": args.compile,
        "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads(),
        "cohort": args.dataset_path or f"synthetic:{args.synthetic}", "args": dataclasses.asdict(args),
        "load_average_start": os.getloadavg(),  # a shared machine's other work shows here
    }}
    results["data"] = length_summary(ctx.lengths)
    sections = results["meta"]["section_seconds"] = {"data": time.perf_counter() - started}

    def run(name, fn, *fn_args):
        start = time.perf_counter()
        results[name] = fn(*fn_args)
        sections[name] = time.perf_counter() - start
        print(f"[{time.perf_counter() - started:6.0f}s] {name} done", file=sys.stderr, flush=True)

    run("matmul_peak", matmul_peak, args.matmul_size, device, peak_dtype)
    run("train_throughput", bench_training, ctx)
    results["mfu"] = bench_mfu(results["train_throughput"], results.pop("matmul_peak"))
    run("padding", bench_padding, ctx)
    fastest = max(r["non_padding_tokens_per_second"]["behrt"] for r in results["train_throughput"]["presets"].values())
    run("pipeline", bench_pipeline, ctx, fastest)
    run("generation", bench_generation, args)
    run("memory", bench_memory, ctx)
    run("inference", bench_inference, ctx)
    results["targets"] = targets(results)
    results["meta"]["wall_seconds"] = time.perf_counter() - started
    results["meta"]["load_average_end"] = os.getloadavg()
    text = report(results)
    print(text, flush=True)
    out = Path(args.output_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.txt')} ({results['meta']['wall_seconds']:.0f}s)")
    return results


def cli() -> None:
    """Console-script entry point (`behrt-benchmark-speed`): main() without its return value."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
