"""What a model family declares (:class:`Family`); the registry finds every subclass registered in
a module of this package."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from memtui.engine.model.pipeline import SDPipeline

__all__ = ["Family", "Shapes"]

Shapes = Mapping[str, tuple[int, ...]]  # a UNet state dict's key -> tensor shape (diffusers names)


class Family:
    """A family of bases. Class attributes are its declaration; the classmethods act on folders."""

    name: ClassVar[str]                 # registry name, stored in run specs' load reports ("sd1", "sdxl")
    title: ClassVar[str]                # for messages and the console ("Stable Diffusion 1.x")
    pipeline_classes: ClassVar[tuple[str, ...]]  # model_index.json "_class_name" values it loads
    components: ClassVar[tuple[str, ...]]        # component folders a pipeline folder must hold
    default_sampler: ClassVar[str]      # memtui.engine.diffusion.samplers name for --generate
    default_guidance: ClassVar[float] = 7.5
    native_size: ClassVar[int]          # the released models' image side in pixels (documentation)
    notes: ClassVar[str] = ""           # what was verified, for docs/models.md

    @classmethod
    def matches(cls, index: Mapping[str, Any], root: Path) -> bool:
        """Whether the pipeline folder ``root`` (its ``model_index.json`` as ``index``) is this family's."""
        return index.get("_class_name") in cls.pipeline_classes

    @classmethod
    def load(cls, root: Path, dtype: torch.dtype, device: str, source: str) -> SDPipeline:
        """The pipeline at ``root`` in ``dtype`` on ``device`` (eval mode, gradients off)."""
        raise NotImplementedError

    @classmethod
    def save(cls, pipe: SDPipeline, path: Path) -> Path:
        """Write ``pipe`` as a diffusers pipeline folder of this family (the inverse of :meth:`load`)."""
        raise NotImplementedError

    @classmethod
    def claims_unet(cls, shapes: Shapes) -> bool | None:
        """Whether a UNet state dict (key -> shape) can be this family's: True/False when its keys
        tell, None when they cannot (e.g. a partial checkpoint of cross-attention keys only at a
        width no released model has)."""
        return None
