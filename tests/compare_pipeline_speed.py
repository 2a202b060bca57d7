"""Before / after of the vectorised encoder and collator, in one run (not a test: a measurement).

    .venv/bin/python -m tests.compare_pipeline_speed [--synthetic medium] [--num_patients N] [--repeats 5]

"before" is the per-token Python code of commit 4e2666e (tests/reference_impl.py), "after" the
package's. Same cohort, same batches, rounds interleaved; medians and after/before ratios.
"""

import argparse
import functools
import statistics

import datasets
import torch

from behrt_hf import BehrtTokenizerFast, load_synthetic
from behrt_hf.data_collator import DataCollatorForPretraining
from behrt_hf.training.benchmark_speed import grouped_batches, interleaved, rates, rows, table
from tests import reference_impl as ref


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", default="medium")
    parser.add_argument("--num_patients", type=int, default=None)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
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
    nvp_batches = [[f for f in b if f["visit_ids"][-1] >= 2] for b in batches]
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
