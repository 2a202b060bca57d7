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
    Values may be lists or numpy arrays.
    """
    columns, lengths = padded_columns(features, pad_token_id, max_length)
    length = _round_up(int(lengths.max()), pad_to_multiple_of)
    return {name: torch.from_numpy(_pad_to(values, length, _pad_value(name, pad_token_id)))
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
        columns[column] = pad_rows([f[column] for f in features], lengths, length, _pad_value(column, pad_token_id))
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


def pad_sequences(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    """Right-pad integer sequences with `value` to `length`; (B, length) int64."""
    lengths = np.fromiter((len(row) for row in rows), np.int64, len(rows))
    return torch.from_numpy(pad_rows(rows, lengths, length, value))


def _lengths(features: Sequence[Mapping[str, Any]], column: str) -> np.ndarray:
    return np.fromiter((len(f[column]) for f in features), np.int64, len(features))


def _pad_value(column: str, pad_token_id: int) -> int:
    return pad_token_id if column == "input_ids" else 0


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
    ids = input_ids.reshape(1, -1)
    masked, labels = mask_rows(
        ids, np.array([ids.shape[1]]), maskable.reshape(1, -1), [rng], mask_token_id, first_code_id, vocab_size,
        mlm_probability, mask_replace_prob, random_replace_prob,
    )
    return masked.reshape(input_ids.shape), labels.reshape(input_ids.shape)


def mask_rows(
    input_ids: np.ndarray,
    lengths: np.ndarray,
    maskable: np.ndarray,
    rngs: Sequence[np.random.Generator],
    mask_token_id: int,
    first_code_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """`mask_codes` for each row of a padded (B, T) batch, row i drawing from `rngs[i]` exactly what
    `mask_codes` draws for that row alone (over its first `lengths[i]` positions); the selection and
    replacement arithmetic runs once over the whole batch."""
    valid = np.arange(input_ids.shape[1]) < lengths[:, None]  # (B, T)
    maskable = maskable & valid

    def draw_uniform() -> np.ndarray:  # (B, T): row i's `lengths[i]` draws, then zeros
        out = np.zeros(input_ids.shape)
        out[valid] = np.concatenate([rng.random(int(n)) for rng, n in zip(rngs, lengths)])
        return out

    selected = (draw_uniform() < mlm_probability) & maskable
    for row in np.flatnonzero(~selected.any(1) & maskable.any(1)).tolist():  # rare: force one selection
        candidates = np.flatnonzero(maskable[row])
        selected[row, candidates[rngs[row].integers(len(candidates))]] = True
    labels = np.where(selected, input_ids, -100)
    draw = draw_uniform()
    masked = input_ids.copy()
    to_mask = selected & (draw < mask_replace_prob)
    to_random = selected & (draw >= mask_replace_prob) & (draw < mask_replace_prob + random_replace_prob)
    masked[to_mask] = mask_token_id
    counts = to_random.sum(1)
    if counts.any():
        masked[to_random] = np.concatenate(
            [rngs[row].integers(first_code_id, vocab_size, size=int(k)) for row, k in enumerate(counts.tolist()) if k]
        )
    return masked, labels


def next_visit_cut(
    feature: Mapping[str, Any], target_visit: int, sep_token_id: int, cls_age: str = "last"
) -> tuple[dict, list[int]]:
    """Split an encoded patient at a visit: input = everything before `target_visit`, target = its codes.

    `target_visit` is a visit number as in `visit_ids` (the first visit is 1), at least 2. Nothing
    from the target visit or later stays in the input: with `cls_age="last"` (the tokenizer's
    `cls_age`) [CLS] takes the age of the input's new last visit.
    """
    visit_ids = np.asarray(feature["visit_ids"])[None, :]
    start, end = _visit_span(visit_ids, np.array([target_visit]), np.array([visit_ids.shape[1]]))
    ids = np.asarray(feature["input_ids"][start[0]:end[0]])
    cut = {k: list(feature[k][: start[0]]) for k in TOKEN_COLUMNS if k in feature}
    if cls_age == "last" and "age_ids" in cut:
        cut["age_ids"][0] = cut["age_ids"][-1]  # the [SEP] closing the last kept visit carries its age
    return cut, ids[ids != sep_token_id].tolist()


def _visit_span(visit_ids: np.ndarray, target: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of a padded (B, T) batch: start (first token) and end (one past the run) of visit `target`."""
    positions = np.arange(visit_ids.shape[1])
    hit = (visit_ids == target[:, None]) & (positions < lengths[:, None])
    if not hit.any(1).all():
        row = int(np.flatnonzero(~hit.any(1))[0])
        raise ValueError(f"Row {row}: visit {int(target[row])} is not in visit_ids.")
    start = hit.argmax(1)
    after = ~hit & (positions >= start[:, None])  # the first such position ends the run
    end = np.where(after.any(1), after.argmax(1), visit_ids.shape[1])
    return start, end


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
    The batch is built with whole-batch array operations (no Python loop over tokens); per example
    there remain only the seeded generator and its draws.
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
        # Read once: attribute access on a transformers tokenizer is slow.
        self._pad_id, self._sep_id, self._mask_id = tok.pad_token_id, tok.sep_token_id, tok.mask_token_id
        self._cls_age = tok.cls_age
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
        if self.nvp:
            if static:  # cuts already applied
                targets = self._multi_hot([f["next_visit_codes"] for f in features])
            else:
                columns, lengths, targets = self._cut_next_visit(columns, lengths, rngs)
        length = _round_up(int(lengths.max()), self.pad_to_multiple_of)
        batch = {name: _pad_to(values, length, _pad_value(name, self._pad_id)) for name, values in columns.items()}
        self._real_tokens += int(lengths.sum())
        self._padded_tokens += len(lengths) * length
        if self.mlm:
            if static:  # input_ids are already masked
                labels = pad_rows([f["labels"] for f in features], lengths, length, -100)
            else:
                ids = batch["input_ids"]
                batch["input_ids"], labels = mask_rows(
                    ids, lengths, ids >= self.first_code_id, rngs, self._mask_id, self.first_code_id,
                    self.vocab_size, self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
                )
            batch["labels"] = labels
        batch = {name: torch.from_numpy(values) for name, values in batch.items()}
        if self.nvp:
            batch["next_visit_labels" if self.mlm else "labels"] = targets
        return batch

    def _multi_hot(self, codes: Sequence[Sequence[int]]) -> torch.Tensor:
        counts = np.fromiter((len(c) for c in codes), np.int64, len(codes))
        targets = torch.zeros(len(codes), self.vocab_size)
        if counts.any():
            flat = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1) for c in codes])
            targets[torch.from_numpy(np.repeat(np.arange(len(codes)), counts)), torch.from_numpy(flat)] = 1.0
        return targets

    def cut_lengths(
        self, visit_ids: Sequence[Sequence[int]], example_ids: Sequence[int], chunk: int = 4096, epoch: int | None = None
    ) -> np.ndarray:
        """Each example's input length in the batches of `epoch` (default: the current one): after its
        next-visit cut with NVP, its full length otherwise. The cut depends only on (seed, epoch,
        example_id), so it is known before batching: a sampler can group patients by this length
        (with NVP, grouping by the uncut length leaves each batch's cut lengths spread from one
        visit to the whole record); see `CutLengthGroupedSampler`."""
        lengths = np.fromiter((len(v) for v in visit_ids), np.int64, len(visit_ids))
        if not self.nvp:
            return lengths
        out = np.empty_like(lengths)
        for first in range(0, len(lengths), chunk):
            part = slice(first, first + chunk)
            visits = pad_rows(visit_ids[part], lengths[part], int(lengths[part].max()), 0)
            rngs = [self._rng({"example_id": i}, epoch) for i in example_ids[part]]
            out[part] = _visit_span(visits, self._draw_target_visits(visits.max(1), rngs), lengths[part])[0]
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
        target = self._draw_target_visits(columns["visit_ids"].max(1), rngs)
        start, end = _visit_span(columns["visit_ids"], target, lengths)
        positions = np.arange(columns["visit_ids"].shape[1])
        ids = columns["input_ids"]
        in_target = (positions >= start[:, None]) & (positions < end[:, None]) & (ids != self._sep_id)
        targets = torch.zeros(len(lengths), self.vocab_size)
        rows, cols = np.nonzero(in_target)
        targets[torch.from_numpy(rows), torch.from_numpy(ids[rows, cols])] = 1.0
        length = int(start.max())
        outside = positions[:length] >= start[:, None]
        cut = {}
        for name, values in columns.items():
            values = values[:, :length].copy()
            values[outside] = _pad_value(name, self._pad_id)
            cut[name] = values
        if self._cls_age == "last" and "age_ids" in cut:  # [CLS] takes the age of the new last visit
            cut["age_ids"][:, 0] = cut["age_ids"][np.arange(len(start)), start - 1]
        return cut, start, targets


def static_pretraining_targets(
    example: Mapping[str, Any], idx: int, tokenizer, objective: str, seed: int, mlm_probability: float = 0.15
) -> dict:
    """Fixed targets for one example (`dataset.map(..., with_indices=True)`), for evaluation.

    NVP: the last visit is the target and everything before it the input. MLM: masks drawn from
    a generator seeded by (seed, idx). `DataCollatorForPretraining` then uses them as they are.
    """
    out = {k: list(example[k]) for k in TOKEN_COLUMNS if k in example}
    if "nvp" in objective:
        out, target = next_visit_cut(out, num_visits(out), tokenizer.sep_token_id, tokenizer.cls_age)
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

    def __init__(self, collator: "DataCollatorForPretraining", visit_ids, example_ids, batch_size: int, seed: int = 0):
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
    import pyarrow as pa

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


__all__ = [
    "CutLengthGroupedSampler",
    "DataCollatorForBehrt",
    "DataCollatorForPretraining",
    "SetEpochCallback",
    "OBJECTIVES",
    "TOKEN_COLUMNS",
    "mask_codes",
    "mask_rows",
    "next_visit_cut",
    "pad_features",
    "pad_rows",
    "static_pretraining_targets",
]
