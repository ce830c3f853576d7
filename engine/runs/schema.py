"""The run directory's schema version. A run directory written before versioning (no
``format_version`` in summary.json or the ``started`` event) is version 1; its files still open and
resume. Version 2 adds ``format_version`` to summary.json and to ``started``/``resumed`` events.
Version 3: records add ``psnr_seed_only``, ``seed_dim`` (and ``nll_parts``, ``seed_only`` for
methods with more than ``z_T``); ``nll`` is the joint NLL of all seed parts; spec.json and
summary.json add ``method_seed``; a memories summary's ``cv`` is over the radii (memory → target
seed), the pairwise one is ``cv_pairwise`` (in versions 1–2 ``cv`` was the pairwise one).
Version 4: sharded sessions (``shards/shard-<i>-of-<K>/`` writer folders; ``shards`` in spec.json,
the ``started`` event and summary.json)."""
from __future__ import annotations

FORMAT_VERSION = 4
LEGACY_FORMAT_VERSION = 1
