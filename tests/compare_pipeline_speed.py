"""Before / after of the vectorised encoder and collator, in one run (not a test: a measurement).

    .venv/bin/python -m tests.compare_pipeline_speed [--synthetic medium] [--num_patients N] [--repeats 5]

"before" is the per-patient Python code of tests/reference_impl.py (from commit 4e2666e; it
skips the schema validation the package does), "after" the package's. Same cohort, same batches,
rounds interleaved; medians and after/before ratios.
"""

import functools
import statistics
from dataclasses import dataclass, field

import datasets
import torch
from transformers import HfArgumentParser

from behrt_hf import BehrtTokenizerFast, load_synthetic
from behrt_hf.data_collator import DataCollatorForPretraining
from behrt_hf.encoding import count_visits
from behrt_hf.training.benchmark_speed import grouped_batches, interleaved, rates, rows, table
from tests import reference_impl as ref


@dataclass
class CompareArguments:
    synthetic: str = field(default="medium", metadata={"help": "Synthetic cohort: tiny, small, medium or large."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the cohort's size."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient."})
    batch_size: int = field(default=32, metadata={"help": "Patients per collated batch."})
    repeats: int = field(default=5, metadata={"help": "Interleaved rounds; medians are reported."})

    def __post_init__(self):
        if self.repeats < 1 or self.batch_size < 1:
            raise ValueError("--repeats and --batch_size must be positive.")


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(CompareArguments).parse_args_into_dataclasses(args=argv)
    datasets.disable_progress_bars()
    patients = load_synthetic(args.synthetic, num_patients=args.num_patients)["train"]
    tokenizer = BehrtTokenizerFast.build_vocab(patients, model_max_length=args.max_length)
    kwargs = {"max_length": args.max_length}
    n = len(patients)
    python_batch, arrow_batch = patients[:], patients.with_format("arrow")[:]
    map_kwargs = dict(batched=True, fn_kwargs=kwargs, load_from_cache_file=False, remove_columns=patients.column_names)
    before_fn = functools.partial(ref.encode_patients, tokenizer)
    encoding = {
        "encode_patients(python batch) before": lambda: ref.encode_patients(tokenizer, python_batch, **kwargs),
        "encode_patients(python batch) after": lambda: tokenizer.encode_patients(python_batch, **kwargs),
        "encode_patients(arrow batch) after": lambda: tokenizer.encode_patients(arrow_batch, **kwargs),
        "dataset.map before": lambda: patients.map(before_fn, **map_kwargs),
        "dataset.map after": lambda: patients.map(tokenizer.encode_patients, **map_kwargs),
        "dataset.with_format('arrow').map after": lambda: patients.with_format("arrow").map(
            tokenizer.encode_patients, batched=True, fn_kwargs=kwargs, load_from_cache_file=False),
    }
    encoded = patients.map(tokenizer.encode_patients, **map_kwargs)
    encoded = encoded.add_column("example_id", list(range(n)))
    lengths = [len(ids) for ids in encoded["input_ids"]]
    tokens = sum(lengths)
    batches = [rows(encoded, b) for b in grouped_batches(lengths, args.batch_size, seed=0)]
    nvp_batches = [[f for f, n in zip(b, count_visits([f["visit_ids"] for f in b])) if n >= 2] for b in batches]
    nvp_batches = [b for b in nvp_batches if b]
    collating = {}
    for objective, data in (("mlm", batches), ("mlm+nvp", nvp_batches)):
        old = ref.DataCollatorForPretraining(tokenizer, objective=objective)
        new = DataCollatorForPretraining(tokenizer, objective=objective)
        collating[f"collate {objective} before"] = functools.partial(lambda c, d: [c(b) for b in d], old, data)
        collating[f"collate {objective} after"] = functools.partial(lambda c, d: [c(b) for b in d], new, data)
    seconds = interleaved(encoding, args.repeats, device=torch.device("cpu")) | interleaved(collating, args.repeats, device=torch.device("cpu"))

    amounts = {name: (n, tokens) for name in seconds}
    nvp_tokens = sum(len(f["input_ids"]) for b in nvp_batches for f in b)
    amounts |= {name: (sum(map(len, nvp_batches)), nvp_tokens) for name in seconds if "nvp" in name}
    result = {name: {"patients_per_second": statistics.median(rates(amounts[name][0], s)),
                     "tokens_per_second": statistics.median(rates(amounts[name][1], s))} for name, s in seconds.items()}
    pairs = [("encode_patients(python batch) after", "encode_patients(python batch) before"),
             ("encode_patients(arrow batch) after", "encode_patients(python batch) before"),
             ("dataset.map after", "dataset.map before"),
             ("dataset.with_format('arrow').map after", "dataset.map before"),
             ("collate mlm after", "collate mlm before"),
             ("collate mlm+nvp after", "collate mlm+nvp before")]
    ratios = {f"{a} / {b}": statistics.median(x / y for x, y in zip(seconds[b], seconds[a])) for a, b in pairs}
    print(table(f"before / after on {n} '{args.synthetic}' patients ({tokens} tokens), medians of {args.repeats} rounds",
                ["stage", "patients/s", "tokens/s"],
                [[k, v["patients_per_second"], v["tokens_per_second"]] for k, v in result.items()]))
    print()
    print(table("speed-up (median of per-round ratios)", ["after / before", "ratio"], [[k, v] for k, v in ratios.items()]))
    return {"rates": result, "ratios": ratios}


if __name__ == "__main__":
    main()
