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
from typing import Any

import numpy as np
import torch

from memtui.engine import metrics
from memtui.engine.data.datasets import DatasetError, DatasetItem, read_dataset
from memtui.engine.data.images import ImageError, load_image, preprocess, to_uint8
from memtui.engine.data.patches import check_divisible, patch_permutation, scramble, unscramble
from memtui.engine.runs.spec import SpecError
from memtui.engine.compute.image_level import ItemRun, run_item_analysis

__all__ = ["run_scramble", "scramble_id"]


def scramble_id(target_id: str, j: int) -> str:
    return f"{target_id}.scr{j:02d}"


class _ScrambleRun(ItemRun):
    analysis = "scramble"

    def plan(self) -> list[str]:
        o = dict(self.spec.options or {})
        try:
            self.grid = int(o.get("grid", 4))
            self.n_scr = int(o.get("num_scrambles", 1))
            self.perm_seed = int(o.get("perm_seed", 0))
            n_t = int(o.get("num_targets", self.spec.max_items or 5))
        except (TypeError, ValueError) as e:
            raise SpecError(f"invalid scramble options: {e}") from None
        if self.grid < 2 or self.n_scr < 1:
            raise SpecError("options.grid must be >= 2 and options.num_scrambles >= 1")
        if self.spec.image_size:
            try:
                check_divisible(self.spec.image_size, self.spec.image_size, self.grid)
            except ValueError as e:
                raise SpecError(f"options.grid: {e}") from None
        erased = read_dataset(self.spec.erased, "erased")
        idx = [int(i) for i in o["targets"]] if o.get("targets") is not None else list(range(min(n_t, len(erased))))
        if not idx or any(i < 0 or i >= len(erased) for i in idx):
            raise DatasetError(f"target indices {idx} do not fit the erased set ({len(erased)} items)")
        self.items: list[DatasetItem] = [erased[i] for i in idx]
        self.perms = [patch_permutation(self.grid, self.perm_seed + j) for j in range(self.n_scr)]
        return [iid for it in self.items for iid in self._ids(it)]

    def _ids(self, it: DatasetItem) -> list[str]:
        return [it.item_id] + [scramble_id(it.item_id, j) for j in range(self.n_scr)]

    def work(self) -> None:
        for it in self.items:
            self.check_cancel()
            done = self.rd.done_ids()
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
                x = preprocess(load_image(it.source, alpha=self.spec.alpha), self.size, self.spec.resample)
            except ImageError as e:
                for iid in todo:
                    self.error(iid, "target" if iid == it.item_id else "scramble", it.prompt, it.source, str(e),
                               target_id=it.item_id)
                continue
            original = to_uint8(x)
            inputs = {it.item_id: (original, None, None)}
            for j, perm in enumerate(self.perms):
                inputs[scramble_id(it.item_id, j)] = (scramble(original, self.grid, perm, channels_last=True), j, perm)
            batch = [(iid, *inputs[iid]) for iid in todo]
            imgs = torch.stack([torch.from_numpy(b[1]).float().permute(2, 0, 1) / 127.5 - 1 for b in batch])
            res = self.invert(imgs, [it.prompt] * len(batch), latents=False)
            for k, (iid, query, j, perm) in enumerate(batch):
                tensors = {"z_0": res["z_0"][k], "z_T": res["z_T"][k]}
                if j is None:
                    self.write_ok(iid, "target", it.prompt, it.source, query, res["recon"][k], tensors,
                                  target_id=it.item_id, grid=self.grid)
                    continue
                back = unscramble(res["recon"][k], self.grid, perm, channels_last=True)
                self.write_ok(iid, "scramble", it.prompt, it.source, query, res["recon"][k], tensors,
                              {"reassembled": back}, target_id=it.item_id, grid=self.grid,
                              perm=[int(v) for v in perm], perm_seed=self.perm_seed + j,
                              psnr_reassembled=metrics.psnr(original, back),
                              reassembled=f"images/{iid}.reassembled.png")

    def summarize(self) -> dict[str, Any]:
        results = self.rd.read_results()
        per: dict[str, Any] = {}
        deltas: list[float] = []
        d = None
        for it in self.items:
            orig = results.get(it.item_id, {})
            scr = [results[i] for i in self._ids(it)[1:] if results.get(i, {}).get("status") == "ok"]
            if orig.get("status") == "ok" and d is None:
                d = int(np.prod(orig["z_shape"]))
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
                "sets": {s: self.set_stats(results, l, s) for s, l in ids.items()},
                "targets": per,
                "nll_increase": metrics.summarize(dl),
                "fraction_less_likely": float((dl > 0).mean()) if dl.size else math.nan,
                "d": d, "normal": self.normal(d) if d else {"mode": self.spec.normal},
                "errors": errors}


def run_scramble(spec: Any, run_dir: Any, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
    """Run or resume the scramble test of ``spec`` in ``run_dir`` (see module docstring); returns
    the summary (also in summary.json)."""
    return run_item_analysis(_ScrambleRun, spec, run_dir, progress, cancel)
