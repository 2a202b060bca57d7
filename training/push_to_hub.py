"""Push an output folder of behrt-pretrain or finetune to the Hugging Face Hub, with a model card.

    behrt-push --folder runs/pretrain --repo_id me/behrt-small                      # a model, private
    behrt-push --folder runs/finetune-lora --repo_id me/behrt-small-hf-lora --base_model me/behrt-small
    behrt-push --folder runs/finetune --repo_id me/behrt-hf --public

Whether the folder holds a model (config.json) or a LoRA adapter (adapter_config.json) is read
off its files; its summary.json fills the card. Only publishable files go up (weights, configs,
code, tokenizer, card, aggregate summaries and plots; see `behrt_hf.hub.files_to_push`):
predictions and embeddings stay on this machine, and any other file is refused unless named with
`--include` or left out with `--exclude`. Repos are created private unless `--public` is given.
The Hub and the account are huggingface_hub's: `HF_ENDPOINT`, `HF_TOKEN` or `hf auth login`, or
`--token`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from behrt_hf.hub import DEFAULT_IGNORE_PATTERNS, KINDS, push_folder_to_hub, read_summary

from .arguments import parse_args

logger = logging.getLogger("behrt_hf.push")


@dataclass
class PushArguments:
    """What to push where, and what may go up besides the allow-list."""

    folder: str = field(metadata={"help": "Output folder of behrt-pretrain or finetune (a saved model or adapter)."})
    repo_id: str = field(metadata={"help": "Hub repo to push to: namespace/name (or name, in your namespace)."})
    public: bool = field(default=False, metadata={"help": "Create the repo public (by default it is private)."})
    token: str | None = field(default=None, metadata={"help": "Hub token (default: HF_TOKEN or the saved login)."})
    kind: str | None = field(default=None, metadata={"help": "Override the detection of model / adapter.",
                                                     "choices": KINDS})
    base_model: str | None = field(default=None, metadata={
        "help": "Adapters: Hub id of the base model (written into the card and adapter_config.json)."})
    datasets: list[str] | None = field(default=None, metadata={
        "help": "Hub ids of the training datasets, for the card."})
    license: str = field(default="apache-2.0", metadata={"help": "License id for the card."})
    commit_message: str | None = field(default=None, metadata={
        "help": "Commit message (default: 'Upload BEHRT <kind>')."})
    include: list[str] | None = field(default=None, metadata={
        "help": "Files of the folder outside the allow-list to push too (paths relative to the folder)."})
    exclude: list[str] | None = field(default=None, metadata={
        "help": "Patterns of files to leave out, besides checkpoints, TensorBoard runs and training_args.bin."})
    allow_patient_data: bool = field(default=False, metadata={
        "help": "Let patient-level files (predictions, embeddings, tables) named with --include go up. Only for "
                "data that may be published (synthetic, or de-identified with the right to share)."})

    def __post_init__(self):
        if self.repo_id.count("/") > 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"--repo_id must be namespace/name (or a name in your namespace), got {self.repo_id!r}.")
        if self.allow_patient_data and not self.include:
            raise ValueError("--allow_patient_data only applies to files named with --include.")

    @property
    def private(self) -> bool:
        return not self.public


def run(args: PushArguments) -> str:
    """Push the folder; returns the repo URL."""
    summary = read_summary(args.folder)
    if not summary:
        logger.warning("%s has no summary.json: the card will only describe the architecture.", args.folder)
    url = push_folder_to_hub(
        args.folder, args.repo_id, summary=summary, kind=args.kind, private=args.private, token=args.token,
        commit_message=args.commit_message, base_model=args.base_model, datasets=args.datasets, license=args.license,
        ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, *(args.exclude or [])], extra_files=args.include or (),
        allow_patient_data=args.allow_patient_data,
    )
    print(f"pushed {args.folder} to {url} ({'private' if args.private else 'public'})", flush=True)
    return url


def main(argv: list[str] | None = None) -> str:
    """Parse the arguments (or one .json / .yaml file holding them) and push; returns the repo URL."""
    (args,) = parse_args(PushArguments, argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    return run(args)


def cli() -> None:
    """Console-script entry point (`behrt-push`): main() without its return value."""
    main()


if __name__ == "__main__":
    cli()
