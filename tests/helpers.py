"""Small builders shared by the tests: random patients in the schema and a tiny BEHRT config."""

import datetime as dt
import random

from behrt_hf import BehrtConfig

CODES = [f"ICD10CM//X{i:02d}" for i in range(40)] + [f"ATC//M{i:02d}" for i in range(20)]


def make_patients(n: int = 8, seed: int = 0, max_visits: int = 6, max_codes: int = 4) -> list[dict]:
    """`n` valid patients with random visits (ages and times increasing, 1..max_codes codes each)."""
    rng = random.Random(seed)
    patients = []
    for i in range(n):
        birth = dt.datetime(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 60 * 365))
        age_days = rng.randrange(0, 50 * 365)
        visits = []
        for _ in range(rng.randint(1, max_visits)):
            age_days += rng.randrange(1, 400)
            time = birth + dt.timedelta(days=age_days)
            codes = [rng.choice(CODES) for _ in range(rng.randint(1, max_codes))]
            visits.append({"time": time, "age": age_days / 365.25, "codes": codes})
        patients.append({"patient_id": str(i), "sex": rng.choice("FM"), "visits": visits})
    return patients


def tiny_config(**overrides) -> BehrtConfig:
    """The ModelTester size: hidden 32, 2 layers, 4 heads, vocab 99."""
    values = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )
    values.update(overrides)
    return BehrtConfig(**values)


def add_toy_task(patients: list[dict], seed: int = 0, task: str = "demo") -> list[dict]:
    """A learnable binary task: the label depends on a marker code up to the index visit.

    The index visit is the second-to-last visit (patients with one visit are excluded: label -1),
    and the marker placed *after* the index visit carries no signal, so a model that leaks the
    future scores no better. `oracle_<task>` is the true probability.
    """
    rng = random.Random(seed)
    marker = CODES[1]
    out = []
    for p in patients:
        p = dict(p, visits=[dict(v) for v in p["visits"]])
        if len(p["visits"]) < 2:
            p.update({f"label_{task}": -1, f"index_visit_{task}": -1, f"oracle_{task}": float("nan")})
            out.append(p)
            continue
        index = len(p["visits"]) - 2
        has_marker = rng.random() < 0.4
        if has_marker:
            p["visits"][rng.randrange(index + 1)]["codes"].append(marker)
        probability = 0.7 if has_marker else 0.1
        label = int(rng.random() < probability)
        if label:  # a future-only echo of the label, invisible when the input is cut correctly
            p["visits"][-1]["codes"].append(CODES[2])
        p.update({f"label_{task}": label, f"index_visit_{task}": index, f"oracle_{task}": probability})
        out.append(p)
    return out


def pretrain_a_few_steps(splits, tmp_path, steps: int = 3, extra_args: tuple[str, ...] = ()) -> dict:
    """Run `behrt-pretrain` (MLM, tiny model) for a few steps on a reader's output, end to end.

    All patients go to both train and evaluation: reader fixtures are too small to spare any.
    """
    import datasets

    from behrt_hf.training import pretrain

    everyone = datasets.concatenate_datasets([s for s in splits.values() if len(s)])
    path = tmp_path / "reader_cohort"
    datasets.DatasetDict({"train": everyone, "validation": everyone}).save_to_disk(str(path))
    result = pretrain.main([
        "--dataset_path", str(path), "--output_dir", str(tmp_path / "pretrain"), "--do_train",
        "--max_steps", str(steps), "--per_device_train_batch_size", "2", "--objective", "mlm",
        "--config_overrides", "hidden_size=32,num_hidden_layers=1,num_attention_heads=4,intermediate_size=37",
        "--max_length", "64", "--use_cpu", "--report_to", "none", "--disable_tqdm", "true", *extra_args,
    ])
    assert result["train"]["train_loss"] > 0 and result["eval"]["eval_mlm_num_masked"] > 0
    assert (tmp_path / "pretrain" / "model.safetensors").exists()
    return result


def save_task_cohort(path) -> tuple[str, dict[str, list[dict]]]:
    """A DatasetDict (train 160 / validation 60 / test 60 patients) with the toy task `demo` and its
    oracle saved at `path`; returns the path and the patients of each split."""
    import datasets

    from behrt_hf import patient_features

    features = patient_features(tasks=["demo"], with_oracle=True)
    splits = {name: add_toy_task(make_patients(n, seed=seed, max_visits=6), seed=seed)
              for name, n, seed in [("train", 160, 1), ("validation", 60, 2), ("test", 60, 3)]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v, features=features) for k, v in splits.items()}).save_to_disk(
        str(path))
    return str(path), splits
