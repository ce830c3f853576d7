"""The model-family registry: every module of :mod:`memtui.engine.model.families` registers one
or more :class:`~memtui.engine.model.families.base.Family` classes; the family of a base folder is
detected from its ``model_index.json`` (``_class_name``) and component configs."""
from __future__ import annotations

import json
from pathlib import Path

from memtui.engine.core.registry import Registry
from memtui.engine.model.families.base import Family, Shapes

__all__ = ["FAMILIES", "register", "family_names", "get_family", "detect_family", "checkpoint_families",
           "UNSUPPORTED", "family_label", "other_families"]

ORDER = ("sd1", "sd2", "sdxl", "flux")
FAMILIES: Registry[Family] = Registry("model family", "memtui.engine.model.families", ORDER,
                                      skip=("base", "conditioning", "registry", "unet_keys"))
register = FAMILIES.register

# Pipelines memtui recognises but cannot load yet, with what to say.
UNSUPPORTED = {
    "StableDiffusion3Pipeline": "Stable Diffusion 3 (MMDiT)",
    "StableDiffusionXLImg2ImgPipeline": "the SDXL refiner",
}


def family_names() -> tuple[str, ...]:
    return FAMILIES.names()


def get_family(name: str) -> type[Family]:
    return FAMILIES.get(name)


def detect_family(root: str | Path) -> type[Family]:
    """The family of the pipeline folder ``root``; ValueError naming its ``_class_name`` when no
    registered family loads it."""
    from memtui.engine.model.loading.errors import UnsupportedCheckpointError

    root = Path(root)
    index = json.loads((root / "model_index.json").read_text())
    for fam in FAMILIES.classes():
        if fam.matches(index, root):
            return fam
    cls = index.get("_class_name", "?")
    what = UNSUPPORTED.get(cls)
    known = ", ".join(f"{f.name} ({'/'.join(f.pipeline_classes)})" for f in FAMILIES.classes())
    raise UnsupportedCheckpointError(
        f"{root}: {cls}{' — ' + what if what else ''} is not a family memtui loads yet; it loads {known}")


def checkpoint_families(shapes: Shapes) -> set[str]:
    """The families a UNet / transformer state dict (key -> shape) can belong to: those whose
    :meth:`Family.claims_unet` does not say no (those that say yes, when any does); the empty
    set when no family's keys fit and none can be told apart (every family then)."""
    votes = {f.name: f.claims_unet(shapes) for f in FAMILIES.classes()}
    yes = {n for n, v in votes.items() if v is True}
    if yes:
        return yes
    maybe = {n for n, v in votes.items() if v is None}
    return maybe if len(maybe) < len(votes) else set()


def family_label(name: str) -> str:
    """``"Stable Diffusion 1.x (sd1)"``: a family's title and registry name, for messages."""
    return f"{get_family(name).title} ({name})"


def other_families(shapes: Shapes, family: str) -> str | None:
    """The families a denoiser state dict (key -> shape) belongs to, as ``"A (a) or B (b)"``, when
    ``family`` is not among them; None when it may be ``family``'s (or the keys cannot tell)."""
    fams = checkpoint_families(shapes)
    if not fams or family in fams:
        return None
    return " or ".join(family_label(n) for n in sorted(fams))
