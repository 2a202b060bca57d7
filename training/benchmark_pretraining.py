"""Time to quality of pretraining: steps and seconds until masked-code accuracy reaches 0.4 / 0.5 / 0.6.

    behrt-benchmark-pretraining --output_dir runs/ttq --synthetic medium \
        --variants baseline,pre_ln,recipe --seeds 0,1,2 --max_steps 2000

Each variant is a small set of overrides (model config, optimizer and schedule, masking) over the
`baseline` recipe, named in `VARIANTS`; `a+b` combines two. All runs share one process, so the
cohort, the vocabulary and the encoded splits are built once. Every `eval_every` optimizer steps
the model scores a fixed subset of the validation split (the same patients and the same masks for
every run; no Trainer evaluation loop), and a run stops when it first reaches the highest
threshold or at `max_steps`. The learning-rate schedule spans `schedule_steps`, whatever the
cap, so that a run cut short trains exactly as the first steps of a longer one.

Wall seconds count training only (the cheap evaluations excluded); on shared cores they are
noisy, so steps are the primary measure. Writes `time_to_quality.json` (the variants' overrides,
each run's accuracy curve and first crossings) and `time_to_quality.png` (accuracy against step).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainerCallback, set_seed

from behrt_hf.data_collator import DataCollatorForPretraining
from behrt_hf.plotting import pyplot
from behrt_hf.sampler import SetEpochCallback
from behrt_hf.tracking import write_summary
from behrt_hf.training import pretrain
from behrt_hf.training.arguments import comma_list, parse_args, scripted_training_arguments
from behrt_hf.training.trainer import BehrtTrainer

logger = logging.getLogger("behrt_hf.benchmark_pretraining")


@dataclass(frozen=True)
class Variant:
    """Overrides of the baseline: `config` (BehrtConfig fields), `training` (TrainingArguments
    fields), `collator` (DataCollatorForPretraining masking fields)."""

    description: str
    config: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    collator: dict = field(default_factory=dict)


# The recipe `behrt-pretrain` and the demo used before this benchmark existed, spelled out so that
# it stays the reference when the defaults change: post-LN, lr 2e-3 with 100 warm-up steps and a
# linear decay, batch 32, no weight decay, Adam (0.9, 0.999, 1e-8), BERT masking of 15% of codes.
BASELINE = Variant(
    "post-LN, lr 2e-3, warm-up 100, batch 32, BERT masking (the recipe before this benchmark)",
    config={"layer_norm_position": "post", "initializer_range": 0.02, "tie_word_embeddings": True,
            "attention_init": "normal", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1},
    training={"learning_rate": 2e-3, "per_device_train_batch_size": 32, "warmup_steps": 100,
              "weight_decay": 0.0, "adam_beta1": 0.9, "adam_beta2": 0.999, "adam_epsilon": 1e-8,
              "lr_scheduler_type": "linear"},
    collator={"mlm_probability": 0.15, "mask_replace_prob": 0.8, "random_replace_prob": 0.1},
)

VARIANTS: dict[str, Variant] = {
    "baseline": Variant(BASELINE.description),
    # Today's defaults of behrt-pretrain and the demo (BehrtConfig.attention_init, pretrain.RECIPE,
    # pretrain.DataArguments.mlm_probability): the combination that removed most of the plateau.
    "recipe": Variant("mimetic query-key initialisation + 40% masking + Adam beta2 0.95 + WSD schedule (the recipe)",
                      config={"attention_init": "mimetic_qk"},
                      training={"adam_beta2": 0.95, "lr_scheduler_type": "warmup_stable_decay"},
                      collator={"mlm_probability": 0.4}),
    "pre_ln": Variant("pre-LN encoder layers", config={"layer_norm_position": "pre"}),
    "lr_5e-4": Variant("learning rate 5e-4", training={"learning_rate": 5e-4}),
    "lr_1e-3": Variant("learning rate 1e-3", training={"learning_rate": 1e-3}),
    "lr_4e-3": Variant("learning rate 4e-3", training={"learning_rate": 4e-3}),
    "warmup_0": Variant("no warm-up", training={"warmup_steps": 0}),
    "warmup_500": Variant("500 warm-up steps", training={"warmup_steps": 500}),
    "constant_lr": Variant("constant learning rate after warm-up", training={"lr_scheduler_type": "constant_with_warmup"}),
    "wsd": Variant("warm-up, constant, then a cosine decay over the last 20% of the schedule (WSD)",
                   training={"lr_scheduler_type": "warmup_stable_decay"}),
    "linear": Variant("linear decay after warm-up", training={"lr_scheduler_type": "linear"}),
    "init_0.01": Variant("initializer_range 0.01", config={"initializer_range": 0.01}),
    "init_0.05": Variant("initializer_range 0.05", config={"initializer_range": 0.05}),
    "mask_only": Variant("masked codes all become [MASK] (no random / kept codes)",
                         collator={"mask_replace_prob": 1.0, "random_replace_prob": 0.0}),
    "mlm_0.3": Variant("30% of codes masked", collator={"mlm_probability": 0.3}),
    "mlm_0.4": Variant("40% of codes masked", collator={"mlm_probability": 0.4}),
    "batch_16": Variant("batch 16", training={"per_device_train_batch_size": 16}),
    "batch_64": Variant("batch 64", training={"per_device_train_batch_size": 64}),
    "wd_0.01": Variant("weight decay 0.01", training={"weight_decay": 0.01}),
    "beta2_0.98": Variant("Adam beta2 0.98 (second moment averaged over ~50 steps, not ~1,000)",
                          training={"adam_beta2": 0.98}),
    "beta2_0.95": Variant("Adam beta2 0.95", training={"adam_beta2": 0.95}),
    "adam_0.98": Variant("Adam beta2 0.98, eps 1e-6 (RoBERTa)", training={"adam_beta2": 0.98, "adam_epsilon": 1e-6}),
    "untied": Variant("MLM decoder not tied to the code embeddings", config={"tie_word_embeddings": False}),
    "dropout_0": Variant("no dropout", config={"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}),
    "mimetic_qk": Variant("mimetic initialisation of query-key (Trockman & Kolter 2023)",
                          config={"attention_init": "mimetic_qk"}),
    "mimetic": Variant("mimetic initialisation of query-key and value-output", config={"attention_init": "mimetic"}),
    "no_nvp": Variant("MLM loss only (NVP loss weight 0)", config={"nvp_loss_weight": 0.0}),
}


def resolve(name: str) -> Variant:
    """`name` from VARIANTS, or several joined by '+' (later ones win), applied over BASELINE."""
    parts = [p.strip() for p in name.split("+") if p.strip()]
    unknown = [p for p in parts if p not in VARIANTS]
    if not parts or unknown:
        raise ValueError(f"Unknown variant {name!r} ({unknown or 'empty'}); choose from {sorted(VARIANTS)}, joined by '+'.")
    merged = {"config": dict(BASELINE.config), "training": dict(BASELINE.training), "collator": dict(BASELINE.collator)}
    for part in parts:
        for kind in merged:
            merged[kind].update(getattr(VARIANTS[part], kind))
    return Variant(" + ".join(VARIANTS[p].description for p in parts), **merged)


@dataclass
class TimeToQualityArguments:
    output_dir: str = field(default="runs/time_to_quality", metadata={"help": "Where the JSON and the PNG are written."})
    synthetic: str | None = field(default="medium", metadata={"help": "Synthetic cohort: tiny, small, medium or large."})
    dataset_path: str | None = field(default=None, metadata={"help": "A saved DatasetDict instead of --synthetic."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the synthetic cohort's size."})
    data_seed_cohort: int = field(default=0, metadata={"help": "Seed of the synthetic cohort."})
    max_length: int = field(default=256, metadata={"help": "Tokens per patient."})
    preset: str = field(default="small", metadata={"help": "Model size preset."})
    variants: str = field(default="baseline,pre_ln", metadata={"help": "Comma-separated variant names ('a+b' combines)."})
    seeds: str = field(default="0", metadata={"help": "Comma-separated seeds; each variant runs once per seed."})
    max_steps: int = field(default=2000, metadata={"help": "Cap on optimizer steps per run."})
    schedule_steps: int | None = field(default=None, metadata={"help": "Length of the learning-rate schedule (default max_steps)."})
    eval_every: int = field(default=50, metadata={"help": "Optimizer steps between evaluations."})
    eval_patients: int = field(default=300, metadata={"help": "Validation patients scored at each evaluation."})
    thresholds: str = field(default="0.4,0.5,0.6", metadata={"help": "Masked-code accuracies to time."})
    stop_at_last_threshold: bool = field(default=True, metadata={"help": "End a run once it reaches the highest threshold."})
    use_cpu: bool = field(default=False, metadata={"help": "Stay on the CPU even if an accelerator is present."})

    def __post_init__(self):
        self.variant_names = comma_list(self.variants)
        for name in self.variant_names:
            resolve(name)
        self.seed_list = comma_list(self.seeds, int)
        self.threshold_list = sorted(comma_list(self.thresholds, float))
        if not self.variant_names or not self.seed_list or not self.threshold_list:
            raise ValueError("--variants, --seeds and --thresholds each need at least one value.")
        if min(self.max_steps, self.eval_every, self.eval_patients) < 1:
            raise ValueError("--max_steps, --eval_every and --eval_patients must be positive.")
        self.schedule_steps = self.schedule_steps or self.max_steps
        if self.schedule_steps < self.max_steps:
            raise ValueError(f"--schedule_steps ({self.schedule_steps}) must be at least --max_steps ({self.max_steps}).")


# --- data, built once ---------------------------------------------------------------------------


@dataclass
class Prepared:
    tokenizer: object
    data_args: pretrain.DataArguments
    train: object
    eval_batches: list[dict]


def prepare(args: TimeToQualityArguments) -> Prepared:
    """Cohort, vocabulary (training split), encoded training split, and the fixed evaluation batches."""
    data_args = pretrain.DataArguments(
        synthetic=args.synthetic, dataset_path=args.dataset_path, num_patients=args.num_patients,
        data_seed_cohort=args.data_seed_cohort, max_length=args.max_length, objective="mlm+nvp",
        max_eval_patients=args.eval_patients,
    )
    cohort = data_args.load_cohort()
    tokenizer = pretrain.prepare_tokenizer(cohort, data_args, Path(args.output_dir), resuming=False)
    # Evaluation masks are drawn with seed 0 and the baseline's 15%: one yardstick for every run.
    eval_seed = type("EvalSeed", (), {"seed": 0})()
    train, evaluation = pretrain.build_datasets(cohort, tokenizer, data_args, eval_seed)
    collate = DataCollatorForPretraining(tokenizer, objective="mlm+nvp")
    eval_batches = [collate([evaluation[i] for i in range(start, min(start + 64, len(evaluation)))])
                    for start in range(0, len(evaluation), 64)]
    logger.info("%d train patients, %d evaluation patients, vocabulary %d", len(train), len(evaluation), len(tokenizer))
    return Prepared(tokenizer, data_args, train, eval_batches)


@torch.no_grad()
def masked_code_accuracy(model, batches: list[dict]) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the masked codes of `batches`; the model's mode is restored."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for batch in batches:
        batch = {k: v.to(model.device) for k, v in batch.items()}
        labels = batch["labels"]
        outputs = model(**{k: v for k, v in batch.items() if k not in ("labels", "next_visit_labels")})
        logits = getattr(outputs, "mlm_logits", None)
        logits = outputs.logits if logits is None else logits
        keep = labels != -100
        picked, targets = logits[keep].float(), labels[keep]  # (N, V), (N,)
        correct += int((picked.argmax(-1) == targets).sum())
        loss_sum += float(torch.nn.functional.cross_entropy(picked, targets, reduction="sum"))
        total += int(keep.sum())
    model.train(was_training)
    return correct / max(total, 1), loss_sum / max(total, 1)


# --- one run ------------------------------------------------------------------------------------


class TimeToQualityCallback(TrainerCallback):
    """Scores the model every `every` steps (and at step 0), timing training without the scoring;
    stops the run at `cap` steps or, if `stop_at` is set, once accuracy reaches it."""

    def __init__(self, batches: list[dict], every: int, cap: int, stop_at: float | None, desc: str):
        self.batches, self.every, self.cap, self.stop_at, self.desc = batches, every, cap, stop_at, desc
        self.curve: list[dict] = []

    def _score(self, model, step: int) -> float:
        scoring_started = time.perf_counter()
        accuracy, loss = masked_code_accuracy(model, self.batches)
        seconds = scoring_started - self.started - self.scoring_seconds
        self.curve.append({"step": step, "seconds": round(seconds, 3), "accuracy": accuracy, "loss": loss})
        self.scoring_seconds += time.perf_counter() - scoring_started
        self.bar.set_postfix(accuracy=f"{accuracy:.3f}")
        return accuracy

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.bar = tqdm(total=self.cap, desc=self.desc, leave=False)
        self.started, self.scoring_seconds = time.perf_counter(), 0.0
        self._score(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.bar.update(1)
        step = state.global_step
        if step % self.every and step < self.cap:
            return
        accuracy = self._score(model, step)
        if step >= self.cap or (self.stop_at is not None and accuracy >= self.stop_at):
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()


def run_one(args: TimeToQualityArguments, data: Prepared, name: str, seed: int) -> dict:
    """Train variant `name` with `seed` until it reaches the top threshold or the cap; its curve and crossings."""
    variant = resolve(name)
    set_seed(seed)
    overrides = ",".join(f"{key}={json.dumps(value)}" for key, value in variant.config.items())
    model = pretrain.build_model(pretrain.ModelArguments(preset=args.preset, config_overrides=overrides),
                                 data.data_args, data.tokenizer)
    training = dict(variant.training)
    training_args = scripted_training_arguments(
        Path(args.output_dir) / "runs" / f"{name}_seed{seed}", max_steps=args.schedule_steps,
        learning_rate=training.pop("learning_rate"), seed=seed, batch_size=training.pop("per_device_train_batch_size"),
        use_cpu=args.use_cpu, save_strategy="no", logging_steps=args.schedule_steps, **training,
    )
    pretrain.adapt_training_arguments(training_args, data.data_args)
    collator = DataCollatorForPretraining(data.tokenizer, objective=data.data_args.objective, seed=seed, **variant.collator)
    stop_at = args.threshold_list[-1] if args.stop_at_last_threshold else None
    callback = TimeToQualityCallback(data.eval_batches, args.eval_every, args.max_steps, stop_at, f"{name} seed {seed}")
    trainer = BehrtTrainer(
        train_sampler=pretrain.cut_length_sampler(training_args, collator, data.train),
        model=model, args=training_args, train_dataset=data.train, data_collator=collator,
        callbacks=[SetEpochCallback(collator), callback],
    )
    trainer.remove_callback(PrinterCallback)  # the callback's progress bar says enough
    trainer.train()
    curve = callback.curve
    last = curve[-1]
    return {
        "variant": name, "seed": seed, "curve": curve, "final_step": last["step"], "final_accuracy": last["accuracy"],
        "seconds_per_step": last["seconds"] / max(last["step"], 1),
        "crossings": {str(t): first_crossing(curve, t) for t in args.threshold_list},
    }


def first_crossing(curve: list[dict], threshold: float) -> dict | None:
    """The first evaluation at which accuracy reached `threshold` ({step, seconds}), None if none did."""
    for point in curve:
        if point["accuracy"] >= threshold:
            return {"step": point["step"], "seconds": point["seconds"]}
    return None


# --- tables, JSON, PNG --------------------------------------------------------------------------


def summarize(runs: list[dict], args: TimeToQualityArguments) -> dict:
    """Per variant: for each threshold, mean steps and seconds over the seeds that reached it, and how many did."""
    summary = {}
    for name in args.variant_names:
        mine = [r for r in runs if r["variant"] == name]
        row = {"seeds": [r["seed"] for r in mine], "final_accuracy": float(np.mean([r["final_accuracy"] for r in mine])),
               "seconds_per_step": float(np.mean([r["seconds_per_step"] for r in mine])), "thresholds": {}}
        for t in args.threshold_list:
            hits = [r["crossings"][str(t)] for r in mine if r["crossings"][str(t)] is not None]
            row["thresholds"][str(t)] = {
                "reached": len(hits), "runs": len(mine),
                "mean_steps": float(np.mean([h["step"] for h in hits])) if hits else None,
                "mean_seconds": float(np.mean([h["seconds"] for h in hits])) if hits else None,
            }
        summary[name] = row
    return summary


def _cell(value: float | None, reached: int, runs: int, cap: int, unit: str = "") -> str:
    if value is None:
        return f">{cap}" if unit == "" else "-"
    return f"{value:.0f}{unit}" + ("" if reached == runs else f" ({reached}/{runs})")


def format_tables(summary: dict, runs: list[dict], args: TimeToQualityArguments) -> str:
    """The mean table (one row per variant) and the per-seed table."""
    ts = args.threshold_list
    head = (f"{'variant':<28} {'seeds':>5}  " + "  ".join(f"{'steps@' + str(t):>11}" for t in ts) + "  "
            + "  ".join(f"{'s@' + str(t):>9}" for t in ts) + f"  {'final acc':>9} {'s/step':>7}")
    lines = [f"Time to masked-code accuracy (validation subset of {args.eval_patients} patients, evaluated every "
             f"{args.eval_every} steps, cap {args.max_steps} steps, schedule {args.schedule_steps} steps); "
             "mean over the seeds that reached it (k/n when not all did)", head]
    for name, row in summary.items():
        cells = [row["thresholds"][str(t)] for t in ts]
        steps = "  ".join(f"{_cell(c['mean_steps'], c['reached'], c['runs'], args.max_steps):>11}" for c in cells)
        secs = "  ".join(f"{_cell(c['mean_seconds'], c['reached'], c['runs'], args.max_steps, 's'):>9}" for c in cells)
        lines.append(f"{name:<28} {len(row['seeds']):>5}  {steps}  {secs}  {row['final_accuracy']:>9.3f} "
                     f"{row['seconds_per_step']:>7.3f}")
    lines += ["", "Per seed: steps (seconds) to each threshold"]
    for r in runs:
        cells = [r["crossings"][str(t)] for t in ts]
        text = "  ".join(f"{t}: " + (f"{c['step']} ({c['seconds']:.0f}s)" if c else f">{r['final_step']}")
                         for t, c in zip(ts, cells))
        lines.append(f"{r['variant']:<28} seed {r['seed']}  {text}  final {r['final_accuracy']:.3f} at step {r['final_step']}")
    return "\n".join(lines)


def plot_curves(runs: list[dict], args: TimeToQualityArguments, path: Path) -> Path:
    """Accuracy against step, one colour per variant, one line per seed, the thresholds dotted."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for i, name in enumerate(args.variant_names):
        for j, r in enumerate(x for x in runs if x["variant"] == name):
            steps = [p["step"] for p in r["curve"]]
            accuracy = [p["accuracy"] for p in r["curve"]]
            ax.plot(steps, accuracy, color=colours[i % len(colours)], linestyle=styles[(i // len(colours)) % len(styles)],
                    linewidth=1.2, alpha=1.0 if j == 0 else 0.55, label=name if j == 0 else None)
    for t in args.threshold_list:
        ax.axhline(t, color="grey", linewidth=0.7, linestyle=":")
    ax.set(xlabel="optimizer step", ylabel="masked-code accuracy (validation subset)", ylim=(0, 1),
           title=f"Time to quality ({args.synthetic or args.dataset_path}, preset {args.preset})")
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args((TimeToQualityArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    root = Path(args.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    data = prepare(args)
    runs = []
    for name in tqdm(args.variant_names, desc="variants"):
        for seed in args.seed_list:
            runs.append(run_one(args, data, name, seed))
            write_summary(root / "time_to_quality.json", results_json(args, runs))  # a partial file survives a crash
    summary = summarize(runs, args)
    results = {**results_json(args, runs), "summary": summary}
    write_summary(root / "time_to_quality.json", results)
    plot_curves(runs, args, root / "time_to_quality.png")
    print(format_tables(summary, runs, args), flush=True)
    print(f"\nwrote {root / 'time_to_quality.json'} and {root / 'time_to_quality.png'}")
    return results


def results_json(args: TimeToQualityArguments, runs: list[dict]) -> dict:
    settings = {k: v for k, v in vars(args).items() if not k.endswith("_list") and k != "variant_names"}
    variants = {name: vars(resolve(name)) for name in args.variant_names}
    return {"arguments": settings, "variants": variants, "runs": runs}


def cli() -> None:
    """Console-script entry point (`behrt-benchmark-pretraining`)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
