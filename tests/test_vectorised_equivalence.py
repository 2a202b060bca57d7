"""The vectorised encoding and collation give exactly what the per-token Python code gave.

The oracle is tests/reference_impl.py, a per-patient, loop-based version that imports nothing
from behrt_hf. Random patients cover truncation (whole visits dropped, the last visit cut), task
cuts, unknown codes and both age units; batches cover every objective, seeded and global-RNG
draws, evaluation's static targets and `pad_to_multiple_of`. Errors are those of the schema's
single validator, raised for the first bad patient of a batch.
"""

import random
import re

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch

from behrt_hf import BehrtTokenizerFast, DataCollatorForBehrt, patient_features
from behrt_hf.data_collator import DataCollatorForPretraining, pad_features, static_pretraining_targets
from behrt_hf.encoding import mask_codes, next_visit_cut
from behrt_hf.schema import PatientValidationError, validate_patient
from tests import reference_impl as ref
from tests.helpers import make_patients


def tokenizer_pair(age_unit="year", max_age=120):
    """Two tokenizers with the same vocabulary (each keeps its own `unknown_codes`); rarer codes are unknown."""
    train = make_patients(30, seed=0)
    return [BehrtTokenizerFast.build_vocab(train, min_frequency=3, age_unit=age_unit, max_age=max_age,
                                           model_max_length=64) for _ in range(2)]


def as_columns(patients):
    return {key: [p[key] for p in patients] for key in patients[0]}


def random_cohort(n, seed):
    patients = make_patients(n, seed=seed, max_visits=12, max_codes=9)
    rng = random.Random(seed)
    for p in patients:
        p["index_visit_t"] = rng.randrange(len(p["visits"]))
        if rng.random() < 0.2:  # integer ages and ages past max_age take other paths through age_to_id
            p["visits"][-1]["age"] = float(min(120, int(p["visits"][-1]["age"]) + 70))
    return patients


@pytest.mark.parametrize("age_unit,max_age", [("year", 120), ("month", 100), ("year", 30)])
@pytest.mark.parametrize("max_length", [3, 4, 7, 16, 33, None])
def test_encode_patients_matches_the_reference(age_unit, max_age, max_length):
    new, old = tokenizer_pair(age_unit, max_age)
    patients = random_cohort(60, seed=len(str(max_length)) + max_age)
    batch = as_columns(patients)
    for until in (None, "index_visit_t", batch["index_visit_t"]):
        for count in (False, True):
            got = new.encode_patients(batch, max_length, until, count)
            want = ref.encode_patients(old, batch, max_length, until, count)
            assert got == want
    assert new.unknown_codes == old.unknown_codes and sum(old.unknown_codes.values()) > 0
    for p in patients[:10]:
        assert new.encode_patient(p, max_length, p["index_visit_t"], True) == ref.encode_patient(
            old, p, max_length, p["index_visit_t"], True)


def test_dataset_map_python_and_arrow_formats_match_the_reference():
    new, old = tokenizer_pair()
    patients = random_cohort(50, seed=3)
    until = [p.pop("index_visit_t") for p in patients]
    dataset = datasets.Dataset.from_list(patients, features=patient_features()).add_column("index_visit_t", until)
    kwargs = dict(max_length=20, until_visit="index_visit_t", return_unknown_count=True)
    want = ref.encode_patients(old, dataset[:], **kwargs)
    python = dataset.map(new.encode_patients, batched=True, batch_size=16, fn_kwargs=kwargs,
                         remove_columns=dataset.column_names)
    arrow = dataset.with_format("arrow").map(new.encode_patients, batched=True, batch_size=16, fn_kwargs=kwargs)
    assert python[:] == want
    assert arrow.with_format(None)[:] == want
    assert python.features == arrow.features


def bad_patients():
    good = make_patients(1, seed=9)[0]

    def variant(**visit0):
        p = {**good, "visits": [dict(v) for v in good["visits"]]}
        p["visits"][0].update(visit0)
        return p

    later = {**good, "visits": [*good["visits"], {**good["visits"][-1], "time": good["visits"][0]["time"]}]}
    younger = {**good, "visits": [*good["visits"], {**good["visits"][-1], "age": 0.5}]}
    return [
        {**good, "visits": []},
        variant(codes=[]),
        variant(codes=["ICD10CM//X01", 17]),
        variant(codes=["ICD10CM//X01", None]),
        variant(age=float("nan")),
        variant(age=None),
        variant(age="40"),
        variant(age=-1.0),
        variant(age=130.0),
        later,
        younger,
    ]


@pytest.mark.parametrize("bad", bad_patients())
def test_a_bad_patient_raises_the_validators_error(bad):
    new, _ = tokenizer_pair()
    patients = make_patients(6, seed=4)
    bad = {**bad, "patient_id": "bad"}
    batch = as_columns([*patients[:3], bad, *patients[3:]])
    with pytest.raises(PatientValidationError) as want:
        validate_patient(bad)
    with pytest.raises(PatientValidationError) as got:
        new.encode_patients(batch)
    assert str(got.value) == str(want.value)


def test_until_visit_max_length_and_column_errors():
    new, _ = tokenizer_pair()
    batch = as_columns(make_patients(5, seed=5))
    until = [0] * 5
    until[2] = len(batch["visits"][2])
    pid = batch["patient_id"][2]
    with pytest.raises(PatientValidationError,
                       match=re.escape(f"patient {pid!r}: until_visit={until[2]} is outside its {until[2]} visits")):
        new.encode_patients(batch, until_visit=until)
    with pytest.raises(ValueError, match=re.escape("max_length must be at least 3 ([CLS] code [SEP]), got 2.")):
        new.encode_patients(batch, max_length=2)
    with pytest.raises(ValueError, match="until_visit column 'missing' is not in the batch"):
        new.encode_patients(batch, until_visit="missing")
    # Settings are checked before any patient: a bad max_length is named even beside a bad patient.
    bad = as_columns([{**bad_patients()[0], "patient_id": "bad"}, *make_patients(2, seed=5)])
    with pytest.raises(ValueError, match="max_length must be at least 3") as error:
        new.encode_patients(bad, max_length=2)
    assert not isinstance(error.value, PatientValidationError)


# --- collation ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded():
    tok, _ = tokenizer_pair()
    patients = [p for p in random_cohort(200, seed=11) if len(p["visits"]) >= 2]
    return tok, [dict(ref.encode_patient(tok, p, 40), example_id=i) for i, p in enumerate(patients)]


def assert_same_batch(got, want):
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("objective", ["mlm", "nvp", "mlm+nvp"])
@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("multiple", [None, 8])
def test_pretraining_collator_matches_the_reference(encoded, objective, seeded, multiple):
    tok, features = encoded
    if not seeded:
        features = [{k: v for k, v in f.items() if k != "example_id"} for f in features]
    kwargs = dict(objective=objective, pad_to_multiple_of=multiple, seed=5)
    new, old = DataCollatorForPretraining(tok, **kwargs), ref.DataCollatorForPretraining(tok, **kwargs)
    for epoch in (0, 3):
        new.set_epoch(epoch)
        old.epoch = epoch
        for start in range(0, len(features), 32):
            chunk = features[start:start + 32]
            torch.manual_seed(start)
            want = old(chunk)
            torch.manual_seed(start)
            assert_same_batch(new(chunk), want)
    assert new.padding_fraction == 1 - old._real_tokens / old._padded_tokens


@pytest.mark.parametrize("objective", ["mlm", "nvp", "mlm+nvp"])
def test_static_targets_match_the_reference(encoded, objective):
    tok, features = encoded
    for i, f in enumerate(features[:40]):
        assert static_pretraining_targets(f, i, tok, objective, seed=2) == ref.static_pretraining_targets(
            f, i, tok, objective, seed=2)
        cut, target = next_visit_cut(f, 2, tok.sep_token_id)
        assert (cut, target) == ref.next_visit_cut(f, 2, tok.sep_token_id)
    static = [static_pretraining_targets(f, i, tok, objective, seed=2) for i, f in enumerate(features[:32])]
    assert_same_batch(DataCollatorForPretraining(tok, objective=objective)(static),
                      ref.DataCollatorForPretraining(tok, objective=objective)(static))


def test_padding_matches_the_reference_for_lists_and_arrays(encoded):
    tok, features = encoded
    labelled = [dict(f, labels=i % 2) for i, f in enumerate(features[:24])]
    as_arrays = [{k: v if k == "labels" else np.asarray(v) for k, v in f.items()} for f in labelled]
    for multiple in (None, 8):
        want = ref.pad_features(labelled, tok.pad_token_id, multiple)
        assert_same_batch(pad_features(labelled, tok.pad_token_id, multiple), want)
        assert_same_batch(pad_features(as_arrays, tok.pad_token_id, multiple), want)
        collated = DataCollatorForBehrt(tok.pad_token_id, multiple)(as_arrays)
        assert torch.equal(collated.pop("labels"), torch.tensor([f["labels"] for f in labelled]))
        assert_same_batch(collated, want)
    relabelled = [dict(f, input_ids=[(t + 7) % len(tok) for t in f["input_ids"]]) for f in labelled]  # pad id 7
    for multiple in (None, 8):
        assert_same_batch(pad_features(relabelled, 7, multiple), ref.pad_features(relabelled, 7, multiple))
    seeded = DataCollatorForPretraining(tok, objective="mlm+nvp")
    assert_same_batch(seeded([{k: np.asarray(v) for k, v in f.items()} for f in features[:16]]),
                      DataCollatorForPretraining(tok, objective="mlm+nvp")(features[:16]))


@pytest.mark.parametrize("shape,probability", [((1, 40), 0.15), ((7, 13), 0.15), ((1, 5), 1e-9), ((3, 4), 0.9)])
def test_mask_codes_matches_the_reference(shape, probability):
    ids = np.random.default_rng(1).integers(0, 30, size=shape)
    for seed in range(20):
        row = ids.reshape(1, -1)  # the whole array as one row drawing from one generator
        got = mask_codes(row, np.array([row.shape[1]]), row >= 5, [np.random.default_rng(seed)], 4, 5, 30, probability)
        got = [a.reshape(shape) for a in got]
        want = ref.mask_codes(ids, ids >= 5, np.random.default_rng(seed), 4, 5, 30, probability)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("index", range(11))
def test_arrow_batches_raise_the_validators_error(index):
    """The records an Arrow table can hold (numbers and strings of the right types) fail alike."""
    bad = bad_patients()[index]
    new, _ = tokenizer_pair()
    patients = [*make_patients(3, seed=4), {**bad, "patient_id": "bad"}]
    try:
        table = datasets.Dataset.from_list(patients, features=patient_features()).with_format("arrow")[:]
    except (TypeError, ValueError, pa.ArrowException):
        pytest.skip("not representable in the patient schema")
    with pytest.raises(PatientValidationError) as want:  # the record as stored (float32 ages)
        validate_patient(table.to_pylist()[-1])
    with pytest.raises(PatientValidationError) as got:
        new.encode_patients(table)
    assert str(got.value) == str(want.value)


def test_integer_day_times_none_cuts_and_record_batches_match_the_reference():
    new, old = tokenizer_pair()
    patients = random_cohort(40, seed=8)
    start = patients[0]["visits"][0]["time"]
    for p in patients:
        for v in p["visits"]:
            v["time"] = (v["time"] - start).days
    until = [p.pop("index_visit_t") for p in patients]
    until = [u if i % 3 else None for i, u in enumerate(until)]  # None: no cut
    want = ref.encode_patients(old, as_columns(patients), 24, until)
    assert new.encode_patients(as_columns(patients), 24, until) == want
    table = datasets.Dataset.from_list(patients, features=patient_features(time_dtype="int32")).data.table
    stored = ref.encode_patients(old, as_columns(table.to_pylist()), 24, until)  # float32 ages
    for batch in (table, table.combine_chunks().to_batches()[0]):
        assert new.encode_patients(batch, 24, until).to_pydict() == stored
