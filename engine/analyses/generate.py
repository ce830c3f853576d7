"""``generate`` — build an erased set from an official prompt CSV (``case_number, prompt,
evaluation_seed[, evaluation_guidance][, sd_image_height, sd_image_width]``) into the official layout
``imgs/<case>_<k>.png`` + ``prompts.csv``: LMS, 25 steps, CFG 7.5 and per-row seeds by default.

``guidance_source``: ``row`` (default) honours each row's ``evaluation_guidance`` (else
``sd_guidance_scale``, else ``guidance``); ``official`` does what the official
``src/generate_dataset.py`` does: the CSV's ``sd_guidance_scale`` if it has that column, else
``guidance`` (7.5) for every row, whatever ``evaluation_guidance`` says."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memtui.engine.analyses.registry import register
from memtui.engine.analyses.base import RECORD_BASE, Analysis, CommonOptions, Table, detection_lines
from memtui.engine.core.options import option
from memtui.engine.diffusion.samplers import AUTO_SAMPLER, DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS  # torch-free

GUIDANCE_SOURCES = ("row", "official")
"""Where each row's guidance comes from: ``row`` = the row's own ``evaluation_guidance`` (else
``sd_guidance_scale``, else the ``guidance`` option); ``official`` = as the official
``src/generate_dataset.py``: the ``sd_guidance_scale`` column when the CSV has one, else the
``guidance`` option for every row (``evaluation_guidance`` is never read)."""
NOISE_DRAW = "row"
"""How the initial noise is drawn (recorded as ``noise_draw``): one CPU generator per row,
``torch.manual_seed(seed)`` + one ``randn((K, C, h, w))``, image ``k`` = row ``k`` of that draw — the
official ``generate_dataset.py``. Records without ``noise_draw`` come from the earlier per-image seeds
``seed + k``."""


@dataclass
class GenerateOptions(CommonOptions):
    """The sampler settings; rows of the CSV may carry their own guidance and size."""

    prompts: str | None = option(None, help="prompt CSV: case_number,prompt,evaluation_seed[,evaluation_guidance]"
                                 "[,sd_image_height,sd_image_width] (required)", metavar="FILE.csv")
    sampler: str = option(AUTO_SAMPLER, choices=(AUTO_SAMPLER, *SAMPLERS),
                          help=f"generation sampler; {AUTO_SAMPLER}: the base's family default ({DEFAULT_SAMPLER} for "
                          "SD 1.x, as the official code; ddim for SD 2.x; euler for SDXL; flow_euler for Flux)")
    steps: int = option(DEFAULT_STEPS, help="sampler steps (the --steps flag sets it for generate runs)", minimum=1,
                        flag=None)
    guidance: float = option(DEFAULT_GUIDANCE, help="the default guidance: of rows without one (guidance_source row); "
                             "of every row unless the CSV has sd_guidance_scale (official)", minimum=0, metavar="G")
    guidance_source: str = option("row", choices=GUIDANCE_SOURCES,
                                  help="row: each row's evaluation_guidance (else sd_guidance_scale, else --guidance); "
                                  "official: as the official generate_dataset.py, sd_guidance_scale if the CSV has "
                                  "it, else --guidance for every row (evaluation_guidance ignored)")
    images_per_prompt: int = option(1, help="images per prompt row, all K from the row's seed as the official code: "
                                    "one CPU randn of [K, C, h, w], image k = its k-th slice", minimum=1,
                                    metavar="K")
    size: int | None = option(None, help="image side in pixels for rows without one (default: --image-size, "
                              "else the model's native size)", minimum=8, flag=None)


@register
class Generate(Analysis):
    name = "generate"
    question = "Generate an erased set from a prompt CSV (official layout: imgs/<case>_<k>.png + prompts.csv)"
    Options = GenerateOptions
    compute = "memtui.engine.compute.generate:run_generate"
    datasets = ()
    switch = "--generate"
    sets = ("generated",)
    record_keys = RECORD_BASE + ("case_number", "k", "seed", "guidance", "guidance_from", "noise_draw", "height",
                                 "width", "sampler", "steps", "image", "seconds")
    summary_keys = ("analysis", "status", "complete", "format_version", "errors", "prompts", "n_rows", "n_items",
                    "n_ok", "n_errors", "sets", "sampler", "steps", "images_per_prompt", "default_guidance",
                    "guidance_source", "noise_draw", "size", "device", "precision", "layout", "timing")

    @classmethod
    def fold_flags(cls, data: dict[str, Any], given: Mapping[str, Any]) -> None:
        """``--steps`` is the sampler's step count here (``options.steps``); ``--prompts`` is made
        absolute so the run resumes from any working directory."""
        opts = dict(data.get("options") or {})
        if "steps" in given and "steps" in data:
            opts["steps"] = data.pop("steps")
        if isinstance(opts.get("prompts"), str) and "prompts" in given:
            opts["prompts"] = str(Path(opts["prompts"]).expanduser().resolve())
        if opts:
            data["options"] = opts

    @classmethod
    def problems(cls, spec: Any) -> list[str]:
        out = super().problems(spec)
        o = spec.options if isinstance(spec.options, dict) else {}
        prompts = o.get("prompts")
        if not prompts:
            out.append("options.prompts is required: the prompt CSV (--prompts FILE.csv)")
        elif isinstance(prompts, str) and not Path(os.path.expanduser(prompts)).is_file():
            out.append(f"prompt file not found: {prompts}")
        return out

    @classmethod
    def headline(cls, summary: Mapping[str, Any]) -> str:
        if "n_ok" not in summary:
            return "-"
        return f"{summary.get('n_ok', 0)}/{summary.get('n_items', 0)} images"

    @classmethod
    def table(cls, summary: Mapping[str, Any], run_dir: Any) -> Table:
        t = Table(title=f"generate · {summary.get('sampler')} · {run_dir}", columns=[])
        t.notes.append(f"generated {summary.get('n_ok', 0)}/{summary.get('n_items', 0)} images into {run_dir}/imgs "
                       f"({summary.get('sampler')}, {summary.get('steps')} steps, guidance "
                       f"{summary.get('guidance_source') or 'row'}); "
                       f"{summary.get('n_errors', 0)} error(s)")
        t.notes += [f"  {e.get('item_id')}: {e.get('error')}" for e in (summary.get("errors") or [])[:10]]
        t.notes += detection_lines(summary)
        return t
