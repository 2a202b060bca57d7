"""Count features of a task's patients: what a count-based model (logistic regression, gradient-boosted
trees) sees, built from the same cut history as BEHRT's input.

Per patient, from the visits up to the task's index visit (the cut is the task's own:
`Task.encode`, so a change to the cut reaches these features too; nothing later is read):

- `age`: age at the index visit (years), `sex=F`, `sex=M` (0/1), `log1p_visits`: log(1 + visits);
- `all:<code>`: log(1 + times the code was recorded);
- `<w>d:<code>`: log(1 + times in the last `w` days before the index visit, itself included), for
  each window of `windows_days` (default 90 and 365 days). Days are measured with the visits'
  ages (years x 365.25), which every record has.

The code columns are fitted on one split (use the training split: its codes, not its labels, as
the scratch model's tokenizer does); a code seen only elsewhere, or only after a training
patient's cut, gets no column. The matrix is `scipy.sparse` CSR, so 100k patients and thousands
of codes fit in memory.

    featurizer = CountFeaturizer().fit(cohort["train"], task)
    train = featurizer.transform(cohort["train"], task)      # train.matrix: (patients, features) CSR
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from .encoding import visits_array
from .tasks import Task
from .tokenization_behrt import BehrtTokenizerFast

DAYS_PER_YEAR = 365.25
DEMOGRAPHIC_FEATURES = ("age", "sex=F", "sex=M", "log1p_visits")
UNCUT = 2**31 - 1  # max_length of the encoding: no visit is dropped, so visit number v is record visit v - 1


@dataclass
class CountFeatures:
    """Features of one split's eligible patients, in the split's order."""

    matrix: sp.csr_matrix  # (P, F) float64
    labels: np.ndarray  # (P,) int64
    patient_id: list[str]
    age: np.ndarray  # (P,) years at the index visit
    sex: np.ndarray  # (P,) the record's sex
    oracle: np.ndarray | None = None  # (P,) true probability, where the data has it

    def select(self, rows) -> "CountFeatures":
        """The features of the patients at `rows` (indices into this split)."""
        rows = np.asarray(rows, dtype=np.int64)
        return CountFeatures(self.matrix[rows], self.labels[rows], [self.patient_id[i] for i in rows],
                             self.age[rows], self.sex[rows], None if self.oracle is None else self.oracle[rows])


@dataclass
class _CutHistory:
    """Flat token arrays of a split's encoded, cut patients (codes only), with each token's age gap."""

    token_ids: np.ndarray  # (N,) code token ids
    row: np.ndarray  # (N,) patient of each token
    days_before_cut: np.ndarray  # (N,) days from the token's visit to the index visit
    visits: np.ndarray  # (P,) visits kept by the cut
    index_age: np.ndarray  # (P,)


@dataclass
class CountFeaturizer:
    """Builds `CountFeatures`: fit the code columns on the training split, then transform any split."""

    windows_days: tuple[int, ...] = (90, 365)
    min_patients: int = 1  # a code gets a column if at least this many fitted patients have it before their cut
    tokenizer: BehrtTokenizerFast | None = field(default=None, repr=False)
    codes: list[str] = field(default_factory=list)  # the fitted code columns, in column order

    def __post_init__(self):
        if any(w <= 0 for w in self.windows_days):
            raise ValueError(f"windows_days must be positive, got {self.windows_days}.")
        if self.min_patients < 1:
            raise ValueError(f"min_patients must be >= 1, got {self.min_patients}.")

    @property
    def feature_names(self) -> list[str]:
        blocks = ["all"] + [f"{w}d" for w in self.windows_days]
        return list(DEMOGRAPHIC_FEATURES) + [f"{block}:{code}" for block in blocks for code in self.codes]

    def fit(self, split: datasets.Dataset, task: Task) -> "CountFeaturizer":
        """Fit the code columns on `split`'s eligible patients (their codes up to the index visit)."""
        self.tokenizer = BehrtTokenizerFast.build_vocab(split)
        _, history = self._history(split, task)
        first = self.tokenizer.first_code_id
        vocab = len(self.tokenizer)
        pairs = np.unique(history.row * vocab + history.token_ids)  # each (patient, code) once
        patients = np.bincount(pairs % vocab, minlength=vocab)
        kept = np.flatnonzero(patients >= self.min_patients)
        kept = kept[kept >= first]
        names = self.tokenizer.convert_ids_to_tokens(kept.tolist())
        self.codes = sorted(names)  # column order by name: independent of the tokenizer's frequency order
        return self

    def transform(self, split: datasets.Dataset, task: Task) -> CountFeatures:
        """The features of `split`'s eligible patients (`task.eligible`), cut at each one's index visit."""
        if self.tokenizer is None:
            raise ValueError("CountFeaturizer: call fit(train_split, task) before transform.")
        eligible, history = self._history(split, task)
        columns = self._column_of_id()
        col = columns[history.token_ids]
        known = col >= 0
        rows, cols, gaps = history.row[known], col[known], history.days_before_cut[known]
        block_rows, block_cols = [rows], [cols]
        for block, window in enumerate(self.windows_days, start=1):
            recent = gaps <= window
            block_rows.append(rows[recent])
            block_cols.append(cols[recent] + block * len(self.codes))
        n = len(history.visits)
        counts = sp.coo_matrix(
            (np.ones(sum(len(r) for r in block_rows)), (np.concatenate(block_rows), np.concatenate(block_cols))),
            shape=(n, len(self.codes) * (1 + len(self.windows_days))),
        ).tocsr()  # duplicates summed: counts
        counts.data = np.log1p(counts.data)
        sex = np.asarray(eligible["sex"], dtype=object)
        demographics = np.stack([history.index_age, sex == "F", sex == "M", np.log1p(history.visits)], axis=1)
        matrix = sp.hstack([sp.csr_matrix(demographics.astype(np.float64)), counts], format="csr")
        matrix.eliminate_zeros()
        oracle = np.asarray(eligible[task.oracle], dtype=np.float64) if task.oracle in eligible.column_names else None
        return CountFeatures(matrix, np.asarray(eligible[task.label], dtype=np.int64), list(eligible["patient_id"]),
                             history.index_age, sex, oracle)

    def _column_of_id(self) -> np.ndarray:
        """Token id -> code column (-1: not a feature)."""
        columns = np.full(len(self.tokenizer), -1, dtype=np.int64)
        ids = np.asarray(self.tokenizer.convert_tokens_to_ids(self.codes), dtype=np.int64)
        columns[ids] = np.arange(len(self.codes))
        return columns

    def _history(self, split: datasets.Dataset, task: Task) -> tuple[datasets.Dataset, _CutHistory]:
        """The eligible patients and their code tokens up to the index visit, as the model's encoding cuts them."""
        eligible = task.eligible(split)
        encoded = task.encode(eligible, self.tokenizer, max_length=UNCUT, desc="count features")
        table = encoded.select_columns(["input_ids", "visit_ids"]).with_format("arrow")[:]
        ids, lengths = _flat(table.column("input_ids"))
        visit_ids, _ = _flat(table.column("visit_ids"))
        row = np.repeat(np.arange(len(lengths)), lengths)
        visits = visit_ids[np.cumsum(lengths) - 1]  # visits kept: the number of the last token's ([SEP]) visit
        # The record's visit ages: with nothing truncated (UNCUT), visit number v is record visit v - 1,
        # as long as the cut keeps every visit up to the index one (checked: a cut that drops an earlier
        # visit would shift the numbers).
        shifted = np.flatnonzero(visits != np.asarray(eligible[task.index_visit], dtype=np.int64) + 1)
        if len(shifted):
            i = int(shifted[0])
            raise ValueError(f"patient {eligible[i]['patient_id']!r}: the cut input holds {visits[i]} visits, not "
                             f"the {eligible[i][task.index_visit] + 1} up to its index visit; count features need "
                             "every visit up to the index visit.")
        ages, first_visit = _visit_ages(eligible)
        index_age = ages[first_visit + visits - 1]
        code = ids >= self.tokenizer.first_code_id
        token_age = ages[first_visit[row] + visit_ids - 1]
        days = (index_age[row] - token_age) * DAYS_PER_YEAR
        return eligible, _CutHistory(ids[code], row[code], days[code], visits, index_age)


def _flat(column) -> tuple[np.ndarray, np.ndarray]:
    """A list column's values (int64) and its row lengths."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).fill_null(0).to_numpy().astype(np.int64)
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64), lengths


def _visit_ages(eligible: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Every visit's age (years), flattened, and the offset of each patient's first visit in it."""
    visits = visits_array(eligible.select_columns(["visits"]).with_format("arrow")[:])
    counts = pc.list_value_length(visits).fill_null(0).to_numpy().astype(np.int64)
    ages = pc.struct_field(pc.list_flatten(visits), "age").cast(pa.float64()).to_numpy(zero_copy_only=False)
    return ages, np.concatenate([[0], np.cumsum(counts)])[:-1]


__all__ = ["CountFeaturizer", "CountFeatures", "DEMOGRAPHIC_FEATURES"]
