"""The exit codes of ``memtui`` (``--batch``), in one place for the CLI, the batch runner and the
console."""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit codes (--batch):
  0    finished (some items may be in error; see summary.json "errors")
  1    failed (an unexpected error; see events.jsonl), or finished with every item in error
  2    usage or configuration error: bad flag or path, invalid spec, unreadable dataset folder,
       model or checkpoint not loadable, spec differs from the run directory's (use --restart)
  3    another live process is running this run directory
  130  interrupted (Ctrl-C / SIGTERM): the run directory is resumable; rerun the same command

Running the same command again on an existing run directory resumes it: finished items are skipped.
The run directory format is documented in docs/run-format.md.
"""

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_LOCKED", "EXIT_INTERRUPTED", "EXIT_CODES_HELP"]
