"""A minimal re-creation of what the original BEHRT code computes, to test the converter against.

Written from a reading of github.com/deepmedicine/BEHRT (model/MLM.py, model/NextXVisit.py,
model/utils.py, dataLoader/MLM.py, dataLoader/NextXVisit.py, dataLoader/utils.py,
preprocess/behrtFormat.py) and of pytorch_pretrained_bert 0.6 `modeling.py` (BertLayerNorm,
BertEncoder, BertPooler, BertOnlyMLMHead, init_bert_weights). Nothing here imports behrt_hf: the
two sides share no code, only the patients.

Module and parameter names follow the original so that `state_dict()` has its keys
(`bert.embeddings.word_embeddings.weight`, `bert.embeddings.posi_embeddings.weight`,
`cls.predictions.bias`, `classifier.weight`, ...).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

# --- data: the original's record format and data loader ----------------------------------------


def behrt_format(patient: dict) -> tuple[list[str], list[str]]:
    """A patient in our schema -> the original's flat `code` and `age` columns: each visit's codes
    then 'SEP', every token with its visit's age as a string of whole months."""
    codes, ages = [], []
    for visit in patient["visits"]:
        month = str(int(math.floor(visit["age"] * 12)))
        codes += list(visit["codes"]) + ["SEP"]
        ages += [month] * (len(visit["codes"]) + 1)
    return codes, ages


def age_vocab(max_age: int, months: bool = True) -> dict[str, int]:
    """PAD 0, UNK 1, then one id per month (or year) of age below max_age years."""
    vocab = {"PAD": 0, "UNK": 1}
    for step in range(max_age * (12 if months else 1)):
        vocab[str(step)] = len(vocab)
    return vocab


def pad_to(values: list, length: int, fill) -> list:
    return list(values) + [fill] * (length - len(values))


def encode(codes: list[str], ages: list[str], token2idx: dict, age2idx: dict, max_len: int) -> dict[str, list[int]]:
    """The unmasked inputs of the original loaders: keep the last max_len - 1 tokens; a leading
    'SEP' becomes 'CLS', otherwise 'CLS' is prepended with the first token's age; pad to max_len.
    Positions count the 'SEP's seen before each token; segments flip after each 'SEP'."""
    codes, ages = list(codes[-(max_len - 1):]), list(ages[-(max_len - 1):])
    if codes[0] == "SEP":
        codes[0] = "CLS"
    else:
        codes, ages = ["CLS"] + codes, [ages[0]] + ages
    length = len(codes)
    tokens = pad_to(codes, max_len, "PAD")
    positions, segments, visit, segment = [], [], 0, 0
    for token in tokens:
        positions.append(visit)
        segments.append(segment)
        if token == "SEP":
            visit += 1
            segment = 1 - segment
    return {
        "input_ids": [token2idx.get(t, token2idx["UNK"]) for t in tokens],
        "age_ids": pad_to([age2idx.get(a, age2idx["UNK"]) for a in ages], max_len, age2idx["PAD"]),
        "posi_ids": positions,
        "seg_ids": segments,
        "attention_mask": [1] * length + [0] * (max_len - length),
    }


# --- model: pytorch_pretrained_bert's BERT with BEHRT's embeddings -------------------------------


def original_config(**sizes) -> SimpleNamespace:
    defaults = dict(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=64,
                    initializer_range=0.02, seg_vocab_size=2, age_vocab_size=1322)
    return SimpleNamespace(**{**defaults, **sizes})


class LayerNorm(nn.Module):
    """TF-style layer norm (epsilon inside the square root), as BertLayerNorm without apex."""

    def __init__(self, size, eps=1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight * (x - mean) / torch.sqrt(var + self.eps) + self.bias


def gelu(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def intended_sinusoid(rows: int, dim: int) -> torch.Tensor:
    """The table BEHRT builds before its initialiser overwrites it: exponent 2 * j / dim, j the dimension."""
    table = np.zeros((rows, dim), dtype=np.float32)
    for pos in range(rows):
        for j in range(dim):
            angle = pos / (10000 ** (2 * j / dim))
            table[pos, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return torch.tensor(table)


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.segment_embeddings = nn.Embedding(c.seg_vocab_size, c.hidden_size)
        self.age_embeddings = nn.Embedding(c.age_vocab_size, c.hidden_size)
        self.posi_embeddings = nn.Embedding.from_pretrained(intended_sinusoid(c.max_position_embeddings, c.hidden_size))
        self.LayerNorm = LayerNorm(c.hidden_size)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, word_ids, age_ids, seg_ids, posi_ids):
        x = self.word_embeddings(word_ids) + self.segment_embeddings(seg_ids)
        x = x + self.age_embeddings(age_ids) + self.posi_embeddings(posi_ids)
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.head_size = c.num_attention_heads, c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def split(self, x):
        return x.view(*x.shape[:-1], self.heads, self.head_size).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q, k, v = self.split(self.query(x)), self.split(self.key(x)), self.split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_size) + mask
        context = self.dropout(scores.softmax(-1)) @ v
        return context.permute(0, 2, 1, 3).reshape(x.shape)


class AddNorm(nn.Module):
    """BertSelfOutput / BertOutput: dense, dropout, residual, LayerNorm."""

    def __init__(self, c, size_in):
        super().__init__()
        self.dense = nn.Linear(size_in, c.hidden_size)
        self.LayerNorm = LayerNorm(c.hidden_size)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = SelfAttention(c)
        self.output = AddNorm(c, c.hidden_size)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return gelu(self.dense(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = AddNorm(c, c.intermediate_size)

    def forward(self, x, mask):
        attended = self.attention(x, mask)
        return self.output(self.intermediate(attended), attended)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, x, mask):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Pooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class PreTrained(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.config = c

    def init_bert_weights(self, module):
        """Every Linear and Embedding (the frozen position table too) from N(0, initializer_range)."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            module.weight.data.normal_(0.0, self.config.initializer_range)
        elif isinstance(module, LayerNorm):
            module.bias.data.zero_()
            module.weight.data.fill_(1.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.data.zero_()


class Bert(PreTrained):
    def __init__(self, c):
        super().__init__(c)
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.pooler = Pooler(c)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, age_ids, seg_ids, posi_ids, attention_mask):
        mask = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        hidden = self.encoder(self.embeddings(input_ids, age_ids, seg_ids, posi_ids), mask)
        return hidden, self.pooler(hidden)


class PredictionHead(nn.Module):
    """BertOnlyMLMHead's `predictions`: transform, then the tied decoder plus its own bias."""

    def __init__(self, c, embedding_weight):
        super().__init__()
        self.transform = nn.Module()
        self.transform.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.transform.LayerNorm = LayerNorm(c.hidden_size)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.decoder.weight = embedding_weight
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x):
        x = self.transform.LayerNorm(gelu(self.transform.dense(x)))
        return self.decoder(x) + self.bias


class ForMaskedLM(PreTrained):
    def __init__(self, c):
        super().__init__(c)
        self.bert = Bert(c)
        self.cls = nn.Module()
        self.cls.predictions = PredictionHead(c, self.bert.embeddings.word_embeddings.weight)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, age_ids, seg_ids, posi_ids, attention_mask):
        hidden, _ = self.bert(input_ids, age_ids, seg_ids, posi_ids, attention_mask)
        return self.cls.predictions(hidden)  # (B, T, V)


class ForMultiLabelPrediction(PreTrained):
    """The next-visit model: pooled output -> dropout -> Linear(H, labels); MultiLabelSoftMarginLoss."""

    def __init__(self, c, num_labels):
        super().__init__(c)
        self.bert = Bert(c)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.classifier = nn.Linear(c.hidden_size, num_labels)
        self.apply(self.init_bert_weights)

    def forward(self, input_ids, age_ids, seg_ids, posi_ids, attention_mask, labels=None):
        logits = self.classifier(self.dropout(self.bert(input_ids, age_ids, seg_ids, posi_ids, attention_mask)[1]))
        if labels is None:
            return logits
        return nn.MultiLabelSoftMarginLoss()(logits, labels), logits


def randomise(model: nn.Module, seed: int, std: float = 0.2) -> None:
    """Every parameter and buffer from N(0, std) (LayerNorm weights around 1), so that no row of
    any table, bias or scale is left at a value a wrong mapping could also produce. (Much larger
    weights make float32 rounding, not the mapping, dominate the comparison.)"""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            noise = torch.randn(tensor.shape, generator=generator) * std
            tensor.copy_(noise + 1.0 if name.endswith("LayerNorm.weight") else noise)
