"""Diffusion sampling: the DDIM step and sampler, classifier-free guidance, seeded noise and the
diffusers samplers by name."""
