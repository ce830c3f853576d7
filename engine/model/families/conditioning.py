"""One conditioning tensor per prompt for families with a pooled text embedding (SDXL, Flux): the
pooled vector rides as one extra token, so guidance can concatenate and NTI can optimise a single
``[B, L + 1, D]`` tensor whatever the family."""
from __future__ import annotations

import torch

__all__ = ["pack_pooled", "unpack_hidden", "unpack_pooled"]


def pack_pooled(hidden: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
    """``[hidden (L tokens); pooled zero-padded to D]`` of shape ``[B, L + 1, D]`` from token
    states ``hidden [B, L, D]`` and a pooled embedding ``pooled [B, P]`` (``P <= D``)."""
    if hidden.shape[-1] < pooled.shape[-1]:
        raise ValueError(f"the text width {hidden.shape[-1]} is narrower than the pooled embedding {pooled.shape[-1]}")
    token = torch.zeros(hidden.shape[0], 1, hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
    token[:, 0, :pooled.shape[-1]] = pooled.to(hidden.dtype)
    return torch.cat([hidden, token], dim=1)


def unpack_hidden(emb: torch.Tensor) -> torch.Tensor:
    """The token states ``[B, L, D]`` of a packed conditioning ``emb [B, L + 1, D]``."""
    return emb[:, :-1]


def unpack_pooled(emb: torch.Tensor, dim: int) -> torch.Tensor:
    """The pooled embedding ``[B, dim]`` of a packed conditioning ``emb [B, L + 1, D]``."""
    return emb[:, -1, :dim]
