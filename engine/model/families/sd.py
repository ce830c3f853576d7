"""Stable Diffusion 1.x and 2.x: one UNet, one CLIP text encoder, a 4-channel VAE; SD 2.x reads
OpenCLIP-H text (width 1024) through linear projections, and its 768 px models predict v
(``prediction_type = "v_prediction"`` in the scheduler config), which ``SDPipeline.eps`` converts."""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from memtui.engine.model.families.base import Family, Shapes
from memtui.engine.model.families.registry import register
from memtui.engine.model.families.unet_keys import cross_attention_width, has_added_embedding, projection_ndim
from memtui.engine.model.loading.components import load_component, require_components, scheduler_config, weights_variant
from memtui.engine.model.pipeline import SDPipeline

__all__ = ["SD1", "SD2", "is_sd2_unet", "load_sd_components", "write_sd_folder"]

RELEASED_TEXT_WIDTHS = frozenset({768, 1024, 2048})  # SD 1.x, SD 2.x, SDXL cross-attention text widths


def _unet_config(root: Path) -> dict[str, Any]:
    f = root / "unet" / "config.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def is_sd2_unet(config: Mapping[str, Any]) -> bool:
    """SD 2.x's UNet: linear projections in its transformer blocks, or OpenCLIP-H's text width."""
    return bool(config.get("use_linear_projection")) or config.get("cross_attention_dim") == 1024


def load_sd_components(root: Path, dtype: torch.dtype, denoiser: str = "unet",
                       denoiser_class: Any = None) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer of a pipeline folder, in ``dtype`` (CPU). The ``unet``
    entry is the denoising network read from the ``denoiser`` folder with ``denoiser_class``
    (default ``unet/``, ``UNet2DConditionModel``; Flux: ``transformer/``, ``FluxTransformer2DModel``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    net = denoiser_class or UNet2DConditionModel
    kw = {"local_files_only": True, "torch_dtype": dtype, "low_cpu_mem_usage": False}
    return {
        "unet": load_component(root / denoiser, lambda f: net.from_pretrained(f, variant=weights_variant(f), **kw)),
        "vae": load_component(root / "vae", lambda f: AutoencoderKL.from_pretrained(f, variant=weights_variant(f), **kw)),
        "text_encoder": load_component(root / "text_encoder",
                                       lambda f: CLIPTextModel.from_pretrained(f, local_files_only=True, dtype=dtype)),
        "tokenizer": load_component(root / "tokenizer", lambda f: CLIPTokenizer.from_pretrained(f, local_files_only=True)),
    }


def write_sd_folder(pipe: SDPipeline, path: Path, class_name: str, extra: Mapping[str, Any] | None = None,
                    scheduler_class: str = "DDIMScheduler") -> Path:
    """Write the components of ``pipe`` (``pipe.component_modules()`` and its tokenizers) as a
    diffusers pipeline folder with ``model_index.json`` naming ``class_name``, and its scheduler
    config as ``scheduler_class``."""
    path.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"_class_name": class_name, "_diffusers_version": "0.42.1"}
    for name, module in pipe.component_modules().items():
        module.save_pretrained(path / name)
        lib = "diffusers" if type(module).__module__.startswith("diffusers") else "transformers"
        index[name] = [lib, type(module).__name__]
    for name, tok in pipe.tokenizers().items():
        tok.save_pretrained(path / name)
        index[name] = ["transformers", type(tok).__name__.replace("Fast", "")]
    (path / "scheduler").mkdir(exist_ok=True)
    sched = {"_class_name": scheduler_class, **pipe.scheduler_config}
    (path / "scheduler" / "scheduler_config.json").write_text(json.dumps(sched, indent=2))
    index["scheduler"] = ["diffusers", scheduler_class]
    index.update(extra or {})
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


class _SD(Family):
    pipeline_classes = ("StableDiffusionPipeline",)
    components = ("unet", "vae", "text_encoder", "tokenizer")
    text_width: ClassVar[int]       # the cross-attention keys' text width
    projection_rank: ClassVar[int]  # rank of the transformer blocks' proj_in weights (4: 1x1 conv, 2: linear)

    @classmethod
    def claims_unet(cls, shapes: Shapes) -> bool | None:
        """No for SDXL's added embedding, another released family's text width or the other
        projection rank; yes for this family's width, or for a 1x1-conv projection (SD 1.x's alone:
        a linear one is SD 2.x's and SDXL's)."""
        if has_added_embedding(shapes):
            return False
        width, ndim = cross_attention_width(shapes), projection_ndim(shapes)
        if width in RELEASED_TEXT_WIDTHS - {cls.text_width} or ndim not in (None, cls.projection_rank):
            return False
        if width == cls.text_width or ndim == cls.projection_rank == 4:
            return True
        return None

    @classmethod
    def load(cls, root: Path, dtype: torch.dtype, device: str, source: str) -> SDPipeline:
        require_components(root, cls.components)
        parts = load_sd_components(root, dtype)
        pipe = SDPipeline(**parts, scheduler_config=scheduler_config(root), source=source, family=cls.name)
        for module in pipe.modules():  # already in dtype (from_pretrained): move only
            module.to(torch.device(device))
        return pipe.eval()

    @classmethod
    def save(cls, pipe: SDPipeline, path: Path) -> Path:
        return write_sd_folder(pipe, path, "StableDiffusionPipeline", {
            "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False})


@register
class SD1(_SD):
    name = "sd1"
    title = "Stable Diffusion 1.x"
    default_sampler = "lms"  # the official dataset generation's
    native_size = 512
    text_width, projection_rank = 768, 4
    notes = "ε-prediction; CLIP ViT-L text (width 768); the paper's models (SD 1.4)."

    @classmethod
    def matches(cls, index: Mapping[str, Any], root: Path) -> bool:
        return super().matches(index, root) and not is_sd2_unet(_unet_config(root))



@register
class SD2(_SD):
    name = "sd2"
    title = "Stable Diffusion 2.x"
    default_sampler = "ddim"
    native_size = 768
    text_width, projection_rank = 1024, 2
    notes = ("OpenCLIP-H text (width 1024), linear projections; 2.x-base is ε-prediction at 512 px, "
             "2.0/2.1 are v-prediction at 768 px (converted to ε for every method).")

    @classmethod
    def matches(cls, index: Mapping[str, Any], root: Path) -> bool:
        return super().matches(index, root) and is_sd2_unet(_unet_config(root))

