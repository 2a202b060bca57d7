"""The code-level tokenizer: vocabulary, patient encoding, truncation, task cuts and bad input."""

import datetime as dt

import datasets
import pyarrow as pa
import pytest
import torch

from behrt_hf import BehrtConfig, BehrtForMaskedLM, BehrtTokenizerFast, DataCollatorForBehrt, patient_features
from behrt_hf.schema import PatientValidationError
from tests.helpers import make_patients, tiny_config

T0 = dt.datetime(2020, 1, 1)


def patient(visits, pid="p1"):
    return {
        "patient_id": pid,
        "sex": "F",
        "visits": [
            {"time": T0 + dt.timedelta(days=30 * i), "age": age, "codes": codes} for i, (age, codes) in enumerate(visits)
        ],
    }


@pytest.fixture(scope="module")
def tokenizer():
    train = [
        patient([(40.0, ["A", "B"]), (40.5, ["A", "C"]), (41.2, ["A"])], "t1"),
        patient([(10.0, ["B", "D"])], "t2"),
    ]
    return BehrtTokenizerFast.build_vocab(train)


def test_vocabulary_is_ordered_by_frequency_with_specials_first(tokenizer):
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    # A x3, B x2, then C, D (ties alphabetical)
    assert [vocab[c] for c in ("A", "B", "C", "D")] == [5, 6, 7, 8]
    assert len(tokenizer) == 9
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 4


def test_min_frequency_and_max_size():
    train = [patient([(1.0, ["A", "A", "A", "B", "B", "C"])])]
    assert "C" not in BehrtTokenizerFast.build_vocab(train, min_frequency=2).get_vocab()
    assert set(BehrtTokenizerFast.build_vocab(train, max_size=1).get_vocab()) == {
        "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "A"}
    with pytest.raises(ValueError, match="no codes"):
        BehrtTokenizerFast.build_vocab([])


def test_vocabulary_from_a_dataset_matches_the_python_path():
    patients = make_patients(20)
    dataset = datasets.Dataset.from_list(patients, features=patient_features())
    assert BehrtTokenizerFast.build_vocab(dataset).get_vocab() == BehrtTokenizerFast.build_vocab(patients).get_vocab()


def test_one_code_is_one_token(tokenizer):
    text = tokenizer("A B [MASK] E11.9", add_special_tokens=False)["input_ids"]
    assert text == [5, 6, 4, tokenizer.unk_token_id]


def test_encode_patient_format(tokenizer):
    enc = tokenizer.encode_patient(patient([(40.0, ["A", "B"]), (40.5, ["C"]), (41.2, ["D", "A"])]))
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert enc["input_ids"] == [cls, 5, 6, sep, 7, sep, 8, 5, sep]
    assert enc["age_ids"] == [42, 41, 41, 41, 41, 41, 42, 42, 42]  # floor(age) + 1; [CLS]: the last visit's
    assert enc["segment_ids"] == [0, 0, 0, 0, 1, 1, 0, 0, 0]
    assert enc["visit_ids"] == [0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert enc["attention_mask"] == [1] * 9


def test_cls_age_is_the_last_or_the_first_visits_and_is_saved(tmp_path):
    visits = [(40.0, ["A"]), (45.5, ["B"]), (52.9, ["A", "B"])]
    last = BehrtTokenizerFast.build_vocab([patient(visits)])
    first = BehrtTokenizerFast.build_vocab([patient(visits)], cls_age="first")
    assert last.cls_age == "last" and first.cls_age == "first"
    assert last.encode_patient(patient(visits))["age_ids"][0] == 53
    assert last.encode_patient(patient(visits), until_visit=1)["age_ids"][0] == 46  # the index visit's age
    assert first.encode_patient(patient(visits))["age_ids"][0] == 41
    first.save_pretrained(tmp_path)
    assert BehrtTokenizerFast.from_pretrained(tmp_path).cls_age == "first"
    with pytest.raises(ValueError, match="cls_age"):
        BehrtTokenizerFast.build_vocab([patient(visits)], cls_age="middle")


def test_age_ids_in_months_and_clipping():
    tok = BehrtTokenizerFast.build_vocab([patient([(1.0, ["A"])])], age_unit="month", max_age=100)
    assert tok.age_to_id(0.0) == 1
    assert tok.age_to_id(1.5) == 19  # 18 months
    assert tok.age_to_id(119.0) == 100 * 12 + 1  # older than max_age shares the last id
    assert tok.age_vocab_size == 100 * 12 + 2
    tok.check_compatible(BehrtConfig(vocab_size=len(tok), age_unit="month", max_age=100))
    with pytest.raises(ValueError, match="age ids"):
        tok.check_compatible(BehrtConfig(vocab_size=len(tok)))
    with pytest.raises(ValueError, match="vocabulary has"):
        tok.check_compatible(BehrtConfig(vocab_size=2, age_unit="month", max_age=100))


def test_truncation_drops_whole_visits_from_the_oldest_end(tokenizer):
    p = patient([(40.0, ["A", "B"]), (40.5, ["C"]), (41.2, ["D", "A"])])
    enc = tokenizer.encode_patient(p, max_length=7)  # CLS + (C SEP) + (D A SEP) = 6 fits; +3 does not
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "C", "[SEP]", "D", "A", "[SEP]"]
    assert enc["visit_ids"] == [0, 1, 1, 2, 2, 2]  # kept visits renumbered from 1
    assert enc["age_ids"][0] == 42  # [CLS] carries the last kept visit's age
    # the most recent visit alone too long: its first codes are kept
    enc = tokenizer.encode_patient(patient([(40.0, ["A", "B", "C", "D"])]), max_length=4)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "A", "B", "[SEP]"]
    for length in range(3, 12):
        assert len(tokenizer.encode_patient(p, max_length=length)["input_ids"]) <= length


def test_until_visit_cuts_everything_after_the_index_visit(tokenizer):
    p = patient([(40.0, ["A"]), (40.5, ["B"]), (41.2, ["C", "D"])])
    enc = tokenizer.encode_patient(p, until_visit=1)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["[CLS]", "A", "[SEP]", "B", "[SEP]"]
    assert max(enc["age_ids"]) == tokenizer.age_to_id(40.5)
    with pytest.raises(PatientValidationError, match="'p1': until_visit=3 is outside its 3 visits"):
        tokenizer.encode_patient(p, until_visit=3)


def test_unknown_codes_map_to_unk_and_are_counted():
    tok = BehrtTokenizerFast.build_vocab([patient([(1.0, ["A"])])])
    enc = tok.encode_patient(patient([(2.0, ["A", "Z9", "Z9", "Q"])]), return_unknown_count=True)
    assert enc["input_ids"][1:5] == [5, 1, 1, 1]
    assert enc["num_unknown_codes"] == 3
    assert tok.unknown_codes == {"Z9": 2, "Q": 1}


@pytest.mark.parametrize(
    "bad,message",
    [
        (patient([]), "'p1': has no visits"),
        (patient([(40.0, [])]), "'p1': visit 0 has no codes"),
        (patient([(40.0, ["A", 17])]), "'p1': visit 0 has a non-string code 17"),
        (patient([(40.0, ["A"]), (39.0, ["B"])]), "'p1': ages decrease at visit 1"),
        (patient([(-1.0, ["A"])]), "'p1': visit 0 has age -1.0 outside 0..120"),
        (patient([(130.0, ["A"])]), "'p1': visit 0 has age 130.0 outside 0..120"),
        (patient([(float("nan"), ["A"])]), "'p1': visit 0 has an invalid age nan"),
    ],
)
def test_bad_input_names_the_patient_and_the_problem(tokenizer, bad, message):
    with pytest.raises(PatientValidationError, match=message):
        tokenizer.encode_patient(bad)


def _with_visit0(codes=None, insert_none=False):
    p = patient([(40.0, ["A"]), (41.0, ["B"])], "bad")
    if insert_none:
        p["visits"].insert(1, None)
    else:
        p["visits"][0]["codes"] = codes
    return p


BAD_RECORDS = {
    "a None visit": (_with_visit0(insert_none=True), "'bad': visit 1 is not a record"),
    "an empty code": (_with_visit0(["A", ""]), "'bad': visit 0 has a blank code ''"),
    "a whitespace code": (_with_visit0(["A", "  "]), "'bad': visit 0 has a blank code '  '"),
    "a None code": (_with_visit0(["A", None]), "'bad': visit 0 has a non-string code None"),
    "codes as a string": (_with_visit0("A"), "'bad': visit 0 has codes 'A' \\(str\\), not a list of strings"),
    "codes as a mapping": (_with_visit0({"A": 1}), "'bad': visit 0 has codes .* \\(dict\\), not a list of strings"),
}


def encode_through(tokenizer, path: str, bad: dict):
    """Encode `bad` behind two good patients: one patient, a batch of Python columns, or an Arrow table."""
    if path == "one patient":
        return tokenizer.encode_patient(bad)
    patients = [patient([(40.0, ["A"])], "ok1"), patient([(41.0, ["B", "C"])], "ok2"), bad]
    if path == "python columns":
        return tokenizer.encode_patients({key: [p[key] for p in patients] for key in bad})
    try:
        table = pa.Table.from_pylist(patients)
    except pa.ArrowInvalid:  # Arrow cannot mix list and non-list codes: the bad patient alone, every visit alike
        odd = bad["visits"][0]["codes"]
        table = pa.Table.from_pylist([{**bad, "visits": [{**v, "codes": odd} for v in bad["visits"]]}])
    return tokenizer.encode_patients(table)


@pytest.mark.parametrize("path", ["one patient", "python columns", "arrow table"])
@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_records_name_the_patient_on_every_path(tokenizer, case, path):
    bad, message = BAD_RECORDS[case]
    with pytest.raises(PatientValidationError, match=message):
        encode_through(tokenizer, path, bad)


def test_decreasing_times_are_rejected(tokenizer):
    p = patient([(40.0, ["A"]), (40.0, ["B"])])
    p["visits"][1]["time"] = T0 - dt.timedelta(days=1)
    with pytest.raises(PatientValidationError, match="'p1': times decrease at visit 1"):
        tokenizer.encode_patient(p)


def test_batched_map_matches_single_encoding_and_feeds_the_model(tmp_path):
    patients = make_patients(12, seed=3)
    for p in patients:
        p["index_visit_demo"] = len(p["visits"]) // 2
        p["label_demo"] = int(p["sex"] == "F")
    dataset = datasets.Dataset.from_list(patients, features=patient_features(tasks=["demo"]))
    tok = BehrtTokenizerFast.build_vocab(dataset, model_max_length=32)
    encoded = dataset.map(
        tok.encode_patients, batched=True, batch_size=5, remove_columns=dataset.column_names,
        fn_kwargs={"until_visit": "index_visit_demo"},
    )
    for i in (0, 7, 11):
        single = tok.encode_patient(patients[i], until_visit=patients[i]["index_visit_demo"])
        assert {k: encoded[i][k] for k in single} == single

    config = tiny_config(vocab_size=len(tok), max_position_embeddings=32)
    tok.check_compatible(config)
    batch = DataCollatorForBehrt(pad_token_id=tok.pad_token_id)([encoded[i] for i in range(4)])
    assert batch["input_ids"].shape == batch["age_ids"].shape == batch["attention_mask"].shape
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = BehrtForMaskedLM(config)(**batch, labels=labels)
    assert torch.isfinite(out.loss)


def test_empty_batch_returns_empty_columns(tokenizer):
    out = tokenizer.encode_patients({"patient_id": [], "sex": [], "visits": []})
    assert out == {k: [] for k in tokenizer.model_input_names}


def test_save_and_load_with_auto_tokenizer(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tok = BehrtTokenizerFast.build_vocab([patient([(1.0, ["A", "B"])])], age_unit="month", max_age=100,
                                         model_max_length=128)
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is BehrtTokenizerFast
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.age_unit, loaded.max_age, loaded.model_max_length) == ("month", 100, 128)
    p = patient([(1.0, ["A", "B"]), (2.5, ["B", "Z"])])
    assert loaded.encode_patient(p) == tok.encode_patient(p)


def test_collator_pads_every_token_column():
    collate = DataCollatorForBehrt(pad_token_id=0, pad_to_multiple_of=8)
    batch = collate([
        {"input_ids": [2, 5, 3], "age_ids": [9, 9, 9], "segment_ids": [0, 0, 0], "visit_ids": [0, 1, 1],
         "attention_mask": [1, 1, 1], "labels": 1},
        {"input_ids": [2, 6, 7, 3, 8, 3], "age_ids": [4] * 6, "segment_ids": [0, 0, 0, 0, 1, 1],
         "visit_ids": [0, 1, 1, 1, 2, 2], "attention_mask": [1] * 6, "labels": 0},
    ])
    assert batch["input_ids"].tolist()[0] == [2, 5, 3, 0, 0, 0, 0, 0]
    assert batch["age_ids"].tolist()[0] == [9, 9, 9, 0, 0, 0, 0, 0]
    assert batch["attention_mask"].sum(1).tolist() == [3, 6]
    assert batch["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="Row 0: age_ids has 2 values but input_ids has 3"):
        collate([{"input_ids": [2, 5, 3], "age_ids": [1, 1], "attention_mask": [1, 1, 1]}])


def test_code_hierarchy_coarsens_icd_codes_in_vocabulary_and_encoding(tmp_path):
    train = [
        patient([(60.0, ["ICD10CM//E11.9", "ATC//A10BA02"]), (61.0, ["ICD10CM//E11.65", "ICD9CM//4019"])], "t1"),
        patient([(50.0, ["ICD10CM//I10", "ICD9CM//401.1"])], "t2"),
    ]
    tok = BehrtTokenizerFast.build_vocab(train, code_hierarchy="category")
    codes = set(tok.get_vocab()) - {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert codes == {"ICD10CM//E11", "ATC//A10BA02", "ICD9CM//401", "ICD10CM//I10"}
    assert tok.convert_ids_to_tokens([tok.get_vocab()["ICD10CM//E11"]]) == ["ICD10CM//E11"]
    # E11 twice, 401 twice: ranked first (ties alphabetical), ATC and I10 once.
    assert tok.convert_ids_to_tokens(list(range(5, 9))) == ["ICD10CM//E11", "ICD9CM//401", "ATC//A10BA02", "ICD10CM//I10"]

    # A code never seen in training still maps to its category; both codes of a category in one visit are kept.
    unseen = patient([(62.0, ["ICD10CM//E11.22", "ICD10CM//E11.9", "SNOMED//1"])], "new")
    encoded = tok.encode_patient(unseen, return_unknown_count=True)
    assert tok.convert_ids_to_tokens(encoded["input_ids"]) == ["[CLS]", "ICD10CM//E11", "ICD10CM//E11", "[UNK]", "[SEP]"]
    assert encoded["num_unknown_codes"] == 1

    # The setting is saved with the tokenizer; the Arrow path gives the same ids.
    tok.save_pretrained(tmp_path)
    loaded = BehrtTokenizerFast.from_pretrained(tmp_path)
    assert loaded.code_hierarchy == "category"
    table = datasets.Dataset.from_list([unseen], features=patient_features()).with_format("arrow")[:]
    assert loaded.encode_patients(table)["input_ids"].to_pylist() == [encoded["input_ids"]]
    assert BehrtTokenizerFast.build_vocab(train).code_hierarchy is None

    with pytest.raises(ValueError, match="code_hierarchy"):
        BehrtTokenizerFast.build_vocab(train, code_hierarchy="chapter")
