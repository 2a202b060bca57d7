"""behrt_hf: BEHRT as a first-class Hugging Face model."""

import importlib

__version__ = "0.1.0"

# Data entry points are imported lazily: `import behrt_hf` stays light for users who only
# need the model, and the readers' heavier dependencies load on first use.
_LAZY = {
    "load_synthetic": "behrt_hf.data_builders.synthetic_ehr",
    "SyntheticEHR": "behrt_hf.data_builders.synthetic_ehr",
    "load_meds": "behrt_hf.data_builders.meds",
    "load_mimic": "behrt_hf.data_builders.mimic",
    "load_synthea": "behrt_hf.data_builders.synthea",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'behrt_hf' has no attribute {name!r}")
