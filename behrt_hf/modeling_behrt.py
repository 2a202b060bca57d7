"""PyTorch BEHRT: a BERT encoder over a patient's history of medical codes.

BEHRT (Li et al., 2020, "BEHRT: Transformer for Electronic Health Records", Sci Rep 10:7155)
embeds each token as code + age + segment + position. Everything EHR-specific lives in
`BehrtEmbeddings`; the encoder is a BERT encoder with BERT's parameter names
(`query`/`key`/`value`/`dense`/`LayerNorm`), so LoRA targets and state-dict layouts carry over:
post-LN as in BERT and BEHRT, or pre-LN (`config.layer_norm_position`).

The encoder is written here rather than imported from `transformers.models.bert` (`BertEncoder`,
`BertLayer`; read in transformers 5.0 and 5.24) because:

- Attention weights on request. They are how a BEHRT prediction is explained, so
  `output_attentions=True` returns them under any attention implementation, computed eagerly for
  that call. `BertSelfAttention` dispatches through `ALL_ATTENTION_FUNCTIONS`, whose SDPA function
  returns no weights (it logs a warning); BERT gives weights only when loaded with
  `attn_implementation="eager"`, recorded by `BertModel.forward`'s output-recording decorator.
- A stable surface for remote code. This file is copied next to the weights and runs under
  whatever transformers 5.x the loading process has. BERT's layer classes and their decorators
  changed inside 5.x (`past_key_values` renamed `cache`; that decorator, `check_model_inputs` in
  5.0, replaced by `merge_with_config_defaults` + `capture_outputs` and deprecated), so importing
  them would tie every saved checkpoint to one release's internals. Only helpers present in the
  same form across 5.x are used here: `PreTrainedModel`, `GradientCheckpointingLayer`,
  `can_return_tuple`, `TransformersKwargs`.
- Config and masks. `BertLayer` reads `is_decoder`, `add_cross_attention` and
  `chunk_size_feed_forward` and `BertModel` builds cache-aware masks (`masking_utils`) for its
  decoder mode; `BehrtConfig`, a strict dataclass, would have to declare fields for a decoder BEHRT
  never is. Here a (B, T) padding mask becomes one additive (B, 1, 1, T) mask.

Heads follow BERT in transformers 5: each names the inputs a dataset holds (the Trainer keeps
dataset columns and finds label names by reading `forward`'s signature), passes everything else
(`position_ids`, `inputs_embeds`, `output_attentions`, `output_hidden_states`) through `**kwargs`
to `self.behrt`, and `@can_return_tuple` handles `return_dict`.

This file imports only torch, transformers and `configuration_behrt` (relative import):
`save_pretrained` copies both files next to the weights so that
`AutoModel.from_pretrained(path, trust_remote_code=True)` works without behrt_hf installed.
"""

import math
import os
import shutil
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, MaskedLMOutput, SequenceClassifierOutput
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .configuration_behrt import RECENCY_BUCKET_DAYS, BehrtConfig

# Written into config.json on save: which class each Auto class loads with trust_remote_code=True.
AUTO_MAP = {
    "AutoConfig": "configuration_behrt.BehrtConfig",
    "AutoModel": "modeling_behrt.BehrtModel",
    "AutoModelForMaskedLM": "modeling_behrt.BehrtForMaskedLM",
    "AutoModelForPreTraining": "modeling_behrt.BehrtForPreTraining",
    "AutoModelForSequenceClassification": "modeling_behrt.BehrtForSequenceClassification",
}


def sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed encoding of "Attention is all you need": sin on even, cos on odd dimensions. (P, D)"""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (D/2,)
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


def paper_sinusoidal_table(num_positions: int, dim: int) -> torch.Tensor:
    """The sinusoid the BEHRT code writes (`_init_posi_embedding`): dimension j holds
    sin (j even) or cos (j odd) of pos / 10000^(2j / dim), j the dimension itself rather than
    its pair. Computed in float64 as the code does with numpy, stored as float32. (P, D)"""
    position = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    dims = torch.arange(dim, dtype=torch.float64)
    angle = position / torch.pow(10000.0, 2.0 * dims / dim)  # (P, D)
    table = torch.where(dims.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


def visit_position_table(config: BehrtConfig) -> torch.Tensor:
    """The fixed visit table `config.position_table` describes, (max_position_embeddings, hidden_size).
    "random" draws from the global torch generator (seeded like every other initial weight)."""
    shape = (config.max_position_embeddings, config.hidden_size)
    if config.position_table == "random":
        return torch.randn(shape) * config.initializer_range
    build = sinusoidal_table if config.position_table == "sinusoid" else paper_sinusoidal_table
    return build(*shape) * config.resolved_position_table_scale


def age_sinusoid_table(config: BehrtConfig) -> torch.Tensor:
    """The fixed age table of `age_encoding="learned+sinusoid"`, (age_vocab_size, hidden_size): a
    sinusoid of the age id at the scaled visit table's rms, zero for id 0 (padding / unknown age)."""
    table = sinusoidal_table(config.age_vocab_size, config.hidden_size) * math.sqrt(2.0) * config.initializer_range
    table[0] = 0.0
    return table


def _in_host_memory(tensor: torch.Tensor) -> bool:
    """True for a CPU tensor outside compilation and tracing: reading its values back costs no device sync."""
    return tensor.device.type == "cpu" and not (torch.compiler.is_compiling() or torch.jit.is_tracing())


def _check_id_ranges(**named: tuple[torch.Tensor, int]) -> None:
    """Raise a clear ValueError if any id tensor in host memory holds a value outside [0, size).

    An out-of-range id would otherwise fail deep inside `nn.Embedding`. Only CPU tensors are read:
    on an accelerator the values would have to be copied back to the host, a sync that stalls the
    device on every forward pass. Ids reaching an accelerator are checked where they are made: the
    tokenizer maps codes and ages into its own ranges, and `BehrtTokenizerFast.check_compatible(config)`
    (called by the training scripts) checks those ranges against the model's config.
    """
    named = {name: (ids, size) for name, (ids, size) in named.items() if ids.numel() and _in_host_memory(ids)}
    if not named:
        return
    bounds = torch.stack([torch.stack([ids.min(), ids.max()]) for ids, _ in named.values()]).tolist()
    for (name, (_, size)), (low, high) in zip(named.items(), bounds):
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            raise ValueError(
                f"{name} holds the id {bad}, outside the embedding's range [0, {size}). "
                "Was the data encoded with a tokenizer (vocabulary, age unit, max age) that matches this config?"
            )


class BehrtEmbeddings(nn.Module):
    """code + age + segment + position embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.config = config
        trainable_pad = config.trainable_padding_rows  # the BEHRT code trains its [PAD] rows
        code_pad, age_pad = (None, None) if trainable_pad else (config.pad_token_id, 0)
        self.code_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=code_pad)
        self.age_embeddings = nn.Embedding(config.age_vocab_size, config.hidden_size, padding_idx=age_pad)
        if config.age_encoding == "learned+sinusoid":  # fixed, saved with the weights like the visit table
            self.register_buffer("age_sinusoid_table", age_sinusoid_table(config), persistent=True)
        if config.recency_encoding == "buckets":  # id 0: padding; 1 + bucket of the time before the last visit
            self.recency_embeddings = nn.Embedding(len(RECENCY_BUCKET_DAYS) + 2, config.hidden_size, padding_idx=0)
            self.recency_bounds = tuple(days * config.age_steps_per_year / 365.25 for days in RECENCY_BUCKET_DAYS)
        self.segment_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        if config.position_encoding == "token":
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        else:  # "visit_sinusoidal": fixed, not trained; a persistent buffer, saved with the weights
            self.register_buffer("visit_position_table", visit_position_table(config), persistent=True)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def default_position_ids(self, seq_length: int, visit_ids: torch.Tensor | None, device) -> torch.Tensor:
        if self.config.position_encoding == "visit_sinusoidal":
            if visit_ids is None:
                raise ValueError("position_encoding='visit_sinusoidal' needs `visit_ids` (the visit number of each token).")
            if self.config.cls_shares_first_visit_position:  # [CLS] and visit 1 -> 0, visit k -> k - 1
                return (visit_ids - 1).clamp(min=0)
            return visit_ids
        if seq_length > self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence length {seq_length} exceeds max_position_embeddings={self.config.max_position_embeddings}; "
                "encode with a smaller max_length."
            )
        return torch.arange(seq_length, device=device).unsqueeze(0)  # (1, T)

    def recency_ids(self, age_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) age ids -> recency bucket ids: 0 for padding (age id 0), else 1 + the bucket of the
        time between the token's visit and the sequence's last visit (its highest age id)."""
        before_last = age_ids.max(dim=1, keepdim=True).values - age_ids  # age steps, >= 0
        bounds = torch.tensor(self.recency_bounds, dtype=torch.float32, device=age_ids.device)
        bucket = torch.bucketize(before_last.float(), bounds)
        return torch.where(age_ids > 0, bucket + 1, torch.zeros_like(bucket))

    def forward(self, input_ids=None, age_ids=None, segment_ids=None, position_ids=None, visit_ids=None,
                inputs_embeds=None) -> torch.Tensor:
        """(B, T) ids, or `inputs_embeds` (B, T, H) for the codes, as in `BehrtModel.forward` -> (B, T, H)."""
        if inputs_embeds is None:
            batch_size, seq_length = input_ids.shape
            device = input_ids.device
        else:
            batch_size, seq_length = inputs_embeds.shape[:2]
            device = inputs_embeds.device
        if age_ids is None:  # id 0: age unknown (the padding age)
            age_ids = torch.zeros((batch_size, seq_length), dtype=torch.long, device=device)
        if segment_ids is None:
            segment_ids = torch.zeros((batch_size, seq_length), dtype=torch.long, device=device)
        if position_ids is None:
            position_ids = self.default_position_ids(seq_length, visit_ids, device)

        checks = {
            "age_ids": (age_ids, self.config.age_vocab_size),
            "segment_ids": (segment_ids, self.config.type_vocab_size),
            "position_ids": (position_ids, self.config.max_position_embeddings),
        }
        if inputs_embeds is None:
            checks["input_ids"] = (input_ids, self.config.vocab_size)
        _check_id_ranges(**checks)

        if inputs_embeds is None:
            inputs_embeds = self.code_embeddings(input_ids)  # (B, T, H)
        embeddings = inputs_embeds + self.age_embeddings(age_ids) + self.segment_embeddings(segment_ids)
        if self.config.age_encoding == "learned+sinusoid":
            embeddings = embeddings + F.embedding(age_ids, self.age_sinusoid_table)
        if self.config.recency_encoding == "buckets":
            embeddings = embeddings + self.recency_embeddings(self.recency_ids(age_ids))
        if self.config.position_encoding == "token":
            embeddings = embeddings + self.position_embeddings(position_ids)
        else:
            embeddings = embeddings + F.embedding(position_ids, self.visit_position_table)
        return self.dropout(self.LayerNorm(embeddings))


class BehrtSelfAttention(nn.Module):
    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        batch_size, seq_length, hidden_size = hidden_states.shape
        shape = (batch_size, seq_length, self.num_heads, self.head_dim)
        q = self.query(hidden_states).view(shape).transpose(1, 2)  # (B, nh, T, hd)
        k = self.key(hidden_states).view(shape).transpose(1, 2)
        v = self.value(hidden_states).view(shape).transpose(1, 2)
        dropout_p = self.dropout_p if self.training else 0.0

        weights = None
        # Attention weights are the model's interpretability story: asking for them always gives them,
        # computed eagerly for that call whatever the configured implementation.
        if output_attentions or self.config._attn_implementation == "eager":
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, nh, T, T)
            if attention_mask is not None:
                scores = scores + attention_mask
            weights = scores.softmax(dim=-1)
            context = F.dropout(weights, p=dropout_p, training=self.training) @ v
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout_p)
        context = context.transpose(1, 2).reshape(batch_size, seq_length, hidden_size)  # (B, T, H)
        return context, (weights if output_attentions else None)


class BehrtResidualOutput(nn.Module):
    """Project back to hidden_size, dropout, add the residual. BERT's `BertSelfOutput` after
    attention (in = hidden_size) and `BertOutput` after the feed-forward (in = intermediate_size),
    with the same parameter names.

    Post-LN (`config.layer_norm_position="post"`) normalises the sum here. Pre-LN leaves the sum
    as it is and `normalize_input` normalises the branch's input instead: the same `LayerNorm`
    module, applied before the branch rather than after it, so both layouts share one state dict."""

    def __init__(self, config: BehrtConfig, in_features: int):
        super().__init__()
        self.pre_ln = config.layer_norm_position == "pre"
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def normalize_input(self, hidden_states):
        """The input of the branch this module closes: normalised under pre-LN, unchanged under post-LN."""
        return self.LayerNorm(hidden_states) if self.pre_ln else hidden_states

    def forward(self, hidden_states, residual):
        summed = self.dropout(self.dense(hidden_states)) + residual  # (B, T, H)
        return summed if self.pre_ln else self.LayerNorm(summed)


class BehrtAttention(nn.Module):
    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.self = BehrtSelfAttention(config)
        self.output = BehrtResidualOutput(config, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        context, weights = self.self(self.output.normalize_input(hidden_states), attention_mask, output_attentions)
        return self.output(context, hidden_states), weights


class BehrtIntermediate(nn.Module):
    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]

    def forward(self, hidden_states):
        return self.act(self.dense(hidden_states))


def _factor(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B), each (rank, d), with A^T B the best rank-`rank` approximation of `target` (d, d)."""
    u, s, vh = torch.linalg.svd(target)
    root = s[:rank].sqrt()[:, None]
    return root * u[:, :rank].T, root * vh[:rank]


@torch.no_grad()
def mimetic_init_(attention: BehrtAttention, config: BehrtConfig) -> None:
    """Mimetic initialisation (Trockman & Kolter, 2023) of one attention block, in place.

    Per head h: W_q,h^T W_k,h ~ 0.7 Z + 0.7 I (rank head_dim), so scores start as a similarity of the
    two tokens' inputs. With `"mimetic"` also W_o W_v ~ 0.4 Z - 0.4 I. Z ~ N(0, 1/hidden_size).
    """
    d = config.hidden_size
    heads, head_dim = config.num_attention_heads, d // config.num_attention_heads
    self_attention = attention.self
    weight = self_attention.query.weight
    gen = dict(device=weight.device, dtype=torch.float32)
    eye = torch.eye(d, **gen)
    query, key = torch.empty(d, d, **gen), torch.empty(d, d, **gen)
    for h in range(heads):
        rows = slice(h * head_dim, (h + 1) * head_dim)
        query[rows], key[rows] = _factor(0.7 * torch.randn(d, d, **gen) / math.sqrt(d) + 0.7 * eye, head_dim)
    init.copy_(self_attention.query.weight, query.to(weight.dtype))
    init.copy_(self_attention.key.weight, key.to(weight.dtype))
    if config.attention_init == "mimetic":
        # out = W_o (W_v x): W_o = U sqrt(S), W_v = sqrt(S) V^T
        output_t, value = _factor(0.4 * torch.randn(d, d, **gen) / math.sqrt(d) - 0.4 * eye, d)
        init.copy_(self_attention.value.weight, value.to(weight.dtype))
        init.copy_(attention.output.dense.weight, output_t.T.contiguous().to(weight.dtype))


class BehrtLayer(GradientCheckpointingLayer):
    """Transformer block: attention, then feed-forward, each with a residual and a LayerNorm
    (after the sum under post-LN, on the branch input under pre-LN; `config.layer_norm_position`)."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.attention = BehrtAttention(config)
        self.intermediate = BehrtIntermediate(config)
        self.output = BehrtResidualOutput(config, config.intermediate_size)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attention_output, weights = self.attention(hidden_states, attention_mask, output_attentions)
        intermediate = self.intermediate(self.output.normalize_input(attention_output))
        return self.output(intermediate, attention_output), weights


class BehrtEncoder(nn.Module):
    """The stack of layers; under pre-LN a final `LayerNorm` normalises the last layer's output
    (the residual stream is never normalised inside the layers)."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.layer = nn.ModuleList([BehrtLayer(config) for _ in range(config.num_hidden_layers)])
        if config.layer_norm_position == "pre":
            self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for index, layer in enumerate(self.layer):
            hidden_states, weights = layer(hidden_states, attention_mask, output_attentions=output_attentions)
            if hasattr(self, "LayerNorm") and index == len(self.layer) - 1:
                hidden_states = self.LayerNorm(hidden_states)  # pre-LN: the final norm
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden_states, all_attentions


class BehrtPooler(nn.Module):
    """The patient embedding: [CLS] / mean / max over real tokens / the last real token (`config.pooling`),
    then dense + tanh."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.pooling = config.pooling
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states, attention_mask=None):
        if self.pooling == "cls":
            pooled = hidden_states[:, 0]  # (B, H)
        else:
            if attention_mask is None:
                attention_mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
            if self.pooling == "last":  # the last real token, wherever the padding is
                positions = torch.arange(hidden_states.shape[1], device=hidden_states.device)
                last = (attention_mask.bool() * positions).argmax(1)  # (B,)
                pooled = hidden_states[torch.arange(hidden_states.shape[0], device=last.device), last]
                return self.activation(self.dense(pooled))
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)  # (B, T, 1)
            if self.pooling == "mean":
                pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            else:  # max
                pooled = hidden_states.masked_fill(mask == 0, torch.finfo(hidden_states.dtype).min).amax(1)
        return self.activation(self.dense(pooled))


class BehrtPreTrainedModel(PreTrainedModel):
    config_class = BehrtConfig
    config: BehrtConfig
    base_model_prefix = "behrt"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["BehrtEmbeddings", "BehrtLayer"]
    # The Trainer must not pass num_items_in_batch: our losses are means over their own batch.
    accepts_loss_kwargs = False

    def _initialize_weights(self, module, is_custom_code: bool = False):
        # transformers skips a module without parameters of its own when the model is custom code
        # (`trust_remote_code`); an attention block initialises its children's weights together.
        if isinstance(module, BehrtAttention) and not getattr(module, "_is_hf_initialized", False):
            self._init_weights(module)
            module._is_hf_initialized = True
            return
        super()._initialize_weights(module, is_custom_code)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, BehrtEmbeddings) and hasattr(module, "visit_position_table"):
            init.copy_(module.visit_position_table, visit_position_table(self.config))
        if isinstance(module, BehrtEmbeddings) and hasattr(module, "age_sinusoid_table"):
            init.copy_(module.age_sinusoid_table, age_sinusoid_table(self.config))
        if isinstance(module, BehrtAttention) and self.config.attention_init != "normal":
            mimetic_init_(module, self.config)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save weights (safetensors) and config, plus the two code files and a complete `auto_map`.

        With them, `AutoModel*.from_pretrained(save_directory, trust_remote_code=True)` works in a
        process where behrt_hf is not installed (also after `push_to_hub`, which calls this).
        """
        self.config.auto_map = dict(AUTO_MAP)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        here = os.path.dirname(os.path.abspath(__file__))
        for name in ("configuration_behrt.py", "modeling_behrt.py"):
            target = os.path.join(save_directory, name)
            if os.path.abspath(os.path.join(here, name)) != os.path.abspath(target):
                shutil.copyfile(os.path.join(here, name), target)
        return result


class BehrtModel(BehrtPreTrainedModel):
    """The bare BEHRT encoder: last hidden states and a pooled patient embedding."""

    def __init__(self, config: BehrtConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BehrtEmbeddings(config)
        self.encoder = BehrtEncoder(config)
        self.pooler = BehrtPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.code_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.code_embeddings = value

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        age_ids: torch.LongTensor | None = None,
        segment_ids: torch.LongTensor | None = None,
        visit_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): code token ids.
        attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`): 1 for real tokens, 0 for padding.
        age_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): age bucket of each token's visit
            (0 = padding / unknown); see `BehrtConfig.age_vocab_size`.
        segment_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): 0/1 alternating by visit.
        visit_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): visit number of each token
            ([CLS] is 0, the first visit 1); the positions when `config.position_encoding="visit_sinusoidal"`.
        position_ids (`torch.LongTensor`, *optional*): overrides the positions derived from the config.
        inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`, *optional*):
            code embeddings to use instead of `input_ids` (age, segment and position are still added).
        output_attentions (`bool`, *optional*): every layer's attention weights, under any attention
            implementation (computed eagerly for this call); `config.output_attentions` by default.
        output_hidden_states (`bool`, *optional*): the embeddings and every layer's output.
        return_dict (`bool`, *optional*): a tuple instead of the output dataclass when False (`@can_return_tuple`).

        Every head takes these inputs too: the dataset's columns by name, the rest through `**kwargs`.
        """
        unknown = kwargs.keys() - TransformersKwargs.__annotations__.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__}.forward() got unexpected keyword arguments {sorted(unknown)}")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        output_attentions = kwargs.get("output_attentions")
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        output_hidden_states = kwargs.get("output_hidden_states")
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states

        embeddings = self.embeddings(input_ids, age_ids, segment_ids, position_ids, visit_ids, inputs_embeds)
        extended_mask = self._additive_attention_mask(attention_mask, embeddings.dtype)
        sequence_output, hidden_states, attentions = self.encoder(
            embeddings, extended_mask, output_attentions, output_hidden_states
        )
        pooled_output = self.pooler(sequence_output, attention_mask) if self.pooler is not None else None
        return BaseModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=pooled_output,
            hidden_states=hidden_states,
            attentions=attentions,
        )

    @staticmethod
    def _additive_attention_mask(attention_mask, dtype):
        """(B, T) 1/0 mask -> (B, 1, 1, T) additive mask.

        None when nothing is padded (SDPA's fastest kernels take no mask), which is only looked up in
        host memory: on an accelerator, finding out would sync the device, so the mask is always applied.
        """
        if attention_mask is None or (_in_host_memory(attention_mask) and bool(attention_mask.all())):
            return None
        mask = attention_mask[:, None, None, :].to(dtype)
        return (1.0 - mask) * torch.finfo(dtype).min


class BehrtMLMHead(nn.Module):
    """dense + act + LayerNorm, then a decoder over the code vocabulary tied to the code embeddings."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states):
        return self.decoder(self.LayerNorm(self.act(self.dense(hidden_states))))  # (B, T, V)


class BehrtNVPHead(nn.Module):
    """Next-visit prediction: one logit per code of the vocabulary from the patient embedding."""

    def __init__(self, config: BehrtConfig):
        super().__init__()
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, pooled_output):
        return self.decoder(self.dropout(pooled_output))  # (B, V)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over positions whose label is not -100."""
    return F.cross_entropy(logits.view(-1, logits.size(-1)).float(), labels.view(-1), ignore_index=-100)


def next_visit_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None) -> torch.Tensor:
    """Multi-label BCE of the multi-hot next-visit codes, optional `pos_weight` on every code."""
    weight = None
    if pos_weight is not None:
        weight = torch.full((logits.size(-1),), float(pos_weight), device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), labels.to(torch.float32), pos_weight=weight)


class _MLMHeadMixin:
    """For heads with an `mlm_head`: its decoder is the output embedding, tied to the code embeddings
    when `config.tie_word_embeddings`."""

    _tied_weights_keys = {"mlm_head.decoder.weight": "behrt.embeddings.code_embeddings.weight"}

    def get_output_embeddings(self):
        return self.mlm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_head.decoder = new_embeddings


class BehrtKwargs(TransformersKwargs, total=False):
    """What a head passes through `**kwargs` to `BehrtModel.forward`: `TransformersKwargs`
    (`position_ids`, `output_attentions`, `output_hidden_states`, ...) and `inputs_embeds`."""

    inputs_embeds: torch.FloatTensor | None


class BehrtForMaskedLM(_MLMHeadMixin, BehrtPreTrainedModel):
    def __init__(self, config: BehrtConfig):
        super().__init__(config)
        self.behrt = BehrtModel(config, add_pooling_layer=False)
        self.mlm_head = BehrtMLMHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, age_ids=None, segment_ids=None, visit_ids=None,
                labels: torch.LongTensor | None = None, **kwargs: Unpack[BehrtKwargs]) -> MaskedLMOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            The original code at masked positions, -100 elsewhere. Other inputs: see `BehrtModel.forward`.
        """
        outputs = self.behrt(input_ids, attention_mask=attention_mask, age_ids=age_ids, segment_ids=segment_ids,
                             visit_ids=visit_ids, return_dict=True, **kwargs)
        logits = self.mlm_head(outputs.last_hidden_state)  # (B, T, V)
        loss = masked_lm_loss(logits, labels) if labels is not None else None
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class BehrtForNextVisitPrediction(BehrtPreTrainedModel):
    """Multi-label prediction of the codes of the next visit from the patient embedding."""

    def __init__(self, config: BehrtConfig):
        super().__init__(config)
        self.behrt = BehrtModel(config)
        self.nvp_head = BehrtNVPHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, age_ids=None, segment_ids=None, visit_ids=None,
                labels: torch.Tensor | None = None, **kwargs: Unpack[BehrtKwargs]) -> SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor` of shape `(batch_size, vocab_size)`, *optional*):
            Multi-hot codes of the next visit. Other inputs: see `BehrtModel.forward`.
        """
        outputs = self.behrt(input_ids, attention_mask=attention_mask, age_ids=age_ids, segment_ids=segment_ids,
                             visit_ids=visit_ids, return_dict=True, **kwargs)
        logits = self.nvp_head(outputs.pooler_output)  # (B, V)
        loss = next_visit_loss(logits, labels, self.config.nvp_pos_weight) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


@dataclass
class BehrtForPreTrainingOutput(ModelOutput):
    """
    loss: `mlm_loss + config.nvp_loss_weight * nvp_loss` (whichever labels were given).
    mlm_loss, nvp_loss: the two terms, for logging.
    mlm_logits: `(batch_size, sequence_length, vocab_size)`. nvp_logits: `(batch_size, vocab_size)`.
    """

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    nvp_loss: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    nvp_logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class BehrtForPreTraining(_MLMHeadMixin, BehrtPreTrainedModel):
    """Masked-code modelling and next-visit prediction together. The heads have the same names as in
    `BehrtForMaskedLM` / `BehrtForNextVisitPrediction`, so a pretraining checkpoint loads fully into either."""

    def __init__(self, config: BehrtConfig):
        super().__init__(config)
        self.behrt = BehrtModel(config)
        self.mlm_head = BehrtMLMHead(config)
        self.nvp_head = BehrtNVPHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, age_ids=None, segment_ids=None, visit_ids=None,
                labels: torch.LongTensor | None = None, next_visit_labels: torch.Tensor | None = None,
                **kwargs: Unpack[BehrtKwargs]) -> BehrtForPreTrainingOutput:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*): MLM targets, -100 elsewhere.
        next_visit_labels (`torch.Tensor` of shape `(batch_size, vocab_size)`, *optional*): multi-hot next visit.
        Other inputs: see `BehrtModel.forward`.
        """
        outputs = self.behrt(input_ids, attention_mask=attention_mask, age_ids=age_ids, segment_ids=segment_ids,
                             visit_ids=visit_ids, return_dict=True, **kwargs)
        mlm_logits = self.mlm_head(outputs.last_hidden_state)  # (B, T, V)
        nvp_logits = self.nvp_head(outputs.pooler_output)  # (B, V)
        mlm_loss = masked_lm_loss(mlm_logits, labels) if labels is not None else None
        nvp_loss = None
        if next_visit_labels is not None:
            nvp_loss = next_visit_loss(nvp_logits, next_visit_labels, self.config.nvp_pos_weight)
        terms = [t for t in (mlm_loss, None if nvp_loss is None else self.config.nvp_loss_weight * nvp_loss) if t is not None]
        return BehrtForPreTrainingOutput(
            loss=sum(terms) if terms else None,
            mlm_loss=mlm_loss,
            nvp_loss=nvp_loss,
            mlm_logits=mlm_logits,
            nvp_logits=nvp_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class BehrtForSequenceClassification(BehrtPreTrainedModel):
    """A linear head on the patient embedding; the loss follows `config.problem_type` (as in BERT)."""

    def __init__(self, config: BehrtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        for name in ("class_weights", "pos_weight"):
            weights = getattr(config, name)
            if weights is not None and len(weights) != config.num_labels:
                raise ValueError(f"config.{name} has {len(weights)} values but num_labels is {config.num_labels}.")
        self.behrt = BehrtModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, age_ids=None, segment_ids=None, visit_ids=None,
                labels: torch.Tensor | None = None, **kwargs: Unpack[BehrtKwargs]) -> SequenceClassifierOutput:
        r"""
        labels (`torch.Tensor`, *optional*): `(batch_size,)` class ids (single-label), `(batch_size, num_labels)`
            0/1 floats (multi-label), or `(batch_size,)` / `(batch_size, num_labels)` floats (regression).
            Other inputs: see `BehrtModel.forward`.
        """
        outputs = self.behrt(input_ids, attention_mask=attention_mask, age_ids=age_ids, segment_ids=segment_ids,
                             visit_ids=visit_ids, return_dict=True, **kwargs)
        logits = self.classifier(self.dropout(outputs.pooler_output))  # (B, num_labels)
        loss = self._loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    def _loss(self, logits, labels):
        config = self.config
        if config.problem_type is None:
            if self.num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        logits = logits.float()
        if config.problem_type == "regression":
            if self.num_labels == 1:
                return F.mse_loss(logits.squeeze(-1), labels.float().view(-1))
            return F.mse_loss(logits, labels.float())
        if config.problem_type == "single_label_classification":
            weight = None if config.class_weights is None else logits.new_tensor(config.class_weights)
            return F.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1).long(), weight=weight)
        pos_weight = None if config.pos_weight is None else logits.new_tensor(config.pos_weight)
        return F.binary_cross_entropy_with_logits(logits, labels.float().view_as(logits), pos_weight=pos_weight)


__all__ = [
    "BehrtEmbeddings",
    "BehrtForMaskedLM",
    "BehrtForNextVisitPrediction",
    "BehrtForPreTraining",
    "BehrtForPreTrainingOutput",
    "BehrtForSequenceClassification",
    "BehrtModel",
    "BehrtPreTrainedModel",
]
