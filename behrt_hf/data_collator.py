"""Batch collation: padding of every per-token column, and the labels of each task.

Issue-specific collators (MLM masking, next-visit targets) build on `pad_features`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Per-token columns and the value that pads each of them.
TOKEN_COLUMNS = ("input_ids", "age_ids", "segment_ids", "visit_ids", "attention_mask")


def pad_features(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad the per-token columns of `features` to a common length; (B, T) int64 tensors.

    `input_ids` are padded with `pad_token_id`, every other per-token column with 0 (age 0 is the
    padding age, attention 0 masks the position). Sequences longer than `max_length` raise.
    """
    if not features:
        raise ValueError("Cannot collate an empty batch.")
    lengths = [len(f["input_ids"]) for f in features]
    length = max(lengths)
    if max_length is not None and length > max_length:
        raise ValueError(f"A sequence has {length} tokens, more than max_length={max_length}.")
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    batch = {}
    for column in TOKEN_COLUMNS:
        if column not in features[0]:
            continue
        array = np.full((len(features), length), pad_token_id if column == "input_ids" else 0, dtype=np.int64)
        for row, (feature, n) in enumerate(zip(features, lengths)):
            values = feature[column]
            if len(values) != n:
                raise ValueError(f"Row {row}: {column} has {len(values)} values but input_ids has {n}.")
            array[row, :n] = values
        batch[column] = torch.from_numpy(array)
    return batch


@dataclass
class DataCollatorForBehrt:
    """Pads the per-token columns and stacks `labels` (classification, regression or multi-label).

    Use it for sequence classification and inference; other columns are dropped.
    """

    pad_token_id: int = 0
    pad_to_multiple_of: int | None = None
    label_column: str = "labels"

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_features(features, self.pad_token_id, self.pad_to_multiple_of)
        if self.label_column in features[0]:
            labels = [f[self.label_column] for f in features]
            batch["labels"] = torch.tensor(labels)
        return batch


__all__ = ["DataCollatorForBehrt", "TOKEN_COLUMNS", "pad_features"]
