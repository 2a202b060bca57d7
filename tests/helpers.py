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
