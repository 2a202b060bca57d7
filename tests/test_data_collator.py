"""Pretraining collators: MLM masking rules, next-visit cuts without leakage, static eval targets."""

import json

import numpy as np
import pytest
import torch

from behrt_hf import BehrtTokenizerFast
from behrt_hf.data_collator import DataCollatorForPretraining, static_pretraining_targets
from behrt_hf.encoding import count_visits, mask_codes, next_visit_cut
from behrt_hf.objectives import Objective
from behrt_hf.sampler import CutLengthGroupedSampler
from tests.helpers import make_patients


@pytest.fixture(scope="module")
def tokenizer():
    return BehrtTokenizerFast.build_vocab(make_patients(50, seed=0))


@pytest.fixture(scope="module")
def encoded(tokenizer):
    return [tokenizer.encode_patient(p) for p in make_patients(64, seed=1, max_visits=7) if len(p["visits"]) >= 2]


def test_mask_codes_respects_specials_padding_and_proportions(tokenizer):
    rng = np.random.default_rng(0)
    first = tokenizer.first_code_id
    assert first == 5  # [PAD] [UNK] [CLS] [SEP] [MASK]
    ids = rng.integers(first, len(tokenizer), size=(400, 100))
    ids[:, 0], ids[:, 50], ids[:, 90:] = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    ids[:, 10] = tokenizer.unk_token_id
    ids[:, 95:] = first  # past each row's length (95): never masked, whatever the id
    rngs = [np.random.default_rng(row) for row in range(len(ids))]
    masked, labels = mask_codes(ids, np.full(len(ids), 95), ids >= first, rngs, tokenizer.mask_token_id, first,
                                len(tokenizer))
    selected = labels != -100
    assert not selected[:, [0, 10, 50]].any() and not selected[:, 90:].any()
    assert (labels[selected] == ids[selected]).all()
    assert (masked[~selected] == ids[~selected]).all()
    share = selected.sum() / (ids[:, :95] >= first).sum()
    assert 0.14 < share < 0.16
    became_mask = (masked[selected] == tokenizer.mask_token_id).mean()
    unchanged = (masked[selected] == ids[selected]).mean()
    assert 0.77 < became_mask < 0.83 and 0.08 < unchanged < 0.12 + 1 / len(tokenizer)
    assert (masked[selected & (masked != tokenizer.mask_token_id)] >= first).all()  # random codes, never specials


def test_masking_always_selects_something_when_possible(tokenizer):
    ids = np.array([[2, 5, 3], [2, 6, 3]])
    rngs = [np.random.default_rng(0), np.random.default_rng(1)]
    _, labels = mask_codes(ids, np.array([3, 3]), ids >= 5, rngs, 4, 5, len(tokenizer), mlm_probability=1e-9)
    assert (labels != -100).sum(1).tolist() == [1, 1]  # one per row


def test_mlm_collator_batches(tokenizer, encoded):
    torch.manual_seed(0)
    collate = DataCollatorForPretraining(tokenizer, objective="mlm")
    batch = collate(encoded[:8])
    assert set(batch) == {"input_ids", "age_ids", "segment_ids", "visit_ids", "attention_mask", "labels"}
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["labels"] != -100).any()
    assert 0.0 <= collate.padding_fraction < 1.0
    torch.manual_seed(0)
    again = DataCollatorForPretraining(tokenizer, objective="mlm")(encoded[:8])
    assert torch.equal(batch["input_ids"], again["input_ids"])  # seeded by torch's global RNG


def test_next_visit_cut_never_leaks_the_target_visit(tokenizer, encoded):
    for feature in encoded:
        n = max(feature["visit_ids"])
        for target in range(2, n + 1):
            cut, codes = next_visit_cut(feature, target, tokenizer.sep_token_id, tokenizer.cls_age)
            assert max(cut["visit_ids"]) == target - 1  # only visits before the target
            # no later age either: [CLS] carries the age of the last visit left in the input
            assert cut["age_ids"][0] == cut["age_ids"][-1] == max(cut["age_ids"])
            assert len(cut["input_ids"]) == feature["visit_ids"].index(target)
            expected = [t for t, v in zip(feature["input_ids"], feature["visit_ids"])
                        if v == target and t != tokenizer.sep_token_id]
            assert codes == expected


def test_nvp_collator_targets_match_the_visit_after_the_input(tokenizer, encoded):
    torch.manual_seed(1)
    batch = DataCollatorForPretraining(tokenizer, objective="mlm+nvp")(encoded[:16])
    first = tokenizer.first_code_id
    for row, feature in enumerate(encoded[:16]):
        length = int(batch["attention_mask"][row].sum())
        k = int(batch["visit_ids"][row, :length].max())  # last visit in the input
        target_codes = {t for t, v in zip(feature["input_ids"], feature["visit_ids"])
                        if v == k + 1 and t >= first}
        assert set(torch.nonzero(batch["next_visit_labels"][row]).flatten().tolist()) == target_codes
        assert length == feature["visit_ids"].index(k + 1)  # nothing of visit k+1 or later in the input
        ages = batch["age_ids"][row, :length]
        assert ages[0] == ages[-1] == ages.max()  # [CLS]: the input's last age, never the target visit's
    assert batch["labels"].shape == batch["input_ids"].shape


def test_nvp_needs_two_visits(tokenizer):
    single = tokenizer.encode_patient(make_patients(1, seed=5, max_visits=1)[0])
    with pytest.raises(ValueError, match="at least two visits"):
        DataCollatorForPretraining(tokenizer, objective="nvp")([single])


def test_static_targets_are_deterministic_and_used_as_is(tokenizer, encoded):
    a = [static_pretraining_targets(f, i, tokenizer, "mlm+nvp", seed=3) for i, f in enumerate(encoded[:8])]
    b = [static_pretraining_targets(f, i, tokenizer, "mlm+nvp", seed=3) for i, f in enumerate(encoded[:8])]
    assert a == b
    for f, s in zip(encoded, a):  # NVP: the last visit is the target
        n = max(f["visit_ids"])
        assert max(s["visit_ids"]) == n - 1 and len(s["input_ids"]) == f["visit_ids"].index(n)
    collate = DataCollatorForPretraining(tokenizer, objective="mlm+nvp")
    x, y = collate(a), collate(a)
    for key in x:
        assert torch.equal(x[key], y[key]), key
    assert (x["labels"] != -100).sum() == sum(int(np.sum(np.asarray(s["labels"]) != -100)) for s in a)


@pytest.mark.parametrize("bad", [dict(objective="mlm+x"), dict(mlm_probability=0.0),
                                 dict(mask_replace_prob=0.95, random_replace_prob=0.1)])
def test_collator_validation(tokenizer, bad):
    with pytest.raises(ValueError):
        DataCollatorForPretraining(tokenizer, **bad)


@pytest.mark.parametrize("objective", ["mlm", "mlm+nvp"])
def test_cut_lengths_are_the_lengths_in_the_batches(tokenizer, encoded, objective):
    features = [dict(f, example_id=i) for i, f in enumerate(encoded)]
    for epoch in (0, 2):
        collate = DataCollatorForPretraining(tokenizer, objective=objective, seed=3, epoch=epoch)
        lengths = collate.cut_lengths([f["visit_ids"] for f in features], [f["example_id"] for f in features], chunk=7)
        batch = collate(features)
        assert lengths.tolist() == batch["attention_mask"].sum(1).tolist()


def test_cut_length_grouped_sampler_groups_by_this_epochs_cut_lengths(tokenizer):
    import datasets

    patients = [p for p in make_patients(400, seed=5, max_visits=12) if len(p["visits"]) >= 2]
    features = [dict(tokenizer.encode_patient(p), example_id=i) for i, p in enumerate(patients)]
    table = datasets.Dataset.from_list(features).with_format("arrow")
    collate = DataCollatorForPretraining(tokenizer, objective="mlm+nvp", seed=3)
    sampler = CutLengthGroupedSampler(collate, table["visit_ids"], table["example_id"], batch_size=16, seed=3)

    def padding(order, epoch):
        collate.set_epoch(epoch)
        batches = [collate([features[i] for i in order[k:k + 16]]) for k in range(0, len(order), 16)]
        mask = torch.cat([b["attention_mask"].reshape(-1) for b in batches])
        return 1 - mask.float().mean().item()

    orders = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        orders[epoch] = list(sampler)
        assert sorted(orders[epoch]) == list(range(len(features)))  # a permutation
        assert orders[epoch] == list(sampler)  # deterministic given (seed, epoch): the same after a resume
        # The sampler's lengths are the lengths the collator produces this epoch, and grouping by them pads far less.
        lengths = sampler.lengths()
        collate.set_epoch(epoch)
        assert lengths.tolist() == collate(features)["attention_mask"].sum(1).tolist()
        shuffled = np.random.default_rng(epoch).permutation(len(features)).tolist()
        assert padding(orders[epoch], epoch) < 0.5 * padding(shuffled, epoch)
    assert orders[0] != orders[1]
    with pytest.raises(ValueError, match="example_ids"):
        CutLengthGroupedSampler(collate, table["visit_ids"], [0, 1], batch_size=16)


def test_objective_is_one_type_parsed_with_a_clear_error(tokenizer):
    assert Objective.parse("mlm+nvp") is Objective.MLM_NVP and Objective.parse(Objective.NVP) is Objective.NVP
    assert [(o.mlm, o.nvp) for o in Objective] == [(True, False), (False, True), (True, True)]
    assert str(Objective.MLM_NVP) == f"{Objective.MLM_NVP}" == json.loads(json.dumps(Objective.MLM_NVP)) == "mlm+nvp"
    assert Objective.MLM_NVP.in_words == ["masked-code modelling", "next-visit prediction"]
    with pytest.raises(ValueError, match=r"--objective must be one of \('mlm', 'nvp', 'mlm\+nvp'\), got 'nvp\+mlm'"):
        Objective.parse("nvp+mlm", "--objective")
    assert DataCollatorForPretraining(tokenizer, objective="nvp").objective is Objective.NVP


def test_visits_are_counted_alike_in_rows_and_padded_batches(encoded):
    rows = [f["visit_ids"] for f in encoded]
    padded = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
    assert count_visits(rows).tolist() == count_visits(padded).tolist() == [row[-1] for row in rows]
