"""The embedding quality report: its scores on embeddings whose answer is known, the SVD baseline on a
planted signal, conditions recorded up to the cut only, and the CLI on the tiny synthetic cohort."""

import datetime as dt
import json
import math

import datasets
import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from behrt_hf import BehrtTokenizerFast, patient_features
from behrt_hf.embedding_report import (
    METRICS,
    age_bands,
    bag_of_codes,
    code_group,
    condition_labels,
    group_precision,
    map_2d,
    neighbours_and_distance_sums,
    precision_at_k,
    resolve_map_method,
    score_embeddings,
    silhouette_from_sums,
    split_evaluable,
    svd_embeddings,
)
from tests.helpers import CODES, make_patients
from tests.test_embeddings import synthetic_model  # noqa: F401  (a fixture)


def two_clusters(n: int = 60, seed: int = 0):
    """Points around two orthogonal directions (cosine distance ~1 apart) and their cluster labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) < n // 3
    x = np.where(y[:, None], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]) + rng.normal(0, 0.3, (n, 3))
    return x.astype(np.float32), y


def scores_of(x, y, k=10):
    neighbours, sums = neighbours_and_distance_sums(x, np.stack([y, ~y], 1), k)
    return precision_at_k(neighbours, y), silhouette_from_sums(sums, y)


def test_precision_and_silhouette_on_two_separated_clusters():
    x, y = two_clusters()
    precision, silhouette = scores_of(x, y)
    assert precision == 1.0
    assert silhouette == pytest.approx(silhouette_score(x, y, metric="cosine"), abs=1e-5)
    assert silhouette > 0.8

    shuffled = np.random.default_rng(1).permutation(y)  # labels unrelated to the geometry
    precision, silhouette = scores_of(x, shuffled)
    assert abs(precision - y.mean()) < 0.2 and abs(silhouette) < 0.2
    assert silhouette == pytest.approx(silhouette_score(x, shuffled, metric="cosine"), abs=1e-5)

    chunked = neighbours_and_distance_sums(x, np.stack([y, ~y], 1), 10, chunk=7)  # chunks give the same answer
    np.testing.assert_allclose(chunked[1], neighbours_and_distance_sums(x, np.stack([y, ~y], 1), 10)[1], rtol=1e-5)
    assert group_precision(x, np.where(y, "a", "b"), k=5) == (1.0, pytest.approx(y.mean() ** 2 + (1 - y.mean()) ** 2))

    scores = score_embeddings(x, {"cluster": y}, seed=0)["cluster"]
    assert set(scores) == set(METRICS) and scores["probe_auroc"] == 1.0 and scores["precision_at_10"] == 1.0


def planted_patients(n: int = 120, seed: int = 0):
    """Patients whose codes are noise, plus two codes of group A or two of group B."""
    rng = np.random.default_rng(seed)
    patients = make_patients(n, seed=seed, max_visits=4, max_codes=3)
    group = rng.random(n) < 0.5
    noise = [c for c in CODES if c not in CODES[:4]]
    for p, in_a in zip(patients, group):
        for visit in p["visits"]:
            visit["codes"] = [noise[rng.integers(len(noise))] for _ in visit["codes"]]
        p["visits"][-1]["codes"] += CODES[:2] if in_a else CODES[2:4]
    return datasets.Dataset.from_list(patients, features=patient_features()), group


def test_the_svd_baseline_finds_a_planted_signal():
    patients, group = planted_patients()
    tokenizer = BehrtTokenizerFast.build_vocab(patients, model_max_length=64)
    counts = bag_of_codes(patients, tokenizer, max_length=64, batch_size=50)
    assert counts.shape == (len(patients), len(tokenizer))
    first = patients[0]
    assert counts[0].sum() == sum(len(v["codes"]) for v in first["visits"])
    vectors, codes = svd_embeddings(counts, dim=8, seed=0)
    assert vectors.shape == (len(patients), 8) and codes.shape == (len(tokenizer), 8)
    planted = score_embeddings(vectors, {"a": group}, seed=0)["a"]
    assert planted["precision_at_10"] > 0.9 and planted["probe_auroc"] > 0.95 and planted["silhouette"] > 0.1
    unrelated = np.random.default_rng(3).random(len(group)) < 0.5
    chance = score_embeddings(vectors, {"u": unrelated}, seed=0)["u"]
    assert chance["probe_auroc"] < 0.8 and chance["precision_at_10"] < 0.7


def test_conditions_are_read_up_to_the_cut():
    visit = lambda day, codes: {"time": dt.datetime(2020, 1, 1) + dt.timedelta(days=day), "age": 50 + day / 365,
                                "codes": codes}
    rows = [
        {"patient_id": "1", "sex": "F", "visits": [visit(0, ["X"]), visit(10, ["ICD10CM//E11.9"])], "index_visit_t": 0},
        {"patient_id": "2", "sex": "M", "visits": [visit(0, ["ICD10CM//E11.40"]), visit(5, ["X"])], "index_visit_t": 0},
    ]
    patients = datasets.Dataset.from_list(rows)
    markers = {"t2d": frozenset({"ICD10CM//E11.9", "ICD10CM//E11.40"}), "hf": frozenset({"ICD10CM//I50.9"})}
    whole = condition_labels(patients, markers)
    cut = condition_labels(patients, markers, task="index_visit_t")
    assert whole["t2d"].tolist() == [True, True] and cut["t2d"].tolist() == [False, True]
    assert whole["hf"].tolist() == [False, False]
    assert split_evaluable(whole, 1) == ({}, {"t2d": 2, "hf": 0})  # nobody lacks t2d, nobody has hf
    assert age_bands([0, 17.9, 18, 64.99, 65, 80, 104]).tolist() == ["0-17", "0-17", "18-39", "40-64", "65-79",
                                                                      "80+", "80+"]
    assert code_group("ICD10CM//I50.9").startswith("ICD10CM I00-I99") and code_group("ATC//C09AA05") == "ATC"


def test_report_cli_on_the_tiny_synthetic_cohort(synthetic_model, tmp_path):
    from behrt_hf.training import embedding_report

    path, _ = synthetic_model
    report = embedding_report.main([
        "--model_name_or_path", path, "--synthetic", "tiny", "--output_dir", str(tmp_path), "--split", "all",
        "--max_patients", "150", "--min_positives", "5", "--map_patients", "80", "--map_method", "pca",
        "--max_length", "64",
    ])
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(report))
    assert report["patients"] == 150 and report["task"] is None and report["map_method"] == "pca"
    assert report["dimensions"] == {"pretrained": 32, "random": 32, "svd": 32}
    assert report["conditions"], "no condition had 5 patients with and without it"
    for name, entry in report["conditions"].items():
        assert 5 <= entry["positives"] <= 145 and 0 < entry["prevalence"] < 1
        for model in ("pretrained", "random", "svd"):
            assert set(entry[model]) == set(METRICS) and all(math.isfinite(v) for v in entry[model].values())
        assert entry["pretrained"] != entry["random"]  # the model is not the random baseline (other seeds)
    assert set(report["conditions"]).isdisjoint(report["skipped"])
    assert all(math.isfinite(v) for scores in report["mean"].values() for v in scores.values())
    assert set(report["code_map"]) == {"pretrained", "random", "svd"}
    for png in ("patient_map.png", "code_map.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert report["split"] == "all" and report["model"] == path


@pytest.mark.parametrize("method", ["tsne", "pca"])
def test_maps_are_two_dimensional(method):
    x, _ = two_clusters(40)
    xy = map_2d(x, resolve_map_method(method), seed=0)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    assert resolve_map_method("auto") in ("umap", "tsne")
    with pytest.raises(ValueError, match="map method must be one of"):
        resolve_map_method("mds")
