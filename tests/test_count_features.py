"""Count features and the count baselines: the cut (no leakage), the counts, train-only columns, determinism."""

import datetime as dt

import datasets
import numpy as np
import pytest

from behrt_hf import patient_features
from behrt_hf.baselines import CountBaseline
from behrt_hf.count_features import CountFeaturizer
from behrt_hf.tasks import Task
from tests.helpers import CODES, add_toy_task, make_patients

TASK = Task("demo")


def split_of(patients) -> datasets.Dataset:
    return datasets.Dataset.from_list(patients, features=patient_features(tasks=["demo"], with_oracle=True))


def visit(day: int, codes, birth=dt.datetime(1950, 1, 1)) -> dict:
    return {"time": birth + dt.timedelta(days=day), "age": day / 365.25, "codes": list(codes)}


def hand_made(index_visit: int = 2, later=("ICD10CM//LATE",)) -> dict:
    """Visits on days 20000, 20300, 20400 (the index), then one after it."""
    visits = [visit(20000, ["A//1", "A//2"]), visit(20300, ["A//1"]), visit(20400, ["A//1", "A//3"]),
              visit(20500, later)]
    return {"patient_id": "p", "sex": "F", "visits": visits, "label_demo": 1, "index_visit_demo": index_visit,
            "oracle_demo": 0.5}


def other(pid="q", sex="M", label=0) -> dict:
    return {"patient_id": pid, "sex": sex, "visits": [visit(10000, ["A//2"]), visit(10010, ["A//9"])],
            "label_demo": label, "index_visit_demo": 1, "oracle_demo": 0.2}


def test_counts_windows_age_and_sex_of_a_hand_made_patient():
    split = split_of([hand_made(), other()])
    featurizer = CountFeaturizer(windows_days=(90, 365)).fit(split, TASK)
    assert featurizer.codes == ["A//1", "A//2", "A//3", "A//9"]  # ICD10CM//LATE is after every cut
    features = featurizer.transform(split, TASK)
    row = dict(zip(featurizer.feature_names, features.matrix[0].toarray()[0]))
    assert row["age"] == pytest.approx(20400 / 365.25, abs=1e-4) and row["sex=F"] == 1 and row["sex=M"] == 0
    assert row["log1p_visits"] == pytest.approx(np.log1p(3))
    assert row["all:A//1"] == pytest.approx(np.log1p(3)) and row["all:A//2"] == pytest.approx(np.log1p(1))
    assert row["365d:A//1"] == pytest.approx(np.log1p(2))  # days 20300 and 20400, not 20000
    assert row["90d:A//1"] == pytest.approx(np.log1p(1)) and row["90d:A//3"] == pytest.approx(np.log1p(1))
    assert row["365d:A//2"] == 0 and row["all:A//9"] == 0
    assert features.labels.tolist() == [1, 0] and features.patient_id == ["p", "q"]
    assert features.oracle.tolist() == pytest.approx([0.5, 0.2])
    assert features.age[1] == pytest.approx(10010 / 365.25, abs=1e-4) and features.sex.tolist() == ["F", "M"]


def test_nothing_after_the_index_visit_changes_the_features():
    """Leakage: a marker code (and a later visit) after the cut leaves every feature as it was."""
    base = [hand_made(later=("A//1",)), other()]
    marked = [hand_made(later=("A//1", "A//2", "A//3", "MARKER//X")), other()]
    marked[0]["visits"].append(visit(20600, ["MARKER//X", "A//1"]))
    featurizer = CountFeaturizer().fit(split_of(base + [other("r", "F", 1)]), TASK)
    before, after = featurizer.transform(split_of(base), TASK), featurizer.transform(split_of(marked), TASK)
    assert (before.matrix != after.matrix).nnz == 0
    np.testing.assert_array_equal(before.age, after.age)
    # and a marker in training after the cut gets no column
    assert "MARKER//X" not in CountFeaturizer().fit(split_of(marked), TASK).codes
    # moving the cut forward does change them: the test can fail
    moved = featurizer.transform(split_of([hand_made(index_visit=3, later=("A//1",)), other()]), TASK)
    assert (before.matrix != moved.matrix).nnz > 0


def test_columns_come_from_the_fitted_split_only_and_are_deterministic():
    train = split_of(add_toy_task(make_patients(60, seed=1), seed=1))
    test_patients = add_toy_task(make_patients(30, seed=2), seed=2)
    for p in test_patients:
        if p["index_visit_demo"] >= 0:
            p["visits"][0]["codes"].append("ONLY//TEST")
    test = split_of(test_patients)
    first, second = CountFeaturizer().fit(train, TASK), CountFeaturizer().fit(train, TASK)
    assert first.feature_names == second.feature_names
    assert not any("ONLY//TEST" in name for name in first.feature_names)
    a, b = first.transform(test, TASK), second.transform(test, TASK)
    assert (a.matrix != b.matrix).nnz == 0
    assert a.matrix.shape == (len(TASK.eligible(test)), len(first.feature_names))
    assert len(CountFeaturizer(min_patients=5).fit(train, TASK).codes) < len(first.codes)
    with pytest.raises(ValueError, match="fit"):
        CountFeaturizer().transform(test, TASK)


@pytest.mark.parametrize("kind, least", [("logistic", 0.7), ("gbm", 0.62)])  # trees overfit 260 patients more
def test_count_baselines_learn_the_toy_task_and_are_deterministic(kind, least):
    featurizer = CountFeaturizer().fit(split_of(add_toy_task(make_patients(300, seed=1), seed=1)), TASK)
    train, val, test = (featurizer.transform(split_of(add_toy_task(make_patients(n, seed=s), seed=s)), TASK)
                        for n, s in [(300, 1), (120, 2), (200, 3)])
    from sklearn.metrics import roc_auc_score

    model = CountBaseline(kind, seed=3).fit(train.matrix, train.labels, val.matrix, val.labels)
    probs = model.predict_proba(test.matrix)
    oracle = roc_auc_score(test.labels, test.oracle)
    assert least < roc_auc_score(test.labels, probs) <= oracle + 0.05  # the marker code decides the label
    assert model.selected["validation_auroc"] == max(c["validation_auroc"] for c in model.selected["candidates"])
    again = CountBaseline(kind, seed=3).fit(train.matrix, train.labels, val.matrix, val.labels)
    np.testing.assert_array_equal(probs, again.predict_proba(test.matrix))
    with pytest.raises(ValueError, match="both classes"):
        CountBaseline(kind).fit(train.matrix, train.labels, val.matrix[:3], np.zeros(3))


def test_a_cut_that_loses_a_visit_before_the_index_visit_is_refused():
    """Visit ages are looked up by visit number: a cut dropping an earlier visit must fail, not shift them."""

    class DropsAVisit(Task):
        def encode(self, split, tokenizer, max_length, **kwargs):
            earlier = split.map(lambda i: {self.index_visit: i - 1}, input_columns=self.index_visit)
            return super().encode(earlier, tokenizer, max_length, **kwargs)

    with pytest.raises(ValueError, match="patient 'p': the cut input holds 2 visits, not the 3"):
        CountFeaturizer().fit(split_of([hand_made(), other()]), DropsAVisit("demo"))
