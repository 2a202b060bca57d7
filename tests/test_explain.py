"""Explanations of one prediction: the planted code is found, IG is complete, nothing after the index
visit is explained, LoRA adapters explain, and the CLI writes its pictures."""

import itertools
import json
import random

import datasets
import numpy as np
import pytest
import torch

from behrt_hf import BehrtForSequenceClassification, BehrtTokenizerFast, DataCollatorForBehrt, patient_features
from behrt_hf.explain import (
    attention_rollout,
    attribution_hit_rate,
    chance_of_hit,
    explain_prediction,
    oracle_codes,
    plot_explanation,
)
from behrt_hf.tasks import Task
from behrt_hf.training import explain as explain_cli
from tests.helpers import make_patients, tiny_config

MARKER = "ICD10CM//X01"
FUTURE = "FUTURE//ECHO"  # recorded after the index visit of every positive: an explanation must never show it
OTHER = "ICD10CM//X00"
TASK = Task("planted")


def plant(patients: list[dict], seed: int) -> list[dict]:
    """label = the marker is recorded up to the index visit (the second-to-last visit), nothing else;
    the marker is planted in half of the patients; where the random codes drew it, another code replaces it."""
    rng = random.Random(seed)
    out = []
    for p in patients:
        visits = [dict(v, codes=[OTHER if c == MARKER else c for c in v["codes"]]) for v in p["visits"]]
        if len(visits) < 2:
            out.append(dict(p, visits=visits, label_planted=-1, index_visit_planted=-1, oracle_planted=float("nan")))
            continue
        index = len(visits) - 2
        label = int(rng.random() < 0.5)
        if label:
            visits[rng.randrange(index + 1)]["codes"].append(MARKER)
            visits[-1]["codes"].append(FUTURE)
        out.append(dict(p, visits=visits, label_planted=label, index_visit_planted=index, oracle_planted=float(label)))
    return out


@pytest.fixture(scope="module")
def cohort():
    features = patient_features(tasks=["planted"], with_oracle=True)
    return datasets.DatasetDict({
        name: datasets.Dataset.from_list(plant(make_patients(n, seed=seed, max_visits=8, max_codes=5), seed),
                                         features=features)
        for name, n, seed in [("train", 400, 1), ("test", 80, 2)]
    })


@pytest.fixture(scope="module")
def trained(cohort):
    """A tiny classifier trained for a few seconds on the planted task, and its tokenizer."""
    tokenizer = BehrtTokenizerFast.build_vocab(cohort["train"], model_max_length=64)
    config = tiny_config(vocab_size=len(tokenizer), num_labels=1, problem_type="multi_label_classification")
    torch.manual_seed(0)
    model = BehrtForSequenceClassification(config)
    train = TASK.encode(TASK.eligible(cohort["train"]), tokenizer, max_length=64).to_list()
    collator = DataCollatorForBehrt(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(80):
        batch = collator([train[int(i)] for i in rng.choice(len(train), 32)])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval().requires_grad_(False), tokenizer


def test_the_planted_code_ranks_first_far_more_often_than_chance(cohort, trained):
    model, tokenizer = trained
    test = TASK.eligible(cohort["test"])
    torch.manual_seed(1)
    untrained = BehrtForSequenceClassification(model.config).eval()  # the control: it learned nothing
    assert attribution_hit_rate(untrained, tokenizer, test, TASK, drivers={MARKER}, k=2).attribution < 0.6
    hit = attribution_hit_rate(model, tokenizer, test, TASK, drivers={MARKER}, k=2)
    assert hit.patients == sum(test["label_planted"]) and hit.without_drivers == len(test) - hit.patients
    assert hit.chance < 0.3, hit
    assert hit.attribution > 0.8, hit
    assert hit.curves["attribution"][1] == hit.attribution and len(hit.curves["chance"]) == 10
    assert all(a <= b for a, b in itertools.pairwise(hit.curves["chance"]))


def test_integrated_gradients_sum_to_the_logit_difference(cohort, trained):
    """Completeness: the attributions of all codes add up to logit(input) - logit(no-code baseline)."""
    model, tokenizer = trained
    patient = next(p for p in TASK.eligible(cohort["test"]) if p["label_planted"] == 1)
    # 256 midpoints left an 11% gap once attention started from the mimetic query-key initialisation
    # (sharper attention, a steeper path); 2,048 close it, as completeness says they must
    e = explain_prediction(model, tokenizer, patient, task=TASK, method="integrated_gradients", steps=2048)
    total = sum(c.attribution for c in e.codes)
    assert abs(e.logit - e.baseline_logit) > 0.5
    assert total == pytest.approx(e.logit - e.baseline_logit, rel=0.01)
    coarse = explain_prediction(model, tokenizer, patient, task=TASK, method="integrated_gradients", steps=2)
    assert coarse.baseline_logit == pytest.approx(e.baseline_logit)
    with torch.no_grad():
        encoded = tokenizer.encode_patient(patient, max_length=64, until_visit=patient["index_visit_planted"])
        batch = DataCollatorForBehrt(tokenizer.pad_token_id)([encoded])
        assert e.logit == pytest.approx(float(model(**batch).logits[0, 0]), abs=1e-5)


def test_nothing_after_the_index_visit_is_explained(cohort, trained):
    model, tokenizer = trained
    positives = [p for p in TASK.eligible(cohort["test"]) if p["label_planted"] == 1]
    for patient in positives[:5]:
        e = explain_prediction(model, tokenizer, patient, task=TASK)
        assert FUTURE not in {c.code for c in e.codes}
        assert max(c.visit for c in e.codes) == e.index_visit == patient["index_visit_planted"]
        recorded = [c for v in patient["visits"][: e.index_visit + 1] for c in v["codes"]]
        assert [c.code for c in e.codes] == recorded  # every code up to the index visit, in order
        cut = dict(patient, visits=patient["visits"][: e.index_visit + 1])
        assert explain_prediction(model, tokenizer, cut, task=TASK).codes == e.codes
        assert e.label == 1 and e.oracle == 1.0 and e.probability == pytest.approx(1 / (1 + np.exp(-e.logit)))
        totals = {t.code: t for t in e.code_totals()}
        assert list(totals) == list(dict.fromkeys(recorded)) and totals[MARKER].occurrences == recorded.count(MARKER)
        assert totals[MARKER].attribution == pytest.approx(sum(c.attribution for c in e.codes if c.code == MARKER))
        assert sum(v.num_codes for v in e.visits) == len(recorded)


def test_the_model_is_left_as_it_was(cohort, trained):
    """Only the input gets gradients: no parameter .grad, and a model in training mode stays in it."""
    model, tokenizer = trained
    model.train().requires_grad_(True)
    try:
        patient = TASK.eligible(cohort["test"])[0]
        first = explain_prediction(model, tokenizer, patient, task=TASK, method="integrated_gradients", steps=4)
        again = explain_prediction(model, tokenizer, patient, task=TASK, method="integrated_gradients", steps=4)
        assert first.codes == again.codes  # eval mode inside: no dropout
        assert model.training and all(p.grad is None for p in model.parameters())
    finally:
        model.eval().requires_grad_(False)


def test_bad_requests_are_refused(cohort, trained):
    model, tokenizer = trained
    excluded = next(p for p in cohort["test"] if p["index_visit_planted"] < 0)
    with pytest.raises(ValueError, match="not eligible for task 'planted'"):
        explain_prediction(model, tokenizer, excluded, task=TASK)
    with pytest.raises(ValueError, match="method must be one of"):
        explain_prediction(model, tokenizer, excluded, until_visit=0, method="saliency")
    with pytest.raises(ValueError, match="not both"):
        explain_prediction(model, tokenizer, excluded, task=TASK, until_visit=0)


def test_attention_rollout_follows_abnar_and_zuidema():
    """Two layers of known attention: heads averaged, identity added, rows renormalised, multiplied."""
    rng = np.random.default_rng(0)
    layers = [rng.dirichlet(np.ones(5), size=(3, 5)) for _ in range(2)]  # (heads, T, T), rows sum to 1
    expected = np.eye(5)
    for layer in layers:
        expected = (0.5 * layer.mean(0) + 0.5 * np.eye(5)) @ expected
    got = attention_rollout([torch.tensor(a) for a in layers])
    np.testing.assert_allclose(got.numpy(), expected[0], rtol=1e-6)
    np.testing.assert_allclose(attention_rollout([torch.tensor(a) for a in layers], cls_row=False).numpy(),
                               expected.mean(0), rtol=1e-6)


@pytest.mark.parametrize("n,d,k", [(6, 1, 2), (6, 2, 3), (4, 3, 2), (3, 1, 5), (7, 7, 1)])
def test_chance_of_hit_is_exact(n, d, k):
    subsets = list(itertools.combinations(range(n), min(k, n)))
    assert chance_of_hit(n, d, k) == pytest.approx(np.mean([any(i < d for i in s) for s in subsets]))


def test_oracle_codes_are_the_markers_of_the_hazard_inputs():
    codes = oracle_codes("fall_1y")
    assert "ICD10CM//W19.XXXA" in codes  # a recorded fall doubles the hazard of the next
    assert not any(code.startswith("ATC//") for code in codes)  # drugs are no hazard input
    with pytest.raises(ValueError, match="not a synthetic task"):
        oracle_codes("planted")


def test_a_lora_adapter_is_explained_through_the_cli(cohort, trained, tmp_path):
    """A LoRA adapter saved as behrt-finetune saves it, loaded and explained by behrt-explain."""
    from peft import LoraConfig, TaskType, get_peft_model

    model, tokenizer = trained
    base, adapter, data = tmp_path / "base", tmp_path / "adapter", tmp_path / "data"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    lora = get_peft_model(BehrtForSequenceClassification.from_pretrained(base), LoraConfig(
        task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value", "dense"], modules_to_save=["classifier"]))
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a trained adapter: it changes the predictions
    lora.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    cohort.save_to_disk(str(data))
    patient = TASK.eligible(cohort["test"])[0]

    written = explain_cli.main([
        "--model_name_or_path", str(adapter), "--dataset_path", str(data), "--task", "planted",
        "--patient_id", patient["patient_id"], "--max_length", "64", "--output_dir", str(tmp_path / "out"),
        "--use_cpu", "--method", "integrated_gradients", "--steps", "8",
    ])
    (png,) = written["explanations"]
    saved = json.loads((tmp_path / "out" / f"explanation_{patient['patient_id']}.json").read_text())
    assert png.endswith(".png") and (tmp_path / "out" / png.split("/")[-1]).stat().st_size > 10_000
    on_lora = explain_prediction(lora.eval(), tokenizer, patient, task=TASK, method="integrated_gradients", steps=8)
    on_base = explain_prediction(model, tokenizer, patient, task=TASK)
    assert saved["probability"] == pytest.approx(on_lora.probability, abs=1e-6)
    assert abs(on_lora.logit - on_base.logit) > 1e-3
    assert [c["code"] for c in saved["codes"]] == [c.code for c in on_lora.codes]


def test_the_cli_explains_patients_computes_the_hit_rate_and_refuses_unknown_patients(cohort, trained, tmp_path):
    model, tokenizer = trained
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    cohort.save_to_disk(str(tmp_path / "data"))
    common = ["--model_name_or_path", str(tmp_path / "model"), "--dataset_path", str(tmp_path / "data"),
              "--task", "planted", "--max_length", "64", "--output_dir", str(tmp_path / "out"), "--use_cpu"]
    with pytest.raises(ValueError, match="Patient 'nobody' is not among"):
        explain_cli.main([*common, "--patient_id", "nobody"])
    # the planted task is not synthetic: the generator does not know its driving codes, the user does
    with pytest.raises(ValueError, match="not a synthetic task"):
        explain_cli.main([*common, "--num_explained", "0", "--hit_rate_patients", "20"])
    written = explain_cli.main([*common, "--num_explained", "2", "--hit_rate_patients", "40", "--top_k", "2",
                                "--driver_codes", MARKER])
    assert len(written["explanations"]) == 2
    hit = json.loads((tmp_path / "out" / "explanation_hit_rate.json").read_text())
    assert hit["k"] == 2 and hit["patients"] + hit["without_drivers"] == 40
    assert hit["attribution"] > 0.8 > 0.3 > hit["chance"]
    assert (tmp_path / "out" / "explanation_hit_rate.png").stat().st_size > 10_000


def test_plot_without_dates_uses_ages(cohort, trained, tmp_path):
    model, tokenizer = trained
    patient = TASK.eligible(cohort["test"])[0]
    patient = dict(patient, visits=[dict(v, time=None) for v in patient["visits"]])
    e = explain_prediction(model, tokenizer, patient, task=TASK)
    assert all(c.time is None for c in e.codes)
    path = plot_explanation(e, tmp_path / "explanation.png", descriptions={MARKER: "the planted marker"},
                            highlight={MARKER})
    assert path.stat().st_size > 10_000
