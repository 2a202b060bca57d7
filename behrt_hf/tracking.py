"""Experiment tracking that survives an ephemeral pod: everything lands in the output directory.

`RunTrackerCallback` appends every log to `metrics.jsonl` as it happens (so a run killed mid-way
keeps its history, and a resumed run continues the same file) and draws PNG training curves at
the end. `write_summary` writes `summary.json`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .plotting import pyplot


class RunTrackerCallback(TrainerCallback):
    def __init__(self, output_dir: str | Path, collator: Any | None = None):
        self.output_dir = Path(output_dir)
        self.collator = collator
        self.jsonl = self.output_dir / "metrics.jsonl"

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if state.global_step == 0 and self.jsonl.exists():
                self.jsonl.unlink()  # a fresh run, not a resume
            elif state.global_step > 0:
                self._truncate_after(state.global_step)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop lines logged after the checkpoint: they will be logged again."""
        if not self.jsonl.exists():
            return
        kept = [line for line in self.jsonl.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.jsonl.write_text("".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        if self.collator is not None and hasattr(self.collator, "padding_fraction"):
            record["padding_fraction"] = round(self.collator.padding_fraction, 4)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            plot_training_curves(self.jsonl, self.output_dir / "training_curves.png")


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


def plot_training_curves(jsonl: str | Path, png: str | Path) -> Path | None:
    """Training loss and every eval metric against the step, one panel each."""
    plt = pyplot()
    records = read_jsonl(jsonl)
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for key, value in r.items():
            if (key == "loss" or key.startswith("eval_")) and isinstance(value, (int, float)) and math.isfinite(value):
                if not key.endswith(("runtime", "per_second", "num_masked", "num_patients", "threshold")):
                    series.setdefault(key, []).append((r["step"], value))
    if not series:
        return None
    n = len(series)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, points) in zip(axes.flat, sorted(series.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return Path(png)


def write_summary(path: str | Path, summary: dict) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, default=str) + "\n")


__all__ = ["RunTrackerCallback", "plot_training_curves", "read_jsonl", "write_summary"]
