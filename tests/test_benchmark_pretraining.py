"""The time-to-quality benchmark: variants resolve over the baseline, a tiny run writes its curves,
crossings and charts, and a run stops once it reaches the top threshold."""

import json

import pytest

from behrt_hf.training import benchmark_pretraining as ttq
from tests.test_pretrain import save_cohort
from tests.helpers import make_patients


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    path = tmp_path_factory.mktemp("ttq_cohort") / "data"
    return save_cohort(path, make_patients(60, seed=1, max_visits=6), make_patients(20, seed=2, max_visits=6))


def test_variants_resolve_over_the_baseline_and_combine():
    plain = ttq.resolve("baseline")
    assert plain.training["learning_rate"] == 2e-3 and plain.config["layer_norm_position"] == "post"
    both = ttq.resolve("pre_ln+lr_4e-3")
    assert both.config["layer_norm_position"] == "pre" and both.training["learning_rate"] == 4e-3
    assert both.training["per_device_train_batch_size"] == plain.training["per_device_train_batch_size"]
    with pytest.raises(ValueError, match="no_such_variant"):
        ttq.resolve("pre_ln+no_such_variant")
    with pytest.raises(ValueError, match="no_such_variant"):
        ttq.TimeToQualityArguments(variants="baseline,no_such_variant")


def test_first_crossing_is_the_first_evaluation_at_or_above_the_threshold():
    curve = [{"step": 0, "seconds": 0.0, "accuracy": 0.1}, {"step": 50, "seconds": 5.0, "accuracy": 0.45},
             {"step": 100, "seconds": 9.0, "accuracy": 0.41}, {"step": 150, "seconds": 14.0, "accuracy": 0.62}]
    assert ttq.first_crossing(curve, 0.4) == {"step": 50, "seconds": 5.0}
    assert ttq.first_crossing(curve, 0.6) == {"step": 150, "seconds": 14.0}
    assert ttq.first_crossing(curve, 0.7) is None


def _argv(cohort, out, *extra):
    return ["--output_dir", str(out), "--dataset_path", cohort, "--synthetic", "tiny", "--max_length", "48",
            "--preset", "small", "--eval_every", "2", "--eval_patients", "8", "--use_cpu", *extra]


def test_tiny_run_writes_curves_table_and_chart(cohort, tmp_path, capsys):
    results = ttq.main(_argv(cohort, tmp_path, "--variants", "baseline,dropout_0+batch_16", "--seeds", "0,1",
                             "--max_steps", "4", "--thresholds", "0.9,0.95"))
    runs = results["runs"]
    assert [(r["variant"], r["seed"]) for r in runs] == [
        ("baseline", 0), ("baseline", 1), ("dropout_0+batch_16", 0), ("dropout_0+batch_16", 1)]
    for run in runs:
        assert [p["step"] for p in run["curve"]] == [0, 2, 4]
        assert all(0.0 <= p["accuracy"] <= 1.0 for p in run["curve"])
        assert run["curve"][-1]["seconds"] > run["curve"][0]["seconds"] == pytest.approx(0.0, abs=1.0)
    saved = json.loads((tmp_path / "time_to_quality.json").read_text())
    assert saved["variants"]["dropout_0+batch_16"]["training"]["per_device_train_batch_size"] == 16
    assert saved["summary"]["baseline"]["thresholds"]["0.9"]["runs"] == 2
    assert (tmp_path / "time_to_quality.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "steps@0.9" in out and "dropout_0+batch_16" in out


def test_run_stops_once_it_reaches_the_top_threshold(cohort, tmp_path):
    # accuracy >= 0 holds at the first evaluation after step 0, so the run ends there
    results = ttq.main(_argv(cohort, tmp_path, "--variants", "baseline", "--max_steps", "6", "--thresholds", "0.0"))
    run = results["runs"][0]
    assert run["final_step"] == 2 and run["crossings"]["0.0"]["step"] == 0
    kept_going = ttq.main(_argv(cohort, tmp_path / "all", "--variants", "baseline", "--max_steps", "6",
                                "--thresholds", "0.0", "--stop_at_last_threshold", "false"))
    assert kept_going["runs"][0]["final_step"] == 6
