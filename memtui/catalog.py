"""What the Browse screen lists: checkpoints (config folders and the local Hugging Face cache),
datasets (config folders) and runs, each as a plain :class:`Entry`. Scans run in a worker thread;
engine modules (which import torch) are imported lazily here, never at app start."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
WEIGHT_EXTS = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}


@dataclass
class Entry:
    """One row of a Browse table."""

    name: str
    path: Path
    kind: str = "?"
    size: str = ""
    detail: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    family: str = "?"

    @property
    def kind_label(self) -> str:
        """The kind with the model family when known: "pipeline · sdxl", "unet_partial · sd1"."""
        return self.kind if self.family == "?" else f"{self.kind} · {self.family}"


def human_size(n: int | float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "?"


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (a file's size for a file; symlinks followed)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path, followlinks=True):
        for f in files:
            try:
                total += (Path(root) / f).stat().st_size
            except OSError:
                pass
    return total


# ----------------------------------------------------------------------------- checkpoints
def _inspect_fn():
    try:
        from memtui.engine.model.loading import inspect_checkpoint
    except ImportError:
        try:
            from memtui.engine.model.loading.detect import inspect_checkpoint
        except ImportError:
            return None
    return inspect_checkpoint


def checkpoint_identity(path: Path) -> tuple[str, str]:
    """The loading engine's detected (kind, model family) of ``path``; "?" for what it can't tell
    (or when ``path`` isn't there)."""
    fn = _inspect_fn()
    if fn is None:
        return "?", "?"
    try:
        info = fn(path)
    except Exception:
        return "?", "?"
    return str(info.get("kind", "?")), str(info.get("family") or "?")


def checkpoint_kind(path: Path) -> str:
    """The loading engine's detected kind of ``path``, or "?" when it can't tell (or isn't there)."""
    return checkpoint_identity(path)[0]


def _checkpoint_entry(name: str, path: Path, detect: bool, size: str, detail: str, source: str) -> Entry:
    kind, family = checkpoint_identity(path) if detect else ("?", "?")
    return Entry(name, path, kind, size, detail, source, family=family)


def checkpoint_problem(path: Path) -> str | None:
    """Why the loading engine cannot tell what kind of checkpoint ``path`` is (None: it can, or the
    inspector is not available in this build)."""
    fn = _inspect_fn()
    if fn is None:
        return None
    try:
        fn(path)
    except Exception as exc:  # noqa: BLE001 - reported to the user in words
        return str(exc)
    return None


def checkpoint_report(path: Path) -> str:
    """A readable report of a checkpoint (the loading engine's ``inspect_checkpoint``)."""
    fn = _inspect_fn()
    if fn is None:
        return f"{path}\n\n(the checkpoint inspector is not available in this build)"
    try:
        info = fn(path)
    except Exception as exc:
        return f"{path}\n\nnot a checkpoint memtui can load: {exc}"
    lines = [f"path: {info.get('path', path)}", f"kind: {info.get('kind', '?')}",
             f"family: {info.get('family') or '?'}",
             f"size: {human_size(info.get('size_bytes'))}", f"tensors: {info.get('n_tensors', '?')}",
             f"components: {', '.join(info.get('components', [])) or '-'}"]
    dtypes = info.get("dtypes") or {}
    if dtypes:
        lines.append("dtypes: " + ", ".join(f"{k} ×{v}" for k, v in sorted(dtypes.items())))
    for k, v in sorted((info.get("metadata") or {}).items())[:12]:
        lines.append(f"meta {k}: {str(v)[:80]}")
    return "\n".join(lines)


def _candidates(root: Path) -> list[Path]:
    if (root / "model_index.json").exists():
        return [root]
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix in WEIGHT_EXTS:
            out.append(p)
    return out


def scan_checkpoints(roots: list[str], hf_cache: bool = True, detect: bool = True) -> list[Entry]:
    """Checkpoints under the config roots (each folder / weight file at the top level of a root, or
    the root itself when it is a pipeline) and the model repos of the local HF cache."""
    out: list[Entry] = []
    for r in roots:
        root = Path(r).expanduser()
        if not root.exists():
            out.append(Entry(root.name, root, "missing", "", "folder not found", "config"))
            continue
        for p in _candidates(root) if root.is_dir() else [root]:
            out.append(_checkpoint_entry(p.name, p, detect, human_size(tree_size(p)), str(p.parent), "folder"))
    if hf_cache:
        try:
            from huggingface_hub import scan_cache_dir

            info = scan_cache_dir()
        except Exception:
            info = None
        for repo in sorted(getattr(info, "repos", []) or [], key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            rev = max(repo.revisions, key=lambda r: r.last_modified)
            out.append(_checkpoint_entry(repo.repo_id, Path(rev.snapshot_path), detect,
                                         human_size(repo.size_on_disk), rev.commit_hash[:8], "hf-cache"))
    return out


def builtin_checkpoints(detect: bool = True) -> list[Entry]:
    """The demo world's shipped base model and its erased twin (source "built-in"); [] when the
    package was built without them."""
    from memtui import demo_world

    if not demo_world.demo_available():
        return []
    from memtui.engine.demo import DEMO_CONCEPT, base_dir, erased_path

    return [_checkpoint_entry(name, p, detect, human_size(tree_size(p)), str(p.parent), "built-in")
            for name, p in (("demo base", base_dir()), (f"demo erased {DEMO_CONCEPT}", erased_path()))]


def cached_repo_ids() -> set[str]:
    """Model repo ids in the local HF cache (for validating a base given as an id)."""
    try:
        from huggingface_hub import scan_cache_dir

        return {r.repo_id for r in scan_cache_dir().repos if r.repo_type == "model"}
    except Exception:
        return set()


# ----------------------------------------------------------------------------- datasets
def list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def dataset_layout(path: Path) -> tuple[str | None, list[Path]]:
    """(layout, images) of a dataset folder from the runs engine's ``detect_layout`` ("official",
    "coco", "captions"), or (None, []) when it recognises none."""
    from memtui.engine.data.datasets import DatasetError, detect_layout

    path = Path(path)
    try:
        layout = detect_layout(path)
    except DatasetError:
        return None, []
    folder = {"official": path / "imgs", "coco": path / "val2017"}.get(layout, path)
    return layout, list_images(folder)


def builtin_datasets(data_dir: Path | None = None) -> list[Entry]:
    """The demo world's erased and reference sets, once drawn (by the New-run screen's demo
    defaults) into ``data_dir`` (default ``demo_world.demo_data_dir()``); source "built-in"."""
    from memtui import demo_world

    if not demo_world.demo_available():
        return []
    out = []
    for sub in ("erased", "reference"):
        p = Path(data_dir or demo_world.demo_data_dir()) / sub
        if p.is_dir():
            layout, images = dataset_layout(p)
            if layout:
                out.append(Entry(f"demo {sub}", p, layout, f"{len(images)} images", str(p.parent),
                                 "built-in", {"images": images}))
    return out


def scan_datasets(roots: list[str]) -> list[Entry]:
    """Datasets in the config roots: each root itself if it has a layout, else its subfolders."""
    out: list[Entry] = []
    for r in roots:
        root = Path(r).expanduser()
        if not root.is_dir():
            out.append(Entry(root.name, root, "missing", "", "folder not found", "config"))
            continue
        layout, _ = dataset_layout(root)
        folders = [root] if layout else [p for p in sorted(root.iterdir()) if p.is_dir()]
        for p in folders:
            layout, images = dataset_layout(p)
            out.append(Entry(p.name, p, layout or "unknown", f"{len(images)} images",
                             str(p.parent), "folder", {"images": images}))
    return out
