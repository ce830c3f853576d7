"""Apply an ablated ("concept-erased") checkpoint to a base pipeline in place, whatever its kind,
and report exactly what changed.

Every component's tensors are validated against the base (names and shapes) before any weight is
written, so a failing load leaves the pipeline untouched.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from memtui.engine.model.pipeline import SDPipeline
from memtui.engine.model.loading import keys as K
from memtui.engine.model.loading.base import resolve_checkpoint_path
from memtui.engine.model.loading.detect import probe
from memtui.engine.model.loading.kinds import BY_NAME, Probe
from memtui.engine.model.loading.errors import (CheckpointMismatchError, CorruptCheckpointError,
                                                UnsupportedCheckpointError)
from memtui.engine.model.loading.report import LoadReport
from memtui.engine.model.loading.safeload import file_size, is_weight_file, weight_file_problem

SHOW = 5  # mismatching keys named in an error message


@dataclass
class _Plan:
    """One component's validated load: keys to write, and what the module lacks / ignores."""

    component: str
    module: torch.nn.Module
    values: dict[str, torch.Tensor]
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reshaped: int = 0


def _collect(p: Probe, pipe: SDPipeline, warnings: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Component name -> state dict in the base modules' key conventions (the kind's reader, then
    the key normalisation every kind shares)."""
    read = BY_NAME[p.kind.value].read
    assert read is not None, "load_ablated refuses unloadable kinds first"
    parts = read(p, pipe, warnings)
    modules = pipe.component_modules()
    for comp in list(parts):
        if comp not in modules:
            continue  # refused by _refuse_other_family, naming both families
        mkeys = set(modules[comp].state_dict())
        if comp.startswith("text_encoder"):  # CLIP keys normalised (text_model. or not); T5's (Flux) kept
            t5 = any(k.startswith(("shared.", "encoder.block.")) for k in mkeys)
            parts[comp] = dict(parts[comp]) if t5 else K.normalise_text_keys(parts[comp], mkeys)
        else:
            parts[comp] = K.normalise_diffusers_keys(parts[comp], warnings)
            if comp == "vae":
                parts[comp] = K.normalise_vae_keys(parts[comp], mkeys)
    return parts


def _hint(component: str, bad: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    for key, ck, base in bad:
        if key.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) and len(ck) == 2 and ck[1] != base[1]:
            return (f"the checkpoint's cross-attention dim {ck[1]} does not fit the base's {base[1]} "
                    "(a checkpoint of another Stable Diffusion version, e.g. SD 2.x on an SD 1.x base?)")
        if key.endswith("token_embedding.weight") and len(ck) == 2:
            if ck[1] != base[1]:
                return f"the checkpoint's text hidden size {ck[1]} does not fit the base's {base[1]}"
            return (f"the checkpoint's vocabulary has {ck[0]} tokens, the base's {base[0]} "
                    "(added textual-inversion tokens?)")
    return f"the checkpoint's {component} has a different architecture from the base's"


def _plan(component: str, module: torch.nn.Module, sd: dict[str, torch.Tensor], where: str) -> _Plan:
    msd = module.state_dict()
    plan = _Plan(component, module, {})
    bad: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for k, v in sd.items():
        if k not in msd:
            plan.unexpected.append(k)
            continue
        if tuple(v.shape) != tuple(msd[k].shape):
            if v.numel() == msd[k].numel() and [s for s in v.shape if s != 1] == [s for s in msd[k].shape if s != 1]:
                plan.reshaped += 1  # 1x1 conv <-> linear projection
            else:
                bad.append((k, tuple(v.shape), tuple(msd[k].shape)))
                continue
        plan.values[k] = v
    if bad:
        listed = "; ".join(f"{k}: checkpoint {list(a)} vs base {list(b)}" for k, a, b in bad[:SHOW])
        raise CheckpointMismatchError(
            f"{where}: {len(bad)} {component} tensors do not fit the base model: "
            f"{_hint(component, bad)}. First mismatches: {listed}")
    if sd and not plan.values:
        raise CheckpointMismatchError(
            f"{where}: none of the checkpoint's {len(sd)} {component} tensors has a name the base's "
            f"{component} knows (e.g. {', '.join(list(sd)[:3])})")
    plan.missing = [k for k in msd if k not in sd]
    return plan


@torch.no_grad()
def _apply(plan: _Plan) -> list[str]:
    """Write the plan's tensors into the module (cast to its dtype/device); keys whose values changed."""
    msd = plan.module.state_dict()
    changed = []
    for k, v in plan.values.items():
        target = msd[k]
        new = v.to(device=target.device, dtype=target.dtype).reshape(target.shape)
        if not torch.equal(target, new):
            changed.append(k)
            target.copy_(new)
    return changed


def _refuse_other_family(parts: dict[str, dict[str, torch.Tensor]], pipe: SDPipeline, where: str) -> None:
    """:class:`CheckpointMismatchError` naming both families when the checkpoint's UNet or
    transformer keys say it belongs to a family other than the base's, or when it holds a component
    the base has not (nothing has been written yet)."""
    from memtui.engine.model.families.registry import family_label, other_families

    base = family_label(pipe.family)
    for comp in ("unet", "transformer"):
        if comp not in parts:
            continue
        what = other_families({k: tuple(v.shape) for k, v in parts[comp].items()}, pipe.family)
        if what:
            raise CheckpointMismatchError(
                f"{where}: this is a checkpoint of {what}, but the base is {base}; "
                "give the base model the checkpoint was fine-tuned from. Nothing was changed.")
    lacking = [c for c in parts if c not in pipe.component_modules()]
    if lacking:
        raise CheckpointMismatchError(
            f"{where}: the checkpoint holds {', '.join(lacking)} weights, which a {base} base has no "
            f"component for (it has {', '.join(pipe.component_modules())}). Nothing was changed.")


def _refuse_non_finite(plans: list[_Plan], where: str) -> None:
    """:class:`CorruptCheckpointError` when a floating-point tensor to be written holds NaN or Inf."""
    bad = [f"{p.component}.{k}" for p in plans for k, v in p.values.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CorruptCheckpointError(
            f"{where}: {len(bad)} tensors hold non-finite values (NaN/Inf), e.g. {', '.join(bad[:SHOW])}; "
            "the checkpoint is damaged and was not applied")


def checkpoint_problems(path: str | Path) -> list[str]:
    """Cheap checks of an ablated checkpoint (a file, or every weight file under a folder): empty,
    truncated or unreadable weight files, one line each (headers only, nothing is loaded)."""
    path = Path(path).expanduser()
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if is_weight_file(f))
    else:
        return []
    return [p for p in (weight_file_problem(f) for f in files) if p]


def load_ablated(pipe: SDPipeline, path: str | Path, *, lora_scale: float = 1.0, lora_fuse: bool = True) -> LoadReport:
    """Patch ``pipe`` in place with the ablated checkpoint at ``path`` (kind detected from content;
    a path, or a repo id in the local HF cache with optional ``@rev`` and subfolder such as
    ``OPTML-Group/AdvUnlearn/nudity_unlearned``) and return a :class:`LoadReport`. Tensors are cast
    to the pipeline's dtype and device; a LoRA adapter is applied at ``lora_scale``, fused into the
    weights or (``lora_fuse=False``) kept as PEFT layers. Raises :class:`CheckpointMismatchError`
    when shapes or families do not fit (nothing is written then), :class:`UnsupportedCheckpointError`
    for adapters memtui cannot apply (SPM, Receler), :class:`UnsafeCheckpointError` for pickles
    that need code."""
    path = resolve_checkpoint_path(path)
    p = probe(path, set(pipe.unet.state_dict()))  # the denoiser's keys (UNet or transformer)
    kind = BY_NAME[p.kind.value]
    if kind.apply is not None:
        return kind.apply(p, pipe, {"lora_scale": lora_scale, "lora_fuse": lora_fuse})
    if kind.read is None:
        raise UnsupportedCheckpointError(kind.unsupported(p) if kind.unsupported else
                                         f"{p.path}: {kind.summary} cannot be loaded yet")
    warnings: list[str] = []
    parts = _collect(p, pipe, warnings)
    _refuse_other_family(parts, pipe, str(path))
    modules = pipe.component_modules()
    plans = [_plan(c, modules[c], sd, str(path)) for c, sd in parts.items()]
    _refuse_non_finite(plans, str(path))
    dtypes: dict[str, int] = {}
    for plan in plans:
        for v in plan.values.values():
            name = str(v.dtype).replace("torch.", "")
            dtypes[name] = dtypes.get(name, 0) + 1
        if plan.reshaped:
            warnings.append(f"{plan.reshaped} {plan.component} tensors reshaped (1x1 conv <-> linear projection)")
        if plan.unexpected:
            warnings.append(f"{len(plan.unexpected)} {plan.component} tensors of the checkpoint are not in "
                            "the base model and were ignored")
    lower = [d for d in dtypes if isinstance(getattr(torch, d, None), torch.dtype)
             and getattr(torch, d).is_floating_point and getattr(torch, d).itemsize < pipe.dtype.itemsize]
    if lower:
        warnings.append(f"checkpoint tensors stored as {', '.join(lower)} were cast up to "
                        f"{str(pipe.dtype).replace('torch.', '')}")
    report = LoadReport(kind=p.kind.value, path=str(path), size_bytes=file_size(path),
                        checkpoint_dtypes=dtypes, warnings=warnings)
    for plan in plans:
        changed = _apply(plan)
        report.components.append(plan.component)
        report.n_loaded += len(plan.values)
        report.missing_keys += [f"{plan.component}.{k}" for k in plan.missing]
        report.unexpected_keys += [f"{plan.component}.{k}" for k in plan.unexpected]
        report.changed_tensors += [f"{plan.component}.{k}" for k in changed]
        if changed:
            report.changed_components.append(plan.component)
    if any(c.startswith("text_encoder") for c in report.components):
        pipe.clear_prompt_cache()
    return report
