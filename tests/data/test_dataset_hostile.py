"""Dataset readers against hostile input (issue 12 items 3, 4, 5 and the 5 MB CSV prompt):
colliding item ids, CSV prompts kept exactly, correct line numbers, captions confined to their folder."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from memtui.engine.compute.generate import read_prompt_csv
from memtui.engine.data.datasets import DatasetError, read_dataset

from tests.helpers import smooth_rgb, write_captions_csv, write_coco, write_official

# prompts that str.splitlines() (or a reader without newline="") used to change or split
TRICKY = ["a red\ncircle", "a blue\r\nsquare", "a green\u2028triangle", "a dog\x0con the star",
          "a cat\u2029and\x1ca\x1dbird\x85", 'a "quoted" prompt, with commas']


# ------------------------------------------------------------------ item 3: ids unique per set
def test_coco_short_and_padded_names_of_one_id_are_refused(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", [139, 285])
    shutil.copy(root / "val2017" / "000000000139.png", root / "val2017" / "139.jpg")
    with pytest.raises(DatasetError) as e:
        read_dataset(root, "reference")
    msg = str(e.value)
    assert "reference-139" in msg and "000000000139.png" in msg and "139.jpg" in msg


def test_official_names_that_make_one_id_are_refused(tmp_path: Path) -> None:
    root = write_official(tmp_path / "d", 4)
    Image.fromarray(smooth_rgb(7)).save(root / "imgs" / "3_1.png")
    Image.fromarray(smooth_rgb(8)).save(root / "imgs" / "3_1 .png")
    with pytest.raises(DatasetError) as e:
        read_dataset(root, "erased")
    msg = str(e.value)
    assert "erased-3_1" in msg and "3_1.png" in msg and "3_1 .png" in msg


def test_error_row_id_clashing_with_an_image_is_refused(tmp_path: Path) -> None:
    root = write_official(tmp_path / "d", 2)
    with open(root / "prompts.csv", "a", newline="") as f:
        csv.writer(f).writerow(["seven", "a dog", 1, 7.5])  # line 4 -> erased-row4
    Image.fromarray(smooth_rgb(3)).save(root / "imgs" / "row4.png")  # also erased-row4
    with pytest.raises(DatasetError, match="erased-row4"):
        read_dataset(root, "erased")


def test_captions_ids_differing_only_in_case_are_disambiguated(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    for name in ("A.png", "a.png"):
        Image.fromarray(smooth_rgb(len(name))).save(root / name)
    (root / "captions.csv").write_text("file,caption\nA.png,one\na.png,two\n")
    items = read_dataset(root, "reference")
    ids = [it.item_id for it in items]
    assert len({i.casefold() for i in ids}) == len(ids) == 2
    assert [it.item_id for it in read_dataset(root, "reference")] == ids  # deterministic
    assert all(it.error is None for it in items)


# ------------------------------------------------------------------ item 4: CSV prompts kept exactly
def _official_with(root: Path, prompts: list[str]) -> Path:
    (root / "imgs").mkdir(parents=True)
    with open(root / "prompts.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_number", "prompt", "evaluation_seed", "evaluation_guidance"])
        for case, p in enumerate(prompts):
            w.writerow([case, p, 1000 + case, 7.5])
            Image.fromarray(smooth_rgb(case)).save(root / "imgs" / f"{case}_0.png")
    return root


def test_official_csv_prompts_kept_exactly(tmp_path: Path) -> None:
    root = _official_with(tmp_path / "d", TRICKY)
    items = read_dataset(root, "erased")
    assert [it.item_id for it in items] == [f"erased-{i}" for i in range(len(TRICKY))]
    assert [it.prompt for it in items] == [p.strip() for p in TRICKY]
    assert all(it.error is None for it in items)


def test_captions_csv_prompts_kept_exactly(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    with open(root / "captions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption"])
        for k, p in enumerate(TRICKY):
            Image.fromarray(smooth_rgb(k)).save(root / f"i{k}.png")
            w.writerow([f"i{k}.png", p])
    items = read_dataset(root, "reference")
    assert [it.item_id for it in items] == [f"reference-i{k}" for k in range(len(TRICKY))]
    assert [it.prompt for it in items] == [p.strip() for p in TRICKY]
    assert all(it.error is None for it in items)


def test_captions_jsonl_prompts_kept_exactly(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    lines = []
    for k, p in enumerate(TRICKY):
        Image.fromarray(smooth_rgb(k)).save(root / f"i{k}.png")
        lines.append(json.dumps({"file": f"i{k}.png", "caption": p}, ensure_ascii=False))
    (root / "captions.jsonl").write_bytes(("\r\n".join(lines) + "\n").encode())  # raw U+2028 in a string
    items = read_dataset(root, "reference")
    assert [it.item_id for it in items] == [f"reference-i{k}" for k in range(len(TRICKY))]
    assert [it.prompt for it in items] == [p.strip() for p in TRICKY]
    assert all(it.error is None for it in items)


def test_prompt_csv_of_generate_kept_exactly(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["case_number", "prompt", "evaluation_seed"])
        for case, text in enumerate(TRICKY):
            w.writerow([case, text, case])
    rows, bad = read_prompt_csv(p)
    assert bad == [] and [r.prompt for r in rows] == [t.strip() for t in TRICKY]
    assert [r.case for r in rows] == list(range(len(TRICKY)))


def _multi_line_csv(header: str) -> str:
    """Line 2: a 3-line record; line 5: blank; line 6: bad case number; line 7: good."""
    return (f"{header}\r\n"
            '0,"first\r\nsecond\r\nthird",1\r\n'
            "\r\n"
            "x,bad row,2\r\n"
            "1,fine,3\r\n")


def test_line_numbers_count_physical_lines(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "imgs").mkdir(parents=True)
    for c in (0, 1):
        Image.fromarray(smooth_rgb(c)).save(root / "imgs" / f"{c}_0.png")
    (root / "prompts.csv").write_bytes(_multi_line_csv("case_number,prompt,evaluation_seed").encode())
    by_id = {it.item_id: it for it in read_dataset(root, "erased")}
    assert set(by_id) == {"erased-0", "erased-1", "erased-row6"}
    assert by_id["erased-0"].prompt == "first\r\nsecond\r\nthird"
    assert "prompts.csv line 6" in by_id["erased-row6"].error
    p = tmp_path / "p.csv"
    p.write_bytes(_multi_line_csv("case_number,prompt,evaluation_seed").encode())
    rows, bad = read_prompt_csv(p)
    assert [(r.line, r.case) for r in rows] == [(2, 0), (7, 1)]
    assert [line for line, _ in bad] == [6] and "p.csv line 6" in bad[0][1]


# ------------------------------------------------------------------ minor: a 5 MB prompt
BIG = "a red circle " * 400_000  # 5.2 MB


def test_five_megabyte_prompt_is_accepted_like_jsonl(tmp_path: Path) -> None:
    root = _official_with(tmp_path / "d", ["small", BIG, "after"])
    with open(root / "prompts.csv", "a", newline="") as f:
        csv.writer(f).writerow(["y", "bad", 1, 7.5])  # line 5
    by_id = {it.item_id: it for it in read_dataset(root, "erased")}
    assert by_id["erased-1"].prompt == BIG.strip() and by_id["erased-1"].error is None
    assert by_id["erased-2"].prompt == "after"
    assert "prompts.csv line 5" in by_id["erased-row5"].error
    cap = tmp_path / "plain"
    cap.mkdir()
    Image.fromarray(smooth_rgb(1)).save(cap / "a.png")
    (cap / "captions.csv").write_text(f"file,caption\na.png,{BIG}\n")
    assert read_dataset(cap, "reference")[0].prompt == BIG.strip()
    rows, bad = read_prompt_csv(root / "prompts.csv")
    assert [r.prompt for r in rows][1] == BIG.strip() and [line for line, _ in bad] == [5]


def test_unterminated_quote_names_the_line_where_the_field_starts(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "imgs").mkdir(parents=True)
    (root / "prompts.csv").write_text('case_number,prompt\n0,fine\n1,"never closed\nmore\n')
    with pytest.raises(DatasetError, match="line 3"):
        read_dataset(root, "erased")


# ------------------------------------------------------------------ item 5: captions confined
@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_captions_outside_the_folder_are_refused_per_row(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    (root / "sub").mkdir()
    outside = tmp_path / "secret.png"
    Image.fromarray(smooth_rgb(1)).save(outside)
    Image.fromarray(smooth_rgb(2)).save(root / "ok.png")
    Image.fromarray(smooth_rgb(3)).save(root / "sub" / "deep.png")
    os.symlink(outside, root / "link.png")
    rows = [("ok.png", "fine"), ("../secret.png", "up"), (str(outside), "absolute"),
            ("sub/../../secret.png", "sneaky"), ("link.png", "symlink out"), ("sub/deep.png", "inside"),
            ("/etc/shadow", "system"), ("a\x00b.png", "nul")]
    if kind == "csv":
        write_captions_csv(root, rows)
    else:
        (root / "captions.jsonl").write_text("".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in rows))
    items = read_dataset(root, "reference", verify=True)
    by_id = {it.item_id: it for it in items}
    assert by_id["reference-ok"].error is None and by_id["reference-deep"].error is None
    real = str(outside.resolve())
    for line in (3, 4, 5, 6, 8):  # header / first row = lines 1, 2 (csv); jsonl has no header
        n = line if kind == "csv" else line - 1
        it = by_id[f"reference-row{n}"]
        assert it.error and f"captions.{kind} line {n}" in it.error and "outside the dataset folder" in it.error
        assert it.source != real and not it.source.startswith("/etc")
    assert not any(it.source in (real, "/etc/shadow") for it in items)
    n = 9 if kind == "csv" else 8
    assert f"captions.{kind} line {n}" in by_id[f"reference-row{n}"].error  # NUL byte: an error, no crash
