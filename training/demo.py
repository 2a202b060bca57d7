"""The end-to-end demo on the synthetic default (`make demo`, console script `behrt-demo`).

generate a synthetic cohort -> build the code vocabulary -> encode patients up to a task's index
visit -> build a BEHRT from a preset -> a few training steps -> save -> reload with the Auto
classes -> check the reloaded model gives the same outputs. Prints what happened at each step.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, HfArgumentParser, set_seed

from behrt_hf import BehrtConfig, BehrtForSequenceClassification, BehrtTokenizerFast, DataCollatorForBehrt, load_synthetic

logger = logging.getLogger("behrt_hf.demo")


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the model and tokenizer are saved."})
    cohort: str = field(default="tiny", metadata={"help": "Synthetic cohort size: tiny, small, medium or large."})
    task: str = field(default="heart_failure_1y", metadata={"help": "Task column of the synthetic cohort."})
    preset: str = field(default="small", metadata={"help": "Model size preset: small, medium, large or original."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient sequence."})
    batch_size: int = field(default=16, metadata={"help": "Patients per training step."})
    steps: int = field(default=10, metadata={"help": "Training steps (AdamW) to run."})
    seed: int = field(default=0, metadata={"help": "Seed of the cohort and of the model."})

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive.")


def step(message: str, start: float) -> None:
    print(f"  [{time.perf_counter() - start:6.1f}s] {message}", flush=True)


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    set_seed(args.seed)
    print(f"behrt_hf demo: cohort={args.cohort} task={args.task} preset={args.preset}")

    cohort = load_synthetic(args.cohort, seed=args.seed)
    train = cohort["train"]
    step(f"generated {sum(len(s) for s in cohort.values())} synthetic patients "
         f"({', '.join(f'{k} {len(v)}' for k, v in cohort.items())})", start)

    tokenizer = BehrtTokenizerFast.build_vocab(train, model_max_length=args.max_length)
    step(f"vocabulary from the training split: {len(tokenizer)} tokens (5 special)", start)

    label, index = f"label_{args.task}", f"index_visit_{args.task}"
    if label not in train.column_names:
        raise ValueError(f"Task {args.task!r} not in the cohort; columns: {train.column_names}")
    eligible = train.filter(lambda row: row[label] >= 0)  # excluded patients carry label -1
    encoded = eligible.map(
        tokenizer.encode_patients,
        batched=True,
        fn_kwargs={"until_visit": index},  # nothing after the index visit reaches the model
        remove_columns=[c for c in eligible.column_names if c != label],
    ).rename_column(label, "labels")
    lengths = [len(ids) for ids in encoded["input_ids"]]
    step(f"encoded {len(encoded)} eligible patients up to their index visit "
         f"(tokens per patient: mean {sum(lengths) / len(lengths):.0f}, max {max(lengths)}; "
         f"positive rate {sum(encoded['labels']) / len(encoded):.1%})", start)

    config = BehrtConfig.from_preset(
        args.preset, vocab_size=len(tokenizer), max_position_embeddings=args.max_length, num_labels=2
    )
    tokenizer.check_compatible(config)
    model = BehrtForSequenceClassification(config)
    n_params = sum(p.numel() for p in model.parameters())
    step(f"built BehrtForSequenceClassification from preset {args.preset!r}: {n_params / 1e6:.2f}M parameters, "
         f"attention {model.config._attn_implementation}", start)

    collate = DataCollatorForBehrt(pad_token_id=tokenizer.pad_token_id)
    batch = collate([encoded[i] for i in range(min(args.batch_size, len(encoded)))])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(args.steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    step(f"{args.steps} forward/backward/AdamW steps on one batch of {len(batch['labels'])}: "
         f"loss {losses[0]:.4f} -> {losses[-1]:.4f}", start)

    out_dir = Path(args.output_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    step(f"saved to {out_dir}/: {', '.join(sorted(p.name for p in out_dir.iterdir()))}", start)

    reloaded = AutoModelForSequenceClassification.from_pretrained(out_dir).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(out_dir)
    model.eval()
    with torch.no_grad():
        diff = (model(**batch).logits - reloaded(**batch).logits).abs().max().item()
    same_vocab = reloaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    step(f"reloaded with AutoModelForSequenceClassification ({type(reloaded).__name__}) and AutoTokenizer: "
         f"max |logit difference| = {diff:.2e}, same vocabulary: {same_vocab}", start)
    if diff > 1e-5 or not same_vocab:
        raise SystemExit("The reloaded model or tokenizer differs from the saved one.")
    print(f"done in {time.perf_counter() - start:.1f}s")
    return {"losses": losses, "max_logit_difference": diff, "output_dir": str(out_dir)}


def cli() -> None:
    """Console-script entry point (`behrt-demo`): main() without its return value."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
