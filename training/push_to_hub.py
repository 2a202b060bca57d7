"""Push an output folder of behrt-pretrain or finetune to the Hugging Face Hub, with a model card.

    behrt-push runs/pretrain --repo_id me/behrt-small                      # a model, private
    behrt-push runs/finetune-lora --repo_id me/behrt-small-hf-lora --base_model me/behrt-small
    behrt-push runs/finetune --repo_id me/behrt-hf --public

Whether the folder holds a model (config.json) or a LoRA adapter (adapter_config.json) is read
off its files; its summary.json fills the card. Repos are created private unless `--public` is
given. The Hub and the account are huggingface_hub's: `HF_ENDPOINT`, `HF_TOKEN` or
`hf auth login`, or `--token`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from behrt_hf.hub import KINDS, push_folder_to_hub, read_summary

logger = logging.getLogger("behrt_hf.push")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="behrt-push", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="Output folder of behrt-pretrain or finetune (a saved model or adapter).")
    parser.add_argument("--repo_id", required=True, help="Hub repo to push to: namespace/name.")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True,
                            help="Create the repo private (the default).")
    visibility.add_argument("--public", dest="private", action="store_false", help="Create the repo public.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login).")
    parser.add_argument("--kind", choices=KINDS, default=None, help="Override the detection of model / adapter.")
    parser.add_argument("--base_model", default=None,
                        help="Adapters: Hub id of the base model (written into the card and adapter_config.json).")
    parser.add_argument("--dataset", dest="datasets", action="append", default=None,
                        help="Hub id of a training dataset, for the card (repeatable).")
    parser.add_argument("--license", default="apache-2.0", help="License id for the card.")
    parser.add_argument("--commit_message", default=None, help="Commit message (default: 'Upload BEHRT <kind>').")
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def main(argv: list[str] | None = None) -> str:
    """Push the folder; returns the repo URL."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    summary = read_summary(args.folder)
    if not summary:
        logger.warning("%s has no summary.json: the card will only describe the architecture.", args.folder)
    url = push_folder_to_hub(
        args.folder, args.repo_id, summary=summary, kind=args.kind, private=args.private, token=args.token,
        commit_message=args.commit_message, base_model=args.base_model, datasets=args.datasets, license=args.license,
    )
    print(f"pushed {args.folder} to {url} ({'private' if args.private else 'public'})", flush=True)
    return url


def cli() -> None:
    """Console-script entry point (`behrt-push`): main() without its return value."""
    main()


if __name__ == "__main__":
    cli()
