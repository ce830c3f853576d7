"""Dataset readers: layouts, ordering, per-item errors, image modes."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memtui.engine.data.datasets import DatasetError, detect_layout, read_dataset
from memtui.engine.data.images import load_image, preprocess

from tests.helpers import smooth_rgb, write_captions_csv, write_coco, write_official


def test_official_numeric_order_and_prompts(tmp_path: Path) -> None:
    root = write_official(tmp_path / "d", 12)
    items = read_dataset(root, "erased")
    assert detect_layout(root) == "official"
    # numeric order 0..11 (the official code's lexicographic order would put 10, 11 after 1)
    assert [it.item_id for it in items] == [f"erased-{i}" for i in range(12)]
    rows = {int(r["case_number"]): r["prompt"] for r in csv.DictReader(open(root / "prompts.csv"))}
    for i, it in enumerate(items):
        assert it.error is None
        assert it.prompt == rows[i]
        assert Path(it.source) == (root / "imgs" / f"{i}_0.png").resolve()


def test_official_bad_rows_and_missing(tmp_path: Path) -> None:
    root = write_official(tmp_path / "d", 3)
    with open(root / "prompts.csv", "a", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seven", "a dog", 1, 7.5])      # bad case number
        w.writerow([1, "duplicate row", 1, 7.5])    # duplicate case
        w.writerow([5, "no image for me", 1, 7.5])  # no image file
    Image.fromarray(smooth_rgb(9)).save(root / "imgs" / "9_0.png")  # image without a row
    Image.fromarray(smooth_rgb(9)).save(root / "imgs" / "0_1.png")  # second sample of case 0
    by_id = {it.item_id: it for it in read_dataset(root, "erased")}
    assert by_id["erased-0"].error is None and by_id["erased-0_1"].error is None
    assert by_id["erased-0_1"].prompt == by_id["erased-0"].prompt
    assert "not found" in by_id["erased-5"].error
    assert "no row with case_number 9" in by_id["erased-9"].error
    errs = [it.error for it in by_id.values() if it.item_id.startswith("erased-row")]
    assert any("'seven' is not an integer" in e for e in errs)
    assert any("duplicate case_number 1" in e for e in errs)
    assert by_id["erased-1"].prompt != "duplicate row"  # the first row wins


def test_coco_sorted_by_id_whatever_the_file_order(tmp_path: Path) -> None:
    ids = [632, 139, 285, 724, 1000]
    root = write_coco(tmp_path / "coco", ids, order=[1000, 285, 632, 139, 724])
    items = read_dataset(root, "reference")
    assert detect_layout(root) == "coco"
    assert [it.item_id for it in items] == [f"reference-{i}" for i in sorted(ids)]
    ann = json.loads((root / "annotations" / "captions_val2017.json").read_text())
    first: dict[int, str] = {}
    for a in ann["annotations"]:
        first.setdefault(a["image_id"], a["caption"])
    assert [it.prompt for it in items] == [first[i] for i in sorted(ids)]
    assert all(it.prompt != "second caption" for it in items)


def test_coco_missing_caption_is_an_item_error(tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco", [5, 7])
    Image.fromarray(smooth_rgb(3)).save(root / "val2017" / "000000000006.png")  # not in the json
    items = read_dataset(root, "reference")
    assert [it.item_id for it in items] == ["reference-5", "reference-6", "reference-7"]
    assert "no caption for COCO image id 6" in items[1].error
    assert items[0].error is None and items[2].error is None


def test_coco_without_annotations_is_a_dataset_error(tmp_path: Path) -> None:
    (tmp_path / "c" / "val2017").mkdir(parents=True)
    with pytest.raises(DatasetError, match="captions_val2017.json"):
        read_dataset(tmp_path / "c", "reference")


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_plain_folder_with_captions(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "plain"
    root.mkdir()
    for name in ("b.png", "a b.png", "c.png", "orphan.png"):
        Image.fromarray(smooth_rgb(len(name))).save(root / name)
    rows = [("b.png", "a red circle"), ("a b.png", "a blue square"), ("c.png", ""), ("gone.png", "a cat")]
    if kind == "csv":
        write_captions_csv(root, rows)
    else:
        lines = [json.dumps({"file": f, "caption": c}) for f, c in rows] + ["{not json"]
        (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    items = read_dataset(root, "reference")
    by_id = {it.item_id: it for it in items}
    assert [it.item_id for it in items][:5] == ["reference-b", "reference-a_b", "reference-c",
                                                "reference-gone", "reference-orphan"]
    assert by_id["reference-b"].prompt == "a red circle" and by_id["reference-b"].error is None
    assert by_id["reference-a_b"].prompt == "a blue square"
    assert "missing caption" in by_id["reference-c"].error
    assert "not found" in by_id["reference-gone"].error
    assert "no caption" in by_id["reference-orphan"].error
    if kind == "jsonl":
        assert "not a JSON object" in by_id["reference-row5"].error


def test_unrecognisable_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    Image.fromarray(smooth_rgb(1)).save(tmp_path / "x" / "a.png")
    with pytest.raises(DatasetError) as e:
        read_dataset(tmp_path / "x", "erased")
    for looked_for in ("prompts.csv", "captions_val2017.json", "captions.csv", "captions.jsonl"):
        assert looked_for in str(e.value)
    with pytest.raises(DatasetError, match="not found"):
        read_dataset(tmp_path / "nope", "erased")


def test_corrupt_image_marked_by_verify(tmp_path: Path) -> None:
    root = write_official(tmp_path / "d", 3)
    data = (root / "imgs" / "1_0.png").read_bytes()
    (root / "imgs" / "1_0.png").write_bytes(data[: len(data) // 2])  # truncated PNG
    assert all(it.error is None for it in read_dataset(root, "erased"))  # listing does not decode
    items = read_dataset(root, "erased", verify=True)
    assert items[0].error is None and items[2].error is None
    assert "cannot read image" in items[1].error


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    modes = ["L", "RGBA", "P", "I;16"]
    root = write_coco(tmp_path / "coco", [1, 2, 3, 4], modes=modes)
    items = read_dataset(root, "reference", verify=True)
    for it, mode in zip(items, modes):
        assert it.error is None
        with Image.open(it.source) as raw:
            assert raw.mode == mode or (mode == "I;16" and raw.mode.startswith("I"))
        img = load_image(it.source)
        assert img.mode == "RGB"
        x = preprocess(img, 32)
        assert tuple(x.shape) == (3, 32, 32) and float(x.min()) >= -1 and float(x.max()) <= 1
    # grayscale: the three channels are equal and match the source grey levels
    grey = np.asarray(load_image(items[0].source))
    src = np.asarray(Image.open(items[0].source))
    assert np.array_equal(grey[..., 0], src) and np.array_equal(grey[..., 0], grey[..., 2])
    # 16-bit: v/257 rounds back to the 8-bit grey it was made from
    g16 = np.asarray(Image.open(items[3].source)).astype(np.int64)
    assert np.array_equal(np.asarray(load_image(items[3].source))[..., 1], np.rint(g16 / 257).astype(np.uint8))
