"""What a reader left out, and the errors it raises.

- `DropReport`: what a reader left out, counted by reason with a few examples. Three kinds:
  *invalid* (bad input: unparseable dates, events before birth, ages above 120, null codes,
  unknown code systems, ...; `strict=True` turns the first one into a `ReaderError`),
  *filtered* (left out by design or by an option: static codes, code-prefix filter, duplicate
  codes within a visit, patients with no visit left; never an error) and *adjusted* (kept but
  changed, e.g. MIMIC-III's shifted ages above 89).
- `ReaderInputError` / `MissingFileError`: missing files or columns, raised before any work with
  the file and the column named.
- `count_rows` / `count_csv_rows`: count the rows a boolean mask selects, with examples that name
  the file and line.

Users catch these from `behrt_hf.data_builders`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

INVALID, FILTERED, ADJUSTED = "invalid", "filtered", "adjusted"
REPORT_FILENAME = "drop_report.json"


class ReaderError(ValueError):
    """`strict=True`: an input row or patient that would have been skipped. Names file, row and reason."""


class ReaderInputError(ValueError):
    """The input is unusable as a whole: a missing column, a wrong column type, an unreadable file."""


class MissingFileError(ReaderInputError, FileNotFoundError):
    """A required file or folder is missing. The message names what was looked for and where."""


@dataclass
class DropReport:
    """What a reader left out or changed, by reason, with up to `max_examples` examples each.

    `invalid` counts bad input (with `strict=True` the first such row raises `ReaderError`),
    `filtered` counts what was left out by design or by an option, `adjusted` counts values that
    were changed but kept. Reasons name their unit ("event ...", "patient ...", "... row").
    `notes` holds other remarks (optional tables not found, ...); `kept` counts what was produced.
    """

    source: str = ""
    strict: bool = False
    max_examples: int = 3
    invalid: Counter = field(default_factory=Counter)
    filtered: Counter = field(default_factory=Counter)
    adjusted: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    kept: Counter = field(default_factory=Counter)

    def add(self, kind: str, reason: str, count: int = 1, examples: Iterable[str] = ()) -> None:
        """Count `count` items left out (or adjusted) for `reason`; raise in strict mode if invalid."""
        if count <= 0:
            return
        examples = list(examples)
        if kind == INVALID and self.strict:
            where = examples[0] if examples else "(no example)"
            raise ReaderError(f"{self.source}: {reason}: {where} [strict=True; use strict=False to skip and count]")
        getattr(self, kind)[reason] += int(count)
        kept = self.examples.setdefault(reason, [])
        kept.extend(examples[: max(0, self.max_examples - len(kept))])

    def add_where(self, kind: str, reason: str, mask: np.ndarray, describe: Callable[[int], str]) -> None:
        """`add` the items selected by boolean `mask`; `describe(i)` names the first few as examples."""
        n = int(np.count_nonzero(mask))
        if n:
            self.add(kind, reason, n, (describe(int(i)) for i in np.flatnonzero(mask)[: self.max_examples]))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def counts(self) -> Counter:
        """All reasons of all kinds with their counts."""
        return self.invalid + self.filtered + self.adjusted

    def summary(self) -> str:
        lines = [f"{self.source}: kept " + ", ".join(f"{n} {what}" for what, n in sorted(self.kept.items()))]
        for kind, counter in ((INVALID, self.invalid), (FILTERED, self.filtered), (ADJUSTED, self.adjusted)):
            for reason, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])):
                example = "; ".join(self.examples.get(reason, []))
                lines.append(f"  {kind:8s} {n:>9d}  {reason}" + (f"  e.g. {example}" if example else ""))
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    __str__ = summary

    def to_dict(self) -> dict:
        # not dataclasses.asdict: it rebuilds Counters from (key, value) pairs and miscounts them
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict) -> DropReport:
        data = dict(data)
        for name in (INVALID, FILTERED, ADJUSTED, "kept"):
            data[name] = Counter(data.get(name, {}))
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> DropReport:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return list(value) if isinstance(value, list) else value


def count_rows(
    report: DropReport,
    kind: str,
    reason: str,
    mask: np.ndarray,
    events: pa.Table,
    sources: Sequence[str],
    index: np.ndarray | None = None,
) -> None:
    """Count the events selected by boolean `mask` under `reason`, with examples.

    `mask` indexes `events` directly, or `index` (row numbers into `events`) when given.
    """
    rows = np.arange(len(mask)) if index is None else index
    report.add_where(kind, reason, mask, lambda i: describe_event(events, int(rows[i]), sources))


def count_csv_rows(
    report: DropReport, kind: str, reason: str, mask: np.ndarray, table: pa.Table, source: str, show: Sequence[str] = ()
) -> None:
    """Count the rows of a table from `read_csv` selected by `mask`; examples show the `show` columns."""
    report.add_where(kind, reason, mask, lambda i: describe_csv_row(table, i, source, show))


def describe_csv_row(table: pa.Table, i: int, source: str, show: Sequence[str] = ()) -> str:
    values = ", ".join(f"{c}={table.column(c)[i].as_py()!r}" for c in show if c in table.column_names)
    return f"{source} line {table.column('row')[i].as_py()}" + (f" ({values})" if values else "")


def describe_event(events: pa.Table, i: int, sources: Sequence[str]) -> str:
    row = {name: events.column(name)[i].as_py() for name in ("patient_id", "time", "code", "src", "row")}
    source = sources[row["src"]]
    unit = "line" if source.lower().endswith((".csv", ".csv.gz")) else "row"  # CSV: line number, header = 1
    return f"{source} {unit} {row['row']} (patient {row['patient_id']}, code {row['code']}, time {row['time']})"



__all__ = [
    "ADJUSTED",
    "FILTERED",
    "INVALID",
    "REPORT_FILENAME",
    "DropReport",
    "MissingFileError",
    "ReaderError",
    "ReaderInputError",
    "count_csv_rows",
    "count_rows",
]
