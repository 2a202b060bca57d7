"""Explain a fine-tuned BEHRT's predictions: which codes and visits drive them (`behrt-explain`).

    behrt-explain --model_name_or_path outputs/demo/lora_fall_1y --synthetic medium --task fall_1y \\
        --patient_id 123 --output_dir outputs/explain
    behrt-explain ... --num_explained 5                     # the first 5 eligible patients of --split
    behrt-explain ... --hit_rate_patients 300 --num_explained 0   # the sanity check only

`model_name_or_path` is a fine-tuned model or a LoRA adapter folder (loaded as `behrt-finetune`
loads one to evaluate it). Each explained patient's input is cut at the task's index visit as in
fine-tuning. Writes `explanation_<patient>.png` / `.json` per patient (patient-level files, never
pushed) and, with `--hit_rate_patients N`, `explanation_hit_rate.png` / `.json`: over the first N
eligible patients, how often a code that drives a synthetic task's oracle ranks among a patient's
top `--top_k` distinct codes, beside chance. The library is `behrt_hf.explain`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from behrt_hf.explain import (
    METHODS,
    attribution_hit_rate,
    explain_prediction,
    oracle_codes,
    plot_explanation,
    plot_hit_rate,
)
from behrt_hf.tasks import Task
from behrt_hf.training.arguments import CohortArguments, comma_list, parse_args
from behrt_hf.training.finetune import FinetuneModelArguments, build_model, load_tokenizer


@dataclass
class ExplainArguments(CohortArguments):
    model_name_or_path: str = field(default="", metadata={"help": "A fine-tuned BEHRT or a LoRA adapter (folder or Hub id)."})
    output_dir: str = field(default="outputs/explain", metadata={"help": "Where the PNGs and JSONs are written."})
    task: str = field(default="heart_failure_1y", metadata={"help": "Task name: uses label_<task>, index_visit_<task>."})
    index_visit_column: str | None = field(
        default=None, metadata={"help": "Column with each patient's index visit (default index_visit_<task>)."}
    )
    label_column: str | None = field(default=None, metadata={"help": "Label column (default label_<task>)."})
    split: str = field(default="test", metadata={"help": "Split the patients come from."})
    patient_id: str | None = field(default=None, metadata={"help": "Explain this patient (else --num_explained)."})
    num_explained: int = field(default=1, metadata={"help": "Explain the first N eligible patients of --split "
                                                            "(--num_patients sets the synthetic cohort's size)."})
    method: str = field(default="grad_x_input", metadata={"help": f"One of {METHODS}."})
    steps: int = field(default=32, metadata={"help": "integrated_gradients: points on the path."})
    top_k: int = field(default=5, metadata={"help": "Top codes printed and numbered; k of the hit rate."})
    hit_rate_patients: int = field(default=0, metadata={"help": "Sanity check over the first N eligible patients "
                                                                "(a synthetic task's oracle codes); 0: skip."})
    driver_codes: str | None = field(default=None, metadata={"help": "Comma-separated codes that drive the task: "
                                                                     "the hit rate's targets, bold in the plots "
                                                                     "(default: a synthetic task's oracle codes)."})
    use_cpu: bool = field(default=False, metadata={"help": "Stay on the CPU even if an accelerator is present."})

    def __post_init__(self):
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("Give --model_name_or_path: a fine-tuned BEHRT or a LoRA adapter.")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}.")
        if min(self.num_explained, self.hit_rate_patients) < 0 or self.top_k < 1 or self.steps < 1:
            raise ValueError("--num_explained and --hit_rate_patients must be >= 0, --top_k and --steps >= 1.")

    def as_task(self) -> Task:
        return Task(self.task, label=self.label_column or "", index_visit=self.index_visit_column or "")


def run(args: ExplainArguments) -> dict:
    """Explain the chosen patients (and compute the hit rate when asked); returns what was written."""
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    task = args.as_task()
    eligible = task.eligible(args.load_cohort()[args.split])
    model_args = FinetuneModelArguments(model_name_or_path=args.model_name_or_path)
    tokenizer = load_tokenizer(model_args, args, None)
    model = build_model(model_args, tokenizer, pos_weight=None, trainable=False).eval()
    device = "cuda" if torch.cuda.is_available() and not args.use_cpu else "cpu"
    model.to(device)
    explain = dict(method=args.method, steps=args.steps, max_length=args.max_length)
    descriptions = code_descriptions(args)
    drivers = comma_list(args.driver_codes) if args.driver_codes else known_drivers(task.name)
    if args.hit_rate_patients and not drivers:
        raise ValueError(f"--hit_rate_patients: {task.name!r} is not a synthetic task, so its driving codes are "
                         "unknown here; name them with --driver_codes.")

    written = {"explanations": []}
    for patient in chosen_patients(eligible, args):
        explanation = explain_prediction(model, tokenizer, patient, task=task, **explain)
        stem = output_dir / f"explanation_{safe_name(explanation.patient_id)}"
        plot_explanation(explanation, stem.with_suffix(".png"), top_k=args.top_k, descriptions=descriptions,
                         highlight=drivers or ())
        explanation.to_json(stem.with_suffix(".json"))
        written["explanations"].append(str(stem.with_suffix(".png")))
        print(format_explanation(explanation, args.top_k, descriptions))
    if args.hit_rate_patients:
        patients = eligible.select(range(min(args.hit_rate_patients, len(eligible))))
        hit_rate = attribution_hit_rate(model, tokenizer, patients, task, drivers, k=args.top_k, **explain)
        hit_rate.to_json(output_dir / "explanation_hit_rate.json")
        written["hit_rate"] = str(plot_hit_rate(hit_rate, output_dir / "explanation_hit_rate.png"))
        written["hit_rate_values"] = hit_rate
        print(f"hit rate at k={hit_rate.k} over {hit_rate.patients} patients with a driving code "
              f"({hit_rate.without_drivers} without; {hit_rate.seconds:.1f}s): |{hit_rate.method}| "
              f"{hit_rate.attribution:.3f}, largest positive {hit_rate.positive_attribution:.3f}, attention rollout "
              f"{hit_rate.rollout:.3f}, most recorded (no model) {hit_rate.occurrences:.3f}, chance {hit_rate.chance:.3f}")
    return written


def chosen_patients(eligible, args: ExplainArguments):
    """`--patient_id` (which must be eligible), else the first `--num_explained` eligible patients."""
    if args.patient_id is None:
        return eligible.select(range(min(args.num_explained, len(eligible))))
    found = eligible.filter(lambda pid: pid == args.patient_id, input_columns="patient_id")
    if not len(found):
        raise ValueError(f"Patient {args.patient_id!r} is not among the {len(eligible)} patients of the "
                         f"{args.split!r} split eligible for {args.task!r}.")
    return found


def code_descriptions(args: ExplainArguments) -> dict | None:
    """The synthetic code table's descriptions (the plot's row labels); None for other data."""
    if args.dataset_path:
        return None
    from behrt_hf.data_builders.synthetic.codes import code_table

    return code_table()


def known_drivers(task: str) -> frozenset[str] | None:
    """A synthetic task's oracle codes (bold in the plots, the hit rate's targets); None for other tasks."""
    try:
        return oracle_codes(task)
    except ValueError:
        return None


def safe_name(patient_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", patient_id)


def format_explanation(explanation, top_k: int, descriptions: dict | None = None) -> str:
    """The prediction and its top codes as text."""
    e = explanation
    head = f"patient {e.patient_id} ({e.task}): P = {e.probability:.3f}, label {e.label}"
    if e.oracle is not None:
        head += f", oracle P = {e.oracle:.3f}"
    lines = [head, f"  {'rank':>4} {'attribution':>11} {'rollout':>8} {'visit':>5} {'age':>5}  code"]
    for rank, c in enumerate(e.top(top_k), start=1):
        description = (descriptions or {}).get(c.code, "")
        lines.append(f"  {rank:>4} {c.attribution:>+11.4f} {c.rollout:>8.4f} {c.visit:>5} {c.age:>5.1f}  "
                     f"{c.code} {description}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((ExplainArguments,), argv)
    return run(args)


def cli() -> None:
    """Console-script entry point (`behrt-explain`)."""
    main()


if __name__ == "__main__":
    cli()
