"""One item loop, one behaviour: every analysis that runs on ``memtui.engine.runs.loop`` (concept,
memories, scramble, generate) is checked here the same way, on the tiny pipeline:

- an uninterrupted run writes each record after its files, logs ``started`` (pid, format_version),
  one ``item_done`` per ok item and ``finished``, and summary.json carries ``format_version``;
- cancel stops between batches: status ``cancelled`` (summary, events, ``RunDir.status``), lock
  released, resumable;
- resuming after the cancel recomputes nothing (counted at the inversion / sampling call) and gives
  the records, files and summary of the uninterrupted run;
- an out-of-memory error at batch size > 1 halves the batch (``progress`` event ``stage="oom"``,
  the accelerator cache emptied) and the results equal a normal run;
- an out-of-memory error at batch size 1 becomes that item's error record, the run goes on, and a
  resume retries it;
- another live process's lock refuses the run; any other error is a ``failed`` event, re-raised.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from memtui.engine import analyses
from memtui.engine.runs.schema import FORMAT_VERSION
from memtui.engine.runs.spec import RunSpec
from memtui.engine.runs.store import RunDir, RunLockedError

from tests.helpers import write_official

ANALYSES = list(analyses.main_names())  # every analysis a run can be started with
FILE_FIELDS = ("latents", "query", "recon", "decoded", "reassembled", "image")
SKIP_SUMMARY = {"timing", "versions"}  # per session by nature


def entry(analysis: str) -> Callable[..., dict[str, Any]]:
    """The computation the analysis registry dispatches to."""
    return analyses.get(analysis).compute_function()


# ------------------------------------------------------------------------------ tiny specs
@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loopdata")
    csv = root / "prompts.csv"
    csv.write_text("case_number,prompt,evaluation_seed,evaluation_guidance\n"
                   "0,red circle,1,7.5\n1,blue square,2,3.0\n2,a photo of church,3,\n")
    return {"erased": write_official(root / "erased", 2), "reference": write_official(root / "reference", 2, 50),
            "prompts": csv}


def spec_of(analysis: str, pipe_dir: Path, data: dict[str, Path], batch_size: int = 2) -> RunSpec:
    """A few items per analysis, computed in batches of 2 (so a cancel leaves work to resume)."""
    d: dict[str, Any] = {"analysis": analysis, "base": str(pipe_dir), "batch_size": batch_size, "device": "cpu"}
    if analysis == "generate":
        d["options"] = {"prompts": str(data["prompts"]), "steps": 3}  # 3 images
    else:
        d.update(erased=str(data["erased"]), reference=str(data["reference"]), method="ddim", steps=3)
        if analysis == "memories":  # target, 2 memories, 2 controls
            d["options"] = {"num_targets": 1, "num_supports": 2, "vae_steps": 2}
        elif analysis == "scramble":  # the original and 2 scrambles
            d["options"] = {"num_targets": 1, "num_scrambles": 2, "grid": 2}
        # concept: 2 erased + 2 reference items
    return RunSpec.from_dict(d)


class ComputeSpy:
    """Wraps the call each analysis computes a batch with (inversion, or sampling for generate):
    records the batch sizes and can make chosen calls raise."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, analysis: str,
                 fail: Callable[[int, int], BaseException | None] | None = None) -> None:
        self.sizes: list[int] = []
        self.fail = fail
        self.depth = 0
        if analysis == "generate":
            import memtui.engine.diffusion.samplers as mod

            names = ("sample",)
        else:
            import memtui.engine.inversion.api as mod

            names = ("invert_images", "invert_latents")
        for name in names:
            monkeypatch.setattr(mod, name, self._wrap(getattr(mod, name)))

    def _wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(pipe: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
            if self.depth:  # invert_images -> invert_latents: count the outer call only
                return real(pipe, x, *args, **kwargs)
            n = len(x)
            self.sizes.append(n)
            err = self.fail(n, len(self.sizes)) if self.fail else None
            if err is not None:
                raise err
            self.depth += 1
            try:
                return real(pipe, x, *args, **kwargs)
            finally:
                self.depth -= 1
        return call

    @property
    def rows(self) -> int:
        """Items computed successfully (rows of the calls that did not raise)."""
        return sum(self.sizes) - sum(n for i, n in enumerate(self.sizes, 1) if self.fail and self.fail(n, i))


def run(analysis: str, spec: RunSpec, out: Path, **kw: Any) -> dict[str, Any]:
    return entry(analysis)(spec, RunDir(out), **kw)


def on_disk(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------------------ comparisons
def assert_close(a: Any, b: Any, where: str = "") -> None:
    """Equal, floats within float noise of a different batch composition (recursively)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), (where, set(a) ^ set(b))
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-3), where
    else:
        assert a == b, where


def assert_same_run(out: Path, ref: Path, skip_summary: set[str] = frozenset()) -> None:
    """Same records (latest per id, in order), same files, same summary as the reference run."""
    a, b = RunDir(out).read_results(), RunDir(ref).read_results()
    assert list(a) == list(b)
    for iid in a:
        ra, rb = ({k: v for k, v in r.items() if k != "seconds"} for r in (a[iid], b[iid]))
        assert_close(ra, rb, iid)
        if ra.get("latents"):
            za, zb = (load_latents(p / ra["latents"]) for p in (out, ref))
            assert torch.allclose(za["z_T"], zb["z_T"], atol=1e-4), iid
        for f in ("query", "recon", "decoded", "reassembled", "image"):
            if isinstance(ra.get(f), str):
                pa, pb = (np.asarray(Image.open(p / ra[f]).convert("RGB"), dtype=int) for p in (out, ref))
                assert np.abs(pa - pb).max() <= 1, (iid, f)
    sa, sb = on_disk(out), on_disk(ref)
    skip = SKIP_SUMMARY | set(skip_summary)
    assert_close({k: v for k, v in sa.items() if k not in skip}, {k: v for k, v in sb.items() if k not in skip}, "summary")


def load_latents(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def ok_ids(out: Path) -> set[str]:
    return RunDir(out).done_ids()


def types(out: Path) -> list[str]:
    return [e["type"] for e in RunDir(out).read_events()]


# ------------------------------------------------------------------------------ the reference runs
@pytest.fixture(scope="module", params=ANALYSES)
def analysis(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def reference(analysis: str, tiny_pipe_dir: Path, datasets, tmp_path_factory) -> Path:
    """An uninterrupted run; every record is checked, when appended, to name files that exist."""
    out = tmp_path_factory.mktemp(f"ref-{analysis}") / "run"
    missing: list[tuple[str, str]] = []
    real = RunDir.append_result

    def checked(self: RunDir, record: dict) -> None:
        if record.get("status") == "ok":
            missing.extend((record["item_id"], f) for f in FILE_FIELDS
                           if isinstance(record.get(f), str) and not (self.path / record[f]).is_file())
        real(self, record)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RunDir, "append_result", checked)
        run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out)
    assert not missing, f"records appended before their files: {missing}"
    return out


def test_uninterrupted_run_events_records_and_format_version(analysis, reference) -> None:
    rd = RunDir(reference)
    s = on_disk(reference)
    recs = rd.read_results()
    assert s["status"] == "finished" and s["format_version"] == FORMAT_VERSION
    assert s["complete"] is True and all(r["status"] == "ok" for r in recs.values())
    ev = rd.read_events()
    start = ev[0]
    assert start["type"] == "started" and start["pid"] > 0 and start["format_version"] == FORMAT_VERSION
    assert start["total"] == len(recs) and start["done"] == 0
    assert [e["item_id"] for e in ev if e["type"] == "item_done"] == list(recs)
    assert ev[-1]["type"] == "finished" and ev[-1]["done"] == ev[-1]["total"] == len(recs)
    assert any(e["type"] == "progress" and e.get("batch_size") == 2 and "done" in e for e in ev)
    assert rd.status() == "finished" and not (reference / "run.pid").exists()


def test_records_and_summary_follow_the_declared_schema(analysis, reference) -> None:
    """The keys a run writes are the ones its declaration (and docs/run-format.md) lists."""
    decl = analyses.get(analysis)
    s = on_disk(reference)
    extra_summary = set(s) - set(decl.summary_keys) - {"detection", "prompt_test"}
    assert not extra_summary, f"{analysis} writes undeclared summary keys {sorted(extra_summary)}"
    missing = set(decl.summary_keys) - set(s)
    assert not missing, f"{analysis} declares summary keys it does not write: {sorted(missing)}"
    for rec in RunDir(reference).read_results().values():
        extra = set(rec) - set(decl.record_keys) - {"detections"}
        assert not extra, f"{analysis} writes undeclared record keys {sorted(extra)}"


# ------------------------------------------------------------------------------ cancel and resume
@pytest.fixture(scope="module")
def cancelled(analysis: str, tiny_pipe_dir: Path, datasets, tmp_path_factory) -> tuple[Path, dict, list[dict]]:
    """A run cancelled as soon as its first ok record is written (the batch in flight completes)."""
    out = tmp_path_factory.mktemp(f"cancel-{analysis}") / "run"
    ev = threading.Event()
    seen: list[dict] = []

    def progress(done: int, total: int, rec: dict) -> None:
        seen.append(rec)
        if rec.get("status") == "ok":
            ev.set()

    s = run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out, progress=progress, cancel=ev)
    return out, s, seen


def test_cancel_stops_between_batches_resumably(analysis, cancelled, reference) -> None:
    out, s, seen = cancelled
    total = len(RunDir(reference).read_results())
    rd = RunDir(out)
    assert s["status"] == "cancelled" and s["complete"] is False
    disk = on_disk(out)
    assert disk["status"] == "cancelled" and disk["format_version"] == FORMAT_VERSION
    assert rd.status() == "cancelled" and types(out)[-1] == "cancelled"
    assert not (out / "run.pid").exists()
    assert len(ok_ids(out)) == 2 < total  # exactly the batch in flight when cancel was set
    assert {r["item_id"] for r in seen if r.get("status") == "ok"} == ok_ids(out)


def test_resume_after_cancel_recomputes_nothing_and_equals_uninterrupted(
        analysis, cancelled, reference, tiny_pipe_dir, datasets, tmp_path, monkeypatch) -> None:
    src, _, _ = cancelled
    out = tmp_path / "run"
    shutil.copytree(src, out)
    before = ok_ids(out)
    spy = ComputeSpy(monkeypatch, analysis)
    seen: list[str] = []
    s = run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out,
            progress=lambda d, t, r: seen.append(r["item_id"]) if r.get("status") == "ok" else None)
    total = len(RunDir(reference).read_results())
    assert s["status"] == "finished" and s["complete"] is True
    assert not set(seen) & before and len(seen) == total - len(before)
    assert spy.rows == total - len(before)  # only the remaining items reached the model
    ev = RunDir(out).read_events()
    resumed = [e for e in ev if e["type"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["done"] == len(before) and resumed[0]["format_version"] == FORMAT_VERSION
    done_events = [e["item_id"] for e in ev if e["type"] == "item_done"]
    assert sorted(done_events) == sorted(RunDir(out).read_results())  # no ok item recorded twice
    assert_same_run(out, reference)


# ------------------------------------------------------------------------------ out of memory
@pytest.fixture()
def cache_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Devices the loop empties the accelerator cache of."""
    import memtui.engine.runs.loop as loop

    calls: list[Any] = []
    monkeypatch.setattr(loop, "empty_cache", lambda device=None: calls.append(device))
    return calls


def test_oom_above_batch_one_halves_the_batch_and_matches(analysis, reference, tiny_pipe_dir, datasets,
                                                          tmp_path, monkeypatch, cache_calls) -> None:
    spy = ComputeSpy(monkeypatch, analysis,
                     fail=lambda n, i: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB") if n > 1 else None)
    out = tmp_path / "run"
    s = run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out)
    assert spy.sizes[0] == 2 and set(spy.sizes[1:]) == {1}  # halved once, then kept for the session
    assert s["status"] == "finished" and s["complete"] is True and s["errors"] == []
    oom = [e for e in RunDir(out).read_events() if e.get("stage") == "oom"]
    assert [e["batch_size"] for e in oom] == [1] and "batch size 2" in oom[0]["message"]
    assert cache_calls == ["cpu"]
    if "batch_size" in s:
        assert s["batch_size"] == 1
    assert_same_run(out, reference, skip_summary={"batch_size"})


def test_oom_at_batch_one_is_an_error_record_and_the_run_goes_on(analysis, reference, tiny_pipe_dir, datasets,
                                                                 tmp_path, monkeypatch, cache_calls) -> None:
    def fail(n: int, i: int) -> BaseException | None:
        # every batch of 2 fails; then the 2nd single item (call 3 after the first halving) fails alone
        return torch.cuda.OutOfMemoryError("CUDA out of memory") if n > 1 or i == 3 else None

    ComputeSpy(monkeypatch, analysis, fail=fail)
    out = tmp_path / "run"
    s = run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out)
    recs = RunDir(out).read_results()
    bad = [r for r in recs.values() if r["status"] == "error"]
    assert len(bad) == 1 and "out of memory at batch size 1" in bad[0]["error"]
    assert list(recs) == list(RunDir(reference).read_results())  # every item got its record, in order
    assert list(recs)[1] == bad[0]["item_id"]
    assert s["status"] == "finished" and [e["item_id"] for e in s["errors"]] == [bad[0]["item_id"]]
    ev = RunDir(out).read_events()
    assert [e["item_id"] for e in ev if e["type"] == "item_error"] == [bad[0]["item_id"]]
    assert ev[-1]["type"] == "finished" and ev[-1]["n_errors"] == 1
    assert len(cache_calls) == 2 and set(cache_calls) == {"cpu"}
    monkeypatch.undo()  # the accelerator has memory again: a resume retries the item in error
    s2 = run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out)
    assert s2["status"] == "finished" and s2["errors"] == []
    assert_same_run(out, reference)


# ------------------------------------------------------------------------------ lock and failure
def test_a_live_lock_refuses_and_a_failure_is_logged(analysis, tiny_pipe_dir, datasets, tmp_path, monkeypatch) -> None:
    from memtui.engine.runs.store import pid_alive

    out = tmp_path / "locked"
    out.mkdir()
    holder = os.getppid()
    assert pid_alive(holder)
    (out / "run.pid").write_text(json.dumps({"pid": holder, "host": socket.gethostname(), "started": "x"}))
    with pytest.raises(RunLockedError, match=f"process {holder}"):
        run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out)
    assert types(out) == []  # refused before any work

    ComputeSpy(monkeypatch, analysis, fail=lambda n, i: ValueError("boom"))
    out2 = tmp_path / "failing"
    with pytest.raises(ValueError, match="boom"):
        run(analysis, spec_of(analysis, tiny_pipe_dir, datasets), out2)
    last = RunDir(out2).read_events()[-1]
    assert last["type"] == "failed" and "ValueError: boom" in last["error"] and "Traceback" in last["traceback"]
    assert RunDir(out2).status() == "failed" and not (out2 / "run.pid").exists()

