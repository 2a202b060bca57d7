"""Why masked-code pretraining plateaued: trace the within-visit attention head as it forms.

    python tests/probe_within_visit_attention.py run baseline 1800 /tmp/probe    # one variant per call
    python tests/probe_within_visit_attention.py run mimetic_qk 1200 /tmp/probe
    python tests/probe_within_visit_attention.py run mimetic 800 /tmp/probe
    python tests/probe_within_visit_attention.py plot /tmp/probe docs/images/pretraining_within_visit_head.png

`run` trains a `behrt-benchmark-pretraining` variant (medium cohort, seed 0, 3,000-step schedule)
and every 100 steps writes the validation masked-code accuracy and, for each attention head, the
mean attention from masked positions to the other tokens of their own visit (`<dir>/<variant>.json`).
Under the normal initialisation that mass stays near its uniform value for ~1,000 steps and
accuracy sits near 0.15; both rise together once one layer-1 head attends within the visit.
`plot` draws the strongest layer-1 head and the accuracy of every variant found in `<dir>`.
A measuring script, not a test: it trains for minutes.
"""

import json
import sys
from pathlib import Path

import torch

from behrt_hf.training import benchmark_pretraining as B


@torch.no_grad()
def within_visit_mass(model, batches) -> dict:
    """head ("L<layer>H<head>") -> mean attention from masked positions to the rest of their visit."""
    was_training = model.training
    model.eval()
    sums, count = {}, 0
    for batch in batches:
        masked = batch["labels"] != -100  # (B, T)
        inputs = {k: v.to(model.device) for k, v in batch.items() if k not in ("labels", "next_visit_labels")}
        attentions = model.behrt(**inputs, output_attentions=True).attentions  # layers x (B, H, T, T)
        visits = batch["visit_ids"]
        same = (visits[:, :, None] == visits[:, None, :]) & ~torch.eye(visits.shape[1], dtype=torch.bool)
        for layer, weights in enumerate(attentions):
            mass = (weights.cpu() * same[:, None]).sum(-1)  # (B, H, T)
            for head in range(mass.shape[1]):
                key = f"L{layer}H{head}"
                sums[key] = sums.get(key, 0.0) + float(mass[:, head][masked].sum())
        count += int(masked.sum())
    model.train(was_training)
    return {key: value / count for key, value in sums.items()}


def run(variant: str, cap: int, out_dir: Path) -> None:
    args = B.TimeToQualityArguments(output_dir=str(out_dir / variant), synthetic="medium", variants=variant,
                                    seeds="0", max_steps=cap, schedule_steps=3000, eval_every=100,
                                    eval_patients=200, stop_at_last_threshold=False)
    data = B.prepare(args)
    probe_batches, log = data.eval_batches[:2], []

    class Probe(B.TimeToQualityCallback):
        def on_step_end(self, training_args, state, control, model=None, **kwargs):
            if state.global_step % 100 == 0:
                accuracy, _ = B.masked_code_accuracy(model, data.eval_batches)
                log.append({"step": state.global_step, "accuracy": accuracy,
                            "within_visit": within_visit_mass(model, probe_batches)})
                (out_dir / f"{variant}.json").write_text(json.dumps(log))
            return super().on_step_end(training_args, state, control, model=model, **kwargs)

    B.TimeToQualityCallback = Probe  # run_one builds its callback from this name
    B.run_one(args, data, variant, 0)


def plot(out_dir: Path, path: Path) -> None:
    from behrt_hf.plotting import pyplot

    plt = pyplot()
    labels = {"baseline": "normal init (the old recipe)", "mimetic_qk": "mimetic query-key",
              "mimetic": "mimetic query-key + value-output"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for variant, label in labels.items():
        file = out_dir / f"{variant}.json"
        if not file.exists():
            continue
        log = json.loads(file.read_text())
        steps = [p["step"] for p in log]
        left.plot(steps, [max(v for k, v in p["within_visit"].items() if k.startswith("L0")) for p in log], label=label)
        right.plot(steps, [p["accuracy"] for p in log], label=label)
    left.set(xlabel="optimizer step", ylabel="attention on the rest of the visit",
             title="Strongest layer-1 head: attention from masked\ncodes to the other codes of their own visit")
    right.set(xlabel="optimizer step", ylabel="masked-code accuracy (validation)", title="Masked-code accuracy",
              ylim=(0, 0.7))
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
    else:
        plot(Path(sys.argv[2]), Path(sys.argv[3]))
