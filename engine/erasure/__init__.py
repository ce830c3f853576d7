"""Concept erasure methods used to build erased models (ESD)."""
