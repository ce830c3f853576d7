"""Write a pipeline as a diffusers pipeline folder: the inverse of ``load_base`` (the demo's
shipped base model is written this way, and the tests' tiny pipelines), by the pipeline's family."""
from __future__ import annotations

from pathlib import Path

from memtui.engine.model.pipeline import SDPipeline

__all__ = ["save_pipeline"]


def save_pipeline(pipe: SDPipeline, path: str | Path) -> Path:
    """Write ``pipe`` as a diffusers pipeline folder of its family (``model_index.json`` + one
    folder per component, safetensors weights), the layout of ``CompVis/stable-diffusion-v1-4``
    for SD 1.x and of ``stabilityai/stable-diffusion-xl-base-1.0`` for SDXL."""
    from memtui.engine.model.families import get_family

    return get_family(pipe.family).save(pipe, Path(path))
