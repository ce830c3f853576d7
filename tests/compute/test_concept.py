"""The concept-level run on the tiny pipeline: files, records and summary against independent
recomputations, resume, torn lines, spec mismatch, restart, OOM back-off, bad items, kill -9."""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from scipy.stats import norm

from memtui.engine.compute.concept import run_concept
from memtui.engine.runs.store import RunDir
from memtui.engine.runs.spec import RunSpec, SpecMismatchError

from tests.helpers import write_coco, write_official

STEPS = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("data")
    return write_official(root / "erased", 3), write_coco(root / "coco", [632, 139, 285], modes=["L", "RGBA", "P"])


def make_spec(pipe_dir: Path, data: tuple[Path, Path], **kw) -> RunSpec:
    base = dict(base=str(pipe_dir), erased=str(data[0]), reference=str(data[1]), method="ddim",
                steps=STEPS, batch_size=2, device="cpu")
    return RunSpec(**{**base, **kw}).validate()


@pytest.fixture(scope="module")
def full_run(tiny_pipe_dir: Path, data, tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One uninterrupted run (batch size 2): the reference every other test compares with."""
    rd = RunDir(tmp_path_factory.mktemp("full") / "run")
    run_concept(make_spec(tiny_pipe_dir, data), rd)
    return rd


def copy_run(rd: RunDir, dest: Path) -> RunDir:
    shutil.copytree(rd.path, dest)
    return RunDir(dest)


def psnr_by_hand(a_png: Path, b_png: Path) -> float:
    a = np.asarray(Image.open(a_png), dtype=np.float64) / 255.0
    b = np.asarray(Image.open(b_png), dtype=np.float64) / 255.0
    return 10.0 * math.log10(1.0 / np.mean((a - b) ** 2))


def events_after_last(rd: RunDir, kind: str) -> list[dict]:
    ev = rd.read_events()
    idx = max(i for i, e in enumerate(ev) if e["type"] == kind)
    return ev[idx:]


def assert_same_results(a: RunDir, b: RunDir, atol: float = 1e-4) -> None:
    ra, rb = a.read_results(), b.read_results()
    assert list(ra) == list(rb)
    for iid in ra:
        assert ra[iid]["status"] == rb[iid]["status"] == "ok"
        for key in ("psnr", "psnr_vae", "nll"):
            assert ra[iid][key] == pytest.approx(rb[iid][key], rel=1e-5, abs=1e-3), (iid, key)
        za, zb = a.read_latents(iid), b.read_latents(iid)
        assert torch.allclose(za["z_T"], zb["z_T"], atol=atol)


# ------------------------------------------------------------------------------ full run
def test_full_run_matches_recomputation(full_run: RunDir, tiny_pipe, data) -> None:
    rd = full_run
    recs = rd.read_results()
    assert list(recs) == ["erased-0", "erased-1", "erased-2", "reference-139", "reference-285", "reference-632"]
    assert rd.status() == "finished" and rd.progress() == (6, 6)
    prompts = {"erased-0": "a photo of a church", "reference-139": "a photo of the star"}
    for iid, text in prompts.items():
        assert recs[iid]["prompt"] == text
    psnr, nll = {}, {}
    for iid, r in recs.items():
        assert r["status"] == "ok" and r["error"] is None and r["set"] == iid.split("-")[0]
        q, rec = rd.image_path(iid, "query"), rd.image_path(iid, "recon")
        assert q.is_file() and rec.is_file() and rd.latent_path(iid).is_file()
        psnr[iid] = psnr_by_hand(q, rec)
        assert r["psnr"] == pytest.approx(psnr[iid], abs=1e-9)
        t = load_file(str(rd.latent_path(iid)))
        assert set(t) >= {"z_0", "z_T"} and tuple(t["z_T"].shape) == (4, 8, 8)
        nll[iid] = -float(norm.logpdf(t["z_T"].double().numpy()).sum())
        assert r["nll"] == pytest.approx(nll[iid], rel=1e-12)
        # VAE ceiling: decode the saved z_0 with the same weights, compare with the query PNG
        with torch.no_grad():
            dec = tiny_pipe.vae.decode(t["z_0"][None] / 0.18215).sample[0].clamp(-1, 1)
        dec_u8 = ((dec / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        qa = np.asarray(Image.open(q), dtype=np.float64) / 255.0
        expect = 10 * math.log10(1 / np.mean((qa - dec_u8 / 255.0) ** 2))
        assert r["psnr_vae"] == pytest.approx(expect, abs=1e-3)
    # the query PNG of an RGB item is the source resized with Pillow's bicubic filter
    src = Image.open(data[0] / "imgs" / "1_0.png").convert("RGB").resize((32, 32), Image.Resampling.BICUBIC)
    assert np.array_equal(np.asarray(Image.open(rd.image_path("erased-1", "query"))), np.asarray(src))

    s = json.loads((rd.path / "summary.json").read_text())
    assert s["status"] == "finished" and s["complete"] is True and s["errors"] == []
    d = 256
    mu, sd = 0.5 * d * (1 + math.log(2 * math.pi)), math.sqrt(d / 2)
    sets = {}
    for name in ("erased", "reference"):
        p = np.array([psnr[i] for i in recs if i.startswith(name)])
        n = np.array([nll[i] for i in recs if i.startswith(name)])
        sets[name] = n
        assert s["sets"][name]["n_ok"] == 3 and s["sets"][name]["n_errors"] == 0
        assert s["sets"][name]["psnr"]["mean"] == pytest.approx(p.mean(), abs=1e-9)
        assert s["sets"][name]["psnr"]["std"] == pytest.approx(p.std(), abs=1e-9)
        assert s["sets"][name]["nll"]["mean"] == pytest.approx(n.mean(), rel=1e-12)
        assert s["sets"][name]["nll"]["std"] == pytest.approx(n.std(), rel=1e-9)
    e, r = sets["erased"], sets["reference"]
    en = (e.mean() - mu) ** 2 + (e.std() - sd) ** 2
    rn = (r.mean() - mu) ** 2 + (r.std() - sd) ** 2
    er = (e.mean() - r.mean()) ** 2 + (e.std() - r.std()) ** 2
    assert s["erased_normal"] == pytest.approx(en, rel=1e-9)
    assert s["reference_normal"] == pytest.approx(rn, rel=1e-9)
    assert s["erased_reference"] == pytest.approx(er, rel=1e-6)
    assert s["relative_distance"] == pytest.approx(en / rn, rel=1e-9)
    assert s["normal"]["mode"] == "exact" and s["d"] == d
    types = [ev["type"] for ev in rd.read_events()]
    assert types[0] == "started" and types[-1] == "finished"
    assert types.count("item_done") == 6 and not (rd.path / "run.pid").exists()


# ------------------------------------------------------------------------------ resume
class UNetCounter:
    """Counts latents passed through any UNet2DConditionModel.forward."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from diffusers import UNet2DConditionModel

        self.samples = 0
        orig = UNet2DConditionModel.forward

        def counted(unet, sample, *a, **k):
            self.samples += int(sample.shape[0])
            return orig(unet, sample, *a, **k)

        monkeypatch.setattr(UNet2DConditionModel, "forward", counted)


def test_cancel_then_resume_computes_nothing_twice(full_run, tiny_pipe_dir, data, tmp_path, monkeypatch) -> None:
    counter = UNetCounter(monkeypatch)
    rd = RunDir(tmp_path / "run")
    cancel = threading.Event()

    def progress(done: int, total: int, rec: dict) -> None:
        assert total == 6
        if done == 2:
            cancel.set()

    s1 = run_concept(make_spec(tiny_pipe_dir, data), rd, progress=progress, cancel=cancel)
    assert s1["status"] == "cancelled" and not s1["complete"]
    assert rd.status() == "cancelled" and rd.done_ids() == {"erased-0", "erased-1"}
    first = counter.samples
    assert first > 0
    counter.samples = 0
    # resume with another batch size (allowed: it does not change results)
    s2 = run_concept(make_spec(tiny_pipe_dir, data, batch_size=3), rd)
    assert s2["status"] == "finished" and rd.status() == "finished"
    assert counter.samples == 2 * first  # 4 remaining items vs 2 done before: nothing recomputed
    done_events = [e["item_id"] for e in rd.read_events() if e["type"] == "item_done"]
    assert sorted(done_events) == sorted(rd.read_results()) and len(done_events) == 6
    assert [e["type"] for e in rd.read_events()].count("resumed") == 1
    assert_same_results(rd, full_run)
    fs, rs = json.loads((full_run.path / "summary.json").read_text()), s2
    assert rs["relative_distance"] == pytest.approx(fs["relative_distance"], rel=1e-6)


def test_torn_last_line_is_ignored_and_truncated(full_run, tiny_pipe_dir, data, tmp_path) -> None:
    rd = copy_run(full_run, tmp_path / "run")
    lines = (rd.path / "results.jsonl").read_bytes().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]
    (rd.path / "results.jsonl").write_bytes(b"".join(lines[:-1]) + torn)  # last item lost mid-write
    with open(rd.path / "events.jsonl", "ab") as f:
        f.write(b'{"ts": "2026-01-01T00:00:00Z", "type": "item_do')
    assert list(rd.read_results()) == list(full_run.read_results())[:-1]
    assert rd.read_events()[-1]["type"] == "finished"
    run_concept(make_spec(tiny_pipe_dir, data), rd)
    for name in ("results.jsonl", "events.jsonl"):
        raw = (rd.path / name).read_bytes()
        assert raw.endswith(b"\n")
        assert all(isinstance(json.loads(line), dict) for line in raw.splitlines())
    redone = [e["item_id"] for e in events_after_last(rd, "resumed") if e["type"] == "item_done"]
    assert redone == ["reference-632"]
    assert_same_results(rd, full_run)


def test_spec_mismatch_is_refused_naming_fields(full_run, tiny_pipe_dir, data, tmp_path, monkeypatch) -> None:
    rd = copy_run(full_run, tmp_path / "run")
    with pytest.raises(SpecMismatchError) as e:
        rd.prepare(make_spec(tiny_pipe_dir, data, steps=6, method="renoise"))
    assert set(e.value.differences) == {"steps", "method"}
    assert e.value.differences["steps"] == (STEPS, 6)
    assert "steps: stored 5, given 6" in str(e.value) and "method" in str(e.value)
    # batch size, device and cosmetic path differences are not mismatches
    monkeypatch.chdir(data[0].parent)
    same = make_spec(tiny_pipe_dir, data, batch_size=7, device="cuda:3",
                     erased=os.path.relpath(data[0]) + "/", reference=str(data[1]) + "/./")
    assert rd.prepare(same) == "resume"


def _rewrite_started_fingerprint(rd: RunDir, edit) -> None:
    lines = (rd.path / "events.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        e = json.loads(line)
        if e.get("type") == "started":
            edit(e["fingerprint"])
        out.append(json.dumps(e))
    (rd.path / "events.jsonl").write_text("\n".join(out) + "\n")


def test_a_run_recorded_before_newer_settings_resumes(full_run, tiny_pipe_dir, data, tmp_path) -> None:
    """A run started by an older memtui has no lora_scale / lora_fuse, no embedded_guidance and no
    DDIM eval_at in its recorded fingerprint: at their defaults they match; a recorded non-default still refuses."""
    def older(fp: dict) -> None:
        fp.pop("lora_scale"), fp.pop("lora_fuse")
        fp["inversion"]["ddim"].pop("eval_at"), fp["inversion"].pop("embedded_guidance")

    rd = copy_run(full_run, tmp_path / "old")
    _rewrite_started_fingerprint(rd, older)
    assert run_concept(make_spec(tiny_pipe_dir, data), rd)["status"] == "finished"
    with pytest.raises(SpecMismatchError, match="inversion"):
        run_concept(make_spec(tiny_pipe_dir, data, inversion={"ddim": {"eval_at": "current"}}), copy_run(rd, tmp_path / "o2"))
    other = copy_run(full_run, tmp_path / "scaled")
    _rewrite_started_fingerprint(other, lambda fp: fp.update(lora_scale=0.5))
    with pytest.raises(SpecMismatchError, match="lora_scale"):
        run_concept(make_spec(tiny_pipe_dir, data), other)


def test_restart_moves_old_contents(full_run, tiny_pipe_dir, data, tmp_path) -> None:
    rd = copy_run(full_run, tmp_path / "run")
    spec = make_spec(tiny_pipe_dir, data, max_items=1)
    with pytest.raises(SpecMismatchError, match="max_items"):
        rd.prepare(spec)
    assert rd.prepare(spec, restart=True) == "restart"
    olds = list(rd.path.glob(".old-*"))
    assert len(olds) == 1 and (olds[0] / "results.jsonl").is_file() and (olds[0] / "latents").is_dir()
    assert not (rd.path / "results.jsonl").exists()
    s = run_concept(spec, rd)
    assert list(rd.read_results()) == ["erased-0", "reference-139"] and s["status"] == "finished"
    assert [e["type"] for e in rd.read_events()][0] == "started"


# ------------------------------------------------------------------------------ failures
def test_oom_halves_the_batch_then_gives_up(full_run, tiny_pipe_dir, data, tmp_path, monkeypatch) -> None:
    import memtui.engine.inversion.api as api

    real = api.invert_images
    sizes: list[int] = []

    def flaky(pipe, images, prompts, config, progress=None):
        sizes.append(images.shape[0])
        if images.shape[0] > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(pipe, images, prompts, config, progress)

    monkeypatch.setattr(api, "invert_images", flaky)
    rd = RunDir(tmp_path / "run")
    s = run_concept(make_spec(tiny_pipe_dir, data, batch_size=4, max_items=1), rd)
    assert sizes == [2, 1, 1]  # 2 items: the batch of 2 fails, then one at a time
    assert s["errors"] == [] and s["batch_size"] == 1
    notes = [e for e in rd.read_events() if e.get("stage") == "oom"]
    assert [e["batch_size"] for e in notes] == [1]
    full = full_run.read_results()
    for iid, r in rd.read_results().items():
        assert r["nll"] == pytest.approx(full[iid]["nll"], rel=1e-6)

    def always(pipe, images, prompts, config, progress=None):
        raise torch.cuda.OutOfMemoryError("out of memory")

    monkeypatch.setattr(api, "invert_images", always)
    rd2 = RunDir(tmp_path / "run2")
    s2 = run_concept(make_spec(tiny_pipe_dir, data, batch_size=2, max_items=1), rd2)
    assert [r["status"] for r in rd2.read_results().values()] == ["error", "error"]
    assert all("out of memory" in e["error"] for e in s2["errors"])
    assert s2["sets"]["erased"]["n_ok"] == 0 and math.isnan(s2["relative_distance"] or math.nan)


def test_bad_items_become_error_records(tiny_pipe_dir, tmp_path) -> None:
    erased = write_official(tmp_path / "erased", 2)
    png = (erased / "imgs" / "1_0.png").read_bytes()
    (erased / "imgs" / "1_0.png").write_bytes(png[:40])          # corrupt image
    with open(erased / "prompts.csv", "a") as f:
        f.write("x,a broken row,1,7.5\n")                          # bad CSV row (line 4)
    ref = write_coco(tmp_path / "coco", [1, 2])
    Image.open(ref / "val2017" / "000000000001.png").save(ref / "val2017" / "000000000009.png")  # no caption
    rd = RunDir(tmp_path / "run")
    s = run_concept(make_spec(tiny_pipe_dir, (erased, ref)), rd)
    recs = rd.read_results()
    assert list(recs) == ["erased-row4", "reference-9", "erased-1", "erased-0", "reference-1", "reference-2"]
    assert recs["erased-1"]["status"] == "error" and "cannot read image" in recs["erased-1"]["error"]
    assert recs["erased-row4"]["status"] == "error" and "not an integer" in recs["erased-row4"]["error"]
    assert recs["reference-9"]["status"] == "error" and "no caption" in recs["reference-9"]["error"]
    assert recs["erased-0"]["status"] == "ok" and recs["reference-2"]["status"] == "ok"
    assert not rd.image_path("erased-1", "recon").exists()
    assert s["status"] == "finished" and s["sets"]["erased"]["n_ok"] == 1 and s["sets"]["erased"]["n_errors"] == 2
    assert s["sets"]["reference"]["n_ok"] == 2
    assert {e["item_id"] for e in s["errors"]} == {"erased-1", "erased-row4", "reference-9"}
    assert s["relative_distance"] is None or math.isnan(s["relative_distance"])
    assert any("erased set has 1 finite" in r for r in s["reasons"])
    on_disk = json.loads((rd.path / "summary.json").read_text())
    assert on_disk["relative_distance"] is None  # strict JSON: undefined values are null


def test_kill_9_then_resume(full_run, tiny_pipe_dir, data, tmp_path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "memtui", "--batch", "--base", str(tiny_pipe_dir), "--erased", str(data[0]),
           "--reference", str(data[1]), "--method", "ddim", "--steps", str(STEPS), "--batch-size", "1",
           "--device", "cpu", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "results.jsonl").is_file() and (run / "results.jsonl").read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        assert RunDir(run).status() == "running"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    rd = RunDir(run)
    assert rd.status() == "incomplete"
    n_before = len(rd.done_ids())
    assert 1 <= n_before < 6
    s = run_concept(make_spec(tiny_pipe_dir, data, batch_size=6), rd)
    assert s["status"] == "finished" and rd.status() == "finished"
    redone = [e["item_id"] for e in events_after_last(rd, "resumed") if e["type"] == "item_done"]
    assert len(redone) == 6 - n_before and not set(redone) & set(list(full_run.read_results())[:n_before])
    assert_same_results(rd, full_run)
