"""The BEHRT tokenizer: one medical code = one token, and a patient -> model inputs.

A `PreTrainedTokenizerFast` over a WordLevel vocabulary (no subword fragmentation of codes), so
it saves and loads with `AutoTokenizer`. On top of the usual text API it encodes patients in the
schema of `behrt_hf.schema` into the BEHRT sequence format::

    [CLS] codes of visit 1 [SEP] codes of visit 2 [SEP] ...

Each token carries its visit's age id, a segment id alternating 0/1 by visit, and its visit
number (`visit_ids`, [CLS] = 0); the model derives position ids from the config (token index or
visit number). [CLS] carries the age at the last visit of the sequence, the time of prediction
(`cls_age="last"`), or at the first (`"first"`, as in the BEHRT paper). Truncation drops whole
visits from the oldest end, so the most recent history is kept (`truncate_by="visit"`), or keeps
the last tokens as the BEHRT code does (`"token"`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .configuration_behrt import AGE_STEPS_PER_YEAR
from .encoding import TOKEN_COLUMNS, TRUNCATIONS, PatientColumns, age_ids, encode_columns

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
CODE_HIERARCHIES = (None, "category")
CLS_AGES = ("last", "first")

# Settings that make `encode_patients` lay patients out as the BEHRT code's data loaders did
# (github.com/deepmedicine/BEHRT, dataLoader/): ages in months up to 110 years, [CLS] with the
# first kept token's age, the last max_length - 1 tokens kept (mid-visit cuts allowed). With the
# `original` model preset, positions, segments and ages then match that code's token for token
# (its age ids and vocabulary order by a re-indexing, see `behrt_hf.convert_original`).
ORIGINAL_TOKENIZER_SETTINGS = dict(age_unit="month", max_age=110, cls_age="first", truncate_by="token")


def tokenizer_settings_for_preset(preset: str, config_overrides: Mapping[str, Any] | None = None) -> dict:
    """Tokenizer settings a model preset needs (`original`: `ORIGINAL_TOKENIZER_SETTINGS`), with the
    age ids the preset's config, then `config_overrides`, ask for (`age_unit`, `max_age`): the
    tokenizer and the model it feeds must number ages alike."""
    from .configuration_behrt import PRESETS

    settings = dict(ORIGINAL_TOKENIZER_SETTINGS) if preset == "original" else {}
    for source in (PRESETS.get(preset, {}), config_overrides or {}):
        settings.update({key: source[key] for key in ("age_unit", "max_age") if key in source})
    return settings


def count_codes(patients: Iterable[Mapping[str, Any]] | Any) -> Counter:
    """Occurrences of every code in `patients` (a `datasets.Dataset` or an iterable of patient dicts)."""
    data = getattr(patients, "data", None)
    if data is not None and hasattr(data, "column") and "visits" in getattr(patients, "column_names", ()):
        # A datasets.Dataset: count in Arrow without materialising Python rows.
        import pyarrow.compute as pc

        visits = pc.list_flatten(data.column("visits"))
        codes = pc.list_flatten(pc.struct_field(visits, "codes"))
        counts = pc.value_counts(codes)
        return Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
    counter: Counter = Counter()
    for patient in patients:
        for visit in patient["visits"]:
            counter.update(visit["codes"])
    return counter


class BehrtTokenizerFast(PreTrainedTokenizerFast):
    """Code-level tokenizer for BEHRT. Build one with `BehrtTokenizerFast.build_vocab(train_patients)`.

    Extra settings (saved in tokenizer_config.json): `age_unit` (`"year"` or `"month"`) and `max_age`
    (years) must match the model's `BehrtConfig`; see `check_compatible`. `code_hierarchy` and
    `cls_age` change the encoding (see `build_vocab`).

    There is deliberately no custom `__init__`: with one, transformers 5 rebuilds the backend from
    the vocabulary on load instead of using tokenizer.json as saved.
    """

    model_input_names = list(TOKEN_COLUMNS)

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def build_vocab(
        cls,
        patients,
        min_frequency: int = 1,
        max_size: int | None = None,
        age_unit: str = "year",
        max_age: int = 120,
        model_max_length: int = 512,
        code_hierarchy: str | None = None,
        cls_age: str = "last",
        truncate_by: str = "visit",
    ) -> "BehrtTokenizerFast":
        """Build the vocabulary from patients (use the training split only).

        Codes are ordered by decreasing frequency (ties alphabetically, so the result is
        deterministic); codes seen fewer than `min_frequency` times, or beyond the `max_size`
        most frequent, map to [UNK]. Special tokens come first: [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4.

        `code_hierarchy="category"` maps every ICD code to its 3-character category before
        counting and at every encoding (`behrt_hf.code_hierarchy`: ICD-10-CM through the
        `simple_icd_10_cm` tables, ICD-9-CM, ICD-10-PCS, ICD-9 procedures; other systems are
        unchanged): a coarser vocabulary with denser co-occurrence. Codes of one visit that share
        a category are all kept (the repetition is information). Saved with the tokenizer.

        `cls_age`: the age [CLS] carries. `"last"` (default): the age at the last visit of the
        sequence, i.e. at the time of prediction, so the patient embedding sees the current age
        directly (a task's input ends at its index visit, a next-visit input at the visit before
        the target: never a later age). `"first"`: the first kept visit's, as in the BEHRT paper.
        The README gives the two settings' scores on a synthetic task.

        `truncate_by`: `"visit"` (default) drops whole visits from the oldest end; `"token"` keeps
        the last `max_length - 1` tokens of `codes [SEP] codes [SEP] ...` as the BEHRT code does
        (a cut can fall inside a visit; a kept run that starts with [SEP] loses it to [CLS]).
        """
        if min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, got {min_frequency}.")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1 (or None), got {max_size}.")
        if age_unit not in AGE_STEPS_PER_YEAR:
            raise ValueError(f"age_unit must be one of {sorted(AGE_STEPS_PER_YEAR)}, got {age_unit!r}.")
        if code_hierarchy not in CODE_HIERARCHIES:
            raise ValueError(f"code_hierarchy must be one of {CODE_HIERARCHIES}, got {code_hierarchy!r}.")
        if cls_age not in CLS_AGES:
            raise ValueError(f"cls_age must be one of {CLS_AGES}, got {cls_age!r}.")
        if truncate_by not in TRUNCATIONS:
            raise ValueError(f"truncate_by must be one of {TRUNCATIONS}, got {truncate_by!r}.")
        counts = count_codes(patients)
        if code_hierarchy == "category":
            from .code_hierarchy import coarsen_code  # imports the ICD-10-CM tables: only when asked

            coarse: Counter = Counter()
            for code, n in counts.items():
                coarse[coarsen_code(code)] += n
            counts = coarse
        if not counts:
            raise ValueError("Cannot build a vocabulary: the patients hold no codes.")
        ranked = sorted((c for c, n in counts.items() if n >= min_frequency), key=lambda c: (-counts[c], c))
        if max_size is not None:
            ranked = ranked[:max_size]
        return cls.from_codes(
            ranked, model_max_length=model_max_length, age_unit=age_unit, max_age=max_age,
            code_hierarchy=code_hierarchy, cls_age=cls_age, truncate_by=truncate_by,
        )

    @classmethod
    def from_codes(cls, codes: Sequence[str], **settings) -> "BehrtTokenizerFast":
        """A tokenizer whose vocabulary is the special tokens ([PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3
        [MASK]=4) then `codes` in the given order; `settings` are `build_vocab`'s keyword settings
        (`model_max_length`, `age_unit`, `max_age`, `code_hierarchy`, `cls_age`, `truncate_by`)."""
        codes = list(codes)
        specials = list(SPECIAL_TOKENS.values())
        clash = set(codes) & set(specials)
        if clash:
            raise ValueError(f"Codes {sorted(clash)} collide with special tokens.")
        if len(set(codes)) != len(codes):
            raise ValueError("The codes of a vocabulary must be distinct.")
        vocab = {token: i for i, token in enumerate(specials + codes)}
        backend = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return cls(tokenizer_object=backend, **settings, **SPECIAL_TOKENS)

    # --- settings -----------------------------------------------------------------------------

    @property
    def age_unit(self) -> str:
        return self.init_kwargs.get("age_unit", "year")

    @property
    def max_age(self) -> int:
        return int(self.init_kwargs.get("max_age", 120))

    @property
    def code_hierarchy(self) -> str | None:
        """None (codes as they are) or `"category"` (ICD codes coarsened to 3-character categories)."""
        return self.init_kwargs.get("code_hierarchy")

    @property
    def cls_age(self) -> str:
        """Whose age [CLS] carries: `"last"` (the last visit's) or `"first"`. Tokenizers saved
        before this setting existed encoded `"first"` and keep doing so."""
        return self.init_kwargs.get("cls_age", "first")

    @property
    def truncate_by(self) -> str:
        """`"visit"` (whole visits dropped from the oldest end) or `"token"` (the BEHRT code's cut)."""
        return self.init_kwargs.get("truncate_by", "visit")

    @property
    def age_vocab_size(self) -> int:
        """Same layout as `BehrtConfig.age_vocab_size`: 0 = padding, then one id per age step."""
        return self.max_age * self.age_steps_per_year + 2

    @property
    def age_steps_per_year(self) -> int:
        return AGE_STEPS_PER_YEAR[self.age_unit]

    @property
    def first_code_id(self) -> int:
        """Ids below this are special tokens ([PAD] [UNK] [CLS] [SEP] [MASK] come first in a BEHRT
        vocabulary): never masked, never drawn as random replacements, never next-visit targets."""
        return max(self.all_special_ids) + 1

    @property
    def unknown_codes(self) -> Counter:
        """Codes that mapped to [UNK] in this process, with their counts."""
        if not hasattr(self, "_unknown_codes"):
            self._unknown_codes = Counter()
        return self._unknown_codes

    def check_compatible(self, config) -> None:
        """Raise a ValueError if this tokenizer's ids cannot be fed to a model with `config`."""
        problems = []
        if len(self) > config.vocab_size:
            problems.append(f"vocabulary has {len(self)} tokens but config.vocab_size is {config.vocab_size}")
        if self.age_vocab_size != config.age_vocab_size:
            problems.append(
                f"age ids (unit {self.age_unit!r}, max_age {self.max_age}) do not match the config "
                f"(unit {config.age_unit!r}, max_age {config.max_age})"
            )
        if self.pad_token_id != config.pad_token_id:
            problems.append(f"pad id {self.pad_token_id} != config.pad_token_id {config.pad_token_id}")
        if problems:
            raise ValueError("Tokenizer and model config do not match: " + "; ".join(problems) + ".")

    def age_to_id(self, age: float) -> int:
        """Age in years -> age id (1 .. age_vocab_size - 1); ages past `max_age` share the last id."""
        return int(age_ids(np.array([age]), self.age_steps_per_year, self.max_age)[0])

    def _lookup_table(self) -> tuple[pa.Array, np.ndarray]:
        """The vocabulary as (tokens, ids) arrays for Arrow's hash lookup; rebuilt if the vocabulary grows."""
        cache = getattr(self, "_lookup_cache", None)
        if cache is None or len(cache[0]) != len(self):
            vocab = self.get_vocab()
            cache = self._lookup_cache = (pa.array(list(vocab), pa.string()), np.fromiter(vocab.values(), np.int64))
        return cache

    # --- encoding patients ----------------------------------------------------------------------

    def encode_patient(
        self,
        patient: Mapping[str, Any],
        max_length: int | None = None,
        until_visit: int | None = None,
        return_unknown_count: bool = False,
    ) -> dict[str, list[int]]:
        """Encode one patient (a dict in the patient schema) into BEHRT model inputs.

        Args:
            patient: `{"patient_id", "sex", "visits": [{"time", "age", "codes"}, ...]}`.
            max_length: tokens per sequence, [CLS] and [SEP]s included (default `model_max_length`).
                Whole visits are dropped from the oldest end to fit; if the most recent visit alone
                is too long, its first codes are kept (`truncate_by="token"`: see `build_vocab`).
            until_visit: index (0-based) of the last visit to include, e.g. a task's index visit:
                nothing after it reaches the output.
            return_unknown_count: add `num_unknown_codes` (codes of the kept visits mapped to [UNK]).

        Returns:
            `input_ids`, `age_ids`, `segment_ids`, `visit_ids`, `attention_mask` (lists of equal length).
        """
        batch = {key: [value] for key, value in patient.items()}
        until = None if until_visit is None else [until_visit]
        encoded = self.encode_patients(batch, max_length, until, return_unknown_count)
        return {key: values[0] for key, values in encoded.items()}

    def encode_patients(
        self,
        batch: Mapping[str, Sequence[Any]] | pa.Table | pa.RecordBatch,
        max_length: int | None = None,
        until_visit: str | Sequence[int] | None = None,
        return_unknown_count: bool = False,
    ) -> dict[str, list] | pa.Table:
        """Encode a batch of patients, for `dataset.map(tokenizer.encode_patients, batched=True)`.

        `batch` is either columns of Python objects (the default format of `datasets.map`; returns
        columns of lists) or an Arrow table (`dataset.with_format("arrow").map(...)`, the fastest:
        nothing is converted to Python objects; returns an Arrow table). Both are vectorised over
        the whole batch and give the same values as `encode_patient` on each patient.

        `until_visit` is a column name (e.g. `"index_visit_heart_failure_1y"`) or a list with one
        index per patient (None: no cut).
        """
        max_length = self.model_max_length if max_length is None else max_length
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 ([CLS] code [SEP]), got {max_length}.")
        arrow = isinstance(batch, (pa.Table, pa.RecordBatch))
        names = batch.column_names if arrow else list(batch)
        if isinstance(until_visit, str):
            if until_visit not in names:
                raise ValueError(f"until_visit column {until_visit!r} is not in the batch ({sorted(names)}).")
            until_visit = batch[until_visit] if not arrow else batch.column(until_visit)
        patients = PatientColumns.from_arrow(batch) if arrow else PatientColumns.from_python(batch)
        until = None if until_visit is None else _last_visits(until_visit, patients.visits_per_patient)
        patients.raise_for_flagged(until)
        vocab, vocab_ids = self._lookup_table()
        code_map = None
        if self.code_hierarchy == "category":
            from .code_hierarchy import coarsen_array as code_map
        encoded = encode_columns(
            patients, until, max_length, vocab, vocab_ids,
            {"unk": self.unk_token_id, "cls": self.cls_token_id, "sep": self.sep_token_id},
            self.age_steps_per_year, self.max_age,
            code_map=code_map, cls_age=self.cls_age, truncate_by=self.truncate_by,
        )
        if len(encoded.unknown_codes):
            counts = pc.value_counts(encoded.unknown_codes)
            self.unknown_codes.update(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
        if arrow:
            return encoded.to_arrow(return_unknown_count)
        return encoded.to_python(return_unknown_count)


def _last_visits(until_visit, visits_per_patient: np.ndarray) -> np.ndarray:
    """`until_visit` (a list, array or Arrow column; None entries: no cut) as int64 indices."""
    if not isinstance(until_visit, (pa.Array, pa.ChunkedArray)):
        until_visit = pa.array(until_visit, pa.int64())
    until_visit = until_visit.cast(pa.int64())
    missing = until_visit.is_null().to_numpy(zero_copy_only=False)
    return np.where(missing, visits_per_patient - 1, until_visit.fill_null(0).to_numpy(zero_copy_only=False))


__all__ = [
    "BehrtTokenizerFast",
    "CLS_AGES",
    "CODE_HIERARCHIES",
    "ORIGINAL_TOKENIZER_SETTINGS",
    "SPECIAL_TOKENS",
    "count_codes",
    "tokenizer_settings_for_preset",
]
