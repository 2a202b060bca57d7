"""Batch collation: padding of every per-token column, MLM masking, next-visit targets, labels.

Collators only: the layout rules they apply (the next-visit cut, the age [CLS] carries, which ids
are codes, BERT masking) are `behrt_hf.encoding`'s; the sampler and epoch callback are in
`behrt_hf.sampler`.

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

from .encoding import TOKEN_COLUMNS, count_visits, cut_before_visit, mask_codes, next_visit_cut, pad_value, visit_span
from .objectives import Objective


def pad_features(
    features: Sequence[Mapping[str, Any]],
    pad_token_id: int,
    pad_to_multiple_of: int | None = None,
    max_length: int | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad the per-token columns of `features` to a common length; (B, T) int64 tensors.

    `input_ids` are padded with `pad_token_id`, every other per-token column with 0 (age 0 is the
    padding age, attention 0 masks the position). Sequences longer than `max_length` raise.
    Values may be lists or numpy arrays.
    """
    columns, lengths = padded_columns(features, pad_token_id, max_length)
    length = _round_up(int(lengths.max()), pad_to_multiple_of)
    return {name: torch.from_numpy(_pad_to(values, length, pad_value(name, pad_token_id)))
            for name, values in columns.items()}


def padded_columns(
    features: Sequence[Mapping[str, Any]], pad_token_id: int, max_length: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The per-token columns of `features` as (B, T) int64 arrays padded as in `pad_features` to
    the longest row, and the (B,) row lengths."""
    if not features:
        raise ValueError("Cannot collate an empty batch.")
    lengths = _lengths(features, "input_ids")
    length = int(lengths.max())
    if max_length is not None and length > max_length:
        raise ValueError(f"A sequence has {length} tokens, more than max_length={max_length}.")
    columns = {}
    for column in TOKEN_COLUMNS:
        if column not in features[0]:
            continue
        column_lengths = _lengths(features, column)
        if not np.array_equal(column_lengths, lengths):
            row = int(np.flatnonzero(column_lengths != lengths)[0])
            raise ValueError(f"Row {row}: {column} has {column_lengths[row]} values but input_ids has {lengths[row]}.")
        columns[column] = pad_rows([f[column] for f in features], lengths, length, pad_value(column, pad_token_id))
    return columns, lengths


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


def pad_rows(rows: Sequence[Sequence[int]], lengths: np.ndarray, length: int, value: int) -> np.ndarray:
    """Right-pad integer rows of the given `lengths` with `value` to `length`; (B, length) int64.

    One conversion of all values at once, then a single masked write (row-major order)."""
    flat = np.concatenate([np.asarray(row, dtype=np.int64).reshape(-1) for row in rows])
    array = np.full((len(rows), length), value, dtype=np.int64)
    array[np.arange(length) < lengths[:, None]] = flat
    return array


def _lengths(features: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    return np.fromiter((len(f[column]) for f in features), np.int64, len(features))


def _round_up(length: int, multiple: int | None) -> int:
    return -(-length // multiple) * multiple if multiple else length


def _pad_to(padded: np.ndarray, length: int, value: int) -> np.ndarray:
    """A padded (B, T) batch cut or extended (with `value`) to `length` columns."""
    if length == padded.shape[1]:
        return padded
    out = np.full((padded.shape[0], length), value, dtype=padded.dtype)
    width = min(length, padded.shape[1])
    out[:, :width] = padded[:, :width]
    return out


# --- pretraining: masked-code modelling and next-visit prediction -----------------------------

@dataclass
class DataCollatorForPretraining:
    """Pads and builds targets for `objective` = `"mlm"`, `"nvp"` or `"mlm+nvp"` (an `Objective`).

    - MLM: `labels` (B, T) with the original code at masked positions, -100 elsewhere.
    - NVP: a cut visit k+1 is drawn per example and per batch (uniform over visits 2..n): the input
      keeps visits 1..k, `next_visit_labels` (B, V) is the multi-hot of visit k+1's codes. Examples
      need at least two visits.
    Features that already carry `labels` / `next_visit_codes` (from `static_pretraining_targets`)
    are used as they are: that is how evaluation sets get fixed masks and cuts.

    Draws are seeded per example by (`seed`, `epoch`, `example_id`); `behrt_hf.sampler.SetEpochCallback`
    keeps `epoch` current under the Trainer. `padding_fraction` reports the share of padding so far.
    The batch is built with whole-batch array operations (no Python loop over tokens); per example
    there remain only the seeded generator and its draws. The layout rules (cut, [CLS] age,
    masking) are `behrt_hf.encoding`'s.
    """

    tokenizer: Any
    objective: Objective | str = Objective.MLM_NVP
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    pad_to_multiple_of: int | None = None
    seed: int = 0
    epoch: int = 0

    def __post_init__(self):
        self.objective = Objective.parse(self.objective)
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1.")
        tok = self.tokenizer
        self.vocab_size = len(tok)
        self.first_code_id = tok.first_code_id
        # Read once: attribute access on a transformers tokenizer is slow.
        self._pad_id, self._sep_id, self._mask_id = tok.pad_token_id, tok.sep_token_id, tok.mask_token_id
        self._cls_age = tok.cls_age
        self._real_tokens = 0
        self._padded_tokens = 0

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self._real_tokens / self._padded_tokens if self._padded_tokens else 0.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, feature: Mapping[str, Any], epoch: int | None = None) -> np.random.Generator:
        if "example_id" in feature:
            epoch = self.epoch if epoch is None else epoch
            return np.random.default_rng([self.seed, 1, epoch, int(feature["example_id"])])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        static = "labels" in features[0] or "next_visit_codes" in features[0]
        rngs = None if static else [self._rng(f) for f in features]
        columns, lengths = padded_columns(features, self._pad_id)
        targets = None
        if self.objective.nvp:
            if static:  # cuts already applied
                codes = [np.asarray(f["next_visit_codes"], dtype=np.int64).reshape(-1) for f in features]
                rows = np.repeat(np.arange(len(codes)), [len(c) for c in codes])
                targets = self._multi_hot(len(codes), rows, np.concatenate(codes))
            else:
                columns, lengths, targets = self._cut_next_visit(columns, lengths, rngs)
        length = _round_up(int(lengths.max()), self.pad_to_multiple_of)
        batch = {name: _pad_to(values, length, pad_value(name, self._pad_id)) for name, values in columns.items()}
        self._real_tokens += int(lengths.sum())
        self._padded_tokens += len(lengths) * length
        if self.objective.mlm:
            if static:  # input_ids are already masked
                labels = pad_rows([f["labels"] for f in features], lengths, length, -100)
            else:
                ids = batch["input_ids"]
                batch["input_ids"], labels = mask_codes(
                    ids, lengths, ids >= self.first_code_id, rngs, self._mask_id, self.first_code_id,
                    self.vocab_size, self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
                )
            batch["labels"] = labels
        batch = {name: torch.from_numpy(values) for name, values in batch.items()}
        if self.objective.nvp:
            batch["next_visit_labels" if self.objective.mlm else "labels"] = targets
        return batch

    def _multi_hot(self, batch_size: int, rows: np.ndarray, ids: np.ndarray) -> torch.Tensor:
        """(B, V) float targets with 1 at each (row, code id)."""
        targets = torch.zeros(batch_size, self.vocab_size)
        targets[torch.from_numpy(rows), torch.from_numpy(ids)] = 1.0
        return targets

    def cut_lengths(
        self, visit_ids: Sequence[Sequence[int]], example_ids: Sequence[int], chunk: int = 4096, epoch: int | None = None
    ) -> np.ndarray:
        """Each example's input length in the batches of `epoch` (default: the current one): after its
        next-visit cut with NVP, its full length otherwise. The cut depends only on (seed, epoch,
        example_id), so it is known before batching: a sampler can group patients by this length
        (with NVP, grouping by the uncut length leaves each batch's cut lengths spread from one
        visit to the whole record); see `behrt_hf.sampler.CutLengthGroupedSampler`."""
        lengths = np.fromiter((len(v) for v in visit_ids), np.int64, len(visit_ids))
        if not self.objective.nvp:
            return lengths
        out = np.empty_like(lengths)
        for first in range(0, len(lengths), chunk):
            part = slice(first, first + chunk)
            visits = pad_rows(visit_ids[part], lengths[part], int(lengths[part].max()), 0)
            rngs = [self._rng({"example_id": i}, epoch) for i in example_ids[part]]
            out[part] = visit_span(visits, self._draw_target_visits(count_visits(visits), rngs), lengths[part])[0]
        return out

    @staticmethod
    def _draw_target_visits(num_visits: np.ndarray, rngs) -> np.ndarray:
        """Per example the visit to predict, uniform over 2..n (its seeded generator's first draw)."""
        if (num_visits < 2).any():
            raise ValueError(
                "Next-visit prediction needs patients with at least two visits; "
                "filter the dataset first (see behrt_hf.training.pretrain)."
            )
        return np.fromiter((rng.integers(2, n + 1) for rng, n in zip(rngs, num_visits.tolist())), np.int64, len(rngs))

    def _cut_next_visit(self, columns, lengths, rngs):
        """Draw a target visit per example; keep the visits before it, return its codes as multi-hot."""
        target = self._draw_target_visits(count_visits(columns["visit_ids"]), rngs)
        ids = columns["input_ids"]
        cut, cut_lengths, in_target = cut_before_visit(columns, lengths, target, self._pad_id, self._sep_id, self._cls_age)
        rows, cols = np.nonzero(in_target)
        targets = self._multi_hot(len(lengths), rows, ids[rows, cols])
        return cut, cut_lengths, targets


def static_pretraining_targets(
    example: Mapping[str, Any], idx: int, tokenizer, objective: Objective | str, seed: int, mlm_probability: float = 0.15
) -> dict:
    """Fixed targets for one example (`dataset.map(..., with_indices=True)`), for evaluation.

    NVP: the last visit is the target and everything before it the input. MLM: masks drawn from
    a generator seeded by (seed, 0, idx). `DataCollatorForPretraining` then uses them as they are.
    """
    objective = Objective.parse(objective)
    out = {k: list(example[k]) for k in TOKEN_COLUMNS if k in example}
    if objective.nvp:
        last = int(count_visits([out["visit_ids"]])[0])
        out, target = next_visit_cut(out, last, tokenizer.sep_token_id, tokenizer.cls_age)
        out["next_visit_codes"] = target
    if objective.mlm:
        ids = np.asarray(out["input_ids"], dtype=np.int64)[None, :]
        first = tokenizer.first_code_id
        masked, labels = mask_codes(
            ids, np.array([ids.shape[1]]), ids >= first, [np.random.default_rng([seed, 0, idx])],
            tokenizer.mask_token_id, first, len(tokenizer), mlm_probability,
        )
        out["input_ids"] = masked[0].tolist()
        out["labels"] = labels[0].tolist()
    return out


__all__ = [
    "DataCollatorForBehrt",
    "DataCollatorForPretraining",
    "TOKEN_COLUMNS",
    "pad_features",
    "pad_rows",
    "padded_columns",
    "static_pretraining_targets",
]
