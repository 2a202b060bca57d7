"""Realism report for a synthetic EHR cohort: tables on stdout, figures as PNG.

    behrt-synthetic-report --synthetic small --seed 0 --output_dir synthetic_report/
    python -m behrt_hf.training.synthetic_report --synthetic medium --num_patients 5000

What it shows, so a reader can judge the cohort:
  * prevalence of each condition (recorded by the end of follow-up) by age band and sex, next to the
    published target in `params.TARGET_PREVALENCE` (sources printed alongside);
  * visits per patient, codes per visit, code frequencies (rank plot, long tail);
  * the most over-represented pairs of co-occurring conditions (lift);
  * per task: included patients, label prevalence, mean oracle, the oracle's AUROC (the Bayes
    ceiling) and a bag-of-codes logistic-regression baseline trained on train, scored on test.

All functions take rows of the patient schema (dicts), so they work on any loaded split.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
from dataclasses import dataclass, field

import numpy as np

from behrt_hf.data_builders.synthetic import params as P
from behrt_hf.data_builders.synthetic.oracle import markers
from behrt_hf.data_builders.synthetic_ehr import CONFIG_SIZES, load_synthetic


def recorded_conditions(row) -> set:
    """Conditions recorded anywhere in the patient's record (by their marker codes)."""
    seen = {c for visit in row["visits"] for c in visit["codes"]}
    return {name for name, codes in markers().items() if not codes.isdisjoint(seen)}


def _band(age: float) -> int:
    for k, (lo, hi) in enumerate(P.AGE_BANDS):
        if lo <= age < hi:
            return k
    return len(P.AGE_BANDS) - 1


def prevalence_by_age(rows, names=None) -> dict:
    """name -> {"all"|"F"|"M": (prevalence per band, patients per band)} at the end of follow-up."""
    names = list(names or P.TARGET_PREVALENCE)
    n_bands = len(P.AGE_BANDS)
    counts = {key: np.zeros(n_bands) for key in ("all", "F", "M")}
    hits = {name: {key: np.zeros(n_bands) for key in counts} for name in names}
    for row in rows:
        band = _band(row["visits"][-1]["age"])
        have = recorded_conditions(row)
        for key in ("all", row["sex"]):
            counts[key][band] += 1
            for name in names:
                if name in have:
                    hits[name][key][band] += 1
    return {name: {key: (hits[name][key] / np.maximum(counts[key], 1), counts[key]) for key in counts}
            for name in names}


def task_arrays(rows, task: str):
    """(included mask, labels, oracle) as arrays for one task."""
    idx = np.array([row[f"index_visit_{task}"] for row in rows])
    label = np.array([row[f"label_{task}"] for row in rows])
    oracle = np.array([row[f"oracle_{task}"] for row in rows], dtype=float)
    return idx >= 0, label, oracle


def auroc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def history_document(row, task: str) -> list:
    """Codes up to and including the index visit, plus age and sex tokens (bag-of-codes input)."""
    idx = row[f"index_visit_{task}"]
    visits = row["visits"][: idx + 1]
    tokens = [c for v in visits for c in v["codes"]]
    tokens.append(f"SEX//{row['sex']}")
    tokens.append(f"AGE//{int(visits[-1]['age'] // 5) * 5}")
    return tokens


def _fit_predict(train, test, task: str, seed: int):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer(analyzer=lambda doc: doc, binary=True, min_df=2)
    x_train = vec.fit_transform([history_document(r, task) for r in train])
    model = LogisticRegression(C=0.3, max_iter=2000, random_state=seed)
    model.fit(x_train, [r[f"label_{task}"] for r in train])
    return model.predict_proba(vec.transform([history_document(r, task) for r in test]))[:, 1]


def logistic_baseline(train_rows, test_rows, task: str, seed: int = 0) -> dict:
    """Bag-of-codes (binary) logistic regression: fit on train, AUROC on test."""
    train = [r for r in train_rows if r[f"index_visit_{task}"] >= 0]
    test = [r for r in test_rows if r[f"index_visit_{task}"] >= 0]
    y_train = np.array([r[f"label_{task}"] for r in train])
    y_test = np.array([r[f"label_{task}"] for r in test])
    if len(set(y_train)) < 2 or len(set(y_test)) < 2:
        return {"auroc": float("nan"), "n_train": len(train), "n_test": len(test)}
    scores = _fit_predict(train, test, task, seed)
    return {"auroc": auroc(y_test, scores), "n_train": len(train), "n_test": len(test)}


def logistic_cv(rows, task: str, folds: int = 5, seed: int = 0) -> dict:
    """Out-of-fold bag-of-codes LR scores over all included patients, next to the oracle's AUROC
    on the same patients (a fairer comparison than one small test split)."""
    from sklearn.model_selection import StratifiedKFold

    rows = [r for r in rows if r[f"index_visit_{task}"] >= 0]
    y = np.array([r[f"label_{task}"] for r in rows])
    oracle = np.array([r[f"oracle_{task}"] for r in rows], dtype=float)
    scores = np.zeros(len(rows))
    for train_idx, test_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(rows, y):
        scores[test_idx] = _fit_predict([rows[i] for i in train_idx], [rows[i] for i in test_idx], task, seed)
    return {"lr_auroc": auroc(y, scores), "oracle_auroc": auroc(y, oracle), "n": len(rows),
            "positives": int(y.sum())}


@dataclass
class TaskSummary:
    task: str
    included: int
    prevalence: float
    mean_oracle: float
    oracle_auroc_all: float
    oracle_auroc_test: float
    lr_auroc_test: float
    lr_auroc_cv: float


def summarize_task(splits: dict, task: str) -> TaskSummary:
    rows = [r for split in splits.values() for r in split]
    inc, label, oracle = task_arrays(rows, task)
    t_inc, t_label, t_oracle = task_arrays(splits["test"], task)
    lr = logistic_baseline(splits["train"], splits["test"], task)
    return TaskSummary(
        task, int(inc.sum()), float(label[inc].mean()) if inc.any() else float("nan"),
        float(oracle[inc].mean()) if inc.any() else float("nan"),
        auroc(label[inc], oracle[inc]) if inc.any() else float("nan"),
        auroc(t_label[t_inc], t_oracle[t_inc]) if t_inc.any() else float("nan"),
        lr["auroc"],
        logistic_cv(rows, task)["lr_auroc"] if inc.sum() >= 50 else float("nan"),
    )


def cooccurring_pairs(rows, top: int = 10) -> list:
    """Most over-represented pairs of recorded conditions: (a, b, patients with both, lift)."""
    sets = [recorded_conditions(r) for r in rows]
    n = len(sets)
    single = collections.Counter(c for s in sets for c in s)
    pairs = collections.Counter(p for s in sets for p in itertools.combinations(sorted(s), 2))
    out = []
    for (a, b), k in pairs.items():
        if k >= 10:
            lift = k * n / (single[a] * single[b])
            out.append((a, b, k, lift))
    out.sort(key=lambda x: (-x[2] * math.log(max(x[3], 1e-9)), a))
    return out[:top]


def code_frequencies(rows) -> collections.Counter:
    return collections.Counter(c for r in rows for v in r["visits"] for c in v["codes"])


# --- output ----------------------------------------------------------------------------------------


def print_report(splits: dict, out=print) -> dict:
    rows = [r for split in splits.values() for r in split]
    visits = np.array([len(r["visits"]) for r in rows])
    codes_per_visit = np.array([len(v["codes"]) for r in rows for v in r["visits"]])
    freq = code_frequencies(rows)
    out(f"patients: {len(rows)}  ({', '.join(f'{k}={len(v)}' for k, v in splits.items())})")
    out(f"visits per patient: mean {visits.mean():.1f}, median {np.median(visits):.0f}, "
        f"p90 {np.percentile(visits, 90):.0f}")
    out(f"codes per visit: mean {codes_per_visit.mean():.2f}, median {np.median(codes_per_visit):.0f}, "
        f"p90 {np.percentile(codes_per_visit, 90):.0f}")
    counts = np.array(sorted(freq.values(), reverse=True))
    top10 = counts[:10].sum() / counts.sum()
    out(f"distinct codes: {len(freq)}; top 10 codes carry {top10:.0%} of events; "
        f"{(counts < 10).sum()} codes seen fewer than 10 times")
    out("")
    bands = [f"{lo}-{hi - 1}" if hi < 200 else f"{lo}+" for lo, hi in P.AGE_BANDS]
    out("prevalence of recorded conditions at the end of follow-up, by age band (generated / target)")
    out(f"{'condition':<16}" + "".join(f"{b:>14}" for b in bands) + f"{'F:M (adults)':>14}")
    prev = prevalence_by_age(rows)
    for name, target in P.TARGET_PREVALENCE.items():
        got = prev[name]["all"][0]
        f_rate = prev[name]["F"][0][1:].mean()
        m_rate = prev[name]["M"][0][1:].mean()
        ratio = f_rate / m_rate if m_rate > 0 else float("inf")
        label = name + ("*" if P.CONDITION_BY_NAME[name].enrichment != 1.0 else "")
        out(f"{label:<16}" + "".join(f"{g:>7.1%}/{t:<6.1%}" for g, t in zip(got, target)) + f"{ratio:>14.2f}")
    for c in P.CONDITIONS:
        if c.enrichment != 1.0:
            out(f"* {c.name}: incidence x{c.enrichment:g} the published rates by design (task evaluability)")
    out("sources:")
    for name, src in P.TARGET_SOURCES.items():
        out(f"  {name}: {src}")
    out("")
    out("most over-represented co-occurring condition pairs (patients, lift):")
    for a, b, k, lift in cooccurring_pairs(rows):
        out(f"  {a} + {b}: {k} patients, lift {lift:.1f}")
    out("")
    out("tasks (excluded patients have index_visit = -1, label = -1, oracle = NaN):")
    summaries = {}
    for task in P.TASKS:
        s = summarize_task(splits, task)
        summaries[task] = s
        out(f"  {task}: included {s.included} ({s.included / len(rows):.0%}), prevalence {s.prevalence:.1%}, "
            f"mean oracle {s.mean_oracle:.1%}; AUROC oracle {s.oracle_auroc_all:.3f} (all), "
            f"{s.oracle_auroc_test:.3f} (test); bag-of-codes LR {s.lr_auroc_test:.3f} (test), "
            f"{s.lr_auroc_cv:.3f} (5-fold CV, all)")
    return {"prevalence": prev, "tasks": summaries, "freq": freq, "visits": visits,
            "codes_per_visit": codes_per_visit}


def save_figures(splits: dict, result: dict, output_dir: str) -> list:
    import matplotlib

    from behrt_hf.plotting import pyplot

    plt = pyplot()

    os.makedirs(output_dir, exist_ok=True)
    paths = []
    # prevalence by age band, generated (F, M) vs target
    names = list(P.TARGET_PREVALENCE)
    cols = 4
    fig, axes = plt.subplots(math.ceil(len(names) / cols), cols, figsize=(16, 3 * math.ceil(len(names) / cols)))
    x = np.arange(len(P.AGE_BANDS))
    labels = [f"{lo}-{hi - 1}" if hi < 200 else f"{lo}+" for lo, hi in P.AGE_BANDS]
    for ax, name in zip(axes.flat, names):
        prev = result["prevalence"][name]
        ax.bar(x - 0.2, prev["F"][0], 0.4, label="F", color="tab:red", alpha=0.7)
        ax.bar(x + 0.2, prev["M"][0], 0.4, label="M", color="tab:blue", alpha=0.7)
        ax.plot(x, P.TARGET_PREVALENCE[name], "k_", markersize=18, mew=2, label="target (both)")
        enriched = P.CONDITION_BY_NAME[name].enrichment
        ax.set_title(P.CONDITION_BY_NAME[name].title + (f" (x{enriched:g} by design)" if enriched != 1 else ""),
                     fontsize=10)
        ax.set_xticks(x, labels, fontsize=7)
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Recorded prevalence at end of follow-up by age band: generated (bars) vs target (black)")
    fig.tight_layout()
    paths.append(_save(fig, output_dir, "prevalence_by_age.png"))

    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    axes[0].hist(result["visits"], bins=50, color="tab:gray")
    axes[0].set(title="Visits per patient", xlabel="visits", ylabel="patients")
    cpv = result["codes_per_visit"]
    axes[1].hist(cpv, bins=np.arange(0.5, min(cpv.max(), 40) + 1.5), color="tab:gray")
    axes[1].set(title="Codes per visit", xlabel="codes", ylabel="visits")
    counts = np.array(sorted(result["freq"].values(), reverse=True))
    axes[2].loglog(np.arange(1, len(counts) + 1), counts, ".-")
    axes[2].set(title=f"Code frequency by rank ({len(counts)} codes)", xlabel="rank", ylabel="events")
    fig.tight_layout()
    paths.append(_save(fig, output_dir, "utilisation_and_codes.png"))

    fig, axes = plt.subplots(1, len(P.TASKS), figsize=(6 * len(P.TASKS), 4.5))
    rows = [r for split in splits.values() for r in split]
    for ax, task in zip(np.atleast_1d(axes), P.TASKS):
        inc, label, oracle = task_arrays(rows, task)
        o, y = oracle[inc], label[inc]
        edges = np.quantile(o, np.linspace(0, 1, 11))
        which = np.clip(np.searchsorted(edges, o, side="right") - 1, 0, 9)
        mean_o = [o[which == k].mean() for k in range(10) if (which == k).any()]
        mean_y = [y[which == k].mean() for k in range(10) if (which == k).any()]
        ax.plot([0, max(mean_o + mean_y)], [0, max(mean_o + mean_y)], "k:", lw=1)
        ax.plot(mean_o, mean_y, "o-")
        s = result["tasks"][task]
        ax.set(title=f"{task}: oracle calibration (deciles)\nAUROC oracle {s.oracle_auroc_all:.3f}, "
                     f"prevalence {s.prevalence:.1%}", xlabel="mean oracle", ylabel="label rate")
    fig.tight_layout()
    paths.append(_save(fig, output_dir, "tasks_calibration.png"))
    return paths


def _save(fig, output_dir, name):
    import matplotlib.pyplot as plt

    path = os.path.join(output_dir, name)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass
class ReportArguments:
    """Which synthetic cohort to report on, and where the figures go."""

    synthetic: str = field(default="small", metadata={"help": "The synthetic cohort's size preset.",
                                                      "choices": list(CONFIG_SIZES)})
    seed: int = field(default=0, metadata={"help": "The cohort's seed."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the preset's number of patients."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache (default: HF_DATASETS_CACHE)."})
    output_dir: str = field(default="synthetic_report", metadata={"help": "Where the PNG figures go."})
    max_patients: int = field(default=50000, metadata={
        "help": "Report on at most this many patients (the first ones of each split)."})
    no_figures: bool = field(default=False, metadata={"help": "Print the tables only."})

    def __post_init__(self):
        if self.max_patients <= 0:
            raise ValueError(f"--max_patients must be positive, got {self.max_patients}")
        if self.num_patients is not None and self.num_patients <= 0:
            raise ValueError(f"--num_patients must be positive, got {self.num_patients}")


def run(args: ReportArguments) -> dict:
    """Load the cohort, print the report, save the figures; returns `print_report`'s result."""
    ds = load_synthetic(args.synthetic, seed=args.seed, num_patients=args.num_patients, cache_dir=args.cache_dir)
    total = sum(len(split) for split in ds.values())
    keep = min(1.0, args.max_patients / total)
    splits = {name: split.select(range(int(round(len(split) * keep)))).to_list() for name, split in ds.items()}
    if keep < 1.0:
        print(f"reporting on {sum(len(v) for v in splits.values())} of {total} patients (--max_patients)")
    result = print_report(splits)
    if not args.no_figures:
        for path in save_figures(splits, result, args.output_dir):
            print(f"wrote {path}")
    return result


def main(argv: list[str] | None = None) -> int:
    """`behrt-synthetic-report`: parse the arguments (or one .json / .yaml file) and report."""
    from behrt_hf.training.arguments import parse_args

    (args,) = parse_args(ReportArguments, argv)
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
