"""Convert a checkpoint of the original BEHRT code into a `save_pretrained` folder.

The original code (github.com/deepmedicine/BEHRT, on `pytorch_pretrained_bert`) saves
`torch.save(model.state_dict())` of `BertForMaskedLM` (keys `bert.*` and `cls.predictions.*`) or of
the next-visit model `BertForMultiLabelPrediction` (`bert.*` and `classifier.*`), and pickles its
vocabulary as `{"token2idx": ..., "idx2token": ...}` with the specials `PAD UNK SEP CLS MASK`
somewhere in it. Its age vocabulary is not saved: it is rebuilt from `max_age` and the unit
(`model/utils.py: age_vocab`): PAD 0, UNK 1, age step a -> a + 2; ages at or past `max_age` -> UNK.

The conversion gives a model of the `original` preset and a tokenizer with
`ORIGINAL_TOKENIZER_SETTINGS`, which compute what the original code computes:

- `bert.*` -> `behrt.*`: encoder, pooler and LayerNorms keep their names; `word_embeddings` ->
  `code_embeddings` with rows re-ordered to this package's vocabulary (specials first in the
  order [PAD] [UNK] [CLS] [SEP] [MASK], then the codes in their original id order);
  `age_embeddings` rows re-indexed (ours: padding 0, age step a -> a + 1, past `max_age` -> the last
  row, which takes the original's UNK row); `posi_embeddings` -> the persistent buffer
  `visit_position_table`, kept as it is (in published checkpoints, random draws: see `BehrtConfig`).
- `cls.predictions.transform.*` -> `mlm_head.dense` / `mlm_head.LayerNorm`; the tied decoder and
  `cls.predictions.bias` -> `mlm_head.decoder` (rows re-ordered like the codes).
- `classifier.*` (one logit per code of the original label vocabulary: the token vocabulary without
  PAD SEP CLS MASK, in its insertion order, UNK kept) -> `nvp_head.decoder`, one row per token of our
  vocabulary: each label's row goes to its token; [PAD] [CLS] [SEP] [MASK], never targets, get zero
  weights and a bias of `NON_TARGET_BIAS`, so their probability is ~0. The next-visit logits of
  the label tokens are then the original's exactly. The original's `MultiLabelSoftMarginLoss`
  averages BCE over its V - 4 labels; `BehrtForNextVisitPrediction` averages over all V columns, so
  its loss is the original's times (V - 4) / V (the four special columns add ~1e-13 each).

`convert_original_checkpoint` is the Python entry point; `behrt-convert-original` its command line.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .configuration_behrt import AGE_STEPS_PER_YEAR, BehrtConfig
from .modeling_behrt import BehrtForNextVisitPrediction, BehrtForPreTraining
from .tokenization_behrt import ORIGINAL_TOKENIZER_SETTINGS, SPECIAL_TOKENS, BehrtTokenizerFast

logger = logging.getLogger(__name__)

# The original vocabulary's special tokens -> ours.
ORIGINAL_SPECIALS = {"PAD": "[PAD]", "UNK": "[UNK]", "SEP": "[SEP]", "CLS": "[CLS]", "MASK": "[MASK]"}
# Removed from the original vocabulary to make the next-visit label vocabulary (UNK stays a label).
NOT_LABELS = ("PAD", "SEP", "CLS", "MASK")
NON_TARGET_BIAS = -30.0

# Original key (after the `bert.` prefix) -> ours (after `behrt.`); the rest keep their names.
_EMBEDDING_KEYS = {
    "embeddings.word_embeddings.weight": "embeddings.code_embeddings.weight",
    "embeddings.age_embeddings.weight": "embeddings.age_embeddings.weight",
    "embeddings.segment_embeddings.weight": "embeddings.segment_embeddings.weight",
    "embeddings.posi_embeddings.weight": "embeddings.visit_position_table",
}
_MLM_KEYS = {
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.LayerNorm.bias",
    "cls.predictions.decoder.weight": "mlm_head.decoder.weight",
    "cls.predictions.bias": "mlm_head.decoder.bias",
}
_KEPT = re.compile(r"(embeddings\.LayerNorm|encoder\.layer\.\d+\.\S+|pooler\.dense)\.(weight|bias)")


class OriginalCheckpointError(ValueError):
    """The checkpoint or vocabulary is not what the original BEHRT code writes."""


def load_original_vocab(vocab) -> dict[str, int]:
    """`token2idx` from a pickle path or an object: `{"token2idx": ...}` (the original's `BertVocab`)
    or the `token2idx` dict itself. Checks that the specials are there and the ids are 0..V-1."""
    if isinstance(vocab, (str, Path)):
        with open(vocab, "rb") as f:
            vocab = pickle.load(f)  # the original code's own format: only open files you trust
    if isinstance(vocab, Mapping) and "token2idx" in vocab:
        vocab = vocab["token2idx"]
    if not isinstance(vocab, Mapping):
        raise OriginalCheckpointError(f"The vocabulary is a {type(vocab).__name__}, not a token2idx dict.")
    token2idx = {str(token): int(i) for token, i in vocab.items()}
    missing = [s for s in ORIGINAL_SPECIALS if s not in token2idx]
    if missing:
        raise OriginalCheckpointError(f"The vocabulary lacks the special tokens {missing}.")
    if sorted(token2idx.values()) != list(range(len(token2idx))):
        raise OriginalCheckpointError("The vocabulary's ids are not 0..V-1, each once.")
    clash = [t for t in token2idx if t in SPECIAL_TOKENS.values()]
    if clash:
        raise OriginalCheckpointError(f"Codes {clash} would collide with this package's special tokens.")
    return token2idx


def load_original_state_dict(checkpoint) -> dict[str, torch.Tensor]:
    """A `state_dict` from a `torch.save` path or a mapping; keys without the `bert.` prefix (a bare
    `BertModel`) get it; old `gamma` / `beta` LayerNorm names become `weight` / `bias`."""
    if isinstance(checkpoint, (str, Path)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise OriginalCheckpointError(f"The checkpoint is a {type(checkpoint).__name__}, not a state_dict.")
    state = {}
    for key, value in checkpoint.items():
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
        if key.startswith("embeddings.") or key.startswith("encoder.") or key.startswith("pooler."):
            key = "bert." + key
        state[key] = value
    if "bert.embeddings.word_embeddings.weight" not in state:
        raise OriginalCheckpointError(
            "No bert.embeddings.word_embeddings.weight: not a state_dict of the original BEHRT code."
        )
    return state


def original_config(state: Mapping[str, torch.Tensor], num_attention_heads: int, age_unit: str) -> BehrtConfig:
    """The `original` preset sized from the checkpoint's shapes (heads cannot be read from weights)."""
    vocab_size, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(r"bert\.encoder\.layer\.(\d+)\.", k))}
    age_rows = state["bert.embeddings.age_embeddings.weight"].shape[0]
    steps = AGE_STEPS_PER_YEAR[age_unit]
    if (age_rows - 2) % steps or age_rows <= 2:
        raise OriginalCheckpointError(
            f"{age_rows} age rows do not fit age_unit={age_unit!r}: expected 2 + max_age * {steps}."
        )
    return BehrtConfig.from_preset(
        "original",
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=num_attention_heads,
        intermediate_size=state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["bert.embeddings.posi_embeddings.weight"].shape[0],
        type_vocab_size=state["bert.embeddings.segment_embeddings.weight"].shape[0],
        age_unit=age_unit,
        max_age=(age_rows - 2) // steps,
    )


def code_order(token2idx: Mapping[str, int]) -> list[int]:
    """Original id of each token of our vocabulary: our specials, then the codes by original id."""
    specials = {ours: token2idx[theirs] for theirs, ours in ORIGINAL_SPECIALS.items()}
    codes = sorted((i for t, i in token2idx.items() if t not in ORIGINAL_SPECIALS))
    return [specials[s] for s in SPECIAL_TOKENS.values()] + codes


def age_order(age_rows: int) -> list[int]:
    """Original age row of each of our age rows: padding 0 -> PAD 0, step a -> a + 2, the last
    (past max_age) -> UNK 1."""
    return [0] + list(range(2, age_rows)) + [1]


def next_visit_rows(token2idx: Mapping[str, int], classifier: dict[str, torch.Tensor], our_ids: dict[str, int]):
    """The original next-visit classifier as our `nvp_head.decoder` (one row per token of our vocabulary)."""
    labels = [t for t in token2idx if t not in NOT_LABELS]  # the original's label order: insertion order
    weight, bias = classifier["weight"], classifier["bias"]
    if weight.shape[0] != len(labels):
        raise OriginalCheckpointError(
            f"classifier has {weight.shape[0]} outputs but the vocabulary has {len(labels)} labels "
            f"(its tokens without {list(NOT_LABELS)})."
        )
    rows = [our_ids[ORIGINAL_SPECIALS.get(t, t)] for t in labels]
    new_weight = weight.new_zeros(len(our_ids), weight.shape[1])
    new_bias = bias.new_full((len(our_ids),), NON_TARGET_BIAS)
    new_weight[rows], new_bias[rows] = weight, bias
    return new_weight, new_bias


def map_state_dict(state: Mapping[str, torch.Tensor], token2idx: Mapping[str, int], our_ids: dict[str, int]) -> dict:
    """Original keys -> ours, with the code and age rows re-ordered; raises on a key it cannot place."""
    codes = torch.tensor(code_order(token2idx))
    mapped, unplaced = {}, []
    for key, value in state.items():
        inner = key[len("bert."):] if key.startswith("bert.") else None
        if inner in _EMBEDDING_KEYS:
            if inner == "embeddings.word_embeddings.weight":
                value = value[codes]
            elif inner == "embeddings.age_embeddings.weight":
                value = value[torch.tensor(age_order(value.shape[0]))]
            mapped["behrt." + _EMBEDDING_KEYS[inner]] = value
        elif inner is not None and _KEPT.fullmatch(inner):
            mapped["behrt." + inner] = value
        elif key in _MLM_KEYS:
            per_code = key in ("cls.predictions.decoder.weight", "cls.predictions.bias")
            mapped[_MLM_KEYS[key]] = value[codes] if per_code else value
        elif not key.startswith("classifier."):
            unplaced.append(key)
    if unplaced:
        raise OriginalCheckpointError(f"Keys the original BEHRT model does not have: {unplaced}")
    if "classifier.weight" in state:
        classifier = {"weight": state["classifier.weight"], "bias": state["classifier.bias"]}
        mapped["nvp_head.decoder.weight"], mapped["nvp_head.decoder.bias"] = next_visit_rows(token2idx, classifier, our_ids)
    return mapped


def convert_original_checkpoint(
    checkpoint,
    vocab,
    output_dir: str | Path | None = None,
    num_attention_heads: int = 12,
    age_unit: str = "month",
    max_length: int | None = None,
):
    """Convert an original BEHRT `state_dict` (a path or mapping) and its vocabulary (a pickle path,
    `{"token2idx": ...}` or a token2idx dict) to a model and tokenizer of this package.

    The model class follows the heads present: an MLM model (`cls.predictions.*`) becomes a
    `BehrtForPreTraining`, so that its pooler (trained, though MLM does not use it, and reused by
    the original's fine-tuning) is kept; its `nvp_head` is new, unless the checkpoint also holds a
    `classifier`. Load the folder with `BehrtForMaskedLM` for masked-code predictions. A next-visit
    model (`bert.*` + `classifier.*`) becomes a `BehrtForNextVisitPrediction`.
    `num_attention_heads` cannot be read from the weights (the published model has 12); `age_unit`
    is the unit of the original age vocabulary (`"month"`, its default `mon=1`, or `"year"`);
    `max_length` is the tokenizer's `model_max_length` (default: the rows of the position table,
    which the original code sets to its `max_len_seq`). With `output_dir`, both are saved there.

    Returns `(model, tokenizer)`.
    """
    token2idx = load_original_vocab(vocab)
    state = load_original_state_dict(checkpoint)
    config = original_config(state, num_attention_heads, age_unit)
    if config.vocab_size != len(token2idx):
        raise OriginalCheckpointError(
            f"The checkpoint has {config.vocab_size} code rows but the vocabulary {len(token2idx)} tokens."
        )
    codes = [t for t, _ in sorted(token2idx.items(), key=lambda item: item[1]) if t not in ORIGINAL_SPECIALS]
    settings = dict(ORIGINAL_TOKENIZER_SETTINGS, age_unit=age_unit, max_age=config.max_age)
    tokenizer = BehrtTokenizerFast.from_codes(
        codes, model_max_length=max_length or config.max_position_embeddings, **settings
    )
    has_mlm, has_nvp = "cls.predictions.bias" in state, "classifier.weight" in state
    if not (has_mlm or has_nvp):
        raise OriginalCheckpointError("The checkpoint has neither an MLM head (cls.predictions.*) nor a classifier.")
    mapped = map_state_dict(state, token2idx, tokenizer.get_vocab())
    decoder = state.get("cls.predictions.decoder.weight")
    if decoder is not None and not torch.equal(decoder, state["bert.embeddings.word_embeddings.weight"]):
        config.tie_word_embeddings = False  # the original ties them; keep an untied checkpoint as it is
    cls = BehrtForPreTraining if has_mlm else BehrtForNextVisitPrediction
    model = cls(config)
    expected = set(model.state_dict())
    if config.tie_word_embeddings:
        mapped.pop("mlm_head.decoder.weight", None)
        expected.discard("mlm_head.decoder.weight")
    if not has_nvp and has_mlm:
        expected -= {"nvp_head.decoder.weight", "nvp_head.decoder.bias"}
        logger.warning("The original MLM model has no next-visit head: nvp_head is newly initialised.")
    if set(mapped) != expected:
        raise OriginalCheckpointError(
            f"Converted keys differ from {cls.__name__}'s: missing {sorted(expected - set(mapped))}, "
            f"extra {sorted(set(mapped) - expected)}."
        )
    model.load_state_dict(mapped, strict=False)
    model.tie_weights()
    model.eval()
    if output_dir is not None:
        model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        logger.info("Saved the converted %s and its tokenizer to %s", cls.__name__, output_dir)
    return model, tokenizer


__all__ = [
    "NON_TARGET_BIAS",
    "OriginalCheckpointError",
    "age_order",
    "code_order",
    "convert_original_checkpoint",
    "load_original_state_dict",
    "load_original_vocab",
]
