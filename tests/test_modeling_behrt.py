"""BEHRT modeling: shapes and losses of every head, save/load, SDPA vs eager, gradient checkpointing."""

import copy
import inspect
import math

import pytest
import torch
from transformers.utils.generic import find_labels

from behrt_hf import (
    BehrtConfig,
    BehrtForMaskedLM,
    BehrtForNextVisitPrediction,
    BehrtForPreTraining,
    BehrtForSequenceClassification,
    BehrtModel,
    BehrtTokenizerFast,
)
from behrt_hf.modeling_behrt import _check_id_ranges, age_sinusoid_table, sinusoidal_table
from tests.helpers import tiny_config

ALL_CLASSES = [
    BehrtModel,
    BehrtForMaskedLM,
    BehrtForNextVisitPrediction,
    BehrtForPreTraining,
    BehrtForSequenceClassification,
]


class BehrtModelTester:
    batch_size = 3
    seq_length = 12

    def __init__(self, **config_overrides):
        self.config = tiny_config(**config_overrides)

    def prepare_inputs(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        b, t, c = self.batch_size, self.seq_length, self.config
        input_ids = torch.randint(5, c.vocab_size, (b, t), generator=g)
        attention_mask = torch.ones(b, t, dtype=torch.long)
        attention_mask[1, 8:] = 0  # one padded row
        input_ids[1, 8:] = c.pad_token_id
        visit_ids = torch.arange(t).div(3, rounding_mode="floor").expand(b, t).clone()  # 3 tokens a visit
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "age_ids": torch.randint(1, c.age_vocab_size, (b, t), generator=g) * attention_mask,
            "segment_ids": (visit_ids % 2) * attention_mask,
            "visit_ids": visit_ids * attention_mask,
        }

    def labels_for(self, cls, inputs, seed=1):
        """Random labels for `cls`'s forward as keyword arguments (none for the bare `BehrtModel`)."""
        g = torch.Generator().manual_seed(seed)
        mlm = inputs["input_ids"].masked_fill(torch.rand(inputs["input_ids"].shape, generator=g) < 0.5, -100)
        nvp = (torch.rand(self.batch_size, self.config.vocab_size, generator=g) < 0.1).float()
        return {
            BehrtModel: {},
            BehrtForMaskedLM: {"labels": mlm},
            BehrtForNextVisitPrediction: {"labels": nvp},
            BehrtForPreTraining: {"labels": mlm, "next_visit_labels": nvp},
            BehrtForSequenceClassification: {"labels": torch.randint(0, 2, (self.batch_size,), generator=g)},
        }[cls]

    def create_and_check_model(self):
        model = BehrtModel(self.config).eval()
        out = model(**self.prepare_inputs())
        assert out.last_hidden_state.shape == (self.batch_size, self.seq_length, self.config.hidden_size)
        assert out.pooler_output.shape == (self.batch_size, self.config.hidden_size)

    def create_and_check_masked_lm(self):
        model = BehrtForMaskedLM(self.config).eval()
        inputs = self.prepare_inputs()
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, 2] = inputs["input_ids"][:, 2]
        out = model(**inputs, labels=labels)
        assert out.logits.shape == (self.batch_size, self.seq_length, self.config.vocab_size)
        expected = torch.nn.functional.cross_entropy(out.logits[:, 2], labels[:, 2])
        torch.testing.assert_close(out.loss, expected)

    def create_and_check_next_visit_prediction(self):
        model = BehrtForNextVisitPrediction(self.config).eval()
        labels = torch.zeros(self.batch_size, self.config.vocab_size)
        labels[0, [7, 9]] = 1
        out = model(**self.prepare_inputs(), labels=labels)
        assert out.logits.shape == (self.batch_size, self.config.vocab_size)
        torch.testing.assert_close(
            out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
        )

    def create_and_check_pretraining(self):
        model = BehrtForPreTraining(self.config).eval()
        inputs = self.prepare_inputs()
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, 3] = inputs["input_ids"][:, 3]
        nvp = torch.zeros(self.batch_size, self.config.vocab_size)
        nvp[:, 11] = 1
        out = model(**inputs, labels=labels, next_visit_labels=nvp)
        assert out.mlm_logits.shape == (self.batch_size, self.seq_length, self.config.vocab_size)
        assert out.nvp_logits.shape == (self.batch_size, self.config.vocab_size)
        torch.testing.assert_close(out.loss, out.mlm_loss + self.config.nvp_loss_weight * out.nvp_loss)
        only_mlm = model(**inputs, labels=labels)
        assert only_mlm.nvp_loss is None
        torch.testing.assert_close(only_mlm.loss, out.mlm_loss)
        assert model(**inputs).loss is None

    def create_and_check_sequence_classification(self, problem_type, num_labels, labels):
        config = copy.deepcopy(self.config)
        config.num_labels, config.problem_type = num_labels, problem_type
        model = BehrtForSequenceClassification(config).eval()
        out = model(**self.prepare_inputs(), labels=labels)
        assert out.logits.shape == (self.batch_size, num_labels)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        return model, out


@pytest.fixture(params=["token", "visit_sinusoidal"])
def tester(request):
    return BehrtModelTester(position_encoding=request.param)


def test_model(tester):
    tester.create_and_check_model()


def test_masked_lm(tester):
    tester.create_and_check_masked_lm()


def test_next_visit_prediction(tester):
    tester.create_and_check_next_visit_prediction()


def test_pretraining(tester):
    tester.create_and_check_pretraining()


@pytest.mark.parametrize(
    "problem_type,num_labels,labels",
    [
        ("single_label_classification", 2, torch.tensor([0, 1, 1])),
        ("multi_label_classification", 4, torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]]).float()),
        ("multi_label_classification", 1, torch.tensor([[1.0], [0.0], [1.0]])),
        ("regression", 1, torch.tensor([0.5, -1.0, 2.0])),
        (None, 3, torch.tensor([0, 2, 1])),
    ],
)
def test_sequence_classification(problem_type, num_labels, labels):
    model, _ = BehrtModelTester().create_and_check_sequence_classification(problem_type, num_labels, labels)
    if problem_type is None:
        assert model.config.problem_type == "single_label_classification"


def test_class_weights_and_pos_weight_change_the_loss():
    tester = BehrtModelTester()
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 1])
    _, plain = tester.create_and_check_sequence_classification("single_label_classification", 2, labels)
    tester.config.class_weights = [1.0, 5.0]
    torch.manual_seed(0)
    model, weighted = tester.create_and_check_sequence_classification("single_label_classification", 2, labels)
    expected = torch.nn.functional.cross_entropy(weighted.logits, labels, weight=torch.tensor([1.0, 5.0]))
    torch.testing.assert_close(weighted.loss, expected)
    assert not torch.allclose(plain.loss, weighted.loss)

    tester.config.class_weights = None
    tester.config.pos_weight = [3.0]
    bce_labels = torch.tensor([[1.0], [0.0], [1.0]])
    _, out = tester.create_and_check_sequence_classification("multi_label_classification", 1, bce_labels)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, bce_labels, pos_weight=torch.tensor([3.0]))
    torch.testing.assert_close(out.loss, expected)


def test_weights_must_match_num_labels():
    with pytest.raises(ValueError, match="class_weights has 3 values but num_labels is 2"):
        BehrtForSequenceClassification(tiny_config(class_weights=[1.0, 2.0, 3.0]))


def test_nvp_pos_weight():
    tester = BehrtModelTester(nvp_pos_weight=4.0)
    model = BehrtForNextVisitPrediction(tester.config).eval()
    labels = torch.zeros(tester.batch_size, tester.config.vocab_size)
    labels[:, 5] = 1
    out = model(**tester.prepare_inputs(), labels=labels)
    pos_weight = torch.full((tester.config.vocab_size,), 4.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels, pos_weight=pos_weight)
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_save_load_round_trip(cls, tmp_path):
    tester = BehrtModelTester()
    model = cls(tester.config).eval()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"configuration_behrt.py", "modeling_behrt.py", "config.json"} <= files
    reloaded, info = cls.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        a, b = model(**inputs), reloaded.eval()(**inputs)
    for key in a.keys():
        if torch.is_tensor(a[key]):
            torch.testing.assert_close(a[key], b[key])


@pytest.mark.parametrize("head", [BehrtForMaskedLM, BehrtForSequenceClassification, BehrtForPreTraining])
def test_base_checkpoint_loads_into_any_head(head, tmp_path):
    base = BehrtModel(tiny_config())
    base.save_pretrained(tmp_path)
    model, info = head.from_pretrained(tmp_path, output_loading_info=True)
    # The backbone is loaded, the head weights are reported as new.
    assert info["missing_keys"], "the new head weights must be reported"
    assert all(not k.startswith("behrt.") for k in info["missing_keys"] if "pooler" not in k)
    torch.testing.assert_close(
        model.behrt.embeddings.code_embeddings.weight, base.embeddings.code_embeddings.weight
    )
    torch.testing.assert_close(
        model.behrt.encoder.layer[1].output.dense.weight, base.encoder.layer[1].output.dense.weight
    )


def test_pretraining_checkpoint_loads_fully_into_single_objective_heads(tmp_path):
    BehrtForPreTraining(tiny_config()).save_pretrained(tmp_path)
    for head in (BehrtForMaskedLM, BehrtForNextVisitPrediction):
        _, info = head.from_pretrained(tmp_path, output_loading_info=True)
        assert not info["missing_keys"], head


def test_mlm_decoder_is_tied_to_code_embeddings():
    for cls in (BehrtForMaskedLM, BehrtForPreTraining):
        model = cls(tiny_config())
        assert model.mlm_head.decoder.weight.data_ptr() == model.behrt.embeddings.code_embeddings.weight.data_ptr()
    untied = BehrtForMaskedLM(tiny_config(tie_word_embeddings=False))
    assert untied.mlm_head.decoder.weight.data_ptr() != untied.behrt.embeddings.code_embeddings.weight.data_ptr()


@pytest.mark.parametrize("position_encoding", ["token", "visit_sinusoidal"])
def test_sdpa_and_eager_agree(position_encoding):
    tester = BehrtModelTester(position_encoding=position_encoding)
    sdpa = BehrtForPreTraining(tester.config).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    eager_config = copy.deepcopy(tester.config)
    eager_config._attn_implementation = "eager"
    eager = BehrtForPreTraining(eager_config).eval()
    eager.load_state_dict(sdpa.state_dict())
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        a, b = sdpa(**inputs), eager(**inputs)
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(a.mlm_logits[mask], b.mlm_logits[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.nvp_logits, b.nvp_logits, atol=1e-5, rtol=1e-5)


def test_attentions_available_under_sdpa():
    tester = BehrtModelTester()
    model = BehrtModel(tester.config).eval()
    out = model(**tester.prepare_inputs(), output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == tester.config.num_hidden_layers
    assert out.attentions[0].shape == (3, 4, 12, 12)
    # rows are distributions, and padding receives no attention
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(3, 4, 12))
    assert out.attentions[0][1, :, :, 8:].abs().max() == 0
    assert len(out.hidden_states) == tester.config.num_hidden_layers + 1
    assert model(**tester.prepare_inputs()).attentions is None


def test_padding_does_not_change_real_tokens():
    """Extra right padding must leave the real tokens' outputs unchanged."""
    tester = BehrtModelTester()
    model = BehrtModel(tester.config).eval()
    inputs = tester.prepare_inputs()
    padded = {k: torch.nn.functional.pad(v, (0, 5)) for k, v in inputs.items()}
    with torch.no_grad():
        a = model(**inputs).last_hidden_state
        b = model(**padded).last_hidden_state[:, :12]
    mask = inputs["attention_mask"].bool()
    torch.testing.assert_close(a[mask], b[mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "last"])
def test_pooling(pooling):
    tester = BehrtModelTester(pooling=pooling)
    model = BehrtModel(tester.config).eval()
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        out = model(**inputs)
        h = out.last_hidden_state
        m = inputs["attention_mask"].unsqueeze(-1).float()
        lengths = inputs["attention_mask"].sum(1)  # right-padded: the last real token is at length - 1
        last = torch.stack([h[i, n - 1] for i, n in enumerate(lengths.tolist())])
        raw = {"cls": h[:, 0], "mean": (h * m).sum(1) / m.sum(1), "max": h.masked_fill(m == 0, -1e9).amax(1),
               "last": last}[pooling]
        expected = torch.tanh(model.pooler.dense(raw))
    torch.testing.assert_close(out.pooler_output, expected)


def _training_loss(model, inputs, labels):
    """The head's loss; for the bare `BehrtModel`, a scalar that depends on every output."""
    out = model(**inputs, **labels)
    if isinstance(model, BehrtModel):
        return out.last_hidden_state.pow(2).mean() + out.pooler_output.pow(2).mean()
    return out.loss


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(cls):
    tester = BehrtModelTester(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = tester.prepare_inputs()
    labels = tester.labels_for(cls, inputs)

    def loss_and_grads(model):
        """Loss, gradients, and how often the layers' attention ran (a checkpointed layer runs again in backward)."""
        model.train()
        calls = []
        backbone = model if isinstance(model, BehrtModel) else model.behrt
        hooks = [layer.attention.register_forward_hook(lambda *_: calls.append(1)) for layer in backbone.encoder.layer]
        loss = _training_loss(model, inputs, labels)
        loss.backward()
        for hook in hooks:
            hook.remove()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, len(calls)

    torch.manual_seed(0)
    plain = cls(tester.config)
    checkpointed = copy.deepcopy(plain)
    enable = getattr(checkpointed, "activation_checkpointing_enable", None) or checkpointed.gradient_checkpointing_enable
    enable()
    expected_loss, expected, plain_calls = loss_and_grads(plain)
    actual_loss, actual, checkpointed_calls = loss_and_grads(checkpointed)
    assert (plain_calls, checkpointed_calls) == (tester.config.num_hidden_layers, 2 * tester.config.num_hidden_layers)
    torch.testing.assert_close(actual_loss, expected_loss)
    assert expected and expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=1e-5, msg=name)


def test_visit_sinusoidal_positions_are_fixed_and_follow_visit_ids(tmp_path):
    config = tiny_config(position_encoding="visit_sinusoidal")
    model = BehrtModel(config)
    table = model.embeddings.visit_position_table
    assert not table.requires_grad and "embeddings.visit_position_table" not in dict(model.named_parameters())
    # scaled by default so that each dimension has an rms near initializer_range
    scale = math.sqrt(2) * config.initializer_range
    torch.testing.assert_close(table, scale * sinusoidal_table(config.max_position_embeddings, config.hidden_size))
    assert "embeddings.visit_position_table" in model.state_dict()  # saved with the weights
    # visit ids, not token positions, drive the encoding: changing them changes the output
    tester = BehrtModelTester(position_encoding="visit_sinusoidal")
    model.eval()
    inputs = tester.prepare_inputs()
    shifted = dict(inputs, visit_ids=(inputs["visit_ids"] + 1) * inputs["attention_mask"])
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).last_hidden_state, model(**shifted).last_hidden_state)
    with pytest.raises(ValueError, match="needs `visit_ids`"):
        model(input_ids=inputs["input_ids"])
    # the table survives a from_pretrained, as saved, even if the config would build another one
    with torch.no_grad():
        table.add_(torch.randn_like(table))
    model.save_pretrained(tmp_path)
    assert torch.equal(BehrtModel.from_pretrained(tmp_path).embeddings.visit_position_table, table)


def test_age_sinusoid_is_a_fixed_saved_table_that_tells_months_apart(tmp_path):
    config = tiny_config(age_unit="month", age_encoding="learned+sinusoid")
    model = BehrtModel(config).eval()
    table = model.embeddings.age_sinusoid_table
    assert table.shape == (config.age_vocab_size, config.hidden_size) and not table.requires_grad
    assert "embeddings.age_sinusoid_table" in model.state_dict()  # saved with the weights, never trained
    assert torch.count_nonzero(table[0]) == 0  # padding / unknown age adds nothing
    rms = table[1:].pow(2).mean().sqrt().item()
    assert rms == pytest.approx(config.initializer_range, rel=0.05)
    # the learned rows alone cannot tell two ages apart once they are equal; the sinusoid still does
    with torch.no_grad():
        model.embeddings.age_embeddings.weight.zero_()
    codes, ages = torch.tensor([[2, 7, 8]]), torch.tensor([[600, 600, 600]])
    with torch.no_grad():
        now, a_month_later = (model.embeddings(codes, age_ids=a) for a in (ages, ages + 1))
        assert not torch.allclose(now, a_month_later)
        plain = BehrtModel(tiny_config(age_unit="month")).embeddings.eval()
        plain.load_state_dict(model.embeddings.state_dict(), strict=False)
        torch.testing.assert_close(plain(codes, age_ids=ages), plain(codes, age_ids=ages + 1))
    model.save_pretrained(tmp_path)
    reloaded = BehrtModel.from_pretrained(tmp_path)
    assert reloaded.config.age_encoding == "learned+sinusoid"
    torch.testing.assert_close(reloaded.embeddings.age_sinusoid_table, age_sinusoid_table(config))


@pytest.mark.parametrize("unit", ["month", "year"])
def test_recency_buckets_count_back_from_the_last_visit(unit, tmp_path):
    """recency_encoding="buckets": each token's bucket is the time from its visit to the last one,
    read off the age ids; padding gets id 0, and a reloaded model computes the same."""
    config = tiny_config(age_unit=unit, recency_encoding="buckets")
    model = BehrtModel(config).eval()
    step = 12 if unit == "month" else 1  # age ids per year
    last = 70 * step + 1
    # [CLS] (the last visit's age), visits 10 years, 2 years and 6 months before, two codes of the last visit, padding
    ages = torch.tensor([[last, last - 10 * step, last - 2 * step, last - step // 2, last, last, 0]])
    expected = [1, 8, 7, 4 if unit == "month" else 1, 1, 1, 0]  # 2 years = 730.5 days: past the 730-day bound
    assert model.embeddings.recency_ids(ages).tolist() == [expected]
    # the same codes and ages, but the last visit a year later: every older token moves to another bucket
    codes = torch.tensor([[2, 7, 8, 9, 10, 11, 0]])
    mask = (ages > 0).long()
    later = torch.where(ages > 0, ages, 0).clone()
    later[0, [0, 4, 5]] += step
    with torch.no_grad():
        assert not torch.allclose(model(codes, attention_mask=mask, age_ids=ages).last_hidden_state,
                                  model(codes, attention_mask=mask, age_ids=later).last_hidden_state)
    assert torch.count_nonzero(model.embeddings.recency_embeddings.weight[0]) == 0
    model.save_pretrained(tmp_path)
    reloaded = BehrtModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(codes, attention_mask=mask, age_ids=ages).last_hidden_state,
                                   model(codes, attention_mask=mask, age_ids=ages).last_hidden_state)


def test_a_visit_sinusoidal_model_saved_before_the_scale_reloads_unscaled(tmp_path):
    """Folders written before the table was saved and scaled: no table in the weights, no
    `position_table*` in config.json. They were trained with the unscaled sinusoid."""
    import json

    from safetensors.torch import load_file, save_file

    config = tiny_config(position_encoding="visit_sinusoidal")
    BehrtModel(config).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    for key in ("position_table", "position_table_scale", "cls_shares_first_visit_position", "trainable_padding_rows"):
        raw.pop(key)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop("embeddings.visit_position_table")
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    reloaded = BehrtModel.from_pretrained(tmp_path)
    assert reloaded.config.position_table_scale == 1.0
    torch.testing.assert_close(reloaded.embeddings.visit_position_table,
                               sinusoidal_table(config.max_position_embeddings, config.hidden_size))


@pytest.mark.parametrize("kind", ["sinusoid", "paper_sinusoid", "random"])
def test_position_table_kinds_scales_and_reload(kind, tmp_path):
    config = tiny_config(position_encoding="visit_sinusoidal", position_table=kind)
    table = BehrtModel(config).embeddings.visit_position_table
    rms = table.pow(2).mean(0).sqrt()  # (H,) per dimension, over the 64 positions
    if kind == "random":
        assert abs(float(table.std()) - config.initializer_range) < 0.003
    else:  # sinusoids: the largest entries sqrt(2) * initializer_range, not 1
        assert math.isclose(float(table.abs().max()), math.sqrt(2) * config.initializer_range, rel_tol=1e-3)
        assert float(rms.max()) < 1.5 * config.initializer_range
        unscaled = BehrtModel(tiny_config(position_encoding="visit_sinusoidal", position_table=kind,
                                          position_table_scale=1.0)).embeddings.visit_position_table
        torch.testing.assert_close(unscaled * math.sqrt(2) * config.initializer_range, table)
    model = BehrtModel(config)
    model.save_pretrained(tmp_path)
    reloaded = BehrtModel.from_pretrained(tmp_path)
    assert reloaded.config.position_table == kind and reloaded.config.position_table_scale is None
    assert torch.equal(reloaded.embeddings.visit_position_table, model.embeddings.visit_position_table)
    with pytest.raises(Exception, match="position_table_scale must be positive"):
        tiny_config(position_table_scale=0.0)


def test_cls_can_share_the_first_visits_position():
    tester = BehrtModelTester(position_encoding="visit_sinusoidal", cls_shares_first_visit_position=True)
    model = BehrtModel(tester.config).eval()
    inputs = tester.prepare_inputs()
    shifted = (inputs["visit_ids"] - 1).clamp(min=0)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).last_hidden_state,
                                   model(**inputs, position_ids=shifted).last_hidden_state)
        assert not torch.allclose(model(**inputs).last_hidden_state,
                                  model(**inputs, position_ids=inputs["visit_ids"]).last_hidden_state)


@pytest.mark.parametrize("trainable", [False, True])
def test_padding_rows_are_trained_only_when_asked(trainable):
    tester = BehrtModelTester(trainable_padding_rows=trainable)
    model = BehrtModel(tester.config)  # no tied decoder: the input side alone
    embeddings = model.embeddings
    assert bool(embeddings.code_embeddings.weight[0].abs().sum() > 0) == trainable
    inputs = tester.prepare_inputs()  # row 1 ends in [PAD] tokens
    inputs["age_ids"][:, 0] = 0  # a token with the padding age
    model(**inputs).last_hidden_state.pow(2).sum().backward()
    assert bool(embeddings.age_embeddings.weight.grad[0].abs().sum() > 0) == trainable
    assert bool(embeddings.code_embeddings.weight.grad[0].abs().sum() > 0) == trainable


def test_out_of_range_ids_give_a_clear_error():
    tester = BehrtModelTester()
    model = BehrtModel(tester.config).eval()
    inputs = tester.prepare_inputs()
    with pytest.raises(ValueError, match=r"age_ids holds the id 500, outside the embedding's range \[0, 122\)"):
        model(**dict(inputs, age_ids=inputs["age_ids"].clone().fill_(500)))
    with pytest.raises(ValueError, match="input_ids holds the id 99"):
        model(**dict(inputs, input_ids=inputs["input_ids"].clone().fill_(99)))
    with pytest.raises(ValueError, match=r"segment_ids holds the id 2, outside the embedding's range \[0, 2\)"):
        model(**dict(inputs, segment_ids=inputs["segment_ids"].clone().fill_(2)))
    with pytest.raises(ValueError, match=r"position_ids holds the id -1, outside the embedding's range \[0, 64\)"):
        model(**inputs, position_ids=torch.full_like(inputs["input_ids"], -1))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        model(input_ids=torch.ones(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of"):
        model()
    # with visit positions the visit ids are the position ids, checked the same way
    visits = BehrtForSequenceClassification(tiny_config(position_encoding="visit_sinusoidal")).eval()
    with pytest.raises(ValueError, match="position_ids holds the id 64"):
        visits(**dict(inputs, visit_ids=inputs["visit_ids"].clone().fill_(64)))


@pytest.mark.parametrize("position_encoding", ["token", "visit_sinusoidal"])
@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_forward_reads_nothing_back_from_an_accelerator(cls, position_encoding):
    """Off the CPU, forward must not sync with the host (`.tolist()`, `.item()`, `bool(t)`) to check
    ids or look at the mask: it would stall the device every step. Meta tensors stand in for an
    accelerator's: reading one back raises, so a forward that completes read nothing back, even
    with out-of-range ids and padding."""
    tester = BehrtModelTester(position_encoding=position_encoding)
    with torch.device("meta"):
        model = cls(tester.config)
    inputs = {k: v.to("meta") for k, v in tester.prepare_inputs().items()}
    inputs["age_ids"] = torch.full_like(inputs["age_ids"], 10_000)  # out of range: unchecked off the CPU
    labels = {k: v.to("meta") for k, v in tester.labels_for(cls, tester.prepare_inputs()).items()}
    out = model(**inputs, **labels)
    assert out[0].device.type == "meta"
    assert _check_id_ranges(age_ids=(inputs["age_ids"], 3)) is None


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_forward_signature_names_what_the_trainer_reads(cls):
    """The Trainer keeps the dataset columns `forward` names (`remove_unused_columns`) and takes its
    label names from the parameters containing "label"; `**kwargs` must not make it pass
    `num_items_in_batch` (our losses are means over their own batch)."""
    params = inspect.signature(cls.forward).parameters
    assert set(BehrtTokenizerFast.model_input_names) <= set(params)
    expected = {BehrtModel: [], BehrtForPreTraining: ["labels", "next_visit_labels"]}.get(cls, ["labels"])
    assert find_labels(cls) == expected
    assert cls.accepts_loss_kwargs is False


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_keyword_inputs_pass_through_to_the_backbone(cls):
    tester = BehrtModelTester()
    torch.manual_seed(0)
    model = cls(tester.config).eval()
    backbone = model if cls is BehrtModel else model.behrt
    inputs = tester.prepare_inputs()
    labels = tester.labels_for(cls, inputs)
    with torch.no_grad():
        out = model(**inputs, **labels, output_attentions=True, output_hidden_states=True)
        assert len(out.hidden_states) == tester.config.num_hidden_layers + 1
        assert len(out.attentions) == tester.config.num_hidden_layers
        embeds = backbone.embeddings.code_embeddings(inputs["input_ids"])
        from_embeds = model(**dict(inputs, input_ids=None), inputs_embeds=embeds, **labels)
        torch.testing.assert_close(from_embeds[0], out[0])
        shifted = model(**inputs, **labels, position_ids=torch.arange(1, tester.seq_length + 1).expand(3, -1))
        assert not torch.allclose(shifted[1 if labels else 0], out[1 if labels else 0])
        as_tuple = model(**inputs, **labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out[0])  # the loss first when labels are given
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['age_id'\]"):
        model(**inputs, age_id=inputs["age_ids"])


def test_return_tuple():
    tester = BehrtModelTester()
    model = BehrtForMaskedLM(tester.config).eval()
    out = model(**tester.prepare_inputs(), return_dict=False)
    assert isinstance(out, tuple) and out[0].shape[-1] == tester.config.vocab_size


def test_config_round_trip_and_validation(tmp_path):
    config = BehrtConfig.from_preset("original", vocab_size=77, age_unit="month")
    config.save_pretrained(tmp_path)
    loaded = BehrtConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.age_vocab_size == 110 * 12 + 2  # the BEHRT code's 1,322 age rows
    with pytest.raises(ValueError, match="Unknown BEHRT preset 'huge'"):
        BehrtConfig.from_preset("huge")
    with pytest.raises(Exception, match="not a multiple of num_attention_heads"):
        BehrtConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(Exception, match="pooling"):
        BehrtConfig(pooling="sum")


def test_preset_parameter_counts():
    """The planned sizes at vocab 1000: small ~0.5M, medium 2-3M, large 10-15M; original is BEHRT's shape.
    Built on the meta device: shapes without memory or initialisation."""
    counts = {}
    for name in ("small", "medium", "large", "original"):
        with torch.device("meta"):
            counts[name] = BehrtForMaskedLM(BehrtConfig.from_preset(name, vocab_size=1000)).num_parameters()
    assert 0.4e6 <= counts["small"] <= 0.6e6, counts
    assert 2e6 <= counts["medium"] <= 3e6, counts
    assert 10e6 <= counts["large"] <= 15e6, counts
    original = BehrtConfig.from_preset("original")
    assert (original.hidden_size, original.num_hidden_layers, original.num_attention_heads,
            original.intermediate_size, original.position_encoding, original.type_vocab_size) == (
        288, 6, 12, 512, "visit_sinusoidal", 2)


# --- layer-norm position ---------------------------------------------------------------------


def _layer_by_hand(layer, x):
    """One encoder layer written out from its weights (eval mode, no mask): pre-LN is
    h = x + attn(LN1(x)), out = h + ffn(LN2(h)); post-LN is h = LN1(x + attn(x)), out = LN2(h + ffn(h))."""
    att, pre = layer.attention, layer.attention.output.pre_ln
    ln1, ln2 = att.output.LayerNorm, layer.output.LayerNorm

    def attn(h):
        b, t, d = h.shape
        heads = att.self.num_heads
        q, k, v = (m(h).view(b, t, heads, d // heads).transpose(1, 2) for m in (att.self.query, att.self.key, att.self.value))
        weights = ((q @ k.transpose(-1, -2)) / (d // heads) ** 0.5).softmax(-1)
        return att.output.dense((weights @ v).transpose(1, 2).reshape(b, t, d))

    def ffn(h):
        return layer.output.dense(torch.nn.functional.gelu(layer.intermediate.dense(h)))

    if pre:
        h = x + attn(ln1(x))
        return h + ffn(ln2(h))
    h = ln1(x + attn(x))
    return ln2(h + ffn(h))


@pytest.mark.parametrize("position", ["post", "pre"])
def test_layer_norm_position_computes_its_layout(position):
    model = BehrtModel(tiny_config(layer_norm_position=position)).eval()
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        got, _ = model.encoder.layer[0](x)
        expected = _layer_by_hand(model.encoder.layer[0], x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_pre_ln_has_a_final_layer_norm_and_the_same_layer_parameters():
    post, pre = BehrtModel(tiny_config()), BehrtModel(tiny_config(layer_norm_position="pre"))
    extra = set(pre.state_dict()) - set(post.state_dict())
    assert extra == {"encoder.LayerNorm.weight", "encoder.LayerNorm.bias"}
    assert set(post.state_dict()) <= set(pre.state_dict())
    tester = BehrtModelTester(layer_norm_position="pre")
    pre.eval()
    with torch.no_grad():
        out = pre(**tester.prepare_inputs(), output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    # the last hidden state is normalised: zero mean, unit variance over the hidden dimension
    torch.testing.assert_close(out.last_hidden_state.mean(-1), torch.zeros(3, 12), atol=1e-5, rtol=0)


def test_pre_ln_round_trips_and_defaults_to_post_for_old_configs(tmp_path):
    tester = BehrtModelTester(layer_norm_position="pre")
    model = BehrtForPreTraining(tester.config).eval()
    model.save_pretrained(tmp_path)
    reloaded, info = BehrtForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert reloaded.config.layer_norm_position == "pre"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = tester.prepare_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).mlm_logits, reloaded.eval()(**inputs).mlm_logits)
    saved = tiny_config().to_dict()
    saved.pop("layer_norm_position")  # a config.json written before the field existed
    assert BehrtConfig(**{k: v for k, v in saved.items() if k != "model_type"}).layer_norm_position == "post"
    with pytest.raises(Exception):
        tiny_config(layer_norm_position="middle")


@pytest.mark.parametrize("mode", ["mimetic_qk", "mimetic"])
def test_mimetic_init_sets_the_attention_products(mode):
    torch.manual_seed(0)
    config = tiny_config(attention_init=mode)
    model = BehrtModel(config)
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = d // heads
    for layer in model.encoder.layer:
        attention = layer.attention
        for h in range(heads):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            qk = attention.self.query.weight[rows].T @ attention.self.key.weight[rows]  # (d, d), rank head_dim
            # the best rank-head_dim part of 0.7 Z + 0.7 I: its diagonal is clearly positive
            assert qk.diagonal().mean() > 0.1 and torch.linalg.matrix_rank(qk) <= head_dim
        vo = attention.output.dense.weight @ attention.self.value.weight
        if mode == "mimetic":
            assert -0.5 < vo.diagonal().mean() < -0.3  # 0.4 Z - 0.4 I, full rank
        else:
            assert abs(vo.diagonal().mean()) < 0.01  # the ordinary normal(0.02) initialisation
    with pytest.raises(Exception, match="attention_init"):
        tiny_config(attention_init="xavier")


def test_mimetic_init_attends_within_the_visit_from_the_first_step():
    """The cause of the pretraining plateau: a head attending to the other codes of its own visit has
    to grow from nothing under the normal initialisation; the mimetic one (the default) starts with it."""
    assert BehrtConfig().attention_init == "mimetic_qk"
    tester = BehrtModelTester()
    inputs = tester.prepare_inputs()
    inputs["age_ids"] = (inputs["visit_ids"] + 30) * inputs["attention_mask"]  # one age per visit, as in a record
    others = ~torch.eye(tester.seq_length, dtype=torch.bool)
    same_visit = (inputs["visit_ids"][0, :, None] == inputs["visit_ids"][0, None, :]) & others
    for seed in range(3):
        ratio = {}
        for mode in ("normal", "mimetic_qk"):
            torch.manual_seed(seed)
            model = BehrtModel(tiny_config(attention_init=mode)).eval()
            with torch.no_grad():
                weights = model(**inputs, output_attentions=True).attentions[0][0]  # the unpadded patient: (heads, T, T)
            # mean weight on a token of the same visit / on a token of another visit
            ratio[mode] = float(weights[:, same_visit].mean() / weights[:, others & ~same_visit].mean())
        assert abs(ratio["normal"] - 1) < 0.05, seed
        assert ratio["mimetic_qk"] > 1.5, seed  # 1.9-2.8 on seeds 0-2


def test_mimetic_init_never_overwrites_loaded_weights(tmp_path):
    torch.manual_seed(0)
    model = BehrtForMaskedLM(tiny_config(attention_init="mimetic")).eval()
    model.save_pretrained(tmp_path)
    torch.manual_seed(1)  # a different draw would give other weights if they were re-initialised
    reloaded = BehrtForMaskedLM.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
