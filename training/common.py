"""Plumbing shared by the training scripts: arguments, logging, checkpoints, data, config overrides."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import datasets
import transformers
from torch.utils.data import SequentialSampler
from transformers import HfArgumentParser, Trainer
from transformers.trainer_utils import get_last_checkpoint

from behrt_hf import BehrtConfig


def parse_args(dataclass_types, argv: list[str] | None = None):
    """Command-line arguments, or a single .json / .yaml file holding them all."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args, logger: logging.Logger) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    logger.warning(
        "process %d, device %s, n_gpu %d, distributed %s, bf16 %s",
        training_args.process_index, training_args.device, training_args.n_gpu,
        training_args.parallel_mode.value, training_args.bf16,
    )


def no_pinned_memory_on_cpu(training_args) -> None:
    """Pinned host memory only helps copies to an accelerator; on the CPU it only earns a warning per loader."""
    if training_args.device.type == "cpu":
        training_args.dataloader_pin_memory = False


def last_checkpoint(training_args, logger: logging.Logger) -> str | None:
    """The checkpoint to resume from: rerunning the same command continues an interrupted run."""
    output_dir = Path(training_args.output_dir)
    if not (output_dir.is_dir() and training_args.do_train):
        return None
    checkpoint = get_last_checkpoint(str(output_dir))
    if checkpoint is not None:
        logger.warning("Resuming from %s (to start over, delete it or choose another --output_dir).", checkpoint)
    return checkpoint


def load_cohort(data_args) -> datasets.DatasetDict:
    """`--dataset_path` (a DatasetDict saved with save_to_disk) or the synthetic cohort `--synthetic`."""
    if data_args.dataset_path:
        return datasets.load_from_disk(data_args.dataset_path)
    from behrt_hf import load_synthetic

    return load_synthetic(data_args.synthetic, seed=data_args.data_seed_cohort, num_patients=data_args.num_patients)


def parse_config_overrides(text: str | None) -> dict:
    """'hidden_size=64,pooling=mean' -> typed keyword arguments of BehrtConfig."""
    if not text:
        return {}
    fields = {f.name for f in dataclasses.fields(BehrtConfig)}
    kwargs = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in fields:
            raise ValueError(f"config_overrides: {item!r} is not 'field=value' with a BehrtConfig field.")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a bare string such as pooling=mean
    return kwargs


class BehrtTrainer(Trainer):
    """`Trainer` whose evaluation and prediction keep the dataset's order, and can take a training sampler.

    transformers 5 applies `train_sampling_strategy="group_by_length"` to evaluation too (a
    shuffled length-grouped sampler), so `predict(dataset).predictions[i]` is not patient `i`.
    Training batches stay length-grouped; evaluation is sequential (sharded by accelerate under DDP).
    """

    def __init__(self, *args, train_sampler=None, **kwargs):
        """`train_sampler`: use this sampler for the training set (e.g. `CutLengthGroupedSampler`)."""
        super().__init__(*args, **kwargs)
        self.custom_train_sampler = train_sampler

    def _get_train_sampler(self, train_dataset=None):
        if self.custom_train_sampler is not None and (train_dataset is None or train_dataset is self.train_dataset):
            return self.custom_train_sampler
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
