"""The synthetic EHR builder: determinism, schema, appropriateness of codes, tasks and their oracle."""

import csv
import datetime as dt
import importlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

from behrt_hf.data_builders import synthetic
from behrt_hf.data_builders import synthetic_ehr as se
from behrt_hf.data_builders._cache_key import cache_key, source_files
from behrt_hf.data_builders.synthetic import TASKS, simulate_patient
from behrt_hf.data_builders.synthetic import codes as C
from behrt_hf.data_builders.synthetic import params as P
from behrt_hf.data_builders.synthetic.hazards import WINDOW_YEARS
from behrt_hf.data_builders.synthetic.oracle import markers, task_oracle
from behrt_hf.data_builders.synthetic.simulate import model
from behrt_hf.schema import age_in_years, patient_features, validate_patient
from behrt_hf.training import synthetic_report as report

STATS_PATIENTS = 6000  # for the statistical checks (simulated directly, no Arrow)
WINDOW = dt.timedelta(days=365)


def _rows(ds):
    return [row for split in ("train", "validation", "test") for row in ds[split].to_list()]


def _comparable(rows):
    """Rows with NaN oracles (excluded patients) replaced, so that equal rows compare equal."""
    return [{k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def tiny(cache):
    return se.load_synthetic("tiny", seed=0, cache_dir=cache)


@pytest.fixture(scope="module")
def small_rows(cache):
    return _rows(se.load_synthetic("small", seed=0, cache_dir=cache))


@pytest.fixture(scope="module")
def stats_rows():
    records = [simulate_patient(0, i) for i in range(STATS_PATIENTS)]
    return records, [se.record_to_row(r) for r in records]


# --- the builder ------------------------------------------------------------------------------------


def test_tiny_splits_features_and_lazy_export(tiny):
    import behrt_hf

    assert behrt_hf.load_synthetic is se.load_synthetic and behrt_hf.SyntheticEHR is se.SyntheticEHR
    assert {k: len(v) for k, v in tiny.items()} == {"train": 160, "validation": 20, "test": 20}
    for split in tiny.values():
        assert split.features == patient_features(TASKS, with_oracle=True)
    ids = [pid for split in tiny.values() for pid in split["patient_id"]]
    assert sorted(ids, key=int) == [str(i) for i in range(200)]
    for name, split in tiny.items():
        assert all(se.split_of(int(pid)) == name for pid in split["patient_id"])


def test_split_fractions_are_close_for_every_prefix():
    for n in (50, 200, 2000):
        counts = {s: 0 for s in se.SPLITS}
        for i in range(n):
            counts[se.split_of(i)] += 1
        assert abs(counts["train"] - 0.8 * n) <= 3 and abs(counts["test"] - 0.1 * n) <= 3


def test_same_seed_identical_rows_and_fingerprint(tiny, tmp_path):
    again = se.load_synthetic("tiny", seed=0, cache_dir=str(tmp_path / "other"))
    for split in tiny:
        assert again[split]._fingerprint == tiny[split]._fingerprint
        assert _comparable(again[split].to_list()) == _comparable(tiny[split].to_list())


def test_other_seed_differs(tiny, cache):
    other = se.load_synthetic("tiny", seed=1, cache_dir=cache)
    assert other["train"]._fingerprint != tiny["train"]._fingerprint
    assert other["train"]["visits"] != tiny["train"]["visits"]


def test_independent_of_num_proc_and_cohort_size(tiny, tmp_path):
    builder = se.SyntheticEHR(config_name="tiny", seed=0, cache_dir=str(tmp_path))
    builder.download_and_prepare(num_proc=2)
    parallel = builder.as_dataset()
    for split in tiny:
        assert _comparable(parallel[split].to_list()) == _comparable(tiny[split].to_list())
    # a smaller cohort is a prefix of a larger one: records depend on (seed, index) only
    prefix = se.load_synthetic("tiny", seed=0, num_patients=30, cache_dir=str(tmp_path / "prefix"))
    by_id = {r["patient_id"]: r for r in _comparable(_rows(tiny))}
    for row in _comparable(_rows(prefix)):
        assert row == by_id[row["patient_id"]]


def test_cache_key_contains_generator_code_hash(monkeypatch, tmp_path):
    builder = se.SyntheticEHR(config_name="tiny", cache_dir=str(tmp_path))
    assert se.generator_code_hash() in builder.cache_dir
    monkeypatch.setattr(se, "generator_code_hash", lambda: "0123456789abcdef")
    changed = se.SyntheticEHR(config_name="tiny", cache_dir=str(tmp_path))
    assert "0123456789abcdef" in changed.cache_dir and changed.cache_dir != builder.cache_dir
    # same cohort asked for in two ways: one cache entry
    explicit = se.SyntheticEHR(config_name="tiny", seed=0, num_patients=200, cache_dir=str(tmp_path))
    assert explicit.cache_dir == changed.cache_dir


def test_generator_hash_covers_every_module_of_the_generator(tmp_path):
    root = Path(se.__file__).resolve().parent
    expected = sorted(p.resolve() for p in [*(root / "synthetic").rglob("*.py"), root / "synthetic_ehr.py"])
    assert source_files([synthetic, se]) == expected
    table = root / "resources" / "synthetic_codes.tsv"
    assert se.generator_code_hash() == cache_key([synthetic, se], data_files=[table])


def test_cache_key_follows_the_package_on_disk(tmp_path, monkeypatch):
    """A module added to a package later, named in no list, changes the key; so does an edit; the key is stable."""
    package = tmp_path / "keyed_generator"
    (package / "sub").mkdir(parents=True)
    for name, text in {"__init__.py": "", "a.py": "RATE = 1\n", "sub/__init__.py": ""}.items():
        (package / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("keyed_generator")
    keys = [cache_key([module])]
    assert cache_key([module]) == keys[0]
    (package / "sub" / "b.py").write_text("HAZARD = 2\n")
    keys.append(cache_key([module]))
    (package / "a.py").write_text("RATE = 3\n")
    keys.append(cache_key([module]))
    (tmp_path / "table.tsv").write_text("code\tdescription\n")
    keys.append(cache_key([module], data_files=[tmp_path / "table.tsv"]))
    assert len(set(keys)) == len(keys), keys
    assert cache_key([module], data_files=[tmp_path / "table.tsv"]) == keys[-1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "huge"},
        {"name": "tiny", "num_patients": 0},
        {"name": "tiny", "num_patients": -5},
        {"name": "tiny", "num_patients": 2.5},
        {"name": "tiny", "seed": -1},
        {"name": "tiny", "split_fractions": (0.8, 0.1)},
        {"name": "tiny", "split_fractions": (0.8, 0.3, 0.1)},
        {"name": "tiny", "split_fractions": (1.2, -0.1, -0.1)},
        {"name": "tiny", "split_fractions": "a,b,c"},
    ],
)
def test_bad_input_raises_value_error(kwargs, tmp_path):
    with pytest.raises(ValueError):
        se.load_synthetic(cache_dir=str(tmp_path), **kwargs)


def test_builder_rejects_unknown_config(tmp_path):
    with pytest.raises(ValueError, match="unknown config"):
        se.SyntheticEHR(config_name="xl", cache_dir=str(tmp_path))


def test_large_config_streams():
    import inspect

    assert inspect.isgeneratorfunction(se.SyntheticEHR._generate_examples)
    assert se.SyntheticEHR.builder_configs["large"].num_patients == 200_000
    shards = se.shard_ranges(200_000)
    assert len(shards) >= 80 and shards[0] == (0, 2500) and shards[-1][1] == 200_000


# --- records ------------------------------------------------------------------------------------------


def test_times_and_ages_monotone_and_exact(tiny):
    for row in _rows(tiny):
        validate_patient(row)
        times = [v["time"] for v in row["visits"]]
        assert all(a < b for a, b in zip(times, times[1:])), row["patient_id"]
    record = simulate_patient(0, 7)
    row = se.record_to_row(record)
    for visit, t in zip(row["visits"], record.visit_times()):
        assert visit["age"] == float(np.float32(age_in_years(t, record.birth)))
    assert record.visit_times()[0] > record.birth


def test_no_sex_or_age_inappropriate_codes_in_small(small_rows):
    pregnancy = re.compile(r"ICD10CM//(O|Z3A|Z34|Z37|Z39|Z32|Z30)")
    male_only = re.compile(r"ICD10CM//(N40|C61|Z12\.5|N41)|LOINC//2857-1|ATC//(G04C|L02AE|L02BB)")
    female_only = re.compile(r"ICD10CM//(C50|N9[2-5]|N76|Z12\.31|Z12\.4|Z01\.41)|ATC//(G03|G02B)")
    child_only = re.compile(r"ICD10CM//(Z00\.1|Z68\.5|J21|L22)|ATC//(J07CA09|J07BH01)")
    adult_only = re.compile(r"ICD10CM//(Z00\.0|Z68\.[34]|I10|E11|I50|F03|M81|N18)")
    bad = []
    for row in small_rows:
        sex = row["sex"]
        for visit in row["visits"]:
            age = visit["age"]
            for code in visit["codes"]:
                if (
                    not C.allowed(code, sex, age)
                    or (pregnancy.match(code) and not (sex == "F" and 15 <= age < 50))
                    or (male_only.match(code) and sex != "M")
                    or (female_only.match(code) and sex != "F")
                    or (child_only.match(code) and age >= 18)
                    or (adult_only.match(code) and age < 18)
                ):
                    bad.append((row["patient_id"], sex, age, code))
    assert not bad, bad[:10]
    # the cohort exercises the restricted modules (so the check above is not vacuous)
    seen = {c for row in small_rows for v in row["visits"] for c in v["codes"]}
    assert {"ICD10CM//O80", "ICD10CM//N40.1", "ICD10CM//Z00.129", "ATC//J07CA09", "ICD10CM//Z12.31"} <= seen


def _luhn_ok(loinc_code: str) -> bool:
    digits, check = loinc_code.split("-")
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if k % 2 == 0 else 1)
        total += d // 10 + d % 10
    return (10 - total % 10) % 10 == int(check)


def test_code_table_valid_and_up_to_date(small_rows):
    import simple_icd_10_cm as cm

    with open(C.RESOURCE_PATH, newline="", encoding="utf-8") as f:
        shipped = list(csv.DictReader(f, delimiter="\t"))
    assert shipped == C.build_table(), "regenerate: python -m behrt_hf.data_builders.synthetic.codes --write"
    assert len(shipped) >= 300
    for row in shipped:
        system, _, value = row["code"].partition("//")
        if system == "ICD10CM":
            assert cm.is_valid_item(value) and cm.is_leaf(value), row["code"]
            assert row["description"] == cm.get_description(value)
        elif system == "ATC":
            assert re.fullmatch(r"[A-NPRSV]\d\d[A-Z][A-Z]\d\d", value), row["code"]
        else:
            assert system == "LOINC" and re.fullmatch(r"\d{1,7}-\d", value) and _luhn_ok(value), row["code"]
    emitted = {c for r in small_rows for v in r["visits"] for c in v["codes"]}
    assert emitted <= set(C.code_table())
    assert len(emitted) >= 300


def test_long_tailed_code_frequencies(small_rows):
    counts = np.array(sorted(report.code_frequencies(small_rows).values(), reverse=True))
    share = counts / counts.sum()
    assert share[:10].sum() < 0.5  # no handful of codes dominates
    assert (share < 1e-3).sum() >= 100  # a long tail of rare codes
    assert counts[0] / counts[len(counts) // 2] > 20  # heavy head relative to the median code


# --- tasks and the oracle ---------------------------------------------------------------------------


def _event_in_window(row, task: str) -> bool:
    idx = row[f"index_visit_{task}"]
    t0 = row["visits"][idx]["time"]
    pattern = {"heart_failure_1y": "ICD10CM//I50", "fall_1y": "ICD10CM//W19",
               "exacerbation_1y": P.EXACERBATION_MARKER}[task]
    return any(
        t0 < v["time"] <= t0 + WINDOW and any(c.startswith(pattern) for c in v["codes"])
        for v in row["visits"][idx + 1 :]
    )


def test_task_columns_consistent(small_rows):
    included = {t: 0 for t in TASKS}
    for row in small_rows:
        for spec in P.TASK_SPECS:
            task = spec.name
            idx, label, oracle = row[f"index_visit_{task}"], row[f"label_{task}"], row[f"oracle_{task}"]
            if idx < 0:
                assert idx == -1 and label == -1 and math.isnan(oracle)
                continue
            included[task] += 1
            assert 0 <= idx < len(row["visits"]) and label in (0, 1) and 0.0 <= oracle <= 1.0
            assert row["visits"][idx]["age"] >= spec.min_age
            assert label == int(_event_in_window(row, task)), (row["patient_id"], task)
            history = {c for v in row["visits"][: idx + 1] for c in v["codes"]}
            if spec.exclude_recorded:  # already diagnosed patients are excluded
                assert markers()[spec.event].isdisjoint(history)
            have = sum(not markers()[k].isdisjoint(history) for k in spec.any_of)
            assert have >= (spec.min_any_of if spec.any_of else 0)
            encounters = sum(P.EXACERBATION_MARKER in v["codes"] for v in row["visits"][: idx + 1])
            assert encounters >= spec.min_exacerbations
            assert P.EXACERBATION_MARKER not in row["visits"][idx]["codes"]  # index visits are practice visits
    least = {"exacerbation_1y": 80}  # patients with asthma / COPD and an exacerbation before: ~6% of a cohort
    assert all(n >= least.get(t, 100) for t, n in included.items()), included


def test_oracle_is_a_function_of_the_visible_history(small_rows):
    checked = 0
    for row in small_rows[:600]:
        ages = [float(v["age"]) for v in row["visits"]]
        codes = [v["codes"] for v in row["visits"]]
        for task in TASKS:
            idx = row[f"index_visit_{task}"]
            if idx < 0:
                continue
            # from the row alone (float32 ages), and from the history truncated at the index visit
            full = task_oracle(task, row["sex"], ages, codes, idx)
            cut = task_oracle(task, row["sex"], ages[: idx + 1], codes[: idx + 1], idx)
            assert full == cut
            assert full == pytest.approx(row[f"oracle_{task}"], rel=1e-4, abs=1e-7)
            checked += 1
    assert checked > 100


def test_oracle_equals_the_simulated_hazard(stats_rows):
    """The oracle, computed from codes, integrates exactly the hazard the simulator used."""
    records, _ = stats_rows
    M = model()
    for record in records[:2000]:
        for spec in P.TASK_SPECS:
            idx, _, oracle = record.tasks[spec.name]
            if idx < 0 or spec.event not in M.idx:  # exacerbations: test_exacerbation_oracle_by_brute_force
                continue
            a0 = record.minutes[idx] / 525960
            log = record.hazard_log[spec.name]
            cuts = sorted({a0, a0 + WINDOW_YEARS} | {t for t, _ in log if a0 < t < a0 + WINDOW_YEARS})
            H, s = M.hazard[M.idx[spec.event]], 0 if record.sex == "F" else 1
            total = sum([h for t, h in log if t <= lo][-1] * H.integrate(s, lo, hi) for lo, hi in zip(cuts, cuts[1:]))
            assert 1.0 - math.exp(-total) == pytest.approx(oracle, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("task", TASKS)
def test_oracle_calibrated(stats_rows, task):
    _, rows = stats_rows
    inc, label, oracle = report.task_arrays(rows, task)
    y, p = label[inc].astype(float), oracle[inc]
    assert 0.04 <= y.mean() <= 0.3, y.mean()  # evaluable prevalence
    se_mean = math.sqrt((p * (1 - p)).sum()) / len(p)
    assert abs(y.mean() - p.mean()) < 4 * se_mean
    # binned calibration (Hosmer-Lemeshow over oracle deciles): chi2 with ~10 df, p < 0.001 fails
    edges = np.quantile(p, np.linspace(0, 1, 11))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
    stat = 0.0
    for k in range(10):
        sel = which == k
        expected, var = p[sel].sum(), (p[sel] * (1 - p[sel])).sum()
        stat += (y[sel].sum() - expected) ** 2 / var
    assert stat < 29.6, stat


@pytest.mark.parametrize("task", TASKS)
def test_oracle_auroc_and_logistic_baseline(stats_rows, task):
    _, rows = stats_rows
    result = report.logistic_cv(rows, task)
    assert result["oracle_auroc"] > 0.7, result
    assert 0.55 < result["lr_auroc"] < result["oracle_auroc"], result


# --- exacerbations of asthma and COPD: the temporal task --------------------------------------------


def _exacerbation_hazard_by_hand(ages, codes, idx, grid):
    """The exacerbation hazard on `grid` (ages after visit `idx`), read off the codes as the card
    describes it, written without the generator's helpers."""
    kind = None
    encounters = []  # (age, stepped up there)
    steps = {c for k in P.EXACERBATION_KINDS for c in P.STEP_UP_CODES[k]}
    for age, visit in zip(ages[: idx + 1], codes[: idx + 1]):
        for k in P.EXACERBATION_KINDS:
            if kind is None and P.CONDITION_BY_NAME[k].dx in visit:
                kind = k
        if P.EXACERBATION_MARKER in visit:
            encounters.append((age, bool(steps & set(visit))))
    assert kind is not None and encounters
    if encounters[-1][1]:
        g = P.EXACERBATION_STEPPED
    elif any(stepped for _, stepped in encounters):
        g = P.EXACERBATION_UNCONTROLLED
    else:
        g = 1.0
    times = np.array([a for a, _ in encounters])
    recent = ((grid[:, None] - times[None, :] > 0) & (grid[:, None] - times[None, :] <= WINDOW_YEARS)).sum(1)
    excess = P.EXACERBATION_RECENCY * np.exp(-(grid - times[-1]) / P.EXACERBATION_DECAY_YEARS)
    return P.EXACERBATION_RATE[kind] * g * (1.0 + P.EXACERBATION_FREQUENT * recent + excess)


def test_exacerbation_oracle_by_brute_force(stats_rows):
    """The closed form equals a numerical integral (midpoint rule) of the hazard read off the codes."""
    records, _ = stats_rows
    checked = 0
    for record in records:
        idx, _, oracle = record.tasks["exacerbation_1y"]
        if idx < 0:
            continue
        ages = [m / 525960 for m in record.minutes]
        steps = 40000
        grid = ages[idx] + (np.arange(steps) + 0.5) * (WINDOW_YEARS / steps)
        integral = _exacerbation_hazard_by_hand(ages, record.codes, idx, grid).sum() * WINDOW_YEARS / steps
        assert 1.0 - math.exp(-integral) == pytest.approx(oracle, rel=1e-4, abs=1e-6), record.index
        checked += 1
        if checked == 40:
            break
    assert checked == 40


def test_next_exacerbation_inverts_the_cumulative_hazard(monkeypatch):
    from behrt_hf.data_builders.synthetic import exacerbations as X

    histories = ([], [X.Exacerbation(49.5, True)], [X.Exacerbation(48.0, True), X.Exacerbation(49.9, False)])
    for kind in P.EXACERBATION_KINDS:
        for history in histories:
            for target in (1e-3, 0.7, 3.0):
                when = X.next_exacerbation(kind, history, 50.0, target)
                assert X.cumulative_hazard(kind, history, 50.0, when) == pytest.approx(target, rel=1e-8, abs=1e-9)
    monkeypatch.setattr(P, "EXACERBATION_RATE", {k: 1e-12 for k in P.EXACERBATION_KINDS})
    assert X.next_exacerbation("copd", [], 50.0, 1.0) == math.inf


def test_exacerbation_task_covers_every_order_state(stats_rows):
    """Eligible patients have had an exacerbation; all three orders of step-up and exacerbation occur
    (uncontrolled, which needs two exacerbations, is the rarest: ~3% of eligible patients)."""
    from behrt_hf.data_builders.synthetic import exacerbations as X

    records, _ = stats_rows
    factors = []
    for record in records:
        idx, _, _ = record.tasks["exacerbation_1y"]
        if idx >= 0:
            kind, history = X.from_record([m / 525960 for m in record.minutes], record.codes, idx)
            assert kind in P.EXACERBATION_KINDS and len(history) >= 1
            factors.append(X.order_factor(history))
    counts = {g: factors.count(g) for g in (1.0, P.EXACERBATION_STEPPED, P.EXACERBATION_UNCONTROLLED)}
    assert all(n >= 5 for n in counts.values()) and sum(counts.values()) >= 150, counts


def test_exacerbations_leave_the_rest_of_the_record_unchanged(monkeypatch):
    """Their own random stream: without exacerbations (a vanishing rate) every other visit, code,
    index visit, label and oracle of the other tasks is the same."""
    with_them = [simulate_patient(3, i) for i in range(400)]
    monkeypatch.setattr(P, "EXACERBATION_RATE", {k: 1e-12 for k in P.EXACERBATION_KINDS})
    without = [simulate_patient(3, i) for i in range(400)]
    changed = 0
    for a, b in zip(with_them, without):
        assert all(P.EXACERBATION_MARKER not in codes for codes in b.codes)
        keep = [k for k, codes in enumerate(a.codes) if P.EXACERBATION_MARKER not in codes]
        changed += len(keep) < len(a.codes)
        assert [a.minutes[k] for k in keep] == b.minutes and [a.codes[k] for k in keep] == b.codes
        for task in ("heart_failure_1y", "fall_1y"):
            (ia, la, oa), (ib, lb, ob) = a.tasks[task], b.tasks[task]
            assert (ia < 0) == (ib < 0)
            if ia >= 0:
                assert (a.minutes[ia], la, oa) == (b.minutes[ib], lb, ob)
    assert changed >= 10  # the comparison covered patients with exacerbations


def test_prevalence_roughly_matches_targets(stats_rows):
    _, rows = stats_rows
    prev = report.prevalence_by_age(rows)
    for name, targets in P.TARGET_PREVALENCE.items():
        if P.CONDITION_BY_NAME[name].enrichment != 1.0:
            continue
        got, n = prev[name]["all"]
        for band, (g, t, k) in enumerate(zip(got, targets, n)):
            if t >= 0.05 and k >= 300:  # well-estimated, non-trivial cells
                assert t / 2.5 <= g <= t * 2.5, (name, P.AGE_BANDS[band], g, t)


def test_report_prints_and_plots(tiny, cache, tmp_path, capsys):
    assert report.main(["--synthetic", "tiny", "--cache_dir", cache, "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "prevalence of recorded conditions" in out and "heart_failure_1y" in out
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["prevalence_by_age.png", "tasks_calibration.png", "utilisation_and_codes.png"]
    with pytest.raises(ValueError, match="max_patients must be positive"):
        report.main(["--synthetic", "tiny", "--max_patients", "0"])


def test_console_scripts_resolve():
    import configparser
    import importlib
    import os

    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), "..", "setup.cfg"))
    lines = cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    mine = [line for line in lines if line.startswith("behrt-synthetic")]
    assert len(mine) == 2
    for line in mine:
        target = line.split("=", 1)[1].strip()
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
