"""BEHRT model configuration.

This file imports only transformers (and huggingface_hub, which transformers depends on):
`save_pretrained` copies it next to the weights so that `trust_remote_code=True` loading works
without behrt_hf installed.
"""

import math
from typing import ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Model sizes. `small` / `medium` / `large` are the sizes the project was planned with;
# `original` is what the published BEHRT code (Li et al., 2020, Sci Rep 10:7155;
# github.com/deepmedicine/BEHRT on pytorch_pretrained_bert) computes: hidden 288, 6 layers,
# 12 heads, intermediate 512, a frozen position table indexed by visit that holds N(0, 0.02)
# draws (the code builds a sinusoid, then its weight initialiser redraws every embedding),
# [CLS] sharing the first visit's position, ages in months up to 110 years, trainable
# padding rows. See `BehrtConfig` for each field and `behrt_hf.convert_original` for its checkpoints.
PRESETS: dict[str, dict] = {
    "small": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
    "medium": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8, intermediate_size=512),
    "large": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, intermediate_size=1024),
    "original": dict(
        hidden_size=288,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=512,
        position_encoding="visit_sinusoidal",
        position_table="random",
        cls_shares_first_visit_position=True,
        max_position_embeddings=64,
        type_vocab_size=2,
        age_unit="month",
        max_age=110,
        trainable_padding_rows=True,
        layer_norm_position="post",  # BEHRT is post-LN whatever the default becomes
        attention_init="normal",  # BERT's initialisation, as the BEHRT code
    ),
}

# Upper bounds (days) of the time-before-prediction buckets of `recency_encoding="buckets"`: the
# last visit, then up to 1, 3, 6 months, 1, 2, 5 years before it, then older.
RECENCY_BUCKET_DAYS = (0, 31, 91, 183, 365, 730, 1826)

# Age ids per year of age for each `age_unit`; the tokenizer reads it from here (one definition).
AGE_STEPS_PER_YEAR = {"year": 1, "month": 12}


@strict
class BehrtConfig(PreTrainedConfig):
    r"""
    Configuration of a BEHRT model: a BERT encoder over a patient's sequence of medical codes whose
    input embedding is the sum of code, age, segment and position embeddings.

    Args:
        vocab_size (`int`, *optional*, defaults to 1000):
            Number of tokens in the code vocabulary, special tokens included (use `len(tokenizer)`).
        hidden_size (`int`, *optional*, defaults to 128):
            Dimension of the embeddings and the encoder layers.
        num_hidden_layers (`int`, *optional*, defaults to 2):
            Number of transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 4):
            Number of attention heads per layer; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 256):
            Dimension of the feed-forward layer.
        hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the feed-forward layer and the MLM transform.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings and residual branches.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on attention probabilities.
        classifier_dropout (`float`, *optional*):
            Dropout before the classification / NVP heads; `hidden_dropout_prob` when `None`.
        max_position_embeddings (`int`, *optional*, defaults to 512):
            Rows of the position table: tokens per sequence with `position_encoding="token"`, visits
            per sequence with `position_encoding="visit_sinusoidal"`.
        position_encoding (`str`, *optional*, defaults to `"token"`):
            `"token"`: learned embedding of the token index. `"visit_sinusoidal"`: a fixed (never
            trained) table indexed by the visit number (`visit_ids`), as in BEHRT; `position_table`
            says what it holds. The table is saved with the weights, so a reloaded model has it as saved.
        position_table (`str`, *optional*, defaults to `"sinusoid"`):
            Contents of the fixed visit table. `"sinusoid"`: the encoding of "Attention is all you
            need" (sin on even, cos on odd dimensions, frequencies 10000^(-2i/d) for pair i).
            `"paper_sinusoid"`: the variant the BEHRT code writes, 10000^(-2j/d) with j the dimension
            index itself, so the frequencies fall twice as fast. `"random"`: N(0, initializer_range)
            draws, what the published BEHRT checkpoints hold (the code's initialiser overwrites the
            sinusoid it builds).
        position_table_scale (`float`, *optional*):
            Factor on the sinusoid tables. Unscaled, their entries are +-1 (norm ~sqrt(hidden_size / 2)
            per token) while code, age and segment embeddings start at std `initializer_range`: the
            codes are then a fraction of a percent of what the embedding LayerNorm sees, and MLM stays at
            the frequency baseline. `None` (default): `sqrt(2) * initializer_range`, so each dimension
            has an rms of about `initializer_range`, like the learned embeddings. 1.0 gives the unscaled
            table (the BEHRT code's intent, and this package's table before the field existed).
        cls_shares_first_visit_position (`bool`, *optional*, defaults to `False`):
            Visit positions of `position_encoding="visit_sinusoidal"`. False: [CLS] 0, visit k -> k.
            True (the BEHRT code): [CLS] and the first visit 0, visit k -> k - 1.
        type_vocab_size (`int`, *optional*, defaults to 2):
            Number of segment types; segments alternate 0/1 from visit to visit.
        age_unit (`str`, *optional*, defaults to `"year"`):
            Resolution of the age embedding: `"year"` or `"month"`.
        age_encoding (`str`, *optional*, defaults to `"learned"`):
            `"learned"`: one trained embedding per age id. `"learned+sinusoid"`: plus a fixed
            sinusoid of the age id (a persistent buffer saved with the weights, row 0 zero, each
            dimension at an rms of about `initializer_range`), so that the time between two visits
            is a rotation the attention can read, whatever ages were seen in training. Use it with
            `age_unit="month"`: its fastest period is about 6 age steps (6 months), while with
            `"year"` it cannot resolve less than several years.
        recency_encoding (`str`, *optional*, defaults to `"none"`):
            `"buckets"`: each token also gets an embedding of how long before the sequence's last
            visit (the time of prediction) its visit was, bucketed by `RECENCY_BUCKET_DAYS` (the last
            visit; up to 1, 3, 6 months; 1, 2, 5 years; older). It is computed from the age ids (the
            last visit's age id minus the token's), so it needs no extra input; with
            `age_unit="month"` it resolves months, with `"year"` only whole years of age. Token
            positions count from the start of the kept history, so without it "how recent" must be
            read off the difference of two age embeddings.
        max_age (`int`, *optional*, defaults to 120):
            Oldest age in years that has its own embedding; older ages share the last one.
            `age_unit="month", max_age=110` gives the BEHRT code's 1,322 age rows (its layout differs
            by a re-indexing, which `behrt_hf.convert_original` applies).
        trainable_padding_rows (`bool`, *optional*, defaults to `False`):
            False: the [PAD] code row and the padding age row (id 0) are zero and get no gradient
            (`padding_idx`). True (the BEHRT code): they are ordinary rows, initialised and trained.
        pooling (`str`, *optional*, defaults to `"cls"`):
            How the patient embedding is pooled from the last hidden states: `"cls"` (the [CLS]
            token), `"mean"` or `"max"` over non-padding tokens, or `"last"` (the last non-padding
            token: the [SEP] that closes the latest visit, the one nearest the prediction time);
            followed by a dense layer and tanh.
        layer_norm_position (`str`, *optional*, defaults to `"post"`):
            Where each encoder layer normalises. `"post"`: after each residual sum, as BERT and the
            published BEHRT. `"pre"`: on the input of each attention and feed-forward branch, with a
            final LayerNorm after the last layer (Xiong et al., 2020, "On Layer Normalization in the
            Transformer Architecture"); its gradients are well scaled at initialisation, so it trains
            at high learning rates without a long warm-up. Same parameter names either way.
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialiser of weight matrices.
        attention_init (`str`, *optional*, defaults to `"mimetic_qk"`):
            How a new model's attention weights start. `"normal"`: like every other matrix (BERT,
            the BEHRT code). `"mimetic_qk"` (default): each head's query and key maps start so that
            their product is close to `0.7 Z + 0.7 I` (Z a random matrix; Trockman & Kolter, 2023,
            "Mimetic Initialization of Self-Attention Layers"), so that a token attends more to
            tokens that look like it, e.g. the other codes of its own visit (same age, position and
            segment), from the first step. Under `"normal"` masked-code pretraining sits near the
            frequency baseline until such a within-visit head has grown from nothing (README,
            "Pretraining recipe"). `"mimetic"`: also the value-output product starts near
            `0.4 Z - 0.4 I`; it pretrains faster still, but its [CLS] state learns nothing (next-visit
            F1 at the frequency baseline) and LoRA fine-tuning from it fails, so it is not the
            default. Only the starting point changes: same parameters, and weights loaded from a
            checkpoint are kept.
        pad_token_id (`int`, *optional*, defaults to 0):
            Id of [PAD] in the code vocabulary.
        tie_word_embeddings (`bool`, *optional*, defaults to `True`):
            Tie the MLM decoder to the code embeddings.
        nvp_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the next-visit-prediction loss in `BehrtForPreTraining` (loss = MLM + w * NVP).
        nvp_pos_weight (`float`, *optional*):
            `pos_weight` of the NVP multi-label BCE loss (one value for every code); none when `None`.
        class_weights (`list[float]`, *optional*):
            Per-class weights of the cross-entropy loss of `BehrtForSequenceClassification`
            (`problem_type="single_label_classification"`).
        pos_weight (`list[float]`, *optional*):
            Per-label `pos_weight` of the BCE loss of `BehrtForSequenceClassification`
            (`problem_type="multi_label_classification"`, or one logit for a binary task).

    Differences of the `original` preset from the defaults: a frozen random visit table
    (`position_encoding="visit_sinusoidal"`, `position_table="random"`, 64 rows) with [CLS] sharing
    the first visit's position instead of a learned table per token; ages in months up to 110
    years (1,322 rows) instead of years up to 120 (122 rows); trainable padding rows. Encoder, MLM
    head, pooler, GELU and LayerNorm eps are the same as the defaults (post-LN BERT); its attention
    starts from BERT's normal initialisation (`attention_init="normal"`), not the mimetic one.
    Encoding patients as the BEHRT code did takes tokenizer settings too (`truncate_by="token"`,
    `cls_age="first"`; `behrt_hf.tokenization_behrt.ORIGINAL_TOKENIZER_SETTINGS`).

    Examples:

    ```python
    >>> from behrt_hf import BehrtConfig, BehrtModel

    >>> config = BehrtConfig.from_preset("small", vocab_size=500)
    >>> model = BehrtModel(config)
    >>> config.age_vocab_size
    122
    ```"""

    model_type = "behrt"
    # Output fields the Trainer must not collect as predictions at evaluation.
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["mlm_loss", "nvp_loss", "hidden_states", "attentions"]

    vocab_size: int = 1000
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 256
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    classifier_dropout: float | int | None = None
    max_position_embeddings: int = 512
    position_encoding: Literal["token", "visit_sinusoidal"] = "token"
    position_table: Literal["sinusoid", "paper_sinusoid", "random"] = "sinusoid"
    position_table_scale: float | int | None = None
    cls_shares_first_visit_position: bool = False
    type_vocab_size: int = 2
    age_unit: Literal["year", "month"] = "year"
    age_encoding: Literal["learned", "learned+sinusoid"] = "learned"
    recency_encoding: Literal["none", "buckets"] = "none"
    max_age: int = 120
    trainable_padding_rows: bool = False
    pooling: Literal["cls", "mean", "max", "last"] = "cls"
    layer_norm_position: Literal["post", "pre"] = "post"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    attention_init: Literal["normal", "mimetic_qk", "mimetic"] = "mimetic_qk"
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    nvp_loss_weight: float | int = 1.0
    nvp_pos_weight: float | int | None = None
    class_weights: list[float] | None = None
    pos_weight: list[float] | None = None

    @property
    def resolved_position_table_scale(self) -> float:
        """`position_table_scale`, or its default `sqrt(2) * initializer_range` when None."""
        if self.position_table_scale is None:
            return math.sqrt(2.0) * self.initializer_range
        return float(self.position_table_scale)

    @property
    def age_steps_per_year(self) -> int:
        return AGE_STEPS_PER_YEAR[self.age_unit]

    @property
    def age_vocab_size(self) -> int:
        """Id 0 is padding; ages 0..max_age map to ids 1..max_age * steps_per_year + 1."""
        return self.max_age * self.age_steps_per_year + 2

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """As `PreTrainedConfig.from_dict`; a `visit_sinusoidal` config saved before the table had
        a kind and a scale (no `position_table` key) gets `position_table_scale=1.0`, the unscaled
        sinusoid it was trained with (its weights do not hold the table, so it is rebuilt)."""
        if config_dict.get("position_encoding") == "visit_sinusoidal" and "position_table" not in config_dict:
            config_dict = {**config_dict, "position_table_scale": 1.0}
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "BehrtConfig":
        """A config of a named size (`small`, `medium`, `large`, `original`); `overrides` set any field."""
        if name not in PRESETS:
            raise ValueError(f"Unknown BEHRT preset {name!r}; choose one of {sorted(PRESETS)}.")
        return cls(**{**PRESETS[name], **overrides})

    def validate_architecture(self):
        """Part of `@strict` validation: checks that the sizes fit together."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.position_encoding == "visit_sinusoidal" and self.hidden_size % 2 != 0:
            raise ValueError(f"position_encoding='visit_sinusoidal' needs an even hidden_size, got {self.hidden_size}.")
        if self.position_table_scale is not None and not self.position_table_scale > 0:
            raise ValueError(f"position_table_scale must be positive (or None), got {self.position_table_scale}.")
        if self.max_age < 1:
            raise ValueError(f"max_age must be at least 1 year, got {self.max_age}.")
        if self.type_vocab_size < 1:
            raise ValueError(f"type_vocab_size must be at least 1, got {self.type_vocab_size}.")


__all__ = ["BehrtConfig", "PRESETS", "RECENCY_BUCKET_DAYS"]
