"""Null-text inversion (numerics in :mod:`memtui.engine.inversion.nti`): ``mode="paper"`` optimises
one null embedding per step and reconstructs with them at the NTI guidance; ``mode="official"``
follows the official code (t=1-start inversion, reconstruction at guidance 1, stopping at t=1).
Encodes the posterior mean by default; the config's ``guidance`` is not used."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memtui.engine.core.options import option
from memtui.engine.inversion.base import InversionMethod, Inverted, MethodOptions, Progress, numerics
from memtui.engine.inversion.registry import register

if TYPE_CHECKING:
    import torch

    from memtui.engine.model.pipeline import SDPipeline

__all__ = ["NTI_MODES", "NTIOptions", "NTIInversion"]

NTI_MODES = ("paper", "official")


@dataclass
class NTIOptions(MethodOptions):
    """Null-text inversion settings (legacy spec keys ``nti_mode``, ``nti_guidance``, ``nti_inner_steps``)."""

    mode: str = option("paper", help="paper (Mokady et al.) or official (the official code's variant)",
                       choices=NTI_MODES, flag="--nti-mode")
    guidance: float = option(7.5, help="CFG scale of the optimisation and of the paper-mode reconstruction",
                             flag="--nti-guidance")
    inner_steps: int | None = option(None, help="Adam steps per timestep (empty: 10 in paper mode; the "
                                     "official mode always takes steps)", minimum=0, flag="--nti-inner-steps")
    lr: float = option(1e-2, help="Adam learning rate (paper mode decays it by 1 - i/100)", minimum=0, flag=None)
    early_stop: float = option(1e-5, help="paper mode: stop a step's optimisation below this loss "
                               "(+ i·2e-5)", minimum=0, flag=None)


@register
class NTIInversion(InversionMethod):
    """Null-text inversion: DDIM pivot, then one optimised null embedding per step; reconstructs with
    them at the NTI guidance (paper) or, as the official code, plain DDIM to t = 1 (official); encodes the mean."""

    name = "nti"
    summary = "null-text inversion (paper or official mode)"
    Options = NTIOptions
    default_encode = "mean"
    seed_note = ("z_T, the DDIM-inverted latent; the reconstruction also uses one optimised null-text "
                 "embedding per step (paper mode) or stops at t = 1 (official mode)")

    extras_batch_dim = {"null_embs": 1, "nti_losses": 1}  # [n, B, L, D] and [n, B]

    @classmethod
    def seed_only_separate(cls, options: Any) -> bool:
        """The reconstruction uses the null embeddings (paper) or stops at t = 1 (official)."""
        return True

    def phases(self, steps: int, options: Any) -> tuple[int, ...]:
        """Inversion, null-text optimisation, reconstruction: ``steps`` each (``steps − 1`` official)."""
        n = steps if options.mode == "paper" else steps - 1
        return (n, n, n)

    def invert(self, pipe: SDPipeline, z0: torch.Tensor, emb: torch.Tensor, steps: int, options: Any,
               generators: Sequence[torch.Generator], guidance: float,
               progress: Progress | None = None) -> Inverted:
        nti_invert = numerics("memtui.engine.inversion.nti:nti_invert")

        res = nti_invert(pipe, z0, emb, steps, mode=options.mode, guidance=options.guidance,
                         inner_steps=options.inner_steps, lr=options.lr, early_stop=options.early_stop,
                         progress=progress)
        extras = {"null_embs": res.null_embs}
        if res.losses is not None:
            extras["nti_losses"] = res.losses
        return Inverted(z_T=res.z_T, guidance=res.guidance, null_embs=res.null_embs, stop_at_t1=res.stop_at_t1,
                        extras=extras)
