"""Explanations of one prediction: which codes and visits drive a fine-tuned BEHRT's probability.

Two views of the same input, the patient's history cut at the task's index visit exactly as in
fine-tuning (`BehrtTokenizerFast.encode_patient(..., until_visit=...)`, so nothing after the time
of prediction is explained because nothing after it is seen):

- **Attributions** of the log-odds (the classifier's logit) to every code token, over the code
  embeddings passed as `inputs_embeds` (ages, segments and positions are added by the model as
  usual and are not attributed). `grad_x_input`: gradient x input (Shrikumar et al., 2016), one
  backward pass. `integrated_gradients` (Sundararajan et al., 2017): the gradient averaged along the
  straight path from a baseline to the input, times (input - baseline), `steps` midpoints in one
  batch; the attributions then sum to `logit(input) - logit(baseline)` (completeness).
  The baseline replaces every code by the [PAD] row of the code embeddings and keeps [CLS], [SEP],
  ages and visits: "the same visits at the same ages, with no code recorded". `padding_idx` keeps
  that row at zero, so it is also the zero baseline gradient x input implicitly compares with.
- **Attention rollout** (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers"):
  each layer's attention averaged over heads, the identity added for the residual connection, rows
  renormalised, multiplied through the layers; the row of [CLS] (the pooled token; the mean of all
  rows when `config.pooling` is mean or max) gives each token's share.

Only the inputs need gradients: the model stays in eval mode and its parameters are untouched
(`torch.autograd.grad` never writes `.grad`), so a frozen model, a fine-tuned one and a PEFT LoRA
adapter are explained alike, on CPU or an accelerator.

`attribution_hit_rate` is the sanity check on a synthetic task whose hazard inputs are known: how
often a code that drives the oracle (`oracle_codes`) ranks among a patient's top-k distinct codes
(scores summed over a code's occurrences), beside the rate a random ranking of the same codes gets
and a model-free control (ranking codes by how often they are recorded).

    explanation = explain_prediction(model, tokenizer, patient, task="fall_1y")
    plot_explanation(explanation, "explanation_17.png"); explanation.to_json("explanation_17.json")
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .tasks import Task

METHODS = ("grad_x_input", "integrated_gradients")
BASELINE = "[PAD] code embedding at every code token ([CLS], [SEP], ages and visits kept)"


@dataclass(frozen=True)
class CodeScore:
    """One code token of the explained input.

    `visit` is the visit's index in the patient's record (0-based, as `index_visit_<task>` counts),
    `code` the code as recorded and `token` what the model saw (e.g. [UNK], or an ICD category).
    `attribution` is the signed share of the log-odds (> 0 raises the probability); `rollout` the
    attention-rollout share of [CLS].
    """

    position: int
    visit: int
    time: str | None
    age: float
    code: str
    token: str
    attribution: float
    abs_attribution: float
    rollout: float


@dataclass(frozen=True)
class VisitScore:
    """A visit's totals over its code tokens."""

    visit: int
    time: str | None
    age: float
    num_codes: int
    attribution: float
    abs_attribution: float
    rollout: float


@dataclass(frozen=True)
class CodeTotal:
    """A code's totals over its occurrences in the input: the per-code scores."""

    code: str
    occurrences: int
    attribution: float
    abs_attribution: float
    rollout: float


@dataclass
class Explanation:
    """What drives one prediction: per-code and per-visit scores, the prediction, label and oracle.

    `index_visit` (its time and age) is the last visit of the input, the time of prediction;
    `logit` is the log-odds of the prediction and `baseline_logit` that of the no-code baseline.
    """

    patient_id: str
    task: str | None
    index_visit: int
    index_time: str | None
    index_age: float
    method: str
    baseline: str
    logit: float
    baseline_logit: float
    probability: float
    label: int | None
    oracle: float | None
    codes: list[CodeScore] = field(default_factory=list)
    visits: list[VisitScore] = field(default_factory=list)

    def top(self, k: int = 10, by: str = "abs_attribution") -> list[CodeScore]:
        """The `k` code tokens with the largest `by` (`abs_attribution`, `attribution` or `rollout`)."""
        return sorted(self.codes, key=lambda c: getattr(c, by), reverse=True)[:k]

    def code_totals(self) -> list[CodeTotal]:
        """Each distinct code's summed attribution and rollout, in the order the codes first appear."""
        members: dict[str, list[CodeScore]] = {}
        for c in self.codes:
            members.setdefault(c.code, []).append(c)
        totals = []
        for code, scores in members.items():
            attribution = sum(c.attribution for c in scores)
            totals.append(CodeTotal(code, len(scores), attribution, abs(attribution), sum(c.rollout for c in scores)))
        return totals

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "code_totals": [dataclasses.asdict(t) for t in self.code_totals()]}

    def to_json(self, path: str | Path) -> Path:
        """Per-code and per-visit scores as JSON (patient-level: `*explanation*` files are never pushed)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))
        return Path(path)


# --- one prediction ------------------------------------------------------------------------------


def explain_prediction(
    model,
    tokenizer,
    patient: Mapping[str, Any],
    *,
    task: Task | str | None = None,
    until_visit: int | None = None,
    method: str = "grad_x_input",
    steps: int = 32,
    max_length: int | None = None,
) -> Explanation:
    """Explain `model`'s probability for `patient` (a dict in the patient schema).

    The history is cut at `until_visit`, or at the task's index visit (`task`: a `Task` or a task
    name; the patient must be eligible for it), or not at all; `max_length` as in fine-tuning
    (default: the tokenizer's `model_max_length`). `model` is a binary `BehrtForSequenceClassification`
    (one logit, or two classes) or a PEFT model around one.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    task = Task(task) if isinstance(task, str) else task
    label = oracle = None
    if task is not None:
        if until_visit is not None:
            raise ValueError("Give a task or until_visit, not both: the task's index visit is the cut.")
        until_visit, label = int(patient[task.index_visit]), int(patient[task.label])
        if until_visit < 0 or label < 0:
            raise ValueError(f"Patient {patient.get('patient_id')!r} is not eligible for task {task.name!r} "
                             f"(index visit {until_visit}, label {label}).")
        oracle = patient.get(task.oracle)
    encoded = tokenizer.encode_patient(patient, max_length=max_length, until_visit=until_visit)
    last = len(patient["visits"]) - 1 if until_visit is None else until_visit
    scores = _attribute(model, encoded, tokenizer.pad_token_id, tokenizer.sep_token_id, method, steps)
    codes = _code_scores(patient, encoded, tokenizer, last, scores)
    return Explanation(
        patient_id=str(patient.get("patient_id")), task=None if task is None else task.name, index_visit=last,
        index_time=_iso(patient["visits"][last].get("time")), index_age=float(patient["visits"][last]["age"]),
        method=method, baseline=BASELINE, logit=scores["logit"], baseline_logit=scores["baseline_logit"],
        probability=1.0 / (1.0 + math.exp(-scores["logit"])), label=label,
        oracle=None if oracle is None or math.isnan(oracle) else float(oracle),
        codes=codes, visits=_visit_scores(codes),
    )


def _attribute(model, encoded: Mapping[str, list[int]], pad_token_id: int, sep_token_id: int, method: str,
               steps: int) -> dict:
    """Per-token attributions and rollout (numpy, (T,)), the logit and the baseline's logit."""
    was_training = model.training
    model.eval()
    try:
        embedding = model.get_input_embeddings()
        device = embedding.weight.device
        inputs = {k: torch.tensor([encoded[k]], device=device)
                  for k in ("age_ids", "segment_ids", "visit_ids", "attention_mask")}  # (1, T) each
        input_ids = torch.tensor([encoded["input_ids"]], device=device)
        is_code = (inputs["visit_ids"] > 0) & (input_ids != sep_token_id)  # not [CLS] (visit 0), not [SEP]
        with torch.no_grad():
            embeds = embedding(input_ids)  # (1, T, H)
            baseline = torch.where(is_code[..., None], embedding.weight[pad_token_id], embeds)

        if method == "grad_x_input":
            embeds.requires_grad_(True)
            logit, attentions = _logit(model, embeds, inputs, output_attentions=True)
            (gradient,) = torch.autograd.grad(logit.sum(), embeds)  # (1, T, H)
            attribution = (gradient * embeds).sum(-1)[0]  # (T,)
        else:
            with torch.no_grad():
                logit, attentions = _logit(model, embeds, inputs, output_attentions=True)
            attribution = _integrated_gradients(model, embeds, baseline, inputs, steps)
        with torch.no_grad():
            baseline_logit, _ = _logit(model, baseline, inputs)
        pooling = getattr(model.config, "pooling", "cls")
        rollout = attention_rollout([a[0] for a in attentions], cls_row=pooling == "cls")
    finally:
        model.train(was_training)
    mask = is_code[0]
    return {
        "attribution": torch.where(mask, attribution.detach(), 0.0).float().cpu().numpy(),
        "rollout": rollout.float().cpu().numpy(),
        "logit": float(logit.detach()[0]), "baseline_logit": float(baseline_logit[0]),
    }


def _logit(model, embeds: torch.Tensor, inputs: Mapping[str, torch.Tensor], output_attentions: bool = False):
    """(B,) log-odds of the positive class for code embeddings `embeds` (B, T, H), and the attentions."""
    batch = embeds.shape[0]
    expanded = {k: v.expand(batch, -1) for k, v in inputs.items()}
    out = model(inputs_embeds=embeds, output_attentions=output_attentions, return_dict=True, **expanded)
    logits = out.logits  # (B, num_labels)
    if logits.shape[-1] == 1:
        return logits[:, 0], out.attentions
    if logits.shape[-1] == 2:
        return logits[:, 1] - logits[:, 0], out.attentions
    raise ValueError(f"Only binary classifiers are explained; this one has {logits.shape[-1]} labels.")


def _integrated_gradients(model, embeds: torch.Tensor, baseline: torch.Tensor, inputs, steps: int) -> torch.Tensor:
    """(T,) integrated gradients of the logit: `steps` midpoints of the straight path, one batch."""
    alphas = (torch.arange(steps, device=embeds.device, dtype=embeds.dtype) + 0.5) / steps  # (m,)
    path = (baseline + alphas[:, None, None] * (embeds - baseline)).requires_grad_(True)  # (m, T, H)
    logits, _ = _logit(model, path, inputs)
    (gradients,) = torch.autograd.grad(logits.sum(), path)  # (m, T, H)
    return ((embeds - baseline)[0] * gradients.mean(0)).sum(-1)  # (T,)


def attention_rollout(attentions: Iterable[torch.Tensor], cls_row: bool = True) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) of one sequence from its layers' (heads, T, T)
    attentions: each token's share of [CLS] (`cls_row`), else of all tokens on average. (T,)"""
    rollout = None
    for layer in attentions:
        attention = layer.detach().float().mean(0)  # (T, T), heads averaged
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)  # the residual
        attention = attention / attention.sum(-1, keepdim=True)
        rollout = attention if rollout is None else attention @ rollout
    if rollout is None:
        raise ValueError("No attentions: the model returned none.")
    return rollout[0] if cls_row else rollout.mean(0)


def _code_scores(patient, encoded, tokenizer, last_visit: int, scores: dict) -> list[CodeScore]:
    """A `CodeScore` per code token: its visit in the record, the code as recorded and its scores."""
    visit_numbers = np.asarray(encoded["visit_ids"])
    first_kept = last_visit - int(visit_numbers.max()) + 1  # visit 1 of the input is this record visit
    ids = encoded["input_ids"]
    out, within = [], 0
    for position, (token, number) in enumerate(zip(tokenizer.convert_ids_to_tokens(ids), visit_numbers.tolist())):
        if number == 0 or ids[position] == tokenizer.sep_token_id:  # [CLS]; [SEP] closes a visit
            within = 0
            continue
        visit = patient["visits"][first_kept + number - 1]
        attribution = float(scores["attribution"][position])
        out.append(CodeScore(
            position=position, visit=first_kept + number - 1, time=_iso(visit.get("time")),
            age=float(visit["age"]), code=visit["codes"][within], token=token, attribution=attribution,
            abs_attribution=abs(attribution), rollout=float(scores["rollout"][position]),
        ))
        within += 1
    return out


def _visit_scores(codes: list[CodeScore]) -> list[VisitScore]:
    visits: dict[int, list[CodeScore]] = {}
    for code in codes:
        visits.setdefault(code.visit, []).append(code)
    return [
        VisitScore(visit=v, time=members[0].time, age=members[0].age, num_codes=len(members),
                   attribution=sum(c.attribution for c in members),
                   abs_attribution=sum(c.abs_attribution for c in members),
                   rollout=sum(c.rollout for c in members))
        for v, members in visits.items()
    ]


def _iso(time) -> str | None:
    return None if time is None else (time.isoformat() if hasattr(time, "isoformat") else str(time))


# --- the sanity check: do the codes that drive the oracle rank high? ------------------------------


def oracle_codes(task: str) -> frozenset[str]:
    """The codes that drive a synthetic task's oracle: those recording a condition in the hazard of
    the task's event (its `risks` and `requires`), as `oracle.markers()` maps conditions to codes.
    For exacerbations: the encounter marker, the step-up drugs, and the asthma / COPD markers."""
    from behrt_hf.data_builders.synthetic import oracle, params

    specs = {spec.name: spec for spec in params.TASK_SPECS}
    if task not in specs:
        raise ValueError(f"{task!r} is not a synthetic task ({sorted(specs)}): give the driving codes yourself.")
    markers = oracle.markers()
    if specs[task].event == params.EXACERBATION_EVENT:
        return frozenset({params.EXACERBATION_MARKER}.union(
            *(params.STEP_UP_CODES[k] for k in params.EXACERBATION_KINDS),
            *(markers[k] for k in params.EXACERBATION_KINDS)))
    condition = params.CONDITION_BY_NAME[specs[task].event]
    return frozenset(code for name in (*condition.risks, *condition.requires) for code in markers[name])


def chance_of_hit(num_codes: int, num_drivers: int, k: int) -> float:
    """P(a random ranking of `num_codes` codes, `num_drivers` of them drivers, puts a driver in its top k)."""
    k = min(k, num_codes)
    return 1.0 - math.comb(num_codes - num_drivers, k) / math.comb(num_codes, k)


RANKINGS = {  # how a patient's distinct codes are ranked: name -> score of a CodeTotal (larger ranks higher)
    "attribution": lambda t: t.abs_attribution,  # |summed attribution|: moves the prediction most, either way
    "positive_attribution": lambda t: t.attribution,  # raises the probability most (hazard inputs only raise it)
    "rollout": lambda t: t.rollout,
    "occurrences": lambda t: t.occurrences,  # a control: how often the code is recorded, no model at all
}


@dataclass
class HitRate:
    """How often a driving code is among a patient's top-k distinct codes, by each of `RANKINGS`,
    beside chance: a random ranking of the same patient's distinct codes, computed exactly.

    A code's score sums its occurrences (`Explanation.code_totals`). `patients` counts the explained
    patients whose input holds a driving code (the others, `without_drivers`, cannot hit and are
    left out); `curves` holds each ranking's rate (and chance) at k = 1, 2, ...
    """

    task: str
    method: str
    k: int
    patients: int
    without_drivers: int
    attribution: float
    positive_attribution: float
    rollout: float
    occurrences: float
    chance: float
    curves: dict[str, list[float]]
    seconds: float

    def to_json(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=1))
        return Path(path)


def attribution_hit_rate(
    model, tokenizer, patients: Iterable[Mapping[str, Any]], task: Task | str, drivers: Iterable[str] | None = None,
    *, k: int = 5, max_k: int = 10, method: str = "grad_x_input", steps: int = 32, max_length: int | None = None,
) -> HitRate:
    """The hit rate at `k` (and the curves up to `max_k`) over `patients`, each eligible for `task`.

    A patient hits when one of its codes in `drivers` (default: the synthetic task's `oracle_codes`)
    ranks among its `k` top distinct codes. Ties keep the order of first appearance (model-free).
    """
    import time

    task = Task(task) if isinstance(task, str) else task
    drivers = oracle_codes(task.name) if drivers is None else frozenset(drivers)
    started = time.perf_counter()
    best_rank = {name: [] for name in RANKINGS}  # 0-based rank of each patient's best-ranked driver
    sizes, without = [], 0  # (distinct codes, driving codes among them) per patient
    for patient in patients:
        totals = explain_prediction(model, tokenizer, patient, task=task, method=method, steps=steps,
                                    max_length=max_length).code_totals()
        is_driver = np.array([t.code in drivers for t in totals], dtype=bool)
        if not is_driver.any():
            without += 1
            continue
        for name, score in RANKINGS.items():
            order = np.argsort([-score(t) for t in totals], kind="stable")
            best_rank[name].append(int(np.flatnonzero(is_driver[order])[0]))
        sizes.append((len(is_driver), int(is_driver.sum())))
    if not sizes:
        raise ValueError(f"None of the {without} patients holds a driving code in its input: nothing to rank.")
    ks = range(1, max(k, max_k) + 1)
    curves = {name: [float(np.mean(np.asarray(ranks) < j)) for j in ks] for name, ranks in best_rank.items()}
    curves["chance"] = [float(np.mean([chance_of_hit(n, d, j) for n, d in sizes])) for j in ks]
    return HitRate(
        task=task.name, method=method, k=k, patients=len(sizes), without_drivers=without,
        **{name: curve[k - 1] for name, curve in curves.items()}, curves=curves,
        seconds=time.perf_counter() - started,
    )


# --- pictures ------------------------------------------------------------------------------------


def plot_explanation(explanation: Explanation, path: str | Path, top_k: int = 8, max_rows: int = 18,
                     descriptions: Mapping[str, str] | None = None, highlight: Iterable[str] = ()) -> Path:
    """A timeline PNG: one row per code (the `max_rows - 1` of largest |summed attribution|, the rest
    on one row), a mark per occurrence at its visit's time, sized by |attribution| and coloured by its
    sign; the `top_k` marks numbered; below, each visit's total attribution and rollout share.
    `descriptions` (code -> text) label the rows; rows of `highlight` codes (e.g. `oracle_codes`) are bold."""
    from .plotting import pyplot

    plt = pyplot()
    codes = explanation.codes
    x_of = _time_axis(codes)
    ranked = [t.code for t in sorted(explanation.code_totals(), key=lambda t: -t.abs_attribution)]
    named = ranked[: max_rows - 1] if len(ranked) > max_rows else ranked
    rows = {code: i for i, code in enumerate(named)}
    other = len(named)
    scale = max((c.abs_attribution for c in codes), default=0.0) or 1.0

    fig, (ax, ax_visits) = plt.subplots(
        2, 1, sharex=True, figsize=(11, 2.6 + 0.3 * (len(named) + 1)),
        gridspec_kw={"height_ratios": [max(3, len(named) + 1), 3]},
    )
    marks = ax.scatter([x_of(c) for c in codes], [rows.get(c.code, other) for c in codes],
                       s=[15 + 350 * c.abs_attribution / scale for c in codes],
                       c=[c.attribution for c in codes], cmap="coolwarm", vmin=-scale, vmax=scale,
                       edgecolors="black", linewidths=0.4, zorder=3)
    for rank, c in enumerate(explanation.top(top_k), start=1):
        ax.annotate(f"{rank}", (x_of(c), rows.get(c.code, other)), xytext=(6, 4), textcoords="offset points",
                    fontsize=7, fontweight="bold")
    labels = [_code_label(code, descriptions) for code in named]
    if len(ranked) > len(named):
        labels.append(f"{len(ranked) - len(named)} other codes")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    highlight = set(highlight)
    for tick, code in zip(ax.get_yticklabels(), named):
        if code in highlight:
            tick.set_fontweight("bold")
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(axis="y", color="0.92", zorder=0)
    fig.colorbar(marks, ax=ax, pad=0.01, fraction=0.03).set_label("attribution (log-odds)", fontsize=8)
    ax.set_title(_title(explanation), fontsize=9)

    visits = explanation.visits
    xs = [x_of(v) for v in visits]
    ax_visits.vlines(xs, 0, [v.attribution for v in visits], linewidth=3,
                     colors=["tab:red" if v.attribution > 0 else "tab:blue" for v in visits])
    ax_visits.axhline(0, color="0.5", linewidth=0.6)
    ax_visits.set_ylabel("visit total\n(log-odds)", fontsize=8)
    share = ax_visits.twinx()
    share.plot(xs, [v.rollout for v in visits], "o", color="0.35", markersize=3)
    share.set_ylabel("rollout share", fontsize=8, color="0.35")
    index = x_of(SimpleNamespace(time=explanation.index_time, age=explanation.index_age))
    for axis in (ax, ax_visits):
        axis.axvline(index, color="black", linestyle="--", linewidth=0.8)
    ax_visits.set_xlabel("visit date (dashed: the index visit, time of prediction)" if codes and codes[0].time
                         else "age at visit (years; dashed: the index visit)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_hit_rate(hit_rate: HitRate, path: str | Path) -> Path:
    """Hit rate at k = 1..max_k by each ranking of `RANKINGS` and by chance."""
    from .plotting import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ks = range(1, len(hit_rate.curves["chance"]) + 1)
    method = hit_rate.method.replace("_", " ")
    names = {"attribution": f"|{method}|", "positive_attribution": f"{method}, largest positive",
             "rollout": "attention rollout", "occurrences": "most recorded (no model)",
             "chance": "chance (random ranking)"}
    for key, name in names.items():
        style = ({"color": "grey", "linestyle": ":" if key == "chance" else "--"} if key in ("chance", "occurrences")
                 else {"marker": "o", "markersize": 3})
        ax.plot(ks, hit_rate.curves[key], label=f"{name}: {hit_rate.curves[key][hit_rate.k - 1]:.2f} at k={hit_rate.k}",
                **style)
    ax.set(xlabel="k (a patient's top distinct codes)", ylabel="patients with a driving code in the top k", ylim=(0, 1.02),
           title=f"{hit_rate.task}: codes that drive the oracle\n({hit_rate.patients} patients with one in their input)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _time_axis(codes: list[CodeScore]):
    """Where a code or visit sits on the x axis: its visit's date, else its age."""
    from datetime import datetime

    if codes and all(c.time for c in codes):
        return lambda item: datetime.fromisoformat(item.time)
    return lambda item: item.age


def _code_label(code: str, descriptions: Mapping[str, str] | None) -> str:
    description = (descriptions or {}).get(code)
    if not description:
        return code
    return f"{code}  {description[:38]}{'…' if len(description) > 38 else ''}"


def _title(e: Explanation) -> str:
    known = [f"P = {e.probability:.3f}"]
    if e.label is not None:
        known.append(f"label {e.label}")
    if e.oracle is not None:
        known.append(f"oracle P = {e.oracle:.3f}")
    total = sum(c.attribution for c in e.codes)
    return (f"patient {e.patient_id}" + (f", {e.task}" if e.task else "") + ": " + ", ".join(known) + "\n"
            f"{e.method.replace('_', ' ')}: codes sum to {total:+.2f} log-odds "
            f"(logit {e.logit:+.2f}, no-code baseline {e.baseline_logit:+.2f})")


__all__ = [
    "BASELINE", "METHODS", "RANKINGS", "CodeScore", "CodeTotal", "Explanation", "HitRate", "VisitScore", "attention_rollout",
    "attribution_hit_rate", "chance_of_hit", "explain_prediction", "oracle_codes", "plot_explanation",
    "plot_hit_rate",
]
