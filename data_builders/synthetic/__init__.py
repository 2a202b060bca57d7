"""The synthetic EHR generating process (see `simulate` and the dataset card)."""

from .params import TASKS
from .simulate import PatientRecord, simulate_patient

__all__ = ["TASKS", "PatientRecord", "simulate_patient"]
