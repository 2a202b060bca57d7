"""How well patient embeddings tell apart the conditions a synthetic cohort knows each patient has.

The synthetic generator records a condition with marker codes (`data_builders.synthetic.oracle.
markers`), so "has the condition" is known exactly: a marker code in the history up to the cut (the
index visit under a task, else the whole record), the same history the embedding sees. For each
chronic condition with enough patients on both sides, and for each set of embeddings:

- silhouette (cosine) of has-condition vs not, in [-1, 1] (0: no separation);
- precision@k: the share of a patient's k nearest neighbours (cosine, the patient left out) that
  have the condition, averaged over the patients who have it; chance is the prevalence;
- linear-probe AUROC: a logistic regression on standardised embeddings, fitted on a seeded,
  stratified part of the patients and scored on the rest (the same parts for every embedding).

The same figures for two baselines computed the same way: a randomly initialised BEHRT of the same
config, and a truncated SVD of log(1 + bag-of-codes counts) of the tokens the model sees (its
input, cut and truncated alike). A 2-D map of the patients (UMAP when `umap-learn` is installed,
else scikit-learn's t-SNE) coloured by age band and by a few conditions, and a map of the code
embeddings coloured by code system / ICD-10-CM chapter, each beside the baselines'.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .embeddings import arrow_batches, as_dataset, cut_positions, index_visit_column
from .encoding import ranges
from .plotting import pyplot

AGE_BANDS = ((0, "0-17"), (18, "18-39"), (40, "40-64"), (65, "65-79"), (80, "80+"))
MAP_METHODS = ("auto", "umap", "tsne", "pca")
TITLES = {"pretrained": "the model", "random": "random-init BEHRT", "svd": "SVD of code counts"}
METRICS = ("silhouette", "precision_at_10", "probe_auroc")


# --- what each patient has, up to the cut ------------------------------------------------------


def chronic_markers() -> dict[str, frozenset]:
    """Chronic condition -> the codes whose presence in a visit means it is recorded (the generator's)."""
    from behrt_hf.data_builders.synthetic import params
    from behrt_hf.data_builders.synthetic.oracle import markers

    return {c.name: markers()[c.name] for c in params.CONDITIONS if c.chronic}


def condition_labels(patients, markers: Mapping[str, frozenset], task=None) -> dict[str, np.ndarray]:
    """Condition -> (N,) bool: one of its marker codes is in the patient's history up to the cut."""
    patients = as_dataset(patients)
    out = {name: [] for name in markers}
    for table in arrow_batches(patients, 4096):
        visits, index = cut_positions(table, task)
        offsets = visits.offsets.to_numpy()
        visit_counts = index + 1
        kept = ranges(offsets[:-1], visit_counts)  # flat index of every kept visit
        code_lists = pc.struct_field(visits.values, "codes").take(pa.array(kept))
        codes = pc.list_flatten(code_lists)
        patient_of_code = np.repeat(np.repeat(np.arange(len(index)), visit_counts),
                                    pc.list_value_length(code_lists).to_numpy())
        for name, marker_codes in markers.items():
            hit = pc.is_in(codes, value_set=pa.array(sorted(marker_codes), codes.type)).to_numpy(zero_copy_only=False)
            out[name].append(np.bincount(patient_of_code[hit], minlength=len(index)) > 0)
    return {name: np.concatenate(parts) if parts else np.zeros(0, bool) for name, parts in out.items()}


def age_bands(ages: np.ndarray) -> np.ndarray:
    """Age in years -> its band's label (AGE_BANDS)."""
    lower = np.array([low for low, _ in AGE_BANDS])
    labels = np.array([label for _, label in AGE_BANDS])
    return labels[np.searchsorted(lower, np.asarray(ages, dtype=np.float64), side="right") - 1]


def split_evaluable(labels: Mapping[str, np.ndarray], min_positives: int) -> tuple[dict, dict]:
    """(conditions with at least `min_positives` patients with and without them, the others -> positives)."""
    evaluated, skipped = {}, {}
    for name, y in labels.items():
        positives = int(y.sum())
        if min(positives, len(y) - positives) >= min_positives:
            evaluated[name] = y
        else:
            skipped[name] = positives
    return evaluated, skipped


# --- the SVD baseline ----------------------------------------------------------------------------


def bag_of_codes(patients, tokenizer, task=None, max_length: int | None = None, batch_size: int = 1024):
    """(N, len(tokenizer)) sparse counts of the code tokens each patient's model input holds."""
    from scipy import sparse

    rows, cols, first = [], [], tokenizer.first_code_id
    patients, until, done = as_dataset(patients), index_visit_column(task), 0
    for table in arrow_batches(patients, batch_size):
        ids = tokenizer.encode_patients(table, max_length, until).column("input_ids").combine_chunks()
        values = ids.flatten().to_numpy().astype(np.int64)
        row = np.repeat(np.arange(done, done + len(ids)), pc.list_value_length(ids).to_numpy())
        code = values >= first
        rows.append(row[code])
        cols.append(values[code])
        done += len(ids)
    rows, cols = (np.concatenate(x) if x else np.zeros(0, np.int64) for x in (rows, cols))
    return sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(done, len(tokenizer)))


def svd_embeddings(counts, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truncated SVD of log(1 + counts): (patient vectors (N, d), code vectors (V, d)), d <= `dim`."""
    from sklearn.decomposition import TruncatedSVD

    counts = counts.copy()
    counts.data = np.log1p(counts.data)
    dim = max(1, min(dim, counts.shape[1] - 1, counts.shape[0] - 1))
    svd = TruncatedSVD(n_components=dim, random_state=seed)
    patients = svd.fit_transform(counts).astype(np.float32)
    return patients, svd.components_.T.astype(np.float32)


# --- scores --------------------------------------------------------------------------------------


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def neighbours_and_distance_sums(x: np.ndarray, groups: np.ndarray, k: int, chunk: int = 1024):
    """One pass over cosine distances, `chunk` rows at a time: the (N, k) nearest neighbours of each
    row (itself left out) and the (N, G) sums of its distances to the members of each of the G
    columns of the 0/1 matrix `groups`."""
    unit = _unit_rows(x)
    n = len(unit)
    k = min(k, n - 1)
    neighbours = np.empty((n, k), dtype=np.int64)
    sums = np.empty((n, groups.shape[1]), dtype=np.float64)
    groups = groups.astype(np.float32)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        distance = np.clip(1.0 - unit[rows] @ unit.T, 0.0, 2.0)  # (c, N)
        distance[np.arange(len(rows)), rows] = 0.0
        sums[rows] = distance @ groups
        distance[np.arange(len(rows)), rows] = np.inf
        nearest = np.argpartition(distance, k - 1, axis=1)[:, :k] if k < n - 1 else np.argsort(distance, 1)[:, :k]
        neighbours[rows] = nearest
    return neighbours, sums


def silhouette_from_sums(sums: np.ndarray, y: np.ndarray) -> float:
    """Mean silhouette of the two clusters y / not y from each row's distance sums to (y, not y)."""
    y = np.asarray(y, dtype=bool)
    sizes = np.array([y.sum(), (~y).sum()], dtype=np.float64)
    own = np.where(y, sums[:, 0], sums[:, 1]) / np.maximum(np.where(y, sizes[0], sizes[1]) - 1, 1)
    other = np.where(y, sums[:, 1], sums[:, 0]) / np.where(y, sizes[1], sizes[0])
    score = (other - own) / np.maximum(np.maximum(own, other), 1e-12)
    score[np.where(y, sizes[0], sizes[1]) == 1] = 0.0  # a singleton cluster scores 0 (as scikit-learn)
    return float(score.mean())


def precision_at_k(neighbours: np.ndarray, y: np.ndarray) -> float:
    """Mean share of neighbours that have the condition, over the patients who have it."""
    y = np.asarray(y, dtype=bool)
    return float(y[neighbours[y]].mean()) if y.any() else float("nan")


def probe_split(y: np.ndarray, seed: int, test_size: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, stratified (train, held-out) split of the patients."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(y)), test_size=test_size, stratify=y, random_state=seed)


def probe_auroc(x: np.ndarray, y: np.ndarray, seed: int) -> float:
    """AUROC on the held-out part of a logistic regression fitted on the rest (standardised inputs)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, test = probe_split(y, seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    probe.fit(x[train], y[train])
    return float(roc_auc_score(y[test], probe.predict_proba(x[test])[:, 1]))


def score_embeddings(x: np.ndarray, labels: Mapping[str, np.ndarray], seed: int = 0, k: int = 10) -> dict:
    """Condition -> {silhouette, precision_at_<k>, probe_auroc} of the embeddings `x` (N, d)."""
    names = list(labels)
    both = np.stack([v for name in names for v in (labels[name], ~labels[name])], axis=1)  # (N, 2C)
    neighbours, sums = neighbours_and_distance_sums(x, both, k)
    return {
        name: {
            "silhouette": silhouette_from_sums(sums[:, 2 * i:2 * i + 2], labels[name]),
            f"precision_at_{k}": precision_at_k(neighbours, labels[name]),
            "probe_auroc": probe_auroc(x, labels[name].astype(int), seed),
        }
        for i, name in enumerate(names)
    }


def group_precision(x: np.ndarray, groups: Sequence[str], k: int = 5) -> tuple[float, float]:
    """(Mean share of each row's k nearest rows in its own group, the chance level sum of p_g^2)."""
    groups = np.asarray(groups)
    neighbours, _ = neighbours_and_distance_sums(x, np.zeros((len(groups), 0)), k)
    shares = np.array(list(Counter(groups.tolist()).values()), dtype=np.float64) / len(groups)
    return float((groups[neighbours] == groups[:, None]).mean()), float((shares ** 2).sum())


def format_table(conditions: Mapping[str, dict], models: Sequence[str]) -> str:
    """Condition x model x metric as text (prevalence beside precision@10, its chance level)."""
    head = f"{'condition':<18} {'prev.':>6}  " + "  ".join(f"{m[:10]:>10} {'':>5} {'':>5}" for m in models)
    sub = f"{'':<18} {'':>6}  " + "  ".join(f"{'silhouette':>10} {'P@10':>5} {'AUROC':>5}" for _ in models)
    lines = [head, sub]
    for name, entry in conditions.items():
        cells = "  ".join(f"{entry[m]['silhouette']:>10.3f} {entry[m]['precision_at_10']:>5.3f} "
                          f"{entry[m]['probe_auroc']:>5.3f}" for m in models)
        lines.append(f"{name:<18} {entry['prevalence']:>6.3f}  {cells}")
    return "\n".join(lines)


# --- maps ----------------------------------------------------------------------------------------


def resolve_map_method(method: str) -> str:
    """`auto` -> `umap` when umap-learn is installed, else `tsne`; `pca` is the quick linear view."""
    if method not in MAP_METHODS:
        raise ValueError(f"map method must be one of {MAP_METHODS}, got {method!r}.")
    if method == "auto":
        return "umap" if importlib.util.find_spec("umap") is not None else "tsne"
    return method


def map_2d(x: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the rows of `x` (cosine geometry): UMAP, t-SNE, or PCA (fast, linear)."""
    x = _unit_rows(x)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(2, random_state=seed).fit_transform(x)
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, metric="cosine", random_state=seed, n_jobs=1).fit_transform(x)
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    # 500 iterations (250 of them early exaggeration) instead of 1,000: the layout has settled, in half the time.
    return TSNE(2, metric="cosine", init="pca", perplexity=perplexity, max_iter=500,
                random_state=seed).fit_transform(x)


def plot_patient_maps(coords: Mapping[str, np.ndarray], bands: np.ndarray, labels: Mapping[str, np.ndarray],
                      path: str | Path, title: str) -> Path:
    """A grid of 2-D patient maps: one row per embedding, coloured by age band, then by each condition."""
    plt = pyplot()
    columns = ["age band", *labels]
    fig, axes = plt.subplots(len(coords), len(columns), figsize=(3.3 * len(columns), 3.2 * len(coords)),
                             squeeze=False)
    band_names = [label for _, label in AGE_BANDS]
    palette = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(band_names)))
    size = float(np.clip(600 / max(len(bands), 1), 2, 12))
    for row, (model, xy) in enumerate(coords.items()):
        for col, column in enumerate(columns):
            ax = axes[row, col]
            if col == 0:
                for band, colour in zip(band_names, palette):
                    members = bands == band
                    ax.scatter(*xy[members].T, s=size, color=colour, label=band, alpha=0.7, linewidths=0)
            else:
                y = labels[column]
                ax.scatter(*xy[~y].T, s=size, color="lightgrey", label="no", linewidths=0)
                ax.scatter(*xy[y].T, s=size * 1.3, color="crimson", label="yes", linewidths=0)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(column if col == 0 else f"{column} ({labels[column].mean():.0%} recorded)", fontsize=10)
            if col == 0:
                ax.set_ylabel(TITLES.get(model, model), fontsize=10)
    axes[0, 0].legend(fontsize=7, markerscale=3, loc="best", title="age", title_fontsize=7)
    if len(columns) > 1:
        axes[0, 1].legend(fontsize=7, markerscale=3, loc="best", title="recorded", title_fontsize=7)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def code_group(code: str) -> str:
    """A code's colour in the code map: its ICD-10-CM chapter, else its system (text before `//`)."""
    system, _, value = code.partition("//")
    if system.upper() != "ICD10CM" or not value:
        return system
    from .code_hierarchy import icd10cm

    value = value.replace(".", "").strip().upper()
    if not icd10cm.is_valid_item(value):
        return "ICD10CM other"
    chapter = icd10cm.get_ancestors(value)[-1] if not icd10cm.is_chapter(value) else value
    description = icd10cm.get_description(chapter)
    block = description[description.rfind("(") + 1:-1] if description.endswith(")") else chapter
    return f"ICD10CM {block}"


def plot_code_maps(coords: Mapping[str, np.ndarray], groups: Sequence[str], path: str | Path, title: str,
                   max_groups: int = 19) -> Path:
    """One 2-D map of the code embeddings per model, coloured by `groups` (the rarest as `other`)."""
    plt = pyplot()
    groups = np.asarray(groups)
    ranked = [g for g, _ in Counter(groups.tolist()).most_common()]
    shown = sorted(ranked[:max_groups]) + (["other"] if len(ranked) > max_groups else [])
    groups = np.where(np.isin(groups, shown), groups, "other")
    colours = dict(zip(shown, plt.get_cmap("tab20")(np.linspace(0, 1, 20))))
    fig, axes = plt.subplots(1, len(coords), figsize=(4.2 * len(coords) + 3.0, 4.4), squeeze=False)
    for ax, (model, xy) in zip(axes[0], coords.items()):
        for group in shown:
            members = groups == group
            ax.scatter(*xy[members].T, s=9, color=colours[group], label=f"{group} ({members.sum()})", linewidths=0)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(TITLES.get(model, model), fontsize=10)
    axes[0, -1].legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def _save(fig, path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return Path(path)


# --- the report ----------------------------------------------------------------------------------


def random_encoder_like(encoder, seed: int):
    """A randomly initialised BEHRT encoder of `encoder`'s config (seeded), on its device."""
    import copy

    import torch

    torch.manual_seed(seed)
    return type(encoder)(copy.deepcopy(encoder.config)).to(next(encoder.parameters()).device).eval()


def code_vectors(encoder, tokenizer) -> np.ndarray:
    """The code embedding matrix's rows of the tokenizer's codes (special tokens left out)."""
    weight = encoder.embeddings.code_embeddings.weight.detach().float().cpu().numpy()
    return weight[tokenizer.first_code_id:len(tokenizer)]


def embed_all(encoder, tokenizer, patients, *, pooling: str, task, max_length: int | None, batch_size: int,
              seed: int, progress: bool = True) -> tuple[dict, dict]:
    """(model name -> patient embeddings, model name -> code embeddings) of the pretrained encoder and
    both baselines: a random BEHRT of the same config and the SVD of bag-of-codes counts."""
    from .embeddings import embed_patients, encoder_of

    encoder = encoder_of(encoder)
    random = random_encoder_like(encoder, seed)
    patients_by_model, codes_by_model = {}, {}
    for name, model in (("pretrained", encoder), ("random", random)):
        patients_by_model[name] = embed_patients(model, tokenizer, patients, pooling=pooling, task=task,
                                                 batch_size=batch_size, max_length=max_length, progress=progress)
        codes_by_model[name] = code_vectors(model, tokenizer)
    counts = bag_of_codes(patients, tokenizer, task, max_length)
    patients_by_model["svd"], svd_codes = svd_embeddings(counts, encoder.config.hidden_size, seed)
    codes_by_model["svd"] = svd_codes[tokenizer.first_code_id:len(tokenizer)]
    return patients_by_model, codes_by_model


def chosen_map_conditions(requested: Sequence[str], labels: Mapping[str, np.ndarray], count: int = 3) -> list[str]:
    """The requested conditions that were evaluated, else the `count` most prevalent evaluated ones."""
    chosen = [name for name in requested if name in labels]
    return chosen or sorted(labels, key=lambda name: -labels[name].mean())[:count]


def draw_maps(patient_vectors: Mapping[str, np.ndarray], codes: Mapping[str, np.ndarray], code_names,
              bands: np.ndarray, labels: Mapping[str, np.ndarray], output_dir: Path, *, method: str,
              map_patients: int, seed: int, progress: bool = True) -> tuple[list[Path], dict]:
    """The patient map and the code map (PNGs) and the code neighbours' group precision@5 per model."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    n = len(bands)
    shown = np.sort(rng.choice(n, size=min(n, map_patients), replace=False))
    groups = [code_group(code) for code in code_names]
    patient_xy, code_xy, code_scores = {}, {}, {}
    for name in tqdm(list(patient_vectors), desc=f"Maps ({method})", disable=not progress):
        patient_xy[name] = map_2d(patient_vectors[name][shown], method, seed)
        code_xy[name] = map_2d(codes[name], method, seed)
        precision, chance = group_precision(codes[name], groups, k=5)
        code_scores[name] = {"group_precision_at_5": precision, "chance": chance}
    plots = [
        plot_patient_maps(patient_xy, bands[shown], {k: v[shown] for k, v in labels.items()},
                          output_dir / "patient_map.png",
                          f"Patient embeddings ({method}, {len(shown):,} patients): age band and recorded conditions"),
        plot_code_maps(code_xy, groups, output_dir / "code_map.png",
                       f"Code embeddings ({method}, {len(groups):,} codes) by ICD-10-CM chapter / code system"),
    ]
    return plots, code_scores


def embedding_report(encoder, tokenizer, patients, output_dir: str | Path, *, pooling: str = "mean", task=None,
                     max_length: int | None = None, batch_size: int = 64, seed: int = 0, min_positives: int = 20,
                     map_conditions: Sequence[str] = ("t2d", "hf", "ckd"), map_patients: int = 2000,
                     map_method: str = "auto", progress: bool = True) -> dict:
    """Score and map the embeddings of `patients` by `encoder` beside both baselines (module docstring);
    writes `patient_map.png` and `code_map.png` into `output_dir` and returns the report."""
    import time

    from .embeddings import cut_visit_values

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    method = resolve_map_method(map_method)
    timing, started = {}, time.perf_counter()
    labels, skipped = split_evaluable(condition_labels(patients, chronic_markers(), task), min_positives)
    bands = age_bands(cut_visit_values(patients, task, "age").to_numpy(zero_copy_only=False))
    vectors, codes = embed_all(encoder, tokenizer, patients, pooling=pooling, task=task, max_length=max_length,
                               batch_size=batch_size, seed=seed, progress=progress)
    timing["embed_seconds"], started = time.perf_counter() - started, time.perf_counter()
    scores = {name: score_embeddings(x, labels, seed) for name, x in vectors.items()}
    conditions = {name: {"positives": int(y.sum()), "prevalence": float(y.mean()),
                         **{model: scores[model][name] for model in vectors}} for name, y in labels.items()}
    timing["score_seconds"], started = time.perf_counter() - started, time.perf_counter()
    shown = chosen_map_conditions(map_conditions, labels)
    code_names = tokenizer.convert_ids_to_tokens(list(range(tokenizer.first_code_id, len(tokenizer))))
    plots, code_scores = draw_maps(vectors, codes, code_names, bands, {k: labels[k] for k in shown}, output_dir,
                                   method=method, map_patients=map_patients, seed=seed, progress=progress)
    timing["map_seconds"] = time.perf_counter() - started
    return {
        "patients": len(bands), "pooling": pooling, "task": getattr(task, "name", task),
        "dimensions": {name: int(x.shape[1]) for name, x in vectors.items()}, "min_positives": min_positives,
        "conditions": conditions, "skipped": skipped,
        "mean": {model: {m: float(np.mean([c[model][m] for c in conditions.values()])) if conditions else None
                         for m in METRICS} for model in vectors},
        "code_map": code_scores, "map_method": method, "map_conditions": shown,
        "plots": [str(p) for p in plots], "timing": timing,
    }


__all__ = [
    "AGE_BANDS",
    "MAP_METHODS",
    "METRICS",
    "TITLES",
    "age_bands",
    "bag_of_codes",
    "chronic_markers",
    "code_group",
    "code_vectors",
    "condition_labels",
    "embed_all",
    "embedding_report",
    "format_table",
    "group_precision",
    "map_2d",
    "neighbours_and_distance_sums",
    "plot_code_maps",
    "plot_patient_maps",
    "precision_at_k",
    "probe_auroc",
    "random_encoder_like",
    "resolve_map_method",
    "score_embeddings",
    "silhouette_from_sums",
    "split_evaluable",
    "svd_embeddings",
]
