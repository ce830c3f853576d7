"""Adding an inversion method is adding one registered class: a dummy registered at run time is
listed, validated, offered by the CLI and the New-run form, and inverts through the generic API."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from memtui.engine.core.options import option
from memtui.engine.inversion.api import invert_images
from memtui.engine.inversion.base import InversionMethod, Inverted, MethodOptions, numerics
from memtui.engine.inversion.config import InversionConfig
from memtui.engine.inversion.registry import METHODS, method_names


@dataclass
class _DampedOptions(MethodOptions):
    """A dummy method's options."""

    damping: float = option(1.0, help="scale of the DDIM seed", minimum=0.0, maximum=1.0, flag="--damped-scale")


class _Damped(InversionMethod):
    """DDIM inversion whose seed is scaled by ``damping`` (a dummy for the test)."""

    name = "damped"
    summary = "DDIM with a scaled seed"
    Options = _DampedOptions

    def invert(self, pipe, z0, emb, steps, options, generators, guidance, progress=None) -> Inverted:
        z_t = numerics("memtui.engine.inversion.ddim:ddim_invert")(pipe, z0, emb, steps, progress=progress)
        return Inverted(z_T=z_t * options.damping, guidance=guidance)


@pytest.fixture
def damped():
    METHODS.register(_Damped)
    try:
        yield _Damped
    finally:
        METHODS.unregister("damped")
    assert "damped" not in method_names()


def test_a_new_method_needs_no_other_edit(damped, tiny_pipe, tmp_path) -> None:
    from memtui import launch
    from memtui.batch import spec_from_args
    from memtui.cli import build_parser
    from memtui.engine.runs.spec import RunSpec

    assert method_names()[-1] == "damped" and "damped" in launch.method_names()
    parser = build_parser()
    text = parser.format_help()
    assert "inversion method damped (with --method damped" in text and "--damped-scale" in text
    data = tmp_path / "d"
    data.mkdir()
    ns = parser.parse_args(["--batch", "--out", str(tmp_path / "r"), "--method", "damped", "--damped-scale", "0.5",
                            "--base", "b", "--erased", str(data), "--reference", str(data)])
    assert spec_from_args(ns).inversion == {"damped": {"damping": 0.5}}
    bad = RunSpec.from_dict({"base": "b", "erased": str(data), "reference": str(data), "method": "damped",
                             "inversion": {"damped": {"damping": 2.0}}}, validate=False)
    assert any("damped.damping must be <= 1" in p for p in bad.problems()), bad.problems()

    x = torch.rand(2, 3, tiny_pipe.image_size, tiny_pipe.image_size) * 2 - 1
    half = invert_images(tiny_pipe, x, ["a", "b"], InversionConfig.from_dict({"method": "damped", "steps": 3,
                                                                               "damped": {"damping": 0.5}}))
    full = invert_images(tiny_pipe, x, ["a", "b"], InversionConfig.from_dict({"method": "ddim", "steps": 3}))
    torch.testing.assert_close(half.z_T, 0.5 * full.z_T)
    assert half.images_hat.shape == x.shape
