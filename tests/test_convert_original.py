"""The `original` preset and `behrt-convert-original` against a re-creation of the original BEHRT code.

`tests/original_behrt.py` re-creates the original modules and data loader; every tensor of its
models is randomised, the state_dict and vocabulary pickle are converted, and both sides encode
the same patients with their own input code. MLM and next-visit logits must agree within 1e-5,
also after save_pretrained / from_pretrained.
"""

import pickle
import random

import numpy as np
import pytest
import torch

from behrt_hf import BehrtConfig, BehrtForMaskedLM, BehrtForNextVisitPrediction, BehrtForPreTraining, BehrtTokenizerFast
from behrt_hf.convert_original import (
    NON_TARGET_BIAS,
    OriginalCheckpointError,
    age_order,
    code_order,
    convert_original_checkpoint,
)
from tests import original_behrt as orig

MAX_LEN = 64
TOLERANCE = 1e-5


def original_vocab(seed=0) -> dict[str, int]:
    """Codes C0..C29 and the five specials, in a shuffled order (specials not first, not in ours)."""
    tokens = ["PAD", "UNK", "SEP", "CLS", "MASK"] + [f"C{i}" for i in range(30)]
    random.Random(seed).shuffle(tokens)
    return {token: i for i, token in enumerate(tokens)}


def visit(age_months: int, codes: list[str]) -> dict:
    return {"time": None, "age": (age_months + 0.5) / 12, "codes": codes}


def cohort(seed=0) -> list[dict]:
    """Short and long patients: cuts inside a visit, a cut that starts on a [SEP], ages past 110
    years, codes the vocabulary lacks (UNK)."""
    rng = random.Random(seed)
    codes = [f"C{i}" for i in range(34)]  # C30..C33 are not in the vocabulary
    patients = []
    for p in range(10):
        n_visits = rng.choice([1, 2, 5, 12, 25])
        month = rng.randrange(0, 1200)
        visits = []
        for _ in range(n_visits):
            visits.append(visit(month, rng.sample(codes, rng.randint(1, 6))))
            month += rng.randrange(0, 40)
        patients.append({"patient_id": f"p{p}", "sex": "F", "visits": visits})
    # 3 codes + [SEP], then 31 visits of 2 tokens: 66 tokens, the last 63 begin on the first [SEP]
    sep_cut = [visit(500, ["C1", "C2", "C3"])] + [visit(501 + i, [f"C{i % 30}"]) for i in range(31)]
    patients.append({"patient_id": "sep_cut", "sex": "M", "visits": sep_cut})
    old = [visit(1300 + 3 * i, ["C4", "C31", "C5"]) for i in range(8)]  # crosses 110 years = 1320 months
    patients.append({"patient_id": "old", "sex": "M", "visits": old})
    return patients


def original_inputs(patients, token2idx) -> dict[str, torch.Tensor]:
    rows = [orig.encode(*orig.behrt_format(p), token2idx, orig.age_vocab(110), MAX_LEN) for p in patients]
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def our_inputs(patients, tokenizer) -> dict[str, torch.Tensor]:
    batch = {k: [p[k] for p in patients] for k in ("patient_id", "sex", "visits")}
    encoded = tokenizer.encode_patients(batch)
    out = {}
    for name, rows in encoded.items():
        fill = tokenizer.pad_token_id if name == "input_ids" else 0
        out[name] = torch.tensor([row + [fill] * (MAX_LEN - len(row)) for row in rows])
    return out


def checkpoint(tmp_path, model, token2idx, name):
    torch.save(model.state_dict(), tmp_path / f"{name}.pt")
    with open(tmp_path / "vocab.pkl", "wb") as f:
        pickle.dump({"token2idx": token2idx, "idx2token": {i: t for t, i in token2idx.items()}}, f)
    return tmp_path / f"{name}.pt", tmp_path / "vocab.pkl"


@pytest.fixture(scope="module")
def setting():
    token2idx = original_vocab()
    config = orig.original_config(vocab_size=len(token2idx))
    patients = cohort()
    return token2idx, config, patients, original_inputs(patients, token2idx)


def real(mask):
    return mask.bool()


def test_both_sides_encode_the_same_tokens_ages_positions_and_segments(setting, tmp_path):
    token2idx, config, patients, theirs = setting
    torch.manual_seed(0)
    model = orig.ForMaskedLM(config)
    _, tokenizer = convert_original_checkpoint(*checkpoint(tmp_path, model, token2idx, "mlm"), num_attention_heads=4)
    ours = our_inputs(patients, tokenizer)
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    mask = real(theirs["attention_mask"])
    assert {int(n) for n in mask.sum(1)} >= {MAX_LEN - 1, MAX_LEN}  # both truncation cases occur
    order = torch.tensor(code_order(token2idx))
    assert torch.equal(order[ours["input_ids"]][mask], theirs["input_ids"][mask])
    assert torch.equal(torch.tensor(age_order(1322))[ours["age_ids"]][mask], theirs["age_ids"][mask])
    assert (theirs["age_ids"][mask] == 1).any()  # ages past 110 years: UNK in the original
    assert torch.equal((ours["visit_ids"] - 1).clamp(min=0)[mask], theirs["posi_ids"][mask])
    assert torch.equal(ours["segment_ids"][mask], theirs["seg_ids"][mask])
    assert (theirs["input_ids"][mask] == token2idx["UNK"]).any()


def max_mlm_diff(model, ours, theirs_logits, token2idx) -> float:
    with torch.no_grad():
        out = model(**ours)
    logits = out.mlm_logits if isinstance(model, BehrtForPreTraining) else out.logits
    mask = real(ours["attention_mask"])
    expected = theirs_logits[..., torch.tensor(code_order(token2idx))]
    return float((logits - expected)[mask].abs().max())


def test_mlm_logits_match_the_original(setting, tmp_path):
    token2idx, config, patients, theirs = setting
    torch.manual_seed(1)
    original = orig.ForMaskedLM(config).eval()
    orig.randomise(original, seed=1)
    with torch.no_grad():
        expected = original(**theirs)
    model, tokenizer = convert_original_checkpoint(
        *checkpoint(tmp_path, original, token2idx, "mlm"), tmp_path / "converted", num_attention_heads=4
    )
    assert isinstance(model, BehrtForPreTraining)  # keeps the pooler the original trained
    diff = max_mlm_diff(model, our_inputs(patients, tokenizer), expected, token2idx)
    reloaded = BehrtForMaskedLM.from_pretrained(tmp_path / "converted").eval()
    tokenizer = BehrtTokenizerFast.from_pretrained(tmp_path / "converted")
    reloaded_diff = max_mlm_diff(reloaded, our_inputs(patients, tokenizer), expected, token2idx)
    # in float64 the two computations agree to rounding: the mapping itself is exact
    original.double()
    with torch.no_grad():
        expected64 = original(**theirs)
    diff64 = max_mlm_diff(model.double(), our_inputs(patients, tokenizer), expected64, token2idx)
    print(f"MLM logits: max |diff| {diff:.2e} converted, {reloaded_diff:.2e} after from_pretrained, "
          f"{diff64:.2e} in float64 (logits up to {float(expected.abs().max()):.1f})")
    assert diff <= TOLERANCE and reloaded_diff <= TOLERANCE and diff64 <= 1e-10
    # the frozen table is saved with the weights and stays frozen
    table = original.bert.embeddings.posi_embeddings.weight
    assert torch.equal(reloaded.behrt.embeddings.visit_position_table, table)
    assert "behrt.embeddings.visit_position_table" not in dict(reloaded.named_parameters())


def test_next_visit_logits_and_loss_match_the_original(setting, tmp_path):
    token2idx, config, patients, theirs = setting
    labels = [t for t in token2idx if t not in ("PAD", "SEP", "CLS", "MASK")]
    torch.manual_seed(2)
    original = orig.ForMultiLabelPrediction(config, num_labels=len(labels)).eval()
    orig.randomise(original, seed=2)
    targets = (torch.rand(len(patients), len(labels), generator=torch.Generator().manual_seed(0)) < 0.2).float()
    with torch.no_grad():
        expected_loss, expected = original(**theirs, labels=targets)
    model, tokenizer = convert_original_checkpoint(
        *checkpoint(tmp_path, original, token2idx, "nvp"), tmp_path / "converted", num_attention_heads=4
    )
    assert isinstance(model, BehrtForNextVisitPrediction)
    vocab = tokenizer.get_vocab()
    columns = torch.tensor([vocab[f"[{t}]" if t == "UNK" else t] for t in labels])
    our_targets = torch.zeros(len(patients), len(vocab))
    our_targets[:, columns] = targets

    def diffs(m, tok):
        with torch.no_grad():
            out = m(**our_inputs(patients, tok), labels=our_targets)
        return float((out.logits[:, columns] - expected).abs().max()), out

    diff, out = diffs(model, tokenizer)
    reloaded_diff, _ = diffs(
        BehrtForNextVisitPrediction.from_pretrained(tmp_path / "converted").eval(),
        BehrtTokenizerFast.from_pretrained(tmp_path / "converted"),
    )
    print(f"next-visit logits: max |diff| {diff:.2e} converted, {reloaded_diff:.2e} after from_pretrained")
    assert diff <= TOLERANCE and reloaded_diff <= TOLERANCE
    others = torch.ones(len(vocab), dtype=torch.bool)
    others[columns] = False
    assert (out.logits[:, others] == NON_TARGET_BIAS).all()
    # MultiLabelSoftMarginLoss averages over V - 4 labels, ours over all V columns
    torch.testing.assert_close(out.loss, expected_loss * len(labels) / len(vocab), atol=1e-6, rtol=1e-5)


def test_a_checkpoint_with_both_heads_becomes_a_pretraining_model(setting, tmp_path):
    token2idx, config, patients, theirs = setting
    mlm = orig.ForMaskedLM(config)
    state = dict(mlm.state_dict())
    state["classifier.weight"] = torch.randn(len(token2idx) - 4, config.hidden_size)
    state["classifier.bias"] = torch.randn(len(token2idx) - 4)
    model, tokenizer = convert_original_checkpoint(state, token2idx, num_attention_heads=4)
    assert isinstance(model, BehrtForPreTraining)
    vocab = tokenizer.get_vocab()
    assert torch.equal(model.nvp_head.decoder.bias[vocab["C7"]], state["classifier.bias"][list(token2idx).index("C7") - sum(
        list(token2idx).index(s) < list(token2idx).index("C7") for s in ("PAD", "SEP", "CLS", "MASK"))])
    assert model.config.position_table == "random" and model.config.cls_shares_first_visit_position


def test_bad_checkpoints_and_vocabularies_are_named(setting):
    token2idx, config, _, _ = setting
    state = orig.ForMaskedLM(config).state_dict()
    with pytest.raises(OriginalCheckpointError, match=r"lacks the special tokens \['MASK'\]"):
        convert_original_checkpoint(state, {t: i for t, i in token2idx.items() if t != "MASK"})
    with pytest.raises(OriginalCheckpointError, match="code rows but the vocabulary"):
        convert_original_checkpoint(state, {**token2idx, "EXTRA": len(token2idx)}, num_attention_heads=4)
    with pytest.raises(OriginalCheckpointError, match="does not have.*bert.extra"):
        convert_original_checkpoint({**state, "bert.extra.weight": torch.zeros(1)}, token2idx, num_attention_heads=4)
    with pytest.raises(OriginalCheckpointError, match="age rows do not fit"):
        convert_original_checkpoint({**state, "bert.embeddings.age_embeddings.weight": torch.zeros(100, 32)},
                                    token2idx, num_attention_heads=4)


def test_the_original_preset_is_what_the_code_computes():
    config = BehrtConfig.from_preset("original", vocab_size=50)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        288, 6, 12, 512)
    assert config.age_vocab_size == 1322 and config.max_position_embeddings == 64
    assert config.position_encoding == "visit_sinusoidal" and config.position_table == "random"
    assert config.trainable_padding_rows and config.cls_shares_first_visit_position
    # the intended sinusoid of the code, as our paper_sinusoid table (unscaled)
    from behrt_hf.modeling_behrt import paper_sinusoidal_table

    torch.testing.assert_close(paper_sinusoidal_table(64, 32), orig.intended_sinusoid(64, 32), atol=1e-6, rtol=0)
    assert np.isclose(float(paper_sinusoidal_table(64, 32).abs().max()), 1.0)


def test_the_command_line_converts_a_checkpoint_folder(setting, tmp_path, capsys):
    from behrt_hf.training import convert_original

    token2idx, config, _, _ = setting
    ckpt, vocab = checkpoint(tmp_path, orig.ForMultiLabelPrediction(config, num_labels=len(token2idx) - 4),
                             token2idx, "nvp")
    convert_original.main([str(ckpt), str(vocab), "--output_dir", str(tmp_path / "out"), "--num_attention_heads", "4"])
    assert "BehrtForNextVisitPrediction" in capsys.readouterr().out
    tokenizer = BehrtTokenizerFast.from_pretrained(tmp_path / "out")
    assert (tokenizer.truncate_by, tokenizer.cls_age, tokenizer.age_unit, tokenizer.max_age) == ("token", "first", "month", 110)
    assert tokenizer.model_max_length == MAX_LEN
    assert BehrtForNextVisitPrediction.from_pretrained(tmp_path / "out").config.trainable_padding_rows


def test_token_truncation_is_the_same_from_arrow_and_python_batches(setting):
    import pyarrow as pa

    from behrt_hf import patient_features

    _, _, patients, _ = setting
    tokenizer = BehrtTokenizerFast.build_vocab(patients, model_max_length=MAX_LEN, truncate_by="token", cls_age="first")
    rows = [dict(p, visits=[dict(v, time=None) for v in p["visits"]]) for p in patients]
    table = pa.Table.from_pylist(rows, schema=patient_features().arrow_schema)
    from_arrow = tokenizer.encode_patients(table).to_pydict()
    from_python = tokenizer.encode_patients({k: [p[k] for p in rows] for k in ("patient_id", "sex", "visits")})
    assert {k: from_arrow[k] for k in from_python} == from_python
    assert max(len(ids) for ids in from_python["input_ids"]) == MAX_LEN
    with pytest.raises(ValueError, match="truncate_by must be one of"):
        BehrtTokenizerFast.build_vocab(patients, truncate_by="visits")


def test_pretraining_the_original_preset_encodes_as_the_original(tmp_path):
    from behrt_hf.training import pretrain
    from tests.helpers import make_patients
    from tests.test_pretrain import COMMON, save_cohort  # COMMON: tiny sizes, CPU, a seed

    data = save_cohort(tmp_path / "data", make_patients(40, seed=1, max_visits=7), make_patients(10, seed=2, max_visits=7))
    out = tmp_path / "run"
    pretrain.main(["--dataset_path", data, "--output_dir", str(out), "--preset", "original", "--objective", "mlm",
                   "--do_train", "--max_steps", "2", "--per_device_train_batch_size", "8", *COMMON])
    tokenizer = BehrtTokenizerFast.from_pretrained(out)
    assert (tokenizer.age_unit, tokenizer.max_age, tokenizer.truncate_by, tokenizer.cls_age) == ("month", 110, "token", "first")
    config = BehrtConfig.from_pretrained(out)
    assert config.age_vocab_size == 1322 and config.position_table == "random" and config.trainable_padding_rows
