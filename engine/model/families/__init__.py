"""Model families: one module per family of text-to-image bases (SD 1.x, SD 2.x, SDXL) that
declares how to recognise a base folder and a checkpoint of it, how to load and save it, and its
defaults. The inversion methods and analyses see only :class:`~memtui.engine.model.pipeline.SDPipeline`."""
from memtui.engine.model.families.registry import (FAMILIES, checkpoint_families, detect_family, family_names,
                                                   get_family, register)

__all__ = ["FAMILIES", "checkpoint_families", "detect_family", "family_names", "get_family", "register"]
