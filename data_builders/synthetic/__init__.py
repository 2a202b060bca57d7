"""The synthetic EHR generating process (see `simulate` and SYNTHETIC_EHR_CARD.md).

`simulate_patient(seed, index)` draws one patient; `params` holds every rate and code; `oracle`
computes the exact task probabilities from a record's codes; `codes` is the shipped code table.
"""

from .params import TASKS


def __getattr__(name):  # lazy, so `python -m behrt_hf.data_builders.synthetic.codes` runs cleanly
    if name in ("PatientRecord", "simulate_patient"):
        from . import simulate

        return getattr(simulate, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["TASKS", "PatientRecord", "simulate_patient"]
