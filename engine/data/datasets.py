"""Dataset folders -> ordered lists of (item id, prompt, image file) for a run.

Layouts, detected in this order (:func:`detect_layout`):

- ``official`` — the paper's concept datasets: ``imgs/<case>_<k>.png`` + ``prompts.csv`` with at
  least the columns ``case_number,prompt``. Items are sorted **numerically** by (case, k); the
  official code sorted file names lexicographically (``0_0, 10_0, 11_0, …, 1_0``), so its image
  indices differ from ours. Item id ``<set>-<case>`` for k = 0, ``<set>-<case>_<k>`` otherwise.
- ``coco`` — COCO 2017: ``val2017/`` + ``annotations/captions_val2017.json``. Items are the image
  files present in ``val2017/``, in ascending image id (never filesystem order); the prompt is the
  first caption of that image id in the annotation file's order. Item id ``<set>-<image id>``.
- ``captions`` — any folder of images with ``captions.csv`` (columns ``file,caption``) or
  ``captions.jsonl`` (one ``{"file": ..., "caption": ...}`` per line); ``file`` is relative to the
  folder. Items follow the captions file's order, then images without a caption (sorted by name).
  Item id ``<set>-<file stem>`` (made filename-safe; on a clash, ignoring case, the full file name
  is used, then ``-2``, ``-3``, ...). A ``file`` that resolves (``..``, absolute path, symlink)
  outside the folder is refused: the row becomes an error item ``<set>-row<line>``, never opened.

CSV files are parsed as written (:func:`read_csv_table`): quoted newlines stay in the prompt,
U+2028 or a form feed never splits a row, any field size is accepted, and line numbers are the
physical line where a record starts. Prompts are kept exactly, surrounding white space trimmed.

Problems with single items (missing caption, bad CSV row, missing image file, and with
``verify=True`` an undecodable image) become items with ``error`` set; the rest of the set is
still usable. Raises :class:`DatasetError` for a folder matching no layout (naming what was
looked for), an unreadable or invalid CSV, and two items that would share an id (ignoring case;
naming both files: ids are file names in the run, so one would overwrite the other).
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OFFICIAL_NAME = re.compile(r"^(\d+)_(\d+)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

__all__ = ["DatasetItem", "DatasetError", "detect_layout", "read_csv_table", "read_dataset", "safe_id"]


class DatasetError(ValueError):
    """A dataset folder that is missing or matches none of the supported layouts."""


@dataclass
class DatasetItem:
    """One image to analyse. ``source``: the image file (absolute path; may not exist when
    ``error`` says so). ``error``: why the item cannot be used, or None."""

    item_id: str
    prompt: str
    source: str
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_id(text: str) -> str:
    """``text`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    out = _UNSAFE.sub("_", text).strip("._") or "item"
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=lambda p: p.name)


def detect_layout(root: str | os.PathLike[str]) -> str:
    """``official`` | ``coco`` | ``captions`` for a dataset folder; :class:`DatasetError` otherwise."""
    r = Path(root)
    if not r.is_dir():
        raise DatasetError(f"dataset folder not found: {str(r)!r}")
    if (r / "imgs").is_dir() and (r / "prompts.csv").is_file():
        return "official"
    if (r / "val2017").is_dir():
        if not (r / "annotations" / "captions_val2017.json").is_file():
            raise DatasetError(f"{str(r)!r} has val2017/ but not annotations/captions_val2017.json "
                               "(the COCO 2017 caption annotations)")
        return "coco"
    if (r / "captions.csv").is_file() or (r / "captions.jsonl").is_file():
        return "captions"
    raise DatasetError(
        f"{str(r)!r} is not a dataset folder memtui can read. Looked for:\n"
        "  - imgs/<case>_<k>.png + prompts.csv (case_number,prompt,...)   [official layout]\n"
        "  - val2017/ + annotations/captions_val2017.json                [COCO 2017]\n"
        "  - images + captions.csv (file,caption) or captions.jsonl        [plain folder]")


def read_dataset(root: str | os.PathLike[str], set_name: str, verify: bool = False) -> list[DatasetItem]:
    """The items of the dataset at ``root`` with ids prefixed ``<set_name>-``, in the layout's
    order. ``verify=True`` fully decodes every image and marks failures as errors (slower)."""
    layout = detect_layout(root)
    r = Path(root).resolve()
    items = {"official": _read_official, "coco": _read_coco, "captions": _read_captions}[layout](r, set_name)
    _check_unique(items, r)
    if verify:
        from memtui.engine.data.images import ImageError, load_image

        for it in items:
            if it.error is None:
                try:
                    load_image(it.source)
                except ImageError as e:
                    it.error = str(e)
    return items


def _describe(item: DatasetItem, root: Path) -> str:
    src = Path(item.source)
    name = repr(str(src.relative_to(root))) if src.is_relative_to(root) and src != root else repr(item.source)
    return f"{name} ({item.error})" if item.error else name


def _check_unique(items: list[DatasetItem], root: Path) -> None:
    """DatasetError naming both sources if two items share an id (ignoring case: ids are file
    names in the run, and some file systems ignore case)."""
    first: dict[str, DatasetItem] = {}
    for it in items:
        key = it.item_id.casefold()
        if key in first:
            raise DatasetError(
                f"item id {it.item_id!r} would be used twice in {str(root)!r}: by {_describe(first[key], root)} "
                f"and by {_describe(it, root)}. Item ids must be unique per set: rename or remove one of them")
        first[key] = it


# ------------------------------------------------------------------------------------ CSV
CsvRow = tuple[int, dict[Any, Any]]


def read_csv_table(path: str | os.PathLike[str]) -> tuple[list[str], list[CsvRow]]:
    """Header (names stripped) and rows of a CSV file as ``(line, {column: cell})``.

    The file is parsed as written (UTF-8, optional BOM, ``newline=""``), so quoted newlines stay in
    their cell and U+2028, form feeds etc. never split a row; ``line`` is the 1-based physical line
    where the record starts (header = line 1 unless blank lines precede it); blank lines are
    skipped. Cells missing from a short row are None; extra cells are a list under the key None
    (as :class:`csv.DictReader`). The csv field size limit is raised to the file's size (a field
    cannot be longer), never lowered. :class:`DatasetError` if the file cannot be read or is not
    valid CSV (an unterminated quote, text after a closing quote), naming the record's line."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {str(p)!r}: {e}") from e
    limit = min(len(text) + 1, 2 ** 31 - 1)
    if csv.field_size_limit() < limit:
        csv.field_size_limit(limit)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[CsvRow] = []
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DatasetError(f"{str(p)!r} line {start}: {e}") from e
        if not record:
            continue
        if header is None:
            header = [n.strip() for n in record]
            continue
        row: dict[Any, Any] = {name: (record[i] if i < len(record) else None) for i, name in enumerate(header)}
        if len(record) > len(header):
            row[None] = record[len(header):]
        rows.append((start, row))
    return header or [], rows


def _read_csv_rows(path: Path, required: tuple[str, ...]) -> tuple[list[CsvRow], list[str]]:
    """:func:`read_csv_table`, raising DatasetError if the header lacks a required column.
    Returns (rows, fieldnames)."""
    names, rows = read_csv_table(path)
    missing = [c for c in required if c not in names]
    if missing:
        raise DatasetError(f"{str(path)!r} lacks column(s) {', '.join(missing)} "
                           f"(header: {', '.join(names) or 'empty'})")
    return rows, names


def _cell(row: dict[str, Any], name: str) -> str:
    v = row.get(name)
    return v.strip() if isinstance(v, str) else ""


# ------------------------------------------------------------------------------------ official
def _read_official(root: Path, set_name: str) -> list[DatasetItem]:
    rows, _ = _read_csv_rows(root / "prompts.csv", ("case_number", "prompt"))
    prompts: dict[int, str] = {}
    first_line: dict[int, int] = {}
    bad: list[DatasetItem] = []
    for line, row in rows:
        case_txt, prompt = _cell(row, "case_number"), _cell(row, "prompt")
        where = f"prompts.csv line {line}"
        try:
            case = int(float(case_txt)) if case_txt else None
            if case is not None and float(case_txt) != case:
                raise ValueError
        except ValueError:
            case = None
        if case is None:
            bad.append(DatasetItem(f"{set_name}-row{line}", prompt, str(root / "prompts.csv"),
                                   f"{where}: case_number {case_txt!r} is not an integer"))
            continue
        if case in prompts:
            bad.append(DatasetItem(f"{set_name}-row{line}", prompt, str(root / "prompts.csv"),
                                   f"{where}: duplicate case_number {case} (first on line {first_line[case]})"))
            continue
        prompts[case], first_line[case] = prompt, line

    found: dict[tuple[int, int], Path] = {}
    extra: list[DatasetItem] = []
    for p in _images_in(root / "imgs"):
        m = OFFICIAL_NAME.match(p.stem)
        if not m:
            extra.append(DatasetItem(f"{set_name}-{safe_id(p.stem)}", "", str(p),
                                     f"file name {p.name!r} is not <case_number>_<k>.<ext>"))
            continue
        key = (int(m.group(1)), int(m.group(2)))
        if key in found:
            extra.append(DatasetItem(f"{set_name}-{safe_id(p.name)}", "", str(p),
                                     f"two images for case {key[0]} sample {key[1]}: {found[key].name}, {p.name}"))
            continue
        found[key] = p

    items: list[DatasetItem] = []
    cases_with_image = {c for c, _ in found}
    for case in prompts:
        if case not in cases_with_image:
            found[(case, 0)] = root / "imgs" / f"{case}_0.png"  # placeholder: reported missing below
    for (case, k) in sorted(found):
        p = found[(case, k)]
        iid = f"{set_name}-{case}" if k == 0 else f"{set_name}-{case}_{k}"
        prompt = prompts.get(case)
        if not p.exists():
            items.append(DatasetItem(iid, prompt or "", str(p),
                                     f"image imgs/{case}_0.png not found for case_number {case}"))
        elif prompt is None:
            items.append(DatasetItem(iid, "", str(p), f"no row with case_number {case} in prompts.csv"))
        elif not prompt:
            items.append(DatasetItem(iid, "", str(p), f"empty prompt for case_number {case} in prompts.csv"))
        else:
            items.append(DatasetItem(iid, prompt, str(p)))
    return items + bad + extra


# ---------------------------------------------------------------------------------------- COCO
def _read_coco(root: Path, set_name: str) -> list[DatasetItem]:
    ann_path = root / "annotations" / "captions_val2017.json"
    try:
        ann = json.loads(ann_path.read_text(encoding="utf-8"))
        images, annotations = ann["images"], ann["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"cannot read COCO captions {str(ann_path)!r}: {e}") from e
    id_of: dict[str, int] = {}
    for im in images:
        try:
            id_of[str(im["file_name"])] = int(im["id"])
        except (KeyError, TypeError, ValueError):
            continue
    caption: dict[int, str] = {}
    for a in annotations:  # file order: the first caption of each image wins
        try:
            iid, text = int(a["image_id"]), str(a["caption"]).strip()
        except (KeyError, TypeError, ValueError):
            continue
        if iid not in caption and text:
            caption[iid] = text
    keyed: list[tuple[tuple[int, int, str], DatasetItem]] = []
    for p in _images_in(root / "val2017"):
        iid = id_of.get(p.name)
        if iid is None and p.stem.isdigit():
            iid = int(p.stem)
        if iid is None:
            keyed.append(((1, 0, p.name), DatasetItem(f"{set_name}-{safe_id(p.stem)}", "", str(p),
                                                      f"{p.name} is not listed in captions_val2017.json")))
            continue
        text = caption.get(iid)
        item = DatasetItem(f"{set_name}-{iid}", text or "", str(p),
                           None if text else f"no caption for COCO image id {iid}")
        keyed.append(((0, iid, p.name), item))
    keyed.sort(key=lambda kv: kv[0])
    return [it for _, it in keyed]


# ------------------------------------------------------------------------------------ captions
def _read_captions(root: Path, set_name: str) -> list[DatasetItem]:
    entries: list[tuple[str, str | None, str | None]] = []  # (where, file, caption)
    bad: list[DatasetItem] = []
    if (root / "captions.csv").is_file():
        rows, _ = _read_csv_rows(root / "captions.csv", ("file", "caption"))
        for line, row in rows:
            entries.append((f"captions.csv line {line}", _cell(row, "file") or None, _cell(row, "caption") or None))
    else:
        path = root / "captions.jsonl"
        try:
            # JSON Lines are separated by "\n" only: U+2028 and friends are legal inside a JSON string
            lines = path.read_bytes().decode("utf-8-sig").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"cannot read {str(path)!r}: {e}") from e
        for n, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                bad.append(DatasetItem(f"{set_name}-row{n}", "", str(path), f"captions.jsonl line {n}: not a JSON object ({e})"))
                continue
            f, c = obj.get("file"), obj.get("caption")
            entries.append((f"captions.jsonl line {n}", str(f).strip() if f else None,
                            str(c).strip() if isinstance(c, str) and c.strip() else None))

    listing = str(root / ("captions.csv" if (root / "captions.csv").is_file() else "captions.jsonl"))
    items: list[DatasetItem] = []
    used_ids: set[str] = set()  # casefolded
    seen_files: set[Path] = set()
    refused: set[Path] = set()

    def new_id(p: Path) -> str:
        iid = f"{set_name}-{safe_id(p.stem)}"
        if iid.casefold() in used_ids:
            iid = f"{set_name}-{safe_id(p.name)}"
        n = 2
        base = iid
        while iid.casefold() in used_ids:
            iid, n = f"{base}-{n}", n + 1
        used_ids.add(iid.casefold())
        return iid

    for k, (where, f, cap) in enumerate(entries, start=1):
        row_id = f"{set_name}-row{where.rsplit(' ', 1)[-1]}"
        if not f:
            bad.append(DatasetItem(row_id, cap or "", str(root), f"{where}: no file name"))
            continue
        try:
            p = (root / f).resolve()
        except (OSError, ValueError, RuntimeError) as e:
            bad.append(DatasetItem(row_id, cap or "", listing, f"{where}: file name {f!r} cannot be used ({e})"))
            continue
        if not p.is_relative_to(root):
            refused.add(p)
            bad.append(DatasetItem(row_id, cap or "", listing,
                                   f"{where}: {f!r} is outside the dataset folder (refused; it resolves to {str(p)!r})"))
            continue
        if p in seen_files:
            bad.append(DatasetItem(f"{set_name}-row{where.rsplit(' ', 1)[-1]}", cap or "", str(p),
                                   f"{where}: {f} is listed twice (the first entry is used)"))
            continue
        seen_files.add(p)
        iid = new_id(p)
        if not p.is_file():
            items.append(DatasetItem(iid, cap or "", str(p), f"{where}: image file {f!r} not found"))
        elif cap is None:
            items.append(DatasetItem(iid, "", str(p), f"{where}: missing caption for {f}"))
        else:
            items.append(DatasetItem(iid, cap, str(p)))
    for p in _images_in(root):
        rp = p.resolve()
        if rp in seen_files or rp in refused:
            continue
        if not rp.is_relative_to(root):
            items.append(DatasetItem(new_id(p), "", str(p), f"{p.name} links outside the dataset folder (refused)"))
        else:
            items.append(DatasetItem(new_id(p), "", str(rp), f"no caption for {p.name} in the captions file"))
    return items + bad
