"""Foundations every layer uses: atomic file I/O, devices and out-of-memory handling, tensor
conversions, and the option declarations of methods and analyses."""
