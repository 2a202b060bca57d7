"""Training order and epoch bookkeeping for pretraining with seeded per-example draws.

`CutLengthGroupedSampler` groups patients by the lengths the pretraining collator will produce
this epoch (after each one's next-visit cut); `SetEpochCallback` tells the collator which epoch
the Trainer is in, so the draws (masks, cuts) and the order are functions of (seed, epoch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch
from transformers import TrainerCallback


class CutLengthGroupedSampler(torch.utils.data.Sampler):
    """Length-grouped training order by the lengths the collator will actually produce this epoch.

    With next-visit prediction every patient is cut at a visit drawn anew each epoch, so grouping by
    the uncut length (transformers' `LengthGroupedSampler`) leaves batches of very uneven inputs.
    The cuts depend only on (seed, epoch, example_id), so this sampler asks the collator for each
    epoch's cut lengths (`DataCollatorForPretraining.cut_lengths`) and groups by those, in the
    order of transformers' `get_length_grouped_indices` (mega-batches of similar length, the
    longest batch first), shuffled by a generator seeded with (seed, epoch): the same order in
    every process and after a resume. The Trainer calls `set_epoch` at each epoch.

    `visit_ids` / `example_ids` are the training set's columns; an Arrow column is kept as one
    flat array (no Python list per patient).
    """

    def __init__(self, collator, visit_ids, example_ids, batch_size: int, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.collator, self.batch_size, self.seed, self.epoch = collator, int(batch_size), int(seed), 0
        self.visit_ids = _row_views(visit_ids)
        self.example_ids = np.asarray(example_ids, dtype=np.int64)
        if len(self.visit_ids) != len(self.example_ids):
            raise ValueError(f"{len(self.visit_ids)} visit_ids rows but {len(self.example_ids)} example_ids.")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.example_ids)

    def lengths(self, epoch: int | None = None) -> np.ndarray:
        return self.collator.cut_lengths(self.visit_ids, self.example_ids, epoch=self.epoch if epoch is None else epoch)

    def __iter__(self):
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, 2, self.epoch]).generate_state(1)[0]))
        yield from get_length_grouped_indices(self.lengths().tolist(), self.batch_size, generator=generator)


def _row_views(rows) -> Sequence[np.ndarray]:
    """Rows of a list column as numpy views of one flat array (from Arrow), or the rows as they are."""
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    if isinstance(rows, (pa.ListArray, pa.LargeListArray)):
        offsets = rows.offsets.to_numpy()
        flat = rows.flatten().to_numpy(zero_copy_only=False)
        return np.split(flat, offsets[1:-1] - offsets[0])
    return rows


class SetEpochCallback(TrainerCallback):
    """Tells a collator with `set_epoch` which epoch the Trainer is in (also after a resume)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))


__all__ = ["CutLengthGroupedSampler", "SetEpochCallback"]
