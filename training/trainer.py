"""The start of a training run (logging, resuming, seeding) and the `Trainer` the scripts use."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets
import transformers
from torch.utils.data import SequentialSampler
from transformers import SchedulerType, Trainer, set_seed
from transformers.trainer_utils import get_last_checkpoint


def start_run(training_args, logger: logging.Logger) -> str | None:
    """Steps 1-3 of a run (run_mlm.py's order): logging, the last checkpoint, the seed.

    Returns the checkpoint to resume from (None: a fresh run)."""
    no_pinned_memory_on_cpu(training_args)
    setup_logging(training_args, logger)
    checkpoint = last_checkpoint(training_args, logger)
    set_seed(training_args.seed)
    return checkpoint


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


# The share of the steps over which the warm-up-stable-decay schedule decays (the pretraining recipe):
# after 1,000 steps, the demo's budget, masked-code accuracy is 0.60-0.63 where a linear decay gives
# 0.49-0.53 (validation subset of 200 patients; README, "Pretraining recipe").
WSD_DECAY_FRACTION = 0.2


class BehrtTrainer(Trainer):
    """`Trainer` whose evaluation and prediction keep the dataset's order, and can take a training sampler.

    transformers 5 applies `train_sampling_strategy="group_by_length"` to evaluation too (a
    shuffled length-grouped sampler), so `predict(dataset).predictions[i]` is not patient `i`.
    Training batches stay length-grouped; evaluation is sequential (sharded by accelerate under DDP).

    transformers has no public way to choose a sampler: `get_train_dataloader`, `get_eval_dataloader`
    and `get_test_dataloader` are public but build their loader in the private `_get_dataloader`
    (column removal, collator, worker seeding, accelerate's sharding), which an override would have
    to copy. So the two private sampler hooks they call are overridden instead. Checked against
    transformers 5.24 (setup.cfg allows >=5.0,<6); tests/test_finetune.py::
    test_trainer_sampler_hooks_are_the_ones_transformers_calls fails when their signature or their
    use changes.
    """

    def __init__(self, *args, train_sampler=None, **kwargs):
        """`train_sampler`: use this sampler for the training set (e.g. `CutLengthGroupedSampler`)."""
        super().__init__(*args, **kwargs)
        self.custom_train_sampler = train_sampler

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """transformers' scheduler; `warmup_stable_decay` without a `num_decay_steps` decays over the
        last `args.decay_fraction` (default `WSD_DECAY_FRACTION`) of the training steps, whatever
        their number (the recipe's schedule for any `--max_steps` or `--num_train_epochs`)."""
        kwargs = self.args.lr_scheduler_kwargs
        if self.args.lr_scheduler_type == SchedulerType.WARMUP_STABLE_DECAY and "num_decay_steps" not in (kwargs or {}):
            fraction = getattr(self.args, "decay_fraction", WSD_DECAY_FRACTION)
            self.args.lr_scheduler_kwargs = {**(kwargs or {}), "num_decay_steps": max(1, round(fraction * num_training_steps))}
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset=None):
        if self.custom_train_sampler is not None and (train_dataset is None or train_dataset is self.train_dataset):
            return self.custom_train_sampler
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        return SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None
