"""``python -m memtui``: same as the ``memtui`` command (the console launches runs this way)."""
import sys

from memtui.cli import main

sys.exit(main())
