"""Durable file I/O every layer shares: atomic whole-file writes, append-only JSONL lines, strict-JSON
conversion and UTC timestamps. Torch-free.

Durability: a whole file is written to a temp file in the same folder, fsynced and renamed over the
target, so a reader sees the old file or the complete new one. A JSONL line is appended in one
``write`` (``O_APPEND``) and fsynced; only the last line can be torn (``kill -9`` mid-write), and
readers skip a last line without its newline.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["utc_now", "jsonable", "dumps_line", "atomic_write_bytes", "atomic_write_text", "append_jsonl",
           "read_jsonl", "parse_jsonl", "truncate_torn_tail"]


def utc_now() -> str:
    """ISO-8601 UTC timestamp with milliseconds, e.g. ``2026-11-28T13:05:01.123Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def jsonable(x: Any) -> Any:
    """Deep copy of ``x`` that strict JSON accepts: non-finite floats -> None, numpy scalars and
    arrays (and tensors) -> Python numbers/lists, Paths -> str, tuples -> lists."""
    if isinstance(x, bool) or x is None or isinstance(x, (str, int)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "tolist"):  # numpy scalar/array, torch tensor
        return jsonable(x.tolist())
    if hasattr(x, "item"):
        return jsonable(x.item())
    return str(x)


def dumps_line(obj: Any) -> str:
    """``obj`` as one compact strict-JSON line (no trailing newline; see :func:`jsonable`)."""
    return json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder (mode 0644), fsync and rename;
    creates the folder. Returns the path."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return dest


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def append_jsonl(path: str | os.PathLike[str], obj: Any) -> None:
    """Append ``obj`` as one line (:func:`dumps_line` + newline) in a single write, then fsync;
    creates the folder and the file."""
    p = Path(path)
    line = (dumps_line(obj) + "\n").encode("utf-8")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete JSON-object lines of a JSONL file ([] when missing). A last line without its
    newline (torn write) and lines that do not parse are skipped."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return parse_jsonl(data[: data.rfind(b"\n") + 1])


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The JSON object in the file ``path``; None when it is missing, unreadable, not JSON or not an
    object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of complete JSONL lines ``data``; lines that do not parse are skipped."""
    out: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def truncate_torn_tail(path: str | os.PathLike[str]) -> int:
    """Cut a JSONL file after its last newline (a torn last line); returns the bytes removed."""
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(p, "rb+") as f:
        pos, keep, chunk = size, 0, 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        return size - keep
