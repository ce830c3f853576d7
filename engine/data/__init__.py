"""Inputs: image loading and preprocessing, dataset layouts, patch permutations."""
