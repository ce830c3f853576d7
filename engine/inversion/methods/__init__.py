"""The inversion methods, one module each (found by :mod:`memtui.engine.inversion.registry` with
``pkgutil``; adding a method is adding a module here). Each module is torch-free at import: it
declares its options dataclass and its :class:`~memtui.engine.inversion.base.InversionMethod`, and
imports its numerics inside ``invert``.

- ``ddim``    — plain DDIM inversion (conditional, no CFG)
- ``renoise`` — ReNoise as configured by the official code (the default)
- ``nti``     — null-text inversion, paper or official mode
"""
