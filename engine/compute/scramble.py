"""The patch-scramble test of the paper's limitations section: an unnatural image (its patches
shuffled) should have a *less likely* seed than the natural one (the paper: NLL 23.89K vs 23.05K for
a church).

For each chosen image of the erased set (``options.targets`` indices, default the first
``num_targets`` = ``max_items`` or 5): the preprocessed image is cut into ``grid x grid`` patches
(``options.grid``, default 4; the image side must be divisible by it) and shuffled
``num_scrambles`` times (default 1) with the permutations ``patch_permutation(grid, perm_seed + j)``
(``options.perm_seed`` default 0). The unshuffled image (set ``target``, item id = the dataset id)
and each scramble (set ``scramble``, item id ``<target_id>.scr<j>``) are inverted with the image's
prompt and reconstructed.

Scramble records: ``psnr`` = PSNR(scrambled input, reconstruction) and ``psnr_reassembled`` =
PSNR(original, reconstruction with the inverse permutation applied) — equal by construction, since
a permutation of pixels keeps the MSE; ``nll``; ``perm``, ``grid``, ``perm_seed``, ``target_id``.
Images: ``query`` (scrambled input), ``recon`` (its reconstruction), ``reassembled``.
Summary: per image the NLL/PSNR of the original and of its scrambles (and the difference), plus
the mean NLL difference and the fraction of scrambles whose seed is less likely (higher NLL).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from memtui.engine import metrics
from memtui.engine.analyses.scramble import Scramble
from memtui.engine.compute.inversion_items import InversionItems
from memtui.engine.core.tensors import to_uint8, uint8_to_tensor
from memtui.engine.data.datasets import DatasetError, DatasetItem, read_dataset
from memtui.engine.data.images import ImageError, load_image, preprocess
from memtui.engine.data.patches import check_divisible, patch_permutation, scramble, unscramble
from memtui.engine.runs.loop import Progress, run_locked
from memtui.engine.runs.spec import RunSpec, SpecError

__all__ = ["run_scramble", "scramble_id"]


def scramble_id(target_id: str, j: int) -> str:
    """Item id of scramble ``j`` of a target: ``<target_id>.scr<jj>``."""
    return f"{target_id}.scr{j:02d}"


@dataclass
class _Job:
    """One input of a target: the original (``j`` None) or scramble ``j`` with its permutation;
    ``query [H, W, 3]`` uint8 is what is inverted; ``original`` the unscrambled pixels."""

    item_id: str
    item: DatasetItem
    query: np.ndarray
    original: np.ndarray
    j: int | None
    perm: np.ndarray | None


class _ScrambleRun(InversionItems):
    analysis = "scramble"

    def plan(self) -> list[str]:
        try:
            o = Scramble.options(self.spec)
        except ValueError as e:
            raise SpecError(f"invalid scramble options: {e}") from None
        self.grid, self.n_scr, self.perm_seed = o.grid, o.num_scrambles, o.perm_seed
        n_t = o.num_targets or self.spec.max_items or 5
        if self.spec.image_size:
            try:
                check_divisible(self.spec.image_size, self.spec.image_size, self.grid)
            except ValueError as e:
                raise SpecError(f"options.grid: {e}") from None
        erased = read_dataset(self.spec.erased, "erased")
        idx = list(o.targets) if o.targets is not None else list(range(min(n_t, len(erased))))
        if not idx or any(i < 0 or i >= len(erased) for i in idx):
            raise DatasetError(f"target indices {idx} do not fit the erased set ({len(erased)} items)")
        self.items: list[DatasetItem] = [erased[i] for i in idx]
        self.perms = [patch_permutation(self.grid, self.perm_seed + j) for j in range(self.n_scr)]
        return [iid for it in self.items for iid in self._ids(it)]

    def units(self) -> list[list[str]]:
        """A target with its scrambles (one image load and one group)."""
        return [self._ids(it) for it in self.items]

    def _ids(self, it: DatasetItem) -> list[str]:
        return [it.item_id] + [scramble_id(it.item_id, j) for j in range(self.n_scr)]

    def _set(self, job_id: str, it: DatasetItem) -> str:
        return "target" if job_id == it.item_id else "scramble"

    def groups(self, done: set[str]) -> Iterator[list[_Job]]:
        """One group per target: the original and its scrambles not yet done."""
        for it in self.items:
            todo = [i for i in self._ids(it) if i not in done]
            if not todo:
                continue
            self.ensure_model()
            try:
                check_divisible(self.size, self.size, self.grid)
            except ValueError as e:
                raise SpecError(f"options.grid: {e}") from None
            try:
                if it.error is not None:
                    raise ImageError(it.error)
                x = preprocess(load_image(it.source, alpha=self.spec.alpha, size=self.size), self.size, self.spec.resample)
            except ImageError as e:
                for iid in todo:
                    self.emit(self.error_record(iid, self._set(iid, it), it.prompt, it.source, str(e),
                                                target_id=it.item_id))
                continue
            original = to_uint8(x)
            inputs = {it.item_id: _Job(it.item_id, it, original, original, None, None)}
            for j, perm in enumerate(self.perms):
                sid = scramble_id(it.item_id, j)
                inputs[sid] = _Job(sid, it, scramble(original, self.grid, perm, channels_last=True), original, j, perm)
            yield [inputs[iid] for iid in todo]

    def compute(self, jobs: Sequence[_Job]) -> dict[str, Any]:
        res = self.invert(uint8_to_tensor(np.stack([b.query for b in jobs])), [b.item.prompt for b in jobs])
        del res["raw"]
        return res

    def write(self, job: _Job, res: dict[str, Any], k: int, seconds: float) -> dict[str, Any]:
        it, recon = job.item, res["recon"][k]
        tensors = {"z_0": res["z_0"][k], **self.seed_tensors(res, k)}
        seed_only = res["seed_only"][k] if res["seed_only"] is not None else None
        if job.j is None:
            return self.inverted_record(job.item_id, "target", it.prompt, it.source, job.query, recon, tensors,
                                        seed_only=seed_only, target_id=it.item_id, grid=self.grid)
        back = unscramble(recon, self.grid, job.perm, channels_last=True)
        return self.inverted_record(job.item_id, "scramble", it.prompt, it.source, job.query, recon, tensors,
                                    {"reassembled": back}, seed_only=seed_only, target_id=it.item_id, grid=self.grid,
                                    perm=[int(v) for v in job.perm], perm_seed=self.perm_seed + job.j,
                                    psnr_reassembled=metrics.psnr(job.original, back),
                                    reassembled=f"images/{job.item_id}.reassembled.png")

    def failed_record(self, job: _Job, message: str) -> dict[str, Any]:
        it = job.item
        return self.error_record(job.item_id, self._set(job.item_id, it), it.prompt, it.source, message,
                                 target_id=it.item_id)

    def summarize(self) -> dict[str, Any]:
        results = self.rd.read_results()
        per: dict[str, Any] = {}
        deltas: list[float] = []
        d = None
        for it in self.items:
            orig = results.get(it.item_id, {})
            scr = [results[i] for i in self._ids(it)[1:] if results.get(i, {}).get("status") == "ok"]
            if orig.get("status") == "ok" and d is None:
                d = int(orig["seed_dim"]) if isinstance(orig.get("seed_dim"), int) else int(np.prod(orig["z_shape"]))
            o_nll = orig.get("nll") if orig.get("status") == "ok" else None
            s_nll = [r["nll"] for r in scr]
            delta = [n - o_nll for n in s_nll] if o_nll is not None else []
            deltas += delta
            per[it.item_id] = {
                "prompt": it.prompt, "original_nll": o_nll, "original_psnr": orig.get("psnr"),
                "scrambled_nll": metrics.summarize(s_nll), "scrambled_psnr": metrics.summarize([r["psnr"] for r in scr]),
                "nll_increase": metrics.summarize(delta),
            }
        ids = {"target": [it.item_id for it in self.items],
               "scramble": [i for it in self.items for i in self._ids(it)[1:]]}
        errors = [{"item_id": i, "set": s, "error": results[i].get("error")}
                  for s, l in ids.items() for i in l if i in results and results[i].get("status") != "ok"]
        dl = np.asarray(deltas, dtype=np.float64)
        return {"analysis": "scramble", "method": self.spec.method, "steps": self.spec.steps,
                "options": {"grid": self.grid, "num_scrambles": self.n_scr, "perm_seed": self.perm_seed},
                "sets": {s: self.set_stats(results, l, ("psnr", "psnr_seed_only", "nll")) for s, l in ids.items()},
                "targets": per,
                "nll_increase": metrics.summarize(dl),
                "fraction_less_likely": float((dl > 0).mean()) if dl.size else math.nan,
                "d": d, "normal": self.normal(d) if d else {"mode": self.spec.normal},
                "errors": errors}


def run_scramble(spec: RunSpec, run_dir: Any, progress: Progress | None = None, cancel: Any = None) -> dict[str, Any]:
    """Run or resume the scramble test of ``spec`` in ``run_dir`` (see module docstring); returns
    the summary (also in summary.json)."""
    return run_locked(_ScrambleRun, spec, run_dir, progress, cancel)
