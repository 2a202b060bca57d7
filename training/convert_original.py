"""Convert a checkpoint of the original BEHRT code (github.com/deepmedicine/BEHRT) into a folder
that `from_pretrained` loads, with a tokenizer that encodes patients as that code did.

    behrt-convert-original CHECKPOINT VOCAB --output_dir runs/behrt-original
    behrt-convert-original MLM_model.pt token2idx.pkl --output_dir DIR --num_attention_heads 12 --age_unit month

CHECKPOINT is the `torch.save(model.state_dict())` of its MLM or next-visit model; VOCAB the
pickle of its vocabulary (`{"token2idx": ..., "idx2token": ...}`). What maps to what, and what
differs, is in `behrt_hf.convert_original`. Only convert files you trust: both are pickles.
"""

from __future__ import annotations

import argparse
import logging

from behrt_hf.convert_original import convert_original_checkpoint


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="behrt-convert-original", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="The original model's state_dict (torch.save).")
    parser.add_argument("vocab", help="The original vocabulary pickle ({'token2idx': ...} or token2idx).")
    parser.add_argument("--output_dir", required=True, help="Where to save the model and tokenizer.")
    parser.add_argument("--num_attention_heads", type=int, default=12,
                        help="Heads of the original model (not readable from its weights; 12 in the paper).")
    parser.add_argument("--age_unit", choices=("month", "year"), default="month",
                        help="Unit of the original age vocabulary: month (its default, mon=1) or year (mon=12).")
    parser.add_argument("--max_length", type=int, default=None,
                        help="Tokens per patient of the tokenizer (default: the position table's rows, the "
                             "original max_len_seq).")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None):
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model, tokenizer = convert_original_checkpoint(
        args.checkpoint, args.vocab, args.output_dir, num_attention_heads=args.num_attention_heads,
        age_unit=args.age_unit, max_length=args.max_length,
    )
    print(f"{type(model).__name__} ({model.num_parameters():,} parameters, {len(tokenizer)} tokens) "
          f"saved to {args.output_dir}")
    return model, tokenizer


def cli() -> None:
    """Console-script entry point (`behrt-convert-original`)."""
    main()


if __name__ == "__main__":
    cli()
