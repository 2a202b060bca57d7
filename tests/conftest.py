"""Test-wide settings: nothing may reach the Hugging Face Hub, and every cache is temporary."""

import os
import tempfile

# Set before transformers / datasets / huggingface_hub are imported by any test module.
_HF_HOME = tempfile.mkdtemp(prefix="behrt_hf_test_hf_home_")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
