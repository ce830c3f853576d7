"""The computations behind each analysis (concept, memories, scramble, generate, prompt test) and
the detectors pass over a finished run."""
