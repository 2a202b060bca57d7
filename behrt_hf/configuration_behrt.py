"""BEHRT model configuration.

This file imports only transformers (and huggingface_hub, which transformers depends on):
`save_pretrained` copies it next to the weights so that `trust_remote_code=True` loading works
without behrt_hf installed.
"""

from typing import ClassVar, Literal

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# Model sizes. `small` / `medium` / `large` are the sizes the project was planned with;
# `original` is the published BEHRT (Li et al., 2020, Sci Rep 10:7155): hidden 288, 6 layers,
# 12 heads, intermediate 512, fixed sinusoidal positions indexed by visit, A/B segments.
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
        type_vocab_size=2,
    ),
}

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
            Largest position id: tokens per sequence with `position_encoding="token"`, visits per
            sequence with `position_encoding="visit_sinusoidal"`.
        position_encoding (`str`, *optional*, defaults to `"token"`):
            `"token"`: learned embedding of the token index. `"visit_sinusoidal"`: fixed sinusoidal
            encoding of the visit number (`visit_ids`), as in the BEHRT paper.
        type_vocab_size (`int`, *optional*, defaults to 2):
            Number of segment types; segments alternate 0/1 from visit to visit.
        age_unit (`str`, *optional*, defaults to `"year"`):
            Resolution of the age embedding: `"year"` or `"month"`.
        max_age (`int`, *optional*, defaults to 120):
            Oldest age in years that has its own embedding; older ages share the last one.
        pooling (`str`, *optional*, defaults to `"cls"`):
            How the patient embedding is pooled from the last hidden states: `"cls"` (the [CLS]
            token), `"mean"` or `"max"` over non-padding tokens; followed by a dense layer and tanh.
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
    type_vocab_size: int = 2
    age_unit: Literal["year", "month"] = "year"
    max_age: int = 120
    pooling: Literal["cls", "mean", "max"] = "cls"
    layer_norm_position: Literal["post", "pre"] = "post"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    nvp_loss_weight: float | int = 1.0
    nvp_pos_weight: float | int | None = None
    class_weights: list[float] | None = None
    pos_weight: list[float] | None = None

    @property
    def age_steps_per_year(self) -> int:
        return AGE_STEPS_PER_YEAR[self.age_unit]

    @property
    def age_vocab_size(self) -> int:
        """Id 0 is padding; ages 0..max_age map to ids 1..max_age * steps_per_year + 1."""
        return self.max_age * self.age_steps_per_year + 2

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
        if self.max_age < 1:
            raise ValueError(f"max_age must be at least 1 year, got {self.max_age}.")
        if self.type_vocab_size < 1:
            raise ValueError(f"type_vocab_size must be at least 1, got {self.type_vocab_size}.")


__all__ = ["BehrtConfig", "PRESETS"]
