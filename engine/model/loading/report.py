"""The report every ablated-model load returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FIRST_FEW = 10


def module_prefix(key: str) -> str:
    """``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight`` ->
    ``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k`` (the owning module)."""
    return key.rsplit(".", 1)[0] if "." in key else key


@dataclass
class LoadReport:
    """What :func:`load_ablated` did. Tensor names are component-qualified (``unet.…``,
    ``text_encoder.…``). ``changed_tensors`` are those whose values differ from what the pipeline
    held before the load (compared in the pipeline's dtype); ``size_bytes`` is the checkpoint's size
    on disk."""

    kind: str
    path: str
    components: list[str] = field(default_factory=list)
    changed_components: list[str] = field(default_factory=list)
    n_loaded: int = 0
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    changed_tensors: list[str] = field(default_factory=list)
    size_bytes: int = 0
    checkpoint_dtypes: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed_modules(self) -> list[str]:
        """Module prefixes of the changed tensors, in first-seen order."""
        return list(dict.fromkeys(module_prefix(k) for k in self.changed_tensors))

    def to_dict(self, first_few: int = FIRST_FEW) -> dict[str, Any]:
        """JSON-serialisable summary: counts plus the first ``first_few`` missing/unexpected keys,
        and every changed module prefix."""
        d = asdict(self)
        for name in ("missing_keys", "unexpected_keys"):
            keys = d.pop(name)
            d[name] = {"count": len(keys), "first": keys[:first_few]}
        changed = d.pop("changed_tensors")
        d["changed"] = {"count": len(changed), "modules": self.changed_modules, "first": changed[:first_few]}
        return d

    def summary(self) -> str:
        """One line for logs and the console."""
        return (f"{self.kind} {self.path}: loaded {self.n_loaded} tensors into "
                f"{', '.join(self.components) or 'nothing'}; {len(self.changed_tensors)} differ from the base "
                f"({', '.join(self.changed_components) or 'no component changed'}); "
                f"{len(self.missing_keys)} missing, {len(self.unexpected_keys)} unexpected")
