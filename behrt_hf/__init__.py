"""behrt_hf: BEHRT as a first-class Hugging Face model.

Importing the package registers BEHRT with the transformers Auto classes, so
`AutoConfig`, `AutoModel`, `AutoModelForMaskedLM`, `AutoModelForPreTraining`,
`AutoModelForSequenceClassification` and `AutoTokenizer` load BEHRT checkpoints.
"""

import importlib

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from . import modeling_behrt
from .configuration_behrt import PRESETS, BehrtConfig
from .data_collator import DataCollatorForBehrt
from .modeling_behrt import (
    BehrtEmbeddings,
    BehrtForMaskedLM,
    BehrtForNextVisitPrediction,
    BehrtForPreTraining,
    BehrtForPreTrainingOutput,
    BehrtForSequenceClassification,
    BehrtModel,
    BehrtPreTrainedModel,
)
from .schema import PatientValidationError, patient_features, validate_patient
from .tokenization_behrt import BehrtTokenizerFast

__version__ = "0.1.0"

AutoConfig.register(BehrtConfig.model_type, BehrtConfig, exist_ok=True)
AutoModel.register(BehrtConfig, BehrtModel, exist_ok=True)
AutoModelForMaskedLM.register(BehrtConfig, BehrtForMaskedLM, exist_ok=True)
AutoModelForPreTraining.register(BehrtConfig, BehrtForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(BehrtConfig, BehrtForSequenceClassification, exist_ok=True)
AutoTokenizer.register(BehrtConfig, tokenizer_class=BehrtTokenizerFast, exist_ok=True)

# Data entry points are imported lazily: the readers' heavier dependencies load on first use.
_LAZY = {
    "load_synthetic": "behrt_hf.data_builders.synthetic_ehr",
    "SyntheticEHR": "behrt_hf.data_builders.synthetic_ehr",
    "load_meds": "behrt_hf.data_builders.meds",
    "load_mimic": "behrt_hf.data_builders.mimic",
    "load_synthea": "behrt_hf.data_builders.synthea",
    "convert_original_checkpoint": "behrt_hf.convert_original",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'behrt_hf' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "BehrtConfig",
    *modeling_behrt.__all__,
    "BehrtTokenizerFast",
    "DataCollatorForBehrt",
    "PatientValidationError",
    "patient_features",
    "validate_patient",
    *_LAZY,
]
