"""The console's configuration: a TOML file in the platformdirs config directory.

Keys: ``checkpoint_roots`` and ``dataset_roots`` (lists of folders to scan), ``runs_dir`` (where
run directories live), ``theme`` (a Textual theme name), ``images`` (``auto`` | ``halfblock``: how the item view draws
images, see :mod:`memtui.widgets.graphics`). Read with :mod:`tomllib`, written with
:mod:`tomli_w` via a temp file + rename. ``memtui --runs DIR`` overrides ``runs_dir`` for one launch
(:func:`apply_overrides`) without touching the file.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w
from platformdirs import user_config_path, user_data_path

DEFAULT_THEME = "memtui"
IMAGE_SETTINGS: tuple[str, ...] = ("auto", "halfblock")  # the ``images`` key (memtui.widgets.graphics)


def config_path() -> Path:
    """``<user config dir>/memtui/config.toml`` (honours ``XDG_CONFIG_HOME``)."""
    return user_config_path("memtui", appauthor=False) / "config.toml"


def default_runs_dir() -> Path:
    """``<user data dir>/memtui/runs``."""
    return user_data_path("memtui", appauthor=False) / "runs"


@dataclass
class Config:
    """What the console remembers between launches."""

    checkpoint_roots: list[str] = field(default_factory=list)
    dataset_roots: list[str] = field(default_factory=list)
    runs_dir: str = ""
    theme: str = DEFAULT_THEME
    images: str = "auto"
    path: Path | None = field(default=None, compare=False, repr=False)

    @property
    def runs_path(self) -> Path:
        """The runs folder as a Path (the default data dir when unset)."""
        return Path(self.runs_dir).expanduser() if self.runs_dir else default_runs_dir()

    def to_dict(self) -> dict[str, Any]:
        """The TOML-serialisable keys (no ``path``)."""
        d = asdict(self)
        d.pop("path", None)
        return d


def _str_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"config key {key!r} must be a list of folder paths")
    return list(value)


def load_config(path: Path | None = None) -> Config:
    """Read the config file; a missing file gives the defaults. A malformed file raises ValueError
    naming the file and the problem."""
    path = Path(path) if path else config_path()
    if not path.exists():
        return Config(path=path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    theme = data.get("theme", DEFAULT_THEME)
    runs_dir = data.get("runs_dir", "")
    if not isinstance(theme, str) or not isinstance(runs_dir, str):
        raise ValueError(f"{path}: 'theme' and 'runs_dir' must be strings")
    images = data.get("images", "auto")
    if images not in IMAGE_SETTINGS:
        raise ValueError(f"{path}: 'images' must be one of {', '.join(IMAGE_SETTINGS)} (got {images!r})")
    return Config(
        images=images,
        checkpoint_roots=_str_list(data.get("checkpoint_roots"), "checkpoint_roots"),
        dataset_roots=_str_list(data.get("dataset_roots"), "dataset_roots"),
        runs_dir=runs_dir,
        theme=theme,
        path=path,
    )


def save_config(cfg: Config, path: Path | None = None) -> Path:
    """Write ``cfg`` atomically (temp file + rename); returns the path written."""
    path = Path(path or cfg.path or config_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(cfg.to_dict()), encoding="utf-8")
    os.replace(tmp, path)
    return path


def apply_overrides(cfg: Config, runs: str | os.PathLike[str] | None = None) -> Config:
    """A copy of ``cfg`` with one-launch overrides (``--runs DIR``); the file is not changed."""
    out = replace(cfg)
    if runs:
        out.runs_dir = str(Path(runs).expanduser())
    return out
