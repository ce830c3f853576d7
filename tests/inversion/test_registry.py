"""The method registry without torch, the dict form of InversionConfig (canonical and the keys run
specs used before the registry), and validation messages that name the bad key."""
from __future__ import annotations

import subprocess
import sys

import pytest

from memtui.engine.inversion.config import InversionConfig
from memtui.engine.inversion.methods.nti import NTIOptions
from memtui.engine.inversion.methods.renoise import RenoiseOptions
from memtui.engine.inversion.config import inversion_problems
from memtui.engine.inversion.registry import DEFAULT_METHOD, method_names


def test_names_and_validation_never_import_torch() -> None:
    code = ("import sys\n"
            "from memtui.engine.inversion.registry import method_names, DEFAULT_METHOD\n"
            "from memtui.engine.inversion.config import inversion_problems\n"
            "from memtui.engine.inversion.config import InversionConfig\n"
            "names = method_names()\n"
            "assert names[:3] == ('ddim', 'renoise', 'nti') and DEFAULT_METHOD == 'renoise', names\n"
            "assert inversion_problems('nti', {'nti_mode': 'fast'})\n"
            "c = InversionConfig.from_dict({'method': 'renoise', 'renoise': {'num_renoise_steps': 3}})\n"
            "assert InversionConfig.from_dict(c.to_dict()) == c and c.resolved_encode == 'sample'\n"
            "import memtui.engine.inversion as inv; inv.InversionConfig\n"
            "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_default_and_order() -> None:
    assert DEFAULT_METHOD == "renoise" and InversionConfig().method == DEFAULT_METHOD
    assert method_names()[:3] == ("ddim", "renoise", "nti")
    assert [InversionConfig(method=m).resolved_encode for m in ("ddim", "renoise", "nti")] == ["mean", "sample", "mean"]
    assert InversionConfig(method="renoise", encode="mean").resolved_encode == "mean"


def test_legacy_keys_of_existing_run_directories() -> None:
    # what InversionConfig.to_dict() wrote before the registry (every key, whatever the method)
    old = {"method": "renoise", "steps": 50, "seed": 42, "encode": "auto", "guidance": 1.0,
           "renoise": {**RenoiseOptions().to_dict(), "num_renoise_steps": 3}, "nti_mode": "paper",
           "nti_guidance": 7.5, "nti_inner_steps": None}
    cfg = InversionConfig.from_dict(old)
    assert cfg.options == RenoiseOptions(num_renoise_steps=3)
    nti = InversionConfig.from_dict({**old, "method": "nti", "nti_mode": "official", "nti_inner_steps": 4,
                                     "nti_guidance": 5})
    assert nti.options == NTIOptions(mode="official", inner_steps=4, guidance=5.0)
    assert nti.to_dict()["nti"]["mode"] == "official" and "renoise" not in nti.to_dict()
    assert InversionConfig.from_dict(nti.to_dict()) == nti
    assert inversion_problems("renoise", {k: v for k, v in old.items() if k not in ("method", "steps", "seed")}) == []


def test_canonical_form_and_conflicts() -> None:
    cfg = InversionConfig.from_dict({"method": "nti", "steps": 10, "nti": {"mode": "official"}})
    assert cfg.options.mode == "official" and cfg.steps == 10
    with pytest.raises(ValueError, match="not both"):
        InversionConfig.from_dict({"method": "nti", "nti": {"mode": "official"}, "nti_mode": "paper"})
    with pytest.raises(ValueError, match="nti must be a table"):
        InversionConfig.from_dict({"method": "nti", "nti": 3})


@pytest.mark.parametrize("bad, words", [
    ({"method": "sdedit"}, ["method", "ddim, renoise, nti"]),
    ({"steps": 1}, ["steps", ">= 2"]),
    ({"seed": -1}, ["seed"]),
    ({"encode": "median"}, ["encode", "mean, sample, auto"]),
    ({"guidance": "high"}, ["guidance"]),
    ({"nti_mode": "fast"}, ["nti_mode", "paper, official"]),
    ({"nti_inner_steps": -2}, ["nti_inner_steps"]),
    ({"nti": {"mode": "fast"}}, ["nti.mode", "paper, official"]),
    ({"renoise": {"lambda_kl": -1}}, ["renoise.lambda_kl", ">= 0"]),
    ({"renoise": {"average_step_range": [1]}}, ["renoise.average_step_range", "2 values"]),
    ({"seeds": 1}, ["unknown", "seeds"]),
])
def test_bad_values_name_the_key_and_the_allowed_values(bad, words) -> None:
    with pytest.raises(ValueError) as exc:
        InversionConfig.from_dict(bad)
    for w in words:
        assert w in str(exc.value), (w, str(exc.value))
    probs = inversion_problems(bad.get("method", "renoise"), {k: v for k, v in bad.items() if k != "method"})
    assert probs and all(w in " ".join(probs) for w in words), probs


def test_validate_checks_a_constructed_config() -> None:
    with pytest.raises(ValueError, match="renoise.num_reg_steps"):
        InversionConfig(method="renoise", options=RenoiseOptions(num_reg_steps=-1)).validate()
    with pytest.raises(ValueError, match="NTIOptions"):
        InversionConfig(method="nti", options=RenoiseOptions()).validate()
    with pytest.raises(ValueError, match="method"):
        InversionConfig(method="nope").validate()
