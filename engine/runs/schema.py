"""The run directory's schema version. A run directory written before versioning (no
``format_version`` in summary.json or the ``started`` event) is version 1; its files still open and
resume. Version 2 adds ``format_version`` to summary.json and to ``started``/``resumed`` events."""
from __future__ import annotations

FORMAT_VERSION = 2
LEGACY_FORMAT_VERSION = 1
