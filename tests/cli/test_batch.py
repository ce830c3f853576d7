"""``memtui --batch``: exit codes, --json output, spec files and flag overrides."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from memtui.batch import spec_from_args
from memtui.cli import build_parser, main
from memtui.engine.runs.spec import SpecError
from memtui.engine.runs.store import RunDir

from tests.helpers import write_coco, write_official


@pytest.fixture()
def small(tmp_path: Path) -> tuple[Path, Path]:
    return write_official(tmp_path / "erased", 1), write_coco(tmp_path / "coco", [7, 3])


def base_args(pipe: Path, data: tuple[Path, Path], out: Path) -> list[str]:
    return ["--batch", "--base", str(pipe), "--erased", str(data[0]), "--reference", str(data[1]),
            "--method", "ddim", "--steps", "5", "--device", "cpu", "--out", str(out)]


def test_json_output_equals_summary_and_resume_exit_codes(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(base_args(tiny_pipe_dir, small, out) + ["--json"]) == 0
    printed = capsys.readouterr().out
    on_disk = (out / "summary.json").read_text()
    assert printed == on_disk
    summary = json.loads(printed)
    assert summary["status"] == "finished"
    assert [s["n_ok"] for s in summary["sets"].values()] == [1, 1]  # 1 erased, num_reference = 1
    assert list(RunDir(out).read_results()) == ["erased-0", "reference-3"]
    # same command again: resumes, nothing left to do, exit 0; the table goes to stdout
    n_events = len(RunDir(out).read_events())
    assert main(base_args(tiny_pipe_dir, small, out)) == 0
    cap = capsys.readouterr()
    assert "relative distance" in cap.out and "erased" in cap.out and "resuming" in cap.err
    new = [e["type"] for e in RunDir(out).read_events()[n_events:]]
    assert new == ["resumed", "finished"]
    # only --out: resumes with the stored spec
    assert main(["--batch", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sets"] == summary["sets"]
    # a different spec is refused (2) and names the field
    assert main(base_args(tiny_pipe_dir, small, out) + ["--steps", "6"]) == 2
    assert "steps: stored 5, given 6" in capsys.readouterr().err


def test_usage_and_config_errors_exit_2(tiny_pipe_dir, small, tmp_path, capsys) -> None:
    assert main(["--batch", "--base", str(tiny_pipe_dir)]) == 2  # no --out
    assert "--out" in capsys.readouterr().err
    bad = base_args(tiny_pipe_dir, (small[0], tmp_path / "missing"), tmp_path / "r1")
    assert main(bad) == 2
    assert "reference folder not found" in capsys.readouterr().err
    assert main(base_args(tiny_pipe_dir, small, tmp_path / "r2") + ["--method", "magic"]) == 2
    assert main(base_args(tmp_path / "no-model", small, tmp_path / "r3")) == 2
    assert RunDir(tmp_path / "r3").status() == "failed"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(base_args(tiny_pipe_dir, (empty, small[1]), tmp_path / "r4")) == 2
    assert "not a dataset folder" in capsys.readouterr().err


def test_help_lists_exit_codes(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--base", "--ablated", "--erased", "--reference", "--method", "--steps", "--batch-size",
                 "--precision", "--device", "--out", "--spec", "--restart", "--json", "--max-items",
                 "--seed", "--analysis", "--runs", "--no-mouse"):
        assert flag in text
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in text


def test_every_item_in_error_exits_1(tiny_pipe_dir, tmp_path, capsys) -> None:
    erased, ref = write_official(tmp_path / "e", 1), write_coco(tmp_path / "c", [1])
    for p in list((erased / "imgs").iterdir()) + list((ref / "val2017").iterdir()):
        p.write_bytes(b"not a png")
    assert main(base_args(tiny_pipe_dir, (erased, ref), tmp_path / "run")) == 1
    recs = RunDir(tmp_path / "run").read_results()
    assert [r["status"] for r in recs.values()] == ["error", "error"]


def test_cancelled_run_exits_130(tiny_pipe_dir, small, tmp_path, monkeypatch, capsys) -> None:
    import memtui.engine.compute.run as runner

    real = runner.run_spec

    def cancelled_early(spec, run_dir, progress=None, cancel=None):
        cancel.set()  # as SIGINT would, before the first batch
        return real(spec, run_dir, progress=progress, cancel=cancel)

    monkeypatch.setattr(runner, "run_spec", cancelled_early)
    out = tmp_path / "run"
    assert main(base_args(tiny_pipe_dir, small, out)) == 130
    assert RunDir(out).status() == "cancelled" and "resume" in capsys.readouterr().err


def test_spec_file_with_flag_overrides(tiny_pipe_dir, small, tmp_path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f'base = "{tiny_pipe_dir}"\nerased = "{small[0]}"\nreference = "{small[1]}"\n'
                    'method = "renoise"\nsteps = 10\nbatch_size = 4\n[inversion]\nguidance = 1.0\n'
                    '[options]\nconcept = "x"\n')
    args = build_parser().parse_args(["--batch", "--spec", str(toml), "--steps", "5", "--out", str(tmp_path / "o")])
    spec = spec_from_args(args)
    assert (spec.method, spec.steps, spec.batch_size) == ("renoise", 5, 4)
    assert spec.inversion == {"guidance": 1.0} and spec.options == {"concept": "x"}
    # an option no analysis declares is a typo to report, not a setting to ignore
    toml.write_text(toml.read_text().replace('concept = "x"', 'conept = "x"'))
    with pytest.raises(SpecError, match="options not used by the concept analysis: options.conept"):
        spec_from_args(build_parser().parse_args(["--batch", "--spec", str(toml), "--out", str(tmp_path / "o")]))
    (tmp_path / "bad.toml").write_text('base = "x"\nstesp = 5\n')
    with pytest.raises(ValueError, match="unknown spec field.*stesp"):
        spec_from_args(build_parser().parse_args(["--batch", "--spec", str(tmp_path / "bad.toml"), "--out", "o"]))
    # a run directory's spec.json round-trips
    rd = RunDir(tmp_path / "o")
    rd.prepare(spec)
    again = spec_from_args(build_parser().parse_args(["--batch", "--spec", str(rd.path / "spec.json"), "--out", "x"]))
    assert again.fingerprint() == spec.fingerprint()


def test_progress_lines_when_stderr_is_not_a_terminal() -> None:
    import io

    from memtui.batch import Reporter

    stream = io.StringIO()
    rep = Reporter(stream)
    for i in range(1, 41):
        rep(i, 40, {"item_id": f"x{i}", "status": "error" if i == 3 else "ok"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11  # one per 10 %, from the first item
    assert lines[-1] == "memtui: 40/40 items (100%), 1 error(s)"
