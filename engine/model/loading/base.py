"""Load a base Stable Diffusion pipeline fully offline: from a diffusers pipeline folder
(``model_index.json``) or from a repo id already in the local Hugging Face cache
(``<cache>/models--org--name/refs/main`` -> ``snapshots/<rev>/``). Never contacts the network.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from memtui.engine.model.loading.components import component_problems
from memtui.engine.model.loading.errors import LoadingError, ModelNotFoundError
from memtui.engine.model.pipeline import SDPipeline, parse_dtype

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
PLACE_HINT = ("memtui never downloads. On a machine with network run `hf download {repo}` (or "
              "`huggingface-cli download {repo}`) and copy its cache folder {folder} into {cache}, "
              "or pass a local path instead.")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache in effect *now* (read from the environment at call time, as
    huggingface_hub does at import): ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_cached_repo(repo_id: str, cache_dir: str | Path | None = None, filename: str = "model_index.json") -> Path:
    """The snapshot folder of ``repo_id`` (``org/name`` or ``org/name@revision``) in the local HF
    cache that holds ``filename``; :class:`ModelNotFoundError` saying where it looked otherwise."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    repo, _, revision = repo_id.partition("@")
    cache = Path(cache_dir) if cache_dir else hf_cache_dir()
    folder = cache / repo_folder_name(repo_id=repo, repo_type="model")
    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache), revision=revision or None)
    if isinstance(found, str):
        return Path(found).parents[len(Path(filename).parts) - 1]  # the snapshot root
    snapshots = folder / "snapshots"
    if not revision and not (folder / "refs" / "main").is_file() and snapshots.is_dir():
        # copied without refs/: accept the newest snapshot that holds the file
        cands = sorted((s for s in snapshots.iterdir() if (s / filename).is_file()),
                       key=lambda s: s.stat().st_mtime, reverse=True)
        if cands:
            return cands[0]
    what = "has no snapshot holding " + filename if folder.is_dir() else "is not in the local Hugging Face cache"
    raise ModelNotFoundError(
        f"{repo_id!r} {what} (looked in {folder}{' at revision ' + revision if revision else ''}). "
        "A base model is a diffusers pipeline folder (holding model_index.json) or a cached repo id. "
        + PLACE_HINT.format(repo=repo, folder=folder.name, cache=cache))


def resolve_pipeline_dir(source: str | Path) -> Path:
    """A local diffusers pipeline folder for ``source`` (a folder path or a cached repo id)."""
    path = Path(source).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); a base model must be a "
                "pipeline folder such as a snapshot of CompVis/stable-diffusion-v1-4, or a cached repo id")
        return path
    if isinstance(source, str) and _REPO_ID.match(source):
        return resolve_cached_repo(source)
    raise ModelNotFoundError(
        f"{source!s}: no such folder, and not a repo id of the form org/name. A base model is a diffusers "
        "pipeline folder (holding model_index.json) or a repo id already in the local Hugging Face cache "
        f"({hf_cache_dir()}).")


_REPO_PATH = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)(@[\w.-]+)?(/[\w./-]+)?$")


def resolve_checkpoint_path(source: str | Path) -> Path:
    """A local path for an ablated checkpoint: ``source`` itself when it exists, else a cached
    repo id with an optional revision and subfolder or file, e.g.
    ``OPTML-Group/AdvUnlearn/nudity_unlearned`` (a text-encoder subfolder) or
    ``org/name@rev/unet.safetensors``; :class:`ModelNotFoundError` when neither."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    m = _REPO_PATH.match(str(source))
    if not m:
        raise ModelNotFoundError(f"no such checkpoint: {source}")
    repo, rev, sub = m.group(1), (m.group(2) or "")[1:], (m.group(3) or "").strip("/")
    cache = hf_cache_dir()
    for filename in ([f"{sub}/config.json", sub] if sub else ["model_index.json", "config.json"]):
        try:
            snap = resolve_cached_repo(repo + (f"@{rev}" if rev else ""), cache, filename)
        except ModelNotFoundError:
            continue
        target = snap / sub if sub else snap
        if target.exists():
            return target
    raise ModelNotFoundError(
        f"{source}: no such local path, and not in the local Hugging Face cache "
        f"(looked for {repo}{'/' + sub if sub else ''} in {cache}). "
        + PLACE_HINT.format(repo=repo, folder="models--" + repo.replace("/", "--"), cache=cache))


def load_base(source: str | Path, device: str = "cpu", precision: str = "fp32") -> SDPipeline:
    """The base pipeline at ``source`` (pipeline folder or cached repo id such as
    ``CompVis/stable-diffusion-v1-4``) on ``device`` in ``precision`` ('fp32' | 'fp16' | 'bf16'),
    eval mode, gradients off, loaded by its family (:func:`memtui.engine.model.families.detect_family`:
    SD 1.x, SD 2.x, SDXL). Scheduler settings come from ``scheduler/scheduler_config.json``."""
    from memtui.engine.model.families import detect_family

    dtype = parse_dtype(precision)
    root = resolve_pipeline_dir(source)
    return detect_family(root).load(root, dtype, device, str(source))


def pipeline_problems(root: str | Path) -> list[str]:
    """Cheap checks of a pipeline folder's component files (no weights are read): empty files and
    unreadable or truncated weight files, one line each; [] when none is found."""
    from memtui.engine.model.families import detect_family

    try:
        components = detect_family(root).components
    except (LoadingError, OSError, ValueError) as e:
        return [str(e)]
    return component_problems(root, components)
