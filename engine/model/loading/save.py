"""Write a pipeline as a diffusers pipeline folder: the inverse of ``load_base`` (the demo's
shipped base model is written this way, and the tests' tiny pipelines)."""
from __future__ import annotations

import json
from pathlib import Path

from memtui.engine.model.pipeline import SDPipeline

__all__ = ["save_pipeline"]


def save_pipeline(pipe: SDPipeline, path: str | Path) -> Path:
    """Write ``pipe`` as a diffusers pipeline folder (``model_index.json`` + one folder per
    component, safetensors weights), the layout of ``CompVis/stable-diffusion-v1-4``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    pipe.unet.save_pretrained(path / "unet")
    pipe.vae.save_pretrained(path / "vae")
    pipe.text_encoder.save_pretrained(path / "text_encoder")
    pipe.tokenizer.save_pretrained(path / "tokenizer")
    (path / "scheduler").mkdir(exist_ok=True)
    sched = {"_class_name": "DDIMScheduler", **pipe.scheduler_config}
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    index = {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "requires_safety_checker": False,
    }
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path
