"""memtui.engine — the science of memtui: offline model loading, diffusion and decoder inversion,
metrics, analyses and the run store. It never imports Textual or the console (a test enforces it).

Importing the engine switches the Hugging Face libraries to offline mode: memtui never downloads.
"""
from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "DIFFUSERS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__: list[str] = []
