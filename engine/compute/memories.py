"""The paper's image-level analysis (spec §2): "many memories of an ablated image" with the
Sequential Inversion Block (SIB), as a resumable run.

For the k-th target ``I_q`` (prompt ``c_q``) and its supports ``I_s1..I_sN`` (reference items
``offset + stride·k … + N − 1``; official: offset 0, stride N = 10):

1. decoder inversions, two batched Adam runs (``decoder_invert``; batched == separate runs):
   ``z^q = DecInv(I_q; E_mu(I_q))`` and ``z^{s_i} = DecInv(I_si; E_mu(I_si))`` together (N+1 items),
   then ``z^{s_i→q} = DecInv(I_q; z^{s_i})`` (N items);
2. diffusion inversion + reconstruction of the target's own latent ``z^q`` (set ``target``) and of
   each memory ``z^{s_i→q}`` (set ``memory``) with ``c_q``, and of each ``z^{s_i}`` with the
   support's own caption (set ``control``). ``sib_path``: ``reencode`` (the official ReNoise
   branch: decode, clamp, uint8, then the inversion's own encoding, for ReNoise a posterior sample
   with the item seed) or ``direct`` (``s·z`` straight into diffusion inversion: the official NTI
   branch, the paper's figure); ``auto`` (the default) is ``direct`` for NTI and ``reencode``
   otherwise, resolved in :meth:`SIBSettings.from_spec` (summary.json's ``options`` record the
   path taken).

A seed is the method's whole seed (``seed_parts``: ``z_T``, then e.g. EDICT's ``y_T``), as one
vector (:meth:`InversionItems.seed_vector`: the parts flattened and concatenated; ``z_T`` alone for
one-part methods); every distance is between such vectors.

Records: ``psnr`` = PSNR(diffusion reconstruction, the image it should show: the target for target
and memories, the support for controls), ``psnr_seed_only`` (the plain-DDIM reconstruction from
``z_T`` alone), ``psnr_decoder`` (decoder-only reconstruction ``D(z)``), ``nll`` (joint, of the
seed parts), ``target_id``, ``support_id``, ``decoder_loss``, and for memories
``distance_to_target`` / ``cosine_to_target`` (to the target's own seed). Latents: ``z_0`` (scaled
latent inverted), ``z_T`` and the seed's further parts, ``z_vae`` (decoder-inverted unscaled
latent). Images: ``query`` (target or support), ``recon``, ``seed_only`` (when it differs from
``recon``), ``decoded`` (decoder-only).

Figures (:mod:`memtui.engine.compute.memories_stats`): per target ``cv`` = std / mean of the
memory -> target-seed distances (the sphere's radii, the paper's Figure 6) and ``cv_pairwise`` =
that of the pairwise memory distances; ``average.cv`` / ``average.cv_pairwise`` over targets.

Resume: finished items are skipped; a target whose items are all finished is skipped entirely. The
decoder stage of a target is checkpointed in ``latents/<target_id>.decinv.safetensors`` once it
completes, so an interruption during the diffusion stage does not redo it; an interruption *during*
the decoder stage recomputes that target's decoder inversions from the start (deterministic).

Options (``spec.options``): ``targets`` (list of erased-set indices; default the first
``num_targets`` = ``max_items`` or 5), ``num_supports`` (10), ``support_offset`` (0),
``support_stride`` (= num_supports), ``vae_steps`` (3000), ``vae_lr`` (0.01), ``loss_weights``
([1, 0, 0]), ``sib_path`` (auto | reencode | direct), ``decoder_chunk`` (items per decoder
forward/backward; None = all) — declared once in :mod:`memtui.engine.analyses.memories`, with
smaller defaults on the demo world (``spec.demo``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memtui.engine.analyses.memories import SIB_PATHS, Memories, MemoriesOptions, resolve_sib_path
from memtui.engine.compute.inversion_items import InversionItems
from memtui.engine.compute.memories_stats import average_figures, target_figures
from memtui.engine.core.device import empty_cache, is_oom
from memtui.engine.core.io import atomic_write_bytes
from memtui.engine.core.tensors import to_uint8, uint8_to_tensor
from memtui.engine.data.datasets import DatasetError, DatasetItem, read_dataset
from memtui.engine.data.images import ImageError, load_image, preprocess
from memtui.engine.inversion.decoder import (DecoderInversionCancelled, DecoderInversionResult, decoder_invert,
                                             encoder_mean)
from memtui.engine.runs.loop import Progress, RunCancelled, run_locked
from memtui.engine.runs.spec import RunSpec, SpecError

CV_DEFINITION = ("cv = population std / mean of the Euclidean distances from each of a target's memory "
                 "seeds to the target's own seed (the sphere's radii); cv_pairwise = population std / mean "
                 "of the pairwise Euclidean distances (pairs i<j) among the memory seeds; a seed is all the "
                 "method's seed parts flattened and concatenated (z_T for one-part methods); 'average.cv' "
                 "and 'average.cv_pairwise' = mean and population std of each over targets")

__all__ = ["run_memories", "SIBSettings", "memory_ids", "SIB_PATHS"]


@dataclass
class SIBSettings:
    """The SIB settings of a run: the ``memories`` declaration's options (demo defaults applied)
    with the rules filled in: ``num_targets`` = the option, else ``max_items``, else 5 (3 on the
    demo world); ``stride`` = ``support_stride``, else ``num_supports``; ``sib_path`` ``auto``
    resolved for ``spec.method`` (:func:`~memtui.engine.analyses.memories.resolve_sib_path`: direct
    for NTI, reencode otherwise)."""

    options: MemoriesOptions
    num_targets: int

    @classmethod
    def from_spec(cls, spec: Any) -> "SIBSettings":
        try:
            o = Memories.options(spec)
        except ValueError as e:
            raise SpecError(f"invalid memories options: {e}") from None
        n = o.num_targets or spec.max_items or (3 if getattr(spec, "demo", False) else 5)
        o = dataclasses.replace(o, sib_path=resolve_sib_path(o.sib_path, str(spec.method)))
        return cls(o, int(n))

    def __getattr__(self, name: str) -> Any:  # the declared options, read through
        if name == "options":
            raise AttributeError(name)
        return getattr(self.options, name)

    @property
    def stride(self) -> int:
        o = self.options
        return o.support_stride if o.support_stride is not None else o.num_supports

    def to_dict(self) -> dict[str, Any]:
        """The settings as summary.json's ``options`` (and the decoder checkpoints' metadata) hold them."""
        o = self.options
        return {"targets": o.targets, "num_targets": self.num_targets, "num_supports": o.num_supports,
                "support_offset": o.support_offset, "support_stride": self.stride,
                "vae_steps": o.vae_steps, "vae_lr": o.vae_lr, "loss_weights": list(o.loss_weights),
                "sib_path": o.sib_path, "decoder_chunk": o.decoder_chunk}


def memory_ids(target_id: str, n: int) -> tuple[list[str], list[str]]:
    """(memory item ids, control item ids) of a target: ``<target_id>.mem<i>``, ``<target_id>.ctl<i>``."""
    return [f"{target_id}.mem{i:02d}" for i in range(n)], [f"{target_id}.ctl{i:02d}" for i in range(n)]


@dataclass
class _Plan:
    target: DatasetItem
    supports: list[DatasetItem]
    mem_ids: list[str]
    ctl_ids: list[str]

    @property
    def ids(self) -> list[str]:
        return [self.target.item_id, *self.mem_ids, *self.ctl_ids]


@dataclass
class _TargetSeed:
    """The target's own seed once known, as a flat float64 vector of all its parts
    (:meth:`InversionItems.seed_vector`; memories measure their distance to it)."""

    target_id: str
    vector: torch.Tensor | None = None


@dataclass
class _Job:
    """One diffusion inversion of a target's stage 2: the decoder-inverted latent ``z_vae [C, h, w]``
    (unscaled), the pixels it should show ``query [H, W, 3]`` uint8, and its decoder figures."""

    item_id: str
    set_name: str  # target | memory | control
    prompt: str
    source: str
    z_vae: torch.Tensor
    query: np.ndarray
    support: DatasetItem | None
    psnr_decoder: float
    decoder_loss: float
    seed: _TargetSeed
    decoded: np.ndarray | None = None  # the decoder-only reconstruction D(z_vae) [H, W, 3] uint8


@dataclass
class _Loaded:
    """A target's pixels ``q [3, H, W]`` and its readable supports' (``sup_x``, at ``keep``, indices
    into ``plan.supports``)."""

    plan: _Plan
    q: torch.Tensor
    sup_x: list[torch.Tensor]
    keep: list[int]


class _MemoriesRun(InversionItems):
    analysis = "memories"
    decoder_chunk: int | None = None  # items per decoder pass now (the option, halved on OOM)

    def plan(self) -> list[str]:
        self.opts = SIBSettings.from_spec(self.spec)
        self.decoder_chunk = self.opts.decoder_chunk
        recorded = self._recorded_sib_path()
        if recorded and (self.spec.options or {}).get("sib_path", "auto") == "auto":
            # a run begun when sib_path had no "auto" (its default was reencode) resumes on its path
            self.opts.options = dataclasses.replace(self.opts.options, sib_path=recorded)
        erased = read_dataset(self.spec.erased, "erased")
        reference = read_dataset(self.spec.reference, "reference")
        idx = self.opts.targets if self.opts.targets is not None else list(range(min(self.opts.num_targets, len(erased))))
        if not idx or any(i < 0 or i >= len(erased) for i in idx):
            raise DatasetError(f"target indices {idx} do not fit the erased set ({len(erased)} items)")
        n, st, off = self.opts.num_supports, self.opts.stride, self.opts.support_offset
        need = off + st * (len(idx) - 1) + n
        if need > len(reference):
            raise DatasetError(f"{len(idx)} targets x {n} supports (offset {off}, stride {st}) need "
                               f"{need} reference items; the reference set has {len(reference)}")
        self.plans = []
        for k, i in enumerate(idx):
            sup = reference[off + st * k: off + st * k + n]
            m, c = memory_ids(erased[i].item_id, n)
            self.plans.append(_Plan(erased[i], sup, m, c))
        return [iid for p in self.plans for iid in p.ids]

    def units(self) -> list[list[str]]:
        """A target with its memories and controls: one decoder stage serves them all."""
        return [p.ids for p in self.plans]

    def _recorded_sib_path(self) -> str | None:
        """The SIB path this run directory's earlier sessions took (summary.json's options, else a
        decoder checkpoint's metadata); None for a new run."""
        opts = (self.rd.read_summary() or {}).get("options")
        if isinstance(opts, dict) and opts.get("sib_path") in SIB_PATHS[1:]:
            return str(opts["sib_path"])
        from safetensors import safe_open

        for path in sorted(self.rd.latents_dir.glob("*.decinv.safetensors")) if self.rd.latents_dir.is_dir() else ():
            try:
                with safe_open(str(path), "pt") as f:
                    sib = json.loads((f.metadata() or {}).get("options", "{}")).get("sib_path")
            except Exception:  # noqa: BLE001 - an unreadable checkpoint tells nothing
                continue
            if sib in SIB_PATHS[1:]:
                return str(sib)
        return None

    # ------------------------------------------------------------------ work: groups of targets
    def together(self) -> int:
        """Targets per group: ``targets_together``, else as many whole targets (2N + 1 items) as fill
        one batch, at least 1."""
        k = self.opts.targets_together
        return int(k) if k else max(1, self.batch_size // (2 * self.opts.num_supports + 1))

    def groups(self, done: set[str]) -> Iterator[list[_Job]]:
        """:meth:`together` targets at a time: their decoder stages batched in one pair of Adam
        runs, their diffusion jobs in one group (batched by the loop)."""
        todo = [p for p in self.plans if not all(i in done for i in p.ids)]
        i = 0
        while i < len(todo):
            self.ensure_model()
            part = todo[i:i + self.together()]
            i += len(part)
            jobs = self._targets(part, done)
            if jobs:
                yield jobs

    def _load(self, it: DatasetItem) -> tuple[torch.Tensor | None, str | None]:
        if it.error is not None:
            return None, it.error
        try:
            return preprocess(load_image(it.source, alpha=self.spec.alpha, size=self.size), self.size, self.spec.resample), None
        except ImageError as e:
            return None, str(e)

    def _fail_target(self, p: _Plan, done: set[str], msg: str) -> None:
        t = p.target
        for iid, s, sup in ([(t.item_id, "target", None)] + [(m, "memory", su) for m, su in zip(p.mem_ids, p.supports)]
                            + [(c, "control", su) for c, su in zip(p.ctl_ids, p.supports)]):
            if iid not in done:
                prompt = sup.prompt if s == "control" else t.prompt
                self.emit(self.error_record(iid, s, prompt, (sup or t).source if s == "control" else t.source, msg,
                                            target_id=t.item_id, support_id=sup.item_id if sup else None))

    def _load_target(self, p: _Plan, done: set[str]) -> _Loaded | None:
        """A target and its supports as tensors (load errors become records; None when the target
        itself cannot be read)."""
        q, err = self._load(p.target)
        if q is None:
            self._fail_target(p, done, f"target image: {err}")
            return None
        sup_x: list[torch.Tensor] = []
        keep: list[int] = []
        for j, s in enumerate(p.supports):
            x, err = self._load(s)
            if x is None:
                for iid, set_name, prompt in ((p.mem_ids[j], "memory", p.target.prompt), (p.ctl_ids[j], "control", s.prompt)):
                    if iid not in done:
                        self.emit(self.error_record(iid, set_name, prompt, s.source, f"support image: {err}",
                                                    target_id=p.target.item_id, support_id=s.item_id))
                continue
            sup_x.append(x)
            keep.append(j)
        return _Loaded(p, q, sup_x, keep)

    def _targets(self, plans: Sequence[_Plan], done: set[str]) -> list[_Job]:
        """Load targets and supports, run their decoder stage together and return the diffusion
        jobs of their items not in ``done``."""
        loaded = [x for x in (self._load_target(p, done) for p in plans) if x is not None]
        decs = self._decoder_stage(loaded)
        return [j for t, dec in zip(loaded, decs) for j in self._diffusion_jobs(t.plan, t.q, t.sup_x, t.keep, dec, done)]

    # ------------------------------------------------------------------ decoder stage
    def _ckpt_path(self, p: _Plan) -> Any:
        return self.rd.latents_dir / f"{p.target.item_id}.decinv.safetensors"

    def _ckpt_meta(self, t: _Loaded) -> dict[str, str]:
        return {"support_ids": json.dumps([t.plan.supports[j].item_id for j in t.keep]),
                "options": json.dumps(self.opts.to_dict(), sort_keys=True), "image_size": str(self.size)}

    def _stored_decoder(self, t: _Loaded) -> dict[str, torch.Tensor] | None:
        """The target's decoder checkpoint when it was made with these supports and settings."""
        from safetensors.torch import load_file, safe_open

        path = self._ckpt_path(t.plan)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), "pt") as f:
                stored = f.metadata() or {}
            if all(stored.get(k) == v for k, v in self._ckpt_meta(t).items()):
                self.rd.event("progress", stage="decoder", target_id=t.plan.target.item_id, reused=True)
                return load_file(str(path))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is recomputed
            pass
        return None

    def _decoder_run(self, targets: torch.Tensor, init: torch.Tensor, phase: str, label: str) -> DecoderInversionResult:
        """One batched decoder inversion; on out-of-memory the items per forward/backward are halved
        and it starts again (chunking does not change the result)."""
        o = self.opts
        every = max(1, o.vae_steps // 10)

        def prog(step: int, steps: int, loss: float) -> None:
            self.rd.event("progress", stage=f"decoder:{phase}", target_id=label, step=step, steps=steps, loss=loss)
            self.notify({"item_id": f"{label} decoder {phase} {step}/{steps}", "status": "running"})

        while True:
            try:
                return decoder_invert(self.pipe, targets, init, o.vae_steps, o.vae_lr, o.loss_weights, prog,
                                      self.cancel, self.decoder_chunk, every)
            except DecoderInversionCancelled:
                raise RunCancelled() from None
            except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest propagates
                n = self.decoder_chunk or targets.shape[0]
                if not is_oom(e) or n == 1:
                    raise
                empty_cache(self.device)
                self.decoder_chunk = max(1, n // 2)
                self.rd.event("progress", stage="oom", decoder_chunk=self.decoder_chunk,
                              message=f"decoder inversion out of memory at {n} items per pass; "
                                      f"retrying at {self.decoder_chunk}")

    def _decoder_stage(self, loaded: Sequence[_Loaded]) -> list[dict[str, torch.Tensor]]:
        """Per target: z_target [1], z_support [n], z_memory [n] (unscaled) with decoder PSNRs and
        losses. Targets without a usable checkpoint are inverted together: one Adam run over every
        target and support toward itself, then one over every support's latent toward its target."""
        from safetensors.torch import save

        out: list[dict[str, torch.Tensor] | None] = [self._stored_decoder(t) for t in loaded]
        todo = [k for k, d in enumerate(out) if d is None]
        if not todo:
            return out  # type: ignore[return-value]
        label = ", ".join(loaded[k].plan.target.item_id for k in todo)
        own = torch.cat([torch.cat([loaded[k].q[None], *[x[None] for x in loaded[k].sup_x]]) for k in todo])
        a = self._decoder_run(own, encoder_mean(self.pipe, own), "own", label)
        starts, toward, init = [], [], []
        at = 0
        for k in todo:
            t, n = loaded[k], len(loaded[k].keep)
            starts.append(at)
            toward.append(t.q[None].expand(n, -1, -1, -1))
            init.append(a.z[at + 1:at + 1 + n])
            at += 1 + n
        m = sum(len(loaded[k].keep) for k in todo)
        if m:
            b = self._decoder_run(torch.cat(toward), torch.cat(init), "toward-target", label)
        else:
            b = DecoderInversionResult(z=a.z[:0], losses=np.zeros(0), psnr=np.zeros(0), images=a.images[:0])
        bat = 0
        for k, at in zip(todo, starts):
            n = len(loaded[k].keep)
            own_sl, mem_sl = slice(at, at + 1 + n), slice(bat, bat + n)
            bat += n
            za, pa, la = a.z[own_sl], np.asarray(a.psnr[own_sl], np.float64), np.asarray(a.losses[own_sl], np.float64)
            d = {"z_target": za[:1], "z_support": za[1:], "z_memory": b.z[mem_sl],
                 "psnr_target": torch.from_numpy(pa[:1].copy()), "psnr_support": torch.from_numpy(pa[1:].copy()),
                 "psnr_memory": torch.from_numpy(np.asarray(b.psnr[mem_sl], dtype=np.float64).copy()),
                 "loss_target": torch.from_numpy(la[:1].copy()), "loss_support": torch.from_numpy(la[1:].copy()),
                 "loss_memory": torch.from_numpy(np.asarray(b.losses[mem_sl], dtype=np.float64).copy())}
            d = {key: v.detach().cpu().contiguous() for key, v in d.items()}
            atomic_write_bytes(self._ckpt_path(loaded[k].plan), save(d, metadata=self._ckpt_meta(loaded[k])))
            out[k] = d
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ diffusion stage
    def _diffusion_jobs(self, p: _Plan, q: torch.Tensor, sup_x: list[torch.Tensor], keep: list[int],
                        dec: dict[str, torch.Tensor], done: set[str]) -> list[_Job]:
        t = p.target
        q8 = to_uint8(q)
        seed = _TargetSeed(t.item_id, self.read_seed(t.item_id) if t.item_id in done else None)
        jobs: list[_Job] = []
        if t.item_id not in done:
            jobs.append(_Job(t.item_id, "target", t.prompt, t.source, dec["z_target"][0], q8, None,
                             float(dec["psnr_target"][0]), float(dec["loss_target"][0]), seed))
        for k, j in enumerate(keep):
            s = p.supports[j]
            if p.mem_ids[j] not in done:
                jobs.append(_Job(p.mem_ids[j], "memory", t.prompt, t.source, dec["z_memory"][k], q8, s,
                                 float(dec["psnr_memory"][k]), float(dec["loss_memory"][k]), seed))
            if p.ctl_ids[j] not in done:
                jobs.append(_Job(p.ctl_ids[j], "control", s.prompt, s.source, dec["z_support"][k], to_uint8(sup_x[k]),
                                 s, float(dec["psnr_support"][k]), float(dec["loss_support"][k]), seed))
        with torch.no_grad():  # one item at a time: the decoded pixels do not depend on batch size or resume
            for job in jobs:
                z = job.z_vae[None].to(self.pipe.device, self.pipe.vae_dtype)
                job.decoded = to_uint8(self.pipe.vae.decode(z).sample.float().clamp(-1, 1))[0]
        return jobs

    def compute(self, jobs: Sequence[_Job]) -> dict[str, Any]:
        """Invert + reconstruct: the decoded image re-encoded (``reencode``) or the scaled latent
        itself (``direct``)."""
        prompts = [j.prompt for j in jobs]
        if self.opts.sib_path == "direct":
            z = torch.stack([j.z_vae for j in jobs])
            res = self.invert(z * self.pipe.scaling_factor, prompts, latents=True)
        else:
            res = self.invert(uint8_to_tensor(np.stack([j.decoded for j in jobs])), prompts)
        del res["raw"]
        return res

    def write(self, job: _Job, res: dict[str, Any], i: int, seconds: float) -> dict[str, Any]:
        tensors = {"z_0": res["z_0"][i], **self.seed_tensors(res, i), "z_vae": job.z_vae}
        vec = self.seed_vector(tensors, [p for p in self.seed_parts if p in tensors] or ["z_T"])
        extra: dict[str, Any] = {"target_id": job.seed.target_id,
                                 "support_id": job.support.item_id if job.support else None,
                                 "psnr_decoder": job.psnr_decoder, "decoder_loss": job.decoder_loss,
                                 "decoded": f"images/{job.item_id}.decoded.png"}
        if job.set_name == "target":
            job.seed.vector = vec
        elif job.set_name == "memory" and job.seed.vector is not None:
            a_, b_ = vec, job.seed.vector
            extra["distance_to_target"] = float((a_ - b_).norm())
            extra["cosine_to_target"] = float(1 - (a_ @ b_) / (a_.norm() * b_.norm()))
        seed_only = res.get("seed_only")
        return self.inverted_record(job.item_id, job.set_name, job.prompt, job.source, job.query, res["recon"][i],
                                    tensors, {"decoded": job.decoded},
                                    seed_only=None if seed_only is None else seed_only[i], **extra)

    def failed_record(self, job: _Job, message: str) -> dict[str, Any]:
        return self.error_record(job.item_id, job.set_name, job.prompt, job.source, message,
                                 target_id=job.seed.target_id, support_id=job.support.item_id if job.support else None)

    # ------------------------------------------------------------------ summary
    def summarize(self) -> dict[str, Any]:
        results = self.rd.read_results()
        per_target: dict[str, Any] = {}
        all_mem: list[dict[str, Any]] = []
        all_ctl: list[dict[str, Any]] = []
        d = self.seed_size(results)
        normal = (self.normal(d, keep_samples=True) if d
                  else {"mode": self.spec.normal, "d": 0, "mean": math.nan, "std": math.nan})

        def seeds(recs: list[dict[str, Any]]) -> np.ndarray | None:
            if not recs:
                return None
            return np.stack([self.read_seed(r["item_id"]).numpy() for r in recs])

        for p in self.plans:
            ok = lambda ids: [results[i] for i in ids if results.get(i, {}).get("status") == "ok"]  # noqa: E731
            mem, ctl = ok(p.mem_ids), ok(p.ctl_ids)
            trec = results.get(p.target.item_id)
            tseed = (self.read_seed(p.target.item_id).numpy()
                     if trec and trec.get("status") == "ok" else None)
            if not (mem or ctl or trec):
                continue
            figs = target_figures(trec, tseed, mem, seeds(mem), ctl, seeds(ctl), normal, self.spec.emd_metric)
            figs["prompt"] = p.target.prompt
            per_target[p.target.item_id] = figs
            all_mem += mem
            all_ctl += ctl
        all_ids = {s: [] for s in ("target", "memory", "control")}
        for p in self.plans:
            all_ids["target"].append(p.target.item_id)
            all_ids["memory"] += p.mem_ids
            all_ids["control"] += p.ctl_ids
        sets = {s: self.set_stats(results, ids, ("psnr", "psnr_seed_only", "psnr_decoder", "nll"))
                for s, ids in all_ids.items()}
        errors = [{"item_id": i, "set": s, "error": results[i].get("error")}
                  for s, ids in all_ids.items() for i in ids if i in results and results[i].get("status") != "ok"]
        return {"analysis": "memories", "method": self.spec.method, "steps": self.spec.steps,
                "options": self.opts.to_dict(), "sets": sets, "targets": per_target,
                "average": average_figures(per_target, all_mem, all_ctl, normal, self.spec.emd_metric),
                "d": d, "normal": {k: v for k, v in normal.items() if k != "samples"},
                "emd_metric": self.spec.emd_metric, "cv_definition": CV_DEFINITION,
                "errors": errors}


def run_memories(spec: RunSpec, run_dir: Any, progress: Progress | None = None, cancel: Any = None) -> dict[str, Any]:
    """Run or resume the SIB analysis of ``spec`` in ``run_dir`` (see module docstring); returns the
    summary (also in summary.json; ``status`` finished | cancelled). ``progress(done, total,
    record)`` after each item (and during decoder inversions with a ``running`` pseudo-record);
    ``cancel`` (Event) stops between batches / decoder steps, resumable."""
    return run_locked(_MemoriesRun, spec, run_dir, progress, cancel)
