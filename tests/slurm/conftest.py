"""A real single-node Slurm for the sweep executor's tests: ``scripts/slurm-local`` installs
slurm-wlm and munge from Debian packages when missing (root), starts munged, slurmctld and slurmd
with their state under a temporary folder, and stops them by pid when the session ends. Where this
machine cannot run it (not root, no apt-get, a daemon that does not start) the tests skip and the
reason is printed (pytest -ra)."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "slurm-local"


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder of a running one-node cluster; ``SLURM_CONF`` points at its slurm.conf meanwhile."""
    pytest.importorskip("submitit")
    folder = tmp_path_factory.mktemp("slurm")
    try:
        r = subprocess.run(["bash", str(SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        pytest.skip("Slurm did not start within 10 minutes")
    if r.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        reason = (r.stderr.strip().splitlines() or [f"scripts/slurm-local start exited {r.returncode}"])[-1]
        if r.returncode == 3:
            pytest.skip(reason)
        pytest.fail(f"scripts/slurm-local start failed ({r.returncode}): {r.stderr[-2000:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    try:
        yield folder
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder)], capture_output=True, timeout=120)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
