"""LoRA adapters in diffusers / PEFT format (``save_lora_weights``; EraseAnything's Flux LoRA),
applied through diffusers' ``load_lora_weights`` on a diffusers pipeline that shares the base's
modules: **fused** (``fuse_lora(lora_scale=scale)`` then ``unload_lora_weights``: the weights are
the merged ``W + scale·B·A``, the modules plain again) or **unfused** (PEFT layers stay in the
modules, weighted ``scale`` through ``set_adapters``).

The adapter's family is read from its factor shapes before anything changes (a LoRA of another
family is refused naming both); a load that fails half-way is undone (``unload_lora_weights``)."""
from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from memtui.engine.model.loading import keys as K
from memtui.engine.model.loading.errors import CheckpointMismatchError, UnsupportedCheckpointError
from memtui.engine.model.loading.report import LoadReport
from memtui.engine.model.loading.safeload import file_size, iter_tensors, load_file
from memtui.engine.model.pipeline import SDPipeline

if TYPE_CHECKING:
    from memtui.engine.model.loading.kinds import Probe

__all__ = ["ADAPTER_NAME", "apply_lora", "diffusers_pipeline"]

ADAPTER_NAME = "memtui_erasure"


def diffusers_pipeline(pipe: SDPipeline) -> Any:
    """The diffusers pipeline of ``pipe``'s family (its ``pipeline_classes[0]``) holding ``pipe``'s
    very modules and tokenizers (a view, nothing copied), with a default scheduler."""
    import diffusers

    from memtui.engine.model.families import get_family

    cls = getattr(diffusers, get_family(pipe.family).pipeline_classes[0])
    sched = (diffusers.FlowMatchEulerDiscreteScheduler(**pipe.scheduler_config) if pipe.is_flow
             else pipe.make_scheduler())
    parts: dict[str, Any] = {**pipe.component_modules(), **pipe.tokenizers(), "scheduler": sched}
    params = inspect.signature(cls.__init__).parameters
    for name, prm in params.items():
        if name not in parts and name != "self" and prm.default is inspect.Parameter.empty:
            parts[name] = None  # safety checker, feature extractor, image encoder
    if "requires_safety_checker" in params:
        parts["requires_safety_checker"] = False
    return cls(**{k: v for k, v in parts.items() if k in params})


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' weight-loading progress bar and diffusers' per-component "no LoRA keys for
    text_encoder_2" notices off (a run's log is not a terminal; the report says what was adapted)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was, level = tlog.is_progress_bar_enabled(), dlog.get_verbosity()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.set_verbosity(level)
        if was:
            tlog.enable_progress_bar()


def _refuse_other_family(shapes: dict[str, dict[str, tuple[int, ...]]], pipe: SDPipeline, where: str) -> None:
    from memtui.engine.model.families.registry import family_label, other_families

    den = shapes.get("transformer") or shapes.get("unet") or {}
    what = other_families(den, pipe.family) if den else None
    if what:
        raise CheckpointMismatchError(
            f"{where}: this LoRA adapts {what}, but the base is {family_label(pipe.family)}; give the base "
            "model the adapter was trained on. Nothing was changed.")


def apply_lora(p: Probe, pipe: SDPipeline, scale: float = 1.0, fuse: bool = True) -> LoadReport:
    """Apply the LoRA of probe ``p`` to ``pipe`` in place at ``scale``, fused or not; the report
    lists as changed the base weights the adapter touches (fused: those whose values moved)."""
    where = str(p.path)
    sd = dict(iter_tensors(K.unwrap(p.raw))) if p.raw is not None else dict(iter_tensors(load_file(p.path)))
    shapes = K.lora_base_shapes({k: tuple(v.shape) for k, v in sd.items()})
    _refuse_other_family(shapes, pipe, where)
    modules = pipe.component_modules()
    denoiser = "transformer" if "transformer" in modules else "unet"
    targets = {(denoiser if c in ("unet", "transformer") else c): list(d) for c, d in shapes.items()}
    lacking = [c for c in targets if c not in modules]
    if lacking:
        raise CheckpointMismatchError(f"{where}: the LoRA adapts {', '.join(lacking)}, which the base has not "
                                      f"(it has {', '.join(modules)}). Nothing was changed.")
    before: dict[str, torch.Tensor] = {}
    for comp, keys in targets.items():
        msd = modules[comp].state_dict()
        missing = [k for k in keys if k not in msd]
        if missing:
            raise CheckpointMismatchError(
                f"{where}: {len(missing)} of the {len(keys)} {comp} layers the LoRA adapts are not in the base "
                f"(e.g. {', '.join(missing[:3])}); it was trained on another architecture. Nothing was changed.")
        if fuse:  # copies on the CPU: a Flux LoRA adapts gigabytes of attention weights
            before.update({f"{comp}.{k}": msd[k].detach().to("cpu", copy=True) for k in keys})
    warnings: list[str] = []
    dp = diffusers_pipeline(pipe)
    try:
        with _quiet():  # a safetensors file by path: diffusers then reads the adapter's config (its
            # lora_alpha) from the file's lora_adapter_metadata; a pickle as the safely loaded dict
            if Path(p.path).suffix == ".safetensors":
                dp.load_lora_weights(str(Path(p.path).parent), weight_name=Path(p.path).name, adapter_name=ADAPTER_NAME)
            else:
                dp.load_lora_weights(sd, adapter_name=ADAPTER_NAME)
        if fuse:  # every adapted component (Flux's default would fuse the transformer alone)
            dp.fuse_lora(components=list(targets), lora_scale=float(scale), adapter_names=[ADAPTER_NAME])
            dp.unload_lora_weights()
        else:
            dp.set_adapters([ADAPTER_NAME], adapter_weights=[float(scale)])
    except Exception as exc:  # noqa: BLE001 - PEFT and diffusers raise many types; undo and say why
        try:
            dp.unload_lora_weights()
        except Exception:  # noqa: BLE001 - nothing was injected
            pass
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsupportedCheckpointError(f"{where}: diffusers could not apply this LoRA ({first}); nothing was changed") from None
    pipe.clear_prompt_cache()
    if fuse:
        after = {comp: modules[comp].state_dict() for comp in targets}
        changed = [name for name, old in before.items()
                   if not torch.equal(old, after[name.split(".", 1)[0]][name.split(".", 1)[1]].cpu())]
        warnings.append(f"LoRA fused at scale {scale:g} (the weights are W + scale·ΔW; the modules stay plain)")
    else:
        changed = [f"{comp}.{k}" for comp, keys in targets.items() for k in keys]
        warnings.append(f"LoRA kept unfused at scale {scale:g} (PEFT layers in {', '.join(targets)}; the base "
                        "weights are untouched, the outputs change)")
    dtypes: dict[str, int] = {}
    for v in sd.values():
        n = str(v.dtype).replace("torch.", "")
        dtypes[n] = dtypes.get(n, 0) + 1
    comps = list(targets)
    return LoadReport(kind=p.kind.value, path=where, components=comps,
                      changed_components=[c for c in comps if any(x.startswith(c + ".") for x in changed)],
                      n_loaded=len(sd), changed_tensors=changed, size_bytes=file_size(Path(p.path)),
                      checkpoint_dtypes=dtypes, warnings=warnings)
