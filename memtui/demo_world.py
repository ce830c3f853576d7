"""The built-in demo world as the console offers it: whether its weights are shipped, where the
console draws its datasets, and the New-run form's defaults for it."""
from __future__ import annotations

from pathlib import Path

__all__ = ["demo_available", "demo_data_dir", "demo_defaults"]


def demo_available() -> bool:
    """Whether the built-in demo world's weights are shipped in this install."""
    try:
        from memtui.engine.demo import base_dir, erased_path
    except ImportError:
        return False
    return (base_dir() / "model_index.json").exists() and erased_path().exists()


def demo_data_dir() -> Path:
    """Where the console draws the demo world's datasets: ``<user data dir>/memtui/demo-data``."""
    from platformdirs import user_data_path

    return user_data_path("memtui", appauthor=False) / "demo-data"


def demo_defaults(data_dir: Path | None = None) -> dict[str, str]:
    """Form defaults for the built-in demo world (base model, its ESD-erased twin, and its two
    datasets, drawn once into ``data_dir``, default ``<user data dir>/memtui/demo-data``); {} when
    the demo is not shipped."""
    if not demo_available():
        return {}
    from memtui.engine.demo import DEMO_CONCEPT, base_dir, erased_path, write_demo_datasets

    data_dir = Path(data_dir) if data_dir else demo_data_dir()
    erased, reference = data_dir / "erased", data_dir / "reference"
    if not ((erased / "prompts.csv").exists() and (reference / "captions.csv").exists()):
        try:
            erased, reference = write_demo_datasets(data_dir)
        except Exception:
            return {}
    return {"name": f"demo-{DEMO_CONCEPT}", "base": str(base_dir()), "ablated": str(erased_path()),
            "erased": str(erased), "reference": str(reference), "method": "ddim", "steps": "10"}
