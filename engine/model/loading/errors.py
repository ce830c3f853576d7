"""Errors raised while loading models; each message says what was found and what to do."""
from __future__ import annotations


class LoadingError(Exception):
    """Base class of every model-loading error."""


class ModelNotFoundError(LoadingError, FileNotFoundError):
    """A base model is neither a local pipeline folder nor a repo id in the local Hugging Face cache."""


class CheckpointMismatchError(LoadingError, ValueError):
    """A checkpoint's tensors do not fit the base model (shapes, or no key in common)."""


class UnsupportedCheckpointError(LoadingError, ValueError):
    """A recognised checkpoint kind that memtui cannot apply yet (adapters, unmerged LoRA), or an
    unrecognised file."""


class UnsafeCheckpointError(LoadingError):
    """A pickle that needs code to load (``torch.load(weights_only=True)`` refused it)."""


class CorruptCheckpointError(LoadingError, ValueError):
    """A weight, config or tokenizer file that cannot be read (empty, truncated, not what its name
    says), or a checkpoint whose tensors hold NaN/Inf."""
