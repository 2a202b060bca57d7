"""The pretraining objectives: masked-code modelling (MLM), next-visit prediction (NVP), or both.

One type, parsed once where a value enters (a command-line flag, a collator's argument) and
passed on as it is; everything downstream asks `.mlm` / `.nvp` instead of searching the string.
A `str` enum, so it compares, hashes, formats and serialises to JSON as its value (`"mlm+nvp"`).
"""

from __future__ import annotations

from enum import Enum


class Objective(str, Enum):
    MLM = "mlm"
    NVP = "nvp"
    MLM_NVP = "mlm+nvp"

    @classmethod
    def parse(cls, value: "str | Objective", name: str = "objective") -> "Objective":
        """`value` as an `Objective`; a ValueError naming `name` and the choices if it is none."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{name} must be one of {OBJECTIVES}, got {value!r}.") from None

    @property
    def mlm(self) -> bool:
        return self in (Objective.MLM, Objective.MLM_NVP)

    @property
    def nvp(self) -> bool:
        return self in (Objective.NVP, Objective.MLM_NVP)

    @property
    def in_words(self) -> list[str]:
        """The objectives spelled out, e.g. for a model card."""
        return [words for on, words in ((self.mlm, "masked-code modelling"), (self.nvp, "next-visit prediction")) if on]

    def __str__(self) -> str:
        return self.value


OBJECTIVES = tuple(objective.value for objective in Objective)

__all__ = ["OBJECTIVES", "Objective"]
