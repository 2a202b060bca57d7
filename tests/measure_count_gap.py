"""How far the count baselines fall short of a synthetic task's oracle, on an independent test cohort.

    python tests/measure_count_gap.py [--tasks exacerbation_1y,fall_1y,heart_failure_1y] [--config medium]
                                      [--train_seed 0] [--test_seed 1] [--resamples 1000] [--cache_dir DIR]

For each task: `CountFeaturizer` (log counts, 90 / 365-day windowed counts, age, sex) fitted on the
training split of the `--train_seed` cohort; `CountBaseline` logistic and gbm trained on that split,
hyperparameters chosen on its validation split; tested on every eligible patient of the
`--test_seed` cohort (all three splits), beside the oracle. Prints prevalence, eligible / positive
counts, and AUROC with percentile bootstrap 95% intervals, plus the paired oracle-minus-baseline
differences (`behrt_hf.stats.compare_models`: every model on the same resamples).
"""

from __future__ import annotations

import argparse
import time

import datasets
import numpy as np

from behrt_hf.baselines import BASELINES, CountBaseline
from behrt_hf.count_features import CountFeaturizer
from behrt_hf.data_builders.synthetic_ehr import TASKS, load_synthetic
from behrt_hf.stats import compare_models
from behrt_hf.tasks import Task


def measure(task_name: str, train_cohort, test_cohort, resamples: int, seed: int = 0) -> dict:
    task = Task(task_name)
    test_all = datasets.concatenate_datasets([test_cohort[s] for s in ("train", "validation", "test")])
    featurizer = CountFeaturizer().fit(train_cohort["train"], task)
    train = featurizer.transform(train_cohort["train"], task)
    val = featurizer.transform(train_cohort["validation"], task)
    test = featurizer.transform(test_all, task)
    scores = {"oracle": test.oracle}
    selected = {}
    for kind in BASELINES:
        model = CountBaseline(kind, seed=seed).fit(train.matrix, train.labels, val.matrix, val.labels)
        scores[kind] = model.predict_proba(test.matrix)
        selected[kind] = {k: v for k, v in model.selected.items() if k != "candidates"}
    pairs = [("oracle", kind) for kind in BASELINES]
    result = compare_models(scores, test.labels, pairs, resamples=resamples, seed=seed)
    return {"task": task_name, "train_patients": len(train.labels), "train_positive": int(train.labels.sum()),
            "test_patients": len(test.labels), "test_positive": int(test.labels.sum()),
            "mean_oracle": float(np.mean(test.oracle)), "features": train.matrix.shape[1], "selected": selected,
            **result}


def format_result(r: dict) -> str:
    def ci(m):
        return f"{m['value']:.3f} [{m['low']:.3f}, {m['high']:.3f}]"

    lines = [f"{r['task']}: test {r['test_patients']:,} eligible, {r['test_positive']:,} positive "
             f"({r['test_positive'] / r['test_patients']:.1%}; mean oracle {r['mean_oracle']:.1%}); "
             f"train {r['train_patients']:,} ({r['train_positive']:,} positive), {r['features']:,} features"]
    for name, metrics in r["models"].items():
        chosen = r["selected"].get(name, {})
        extra = ", ".join(f"{k}={v}" for k, v in chosen.items() if k not in ("kind", "validation_auroc"))
        lines.append(f"  {name:8s} AUROC {ci(metrics['auroc'])}   AUPRC {ci(metrics['auprc'])}"
                     + (f"   ({extra})" if extra else ""))
    for (a, b), metrics in r["pairs"].items():
        d = metrics["auroc"]
        lines.append(f"  {a} - {b}: AUROC {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--config", default="medium")
    parser.add_argument("--train_seed", type=int, default=0)
    parser.add_argument("--test_seed", type=int, default=1)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--cache_dir", default=None)
    args = parser.parse_args(argv)
    start = time.time()
    train_cohort = load_synthetic(args.config, seed=args.train_seed, cache_dir=args.cache_dir)
    test_cohort = load_synthetic(args.config, seed=args.test_seed, cache_dir=args.cache_dir)
    print(f"cohorts {args.config} seed {args.train_seed} (train) and {args.test_seed} (test): "
          f"{time.time() - start:.0f}s")
    for name in args.tasks.split(","):
        print(format_result(measure(name, train_cohort, test_cohort, args.resamples)), flush=True)
    print(f"total {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
