"""Batch collation: padding of every per-token column, MLM masking, next-visit targets, labels.

Randomness (which codes are masked, where a next-visit cut falls) is drawn per example from a
generator seeded by (seed, epoch, example_id) when features carry an `example_id`: the draws do
not depend on batch composition, process count or RNG history, so a run resumed from a checkpoint,
or split over several processes, draws exactly what a single uninterrupted run draws, and every
epoch draws anew. (Drawing from torch's global RNG instead would break resumption: the Trainer
restores the RNG state only after fetching the first resumed batch.) Features without an
`example_id` fall back to torch's global RNG.

For evaluation the draws are made once (`static_pretraining_targets`), so every evaluation scores
the same masks and cuts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import TrainerCallback

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
        for row, (feature, n) in enumerate(zip(features, lengths)):
            if len(feature[column]) != n:
                raise ValueError(f"Row {row}: {column} has {len(feature[column])} values but input_ids has {n}.")
        batch[column] = pad_sequences([f[column] for f in features], pad_token_id if column == "input_ids" else 0, length)
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


def pad_sequences(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    """Right-pad integer sequences with `value` to `length`; (B, length) int64."""
    array = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return torch.from_numpy(array)


# --- pretraining: masked-code modelling and next-visit prediction -----------------------------

OBJECTIVES = ("mlm", "nvp", "mlm+nvp")


def first_code_id(tokenizer) -> int:
    """Ids below this are special tokens ([PAD] [UNK] [CLS] [SEP] [MASK] come first in a BEHRT
    vocabulary): never masked, never drawn as random replacements, never next-visit targets."""
    return max(tokenizer.all_special_ids) + 1


def mask_codes(
    input_ids: np.ndarray,
    maskable: np.ndarray,
    rng: np.random.Generator,
    mask_token_id: int,
    first_code_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of code tokens. Returns (masked input ids, labels with -100 where not masked).

    Each maskable position is selected with `mlm_probability`; a selected token becomes [MASK]
    with `mask_replace_prob`, a random code with `random_replace_prob`, else stays. `maskable` is
    False on special tokens ([UNK] included) and padding. If nothing was selected but
    something is maskable, one maskable position is selected, so the loss is always defined.
    """
    selected = (rng.random(input_ids.shape) < mlm_probability) & maskable
    if not selected.any() and maskable.any():
        candidates = np.flatnonzero(maskable)
        selected.flat[candidates[rng.integers(len(candidates))]] = True
    labels = np.where(selected, input_ids, -100)
    draw = rng.random(input_ids.shape)
    masked = input_ids.copy()
    to_mask = selected & (draw < mask_replace_prob)
    to_random = selected & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    masked[to_mask] = mask_token_id
    masked[to_random] = rng.integers(first_code_id, vocab_size, size=int(to_random.sum()))
    return masked, labels


def next_visit_cut(feature: Mapping[str, Any], target_visit: int, sep_token_id: int) -> tuple[dict, list[int]]:
    """Split an encoded patient at a visit: input = everything before `target_visit`, target = its codes.

    `target_visit` is a visit number as in `visit_ids` (the first visit is 1), at least 2. Nothing
    from the target visit or later stays in the input.
    """
    visit_ids = feature["visit_ids"]
    start = visit_ids.index(target_visit)  # first token of the target visit
    end = start
    while end < len(visit_ids) and visit_ids[end] == target_visit:
        end += 1
    target = [t for t in feature["input_ids"][start:end] if t != sep_token_id]
    cut = {k: feature[k][:start] for k in TOKEN_COLUMNS if k in feature}
    return cut, target


def num_visits(feature: Mapping[str, Any]) -> int:
    return max(feature["visit_ids"])


@dataclass
class DataCollatorForPretraining:
    """Pads and builds targets for `objective` = `"mlm"`, `"nvp"` or `"mlm+nvp"`.

    - MLM: `labels` (B, T) with the original code at masked positions, -100 elsewhere.
    - NVP: a cut visit k+1 is drawn per example and per batch (uniform over visits 2..n): the input
      keeps visits 1..k, `next_visit_labels` (B, V) is the multi-hot of visit k+1's codes. Examples
      need at least two visits.
    Features that already carry `labels` / `next_visit_codes` (from `static_pretraining_targets`)
    are used as they are: that is how evaluation sets get fixed masks and cuts.

    Draws are seeded per example by (`seed`, `epoch`, `example_id`); `SetEpochCallback` keeps
    `epoch` current under the Trainer. `padding_fraction` reports the share of padding so far.
    """

    tokenizer: Any
    objective: str = "mlm+nvp"
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    seed: int = 0
    epoch: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}.")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1.")
        tok = self.tokenizer
        self.vocab_size = len(tok)
        self.first_code_id = first_code_id(tok)
        self._real_tokens = 0
        self._padded_tokens = 0

    @property
    def mlm(self) -> bool:
        return "mlm" in self.objective

    @property
    def nvp(self) -> bool:
        return "nvp" in self.objective

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self._real_tokens / self._padded_tokens if self._padded_tokens else 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, feature: Mapping[str, Any]) -> np.random.Generator:
        if "example_id" in feature:
            return np.random.default_rng([self.seed, 1, self.epoch, int(feature["example_id"])])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        static = "labels" in features[0] or "next_visit_codes" in features[0]
        rngs = None if static else [self._rng(f) for f in features]
        next_visit_codes = None
        if self.nvp:
            features, next_visit_codes = self._cut_next_visit(features, rngs)
        batch = pad_features(features, self.tokenizer.pad_token_id, self.pad_to_multiple_of)
        self._real_tokens += int(batch["attention_mask"].sum())
        self._padded_tokens += batch["attention_mask"].numel()
        if self.mlm:
            length = batch["input_ids"].shape[1]
            if static:  # input_ids are already masked
                batch["labels"] = pad_sequences([f["labels"] for f in features], -100, length)
            else:
                masked, labels = zip(*(self._mask(f["input_ids"], rng) for f, rng in zip(features, rngs)))
                batch["input_ids"] = pad_sequences(masked, self.tokenizer.pad_token_id, length)
                batch["labels"] = pad_sequences(labels, -100, length)
        if self.nvp:
            targets = torch.zeros(len(features), self.vocab_size)
            for row, codes in enumerate(next_visit_codes):
                targets[row, codes] = 1.0
            batch["next_visit_labels" if self.mlm else "labels"] = targets
        return batch

    def _mask(self, input_ids, rng) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray(input_ids, dtype=np.int64)[None, :]
        masked, labels = mask_codes(
            ids, ids >= self.first_code_id, rng, self.tokenizer.mask_token_id, self.first_code_id, self.vocab_size,
            self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
        )
        return masked[0], labels[0]

    def _cut_next_visit(self, features, rngs):
        if rngs is None:  # static cuts: already applied
            return features, [f["next_visit_codes"] for f in features]
        cut_features, targets = [], []
        for f, rng in zip(features, rngs):
            n = num_visits(f)
            if n < 2:
                raise ValueError(
                    "Next-visit prediction needs patients with at least two visits; "
                    "filter the dataset first (see behrt_hf.training.pretrain)."
                )
            cut, target = next_visit_cut(f, int(rng.integers(2, n + 1)), self.tokenizer.sep_token_id)
            cut_features.append(cut)
            targets.append(target)
        return cut_features, targets


def static_pretraining_targets(
    example: Mapping[str, Any], idx: int, tokenizer, objective: str, seed: int, mlm_probability: float = 0.15
) -> dict:
    """Fixed targets for one example (`dataset.map(..., with_indices=True)`), for evaluation.

    NVP: the last visit is the target and everything before it the input. MLM: masks drawn from
    a generator seeded by (seed, idx). `DataCollatorForPretraining` then uses them as they are.
    """
    out = {k: list(example[k]) for k in TOKEN_COLUMNS if k in example}
    if "nvp" in objective:
        out, target = next_visit_cut(out, num_visits(out), tokenizer.sep_token_id)
        out["next_visit_codes"] = target
    if "mlm" in objective:
        ids = np.asarray(out["input_ids"], dtype=np.int64)[None, :]
        first = first_code_id(tokenizer)
        masked, labels = mask_codes(
            ids, ids >= first, np.random.default_rng([seed, 0, idx]), tokenizer.mask_token_id, first,
            len(tokenizer), mlm_probability,
        )
        out["input_ids"] = masked[0].tolist()
        out["labels"] = labels[0].tolist()
    return out


class SetEpochCallback(TrainerCallback):
    """Tells a collator with `set_epoch` which epoch the Trainer is in (also after a resume)."""

    def __init__(self, collator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.collator.set_epoch(int(state.epoch or 0))


__all__ = [
    "DataCollatorForBehrt",
    "DataCollatorForPretraining",
    "SetEpochCallback",
    "OBJECTIVES",
    "TOKEN_COLUMNS",
    "mask_codes",
    "next_visit_cut",
    "pad_features",
    "static_pretraining_targets",
]
