"""Per-patient, loop-based encoding and collation written from the documented rules.

The oracle of the equivalence tests (tests/test_vectorised_equivalence.py) and the "before" of
tests/compare_pipeline_speed.py: the vectorised implementations in behrt_hf must give exactly
what these give. It began as the per-token Python code of commit 4e2666e and imports nothing
from behrt_hf: the tokenizer it is given supplies the vocabulary, the special ids and the
settings (age_unit, max_age, cls_age), never a rule. For valid patients only: errors are tested
against the schema's validator. Do not edit, except to follow a deliberate change of the
expected output. Deliberate changes since 4e2666e: [CLS] carries the last kept visit's age when
the tokenizer's `cls_age` is "last" (also after a next-visit cut).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

TOKEN_COLUMNS = ("input_ids", "age_ids", "segment_ids", "visit_ids", "attention_mask")
AGE_STEPS_PER_YEAR = {"year": 1, "month": 12}


def first_code_id(tokenizer) -> int:
    """Special tokens come first in the vocabulary; ids from here on are codes."""
    return max(tokenizer.all_special_ids) + 1


def num_visits(feature) -> int:
    return max(feature["visit_ids"])


def age_to_id(tokenizer, age: float) -> int:
    """floor(age x steps per year) + 1, ages past max_age sharing the last id (0 is padding)."""
    steps = AGE_STEPS_PER_YEAR[tokenizer.age_unit]
    return min(int(math.floor(age * steps)), tokenizer.max_age * steps) + 1


# --- tokenization_behrt.BehrtTokenizerFast.encode_patient / encode_patients -------------------


def encode_patient(tokenizer, patient, max_length=None, until_visit=None, return_unknown_count=False):
    visits = patient["visits"]
    if until_visit is not None:
        visits = visits[: until_visit + 1]
    max_length = tokenizer.model_max_length if max_length is None else max_length

    budget = max_length - 1
    first = len(visits)
    while first > 0 and len(visits[first - 1]["codes"]) + 1 <= budget:
        budget -= len(visits[first - 1]["codes"]) + 1
        first -= 1
    kept = visits[first:]
    if not kept:
        last = visits[-1]
        kept = [{**last, "codes": last["codes"][: max_length - 2]}]

    vocab = tokenizer.get_vocab()
    unk_id, cls_id, sep_id = tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id
    input_ids = [cls_id]
    age_ids = [age_to_id(tokenizer, kept[-1 if tokenizer.cls_age == "last" else 0]["age"])]
    segment_ids = [0]
    visit_ids = [0]
    unknown = 0
    for number, visit in enumerate(kept, start=1):
        ids = [vocab.get(code, unk_id) for code in visit["codes"]]
        if unk_id in ids:
            missing = [c for c, i in zip(visit["codes"], ids) if i == unk_id]
            unknown += len(missing)
            tokenizer.unknown_codes.update(missing)
        n = len(ids) + 1
        input_ids += ids + [sep_id]
        age_ids += [age_to_id(tokenizer, visit["age"])] * n
        segment_ids += [(number - 1) % 2] * n
        visit_ids += [number] * n
    encoded = {
        "input_ids": input_ids,
        "age_ids": age_ids,
        "segment_ids": segment_ids,
        "visit_ids": visit_ids,
        "attention_mask": [1] * len(input_ids),
    }
    if return_unknown_count:
        encoded["num_unknown_codes"] = unknown
    return encoded


def encode_patients(tokenizer, batch, max_length=None, until_visit=None, return_unknown_count=False):
    n = len(batch["visits"])
    if isinstance(until_visit, str):
        until_visit = batch[until_visit]
    columns = [k for k in batch if k != "visits"]
    out: dict[str, list] = {key: [] for key in tokenizer.model_input_names}
    if return_unknown_count:
        out["num_unknown_codes"] = []
    for i in range(n):
        patient = {k: batch[k][i] for k in columns}
        patient["visits"] = batch["visits"][i]
        cut = None if until_visit is None else until_visit[i]
        for key, value in encode_patient(tokenizer, patient, max_length, cut, return_unknown_count).items():
            out[key].append(value)
    return out


# --- data_collator --------------------------------------------------------------------------------


def mask_codes(input_ids, maskable, rng, mask_token_id, first_code_id, vocab_size, mlm_probability=0.15,
               mask_replace_prob=0.8, random_replace_prob=0.1):
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


def pad_sequences(rows: Sequence[Sequence[int]], value: int, length: int) -> torch.Tensor:
    array = np.full((len(rows), length), value, dtype=np.int64)
    for i, row in enumerate(rows):
        array[i, : len(row)] = row
    return torch.from_numpy(array)


def pad_features(features, pad_token_id, pad_to_multiple_of=None, max_length=None):
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


def next_visit_cut(feature: Mapping[str, Any], target_visit: int, sep_token_id: int, cls_age: str = "last"):
    visit_ids = feature["visit_ids"]
    start = visit_ids.index(target_visit)
    end = start
    while end < len(visit_ids) and visit_ids[end] == target_visit:
        end += 1
    target = [t for t in feature["input_ids"][start:end] if t != sep_token_id]
    cut = {k: list(feature[k][:start]) for k in TOKEN_COLUMNS if k in feature}
    if cls_age == "last" and "age_ids" in cut:
        cut["age_ids"][0] = cut["age_ids"][-1]
    return cut, target


class DataCollatorForPretraining:
    """The collator's __call__ as it was (per-example lists, per-token Python loops)."""

    def __init__(self, tokenizer, objective="mlm+nvp", mlm_probability=0.15, mask_replace_prob=0.8,
                 random_replace_prob=0.1, pad_to_multiple_of=None, seed=0, epoch=0):
        self.tokenizer, self.objective = tokenizer, objective
        self.mlm_probability, self.mask_replace_prob = mlm_probability, mask_replace_prob
        self.random_replace_prob, self.pad_to_multiple_of = random_replace_prob, pad_to_multiple_of
        self.seed, self.epoch = seed, epoch
        self.vocab_size = len(tokenizer)
        self.first_code_id = first_code_id(tokenizer)
        self._real_tokens = 0
        self._padded_tokens = 0
        self.mlm, self.nvp = "mlm" in objective, "nvp" in objective

    def _rng(self, feature):
        if "example_id" in feature:
            return np.random.default_rng([self.seed, 1, self.epoch, int(feature["example_id"])])
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __call__(self, features):
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
            if static:
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

    def _mask(self, input_ids, rng):
        ids = np.asarray(input_ids, dtype=np.int64)[None, :]
        masked, labels = mask_codes(
            ids, ids >= self.first_code_id, rng, self.tokenizer.mask_token_id, self.first_code_id, self.vocab_size,
            self.mlm_probability, self.mask_replace_prob, self.random_replace_prob,
        )
        return masked[0], labels[0]

    def _cut_next_visit(self, features, rngs):
        if rngs is None:
            return features, [f["next_visit_codes"] for f in features]
        cut_features, targets = [], []
        for f, rng in zip(features, rngs):
            n = num_visits(f)
            if n < 2:
                raise ValueError("Next-visit prediction needs patients with at least two visits.")
            cut, target = next_visit_cut(f, int(rng.integers(2, n + 1)), self.tokenizer.sep_token_id,
                                         self.tokenizer.cls_age)
            cut_features.append(cut)
            targets.append(target)
        return cut_features, targets


def static_pretraining_targets(example, idx, tokenizer, objective, seed, mlm_probability=0.15):
    """Evaluation targets: with NVP the last visit is the target and the visits before it the
    input; with MLM, masks drawn from default_rng([seed, 0, idx]) over the (cut) input."""
    out = {k: list(example[k]) for k in TOKEN_COLUMNS if k in example}
    if objective in ("nvp", "mlm+nvp"):
        out, target = next_visit_cut(out, num_visits(out), tokenizer.sep_token_id, tokenizer.cls_age)
        out["next_visit_codes"] = target
    if objective in ("mlm", "mlm+nvp"):
        ids = np.array(out["input_ids"], dtype=np.int64)
        first = first_code_id(tokenizer)
        rng = np.random.default_rng([seed, 0, idx])
        masked, labels = mask_codes(ids, ids >= first, rng, tokenizer.mask_token_id, first, len(tokenizer),
                                    mlm_probability)
        out["input_ids"], out["labels"] = masked.tolist(), labels.tolist()
    return out
