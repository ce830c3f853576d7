"""The console's screens: browse, new run, run, compare, memories, help, settings, inspect."""
