"""``prompt_test`` — the demo world's follow-up to any demo run: sample each concept's prompt from
the base model and from the erased twin and classify the samples with the demo detector (does the
erased model still draw the concept when asked?). Added to ``summary.json`` as ``prompt_test``;
samples under ``RUN_DIR/prompt_test/``."""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import Analysis
from memtui.engine.core.options import from_dict, option


@dataclass
class PromptTestOptions:
    """How many samples the prompt test draws."""

    demo_samples: int = option(64, help="prompt-test samples per model and concept", minimum=1, metavar="N")


@register
class PromptTest(Analysis):
    name = "prompt_test"
    question = "Demo world: does each model still draw each concept when prompted? (rate per concept)"
    Options = PromptTestOptions
    compute = "memtui.engine.demo.runner:add_prompt_test"
    follow_up = True
    non_result_options = ("demo_samples",)
    datasets = ()

    @classmethod
    def applies_after(cls, spec: Any) -> bool:
        """After every demo run that inverts the demo world's sets (not after generate)."""
        from memtui.engine.analyses import registry

        try:
            reads_sets = bool(registry.get(spec.analysis).datasets)
        except ValueError:
            return False
        return bool(getattr(spec, "demo", False)) and reads_sets

    @classmethod
    def run_after(cls, spec: Any, run_dir: Any, summary: dict[str, Any], cancel: Any = None) -> dict[str, Any]:
        n = from_dict(cls.Options, {k: v for k, v in (spec.options or {}).items() if k == "demo_samples"}).demo_samples
        module, func = cls.compute.split(":")
        return getattr(importlib.import_module(module), func)(spec, run_dir, n=n, cancel=cancel)

    @classmethod
    def after_line(cls, summary: Mapping[str, Any]) -> str | None:
        pt = summary.get("prompt_test") or {}
        models = pt.get("models") or {}
        if not models:
            return None
        parts = [f"{c}: base {models['base'][c]['rate']:.0%} / erased {models['erased'][c]['rate']:.0%}"
                 for c in models.get("base", {})]
        return f"prompt test (n={pt.get('n')}): " + ", ".join(parts)

    @classmethod
    def run(cls, spec: Any, run_dir: Any, progress: Any = None, cancel: Any = None) -> dict[str, Any]:
        raise ValueError("prompt_test follows a demo run (memtui --batch --demo); it is not run on its own")
