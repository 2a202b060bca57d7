"""Write a synthetic cohort as a MEDS dataset: the CLI over `behrt_hf.data_builders.meds_export.export_meds`.

Besides the data and metadata it writes each task as a MEDS labels folder, ``labels/<task>/<split>/0.parquet``
(prediction time = the index visit's time), and the oracle's probabilities for the same rows as
``oracle/<task>/<split>.parquet`` (meds-evaluation's prediction format); the layout is documented in
`behrt_hf.data_builders.meds_export`.

    behrt-synthetic-export --output_dir out/meds_small --synthetic small --seed 0
    python -m behrt_hf.training.synthetic_export --output_dir out/meds_tiny --synthetic tiny
"""

from __future__ import annotations

from dataclasses import dataclass, field

from behrt_hf.data_builders.meds_export import export_meds
from behrt_hf.data_builders.synthetic_ehr import CONFIG_SIZES
from behrt_hf.training.arguments import parse_args


@dataclass
class ExportArguments:
    """Which synthetic cohort to write, and where."""

    output_dir: str = field(metadata={"help": "Folder to write the MEDS dataset into (created; must be empty)."})
    synthetic: str = field(default="small", metadata={"help": "The synthetic cohort's size preset.",
                                                      "choices": list(CONFIG_SIZES)})
    seed: int = field(default=0, metadata={"help": "The cohort's seed."})
    num_patients: int | None = field(default=None, metadata={"help": "Override the preset's number of patients."})
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1], metadata={
        "help": "Train, validation (MEDS tuning) and test (MEDS held_out) fractions."})
    subjects_per_shard: int = field(default=10000, metadata={"help": "Subjects per data/<split>/<k>.parquet file."})
    overwrite: bool = field(default=False, metadata={"help": "Replace the contents of a non-empty output_dir."})

    def __post_init__(self):
        if len(self.split_fractions) != 3:
            raise ValueError(f"--split_fractions takes three numbers (train validation test), got {self.split_fractions}")
        if self.num_patients is not None and self.num_patients <= 0:  # export_meds reads 0 as "the preset's"
            raise ValueError(f"--num_patients must be positive, got {self.num_patients}")


def run(args: ExportArguments) -> dict:
    """Export the cohort and print a one-line summary; returns `export_meds`' summary."""
    summary = export_meds(args.output_dir, args.synthetic, args.seed, args.num_patients, tuple(args.split_fractions),
                          args.subjects_per_shard, args.overwrite)
    print(f"wrote {summary['events']:,} events for {sum(summary['subjects'].values()):,} subjects "
          f"({', '.join(f'{k}={v}' for k, v in summary['subjects'].items())}) to {summary['output_dir']}")
    for task, rows in summary["label_rows"].items():
        print(f"  labels/{task}: {', '.join(f'{k}={v}' for k, v in rows.items())} label rows; oracle/{task}/<split>.parquet")
    return summary


def main(argv: list[str] | None = None) -> int:
    """`behrt-synthetic-export`: parse the arguments (or one .json / .yaml file) and export."""
    try:
        (args,) = parse_args(ExportArguments, argv)
        run(args)
    except (ValueError, FileExistsError) as e:  # a bad option or a non-empty folder: the message, no traceback
        raise SystemExit(f"behrt-synthetic-export: error: {e}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["ExportArguments", "main", "run"]
