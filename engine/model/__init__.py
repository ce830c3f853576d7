"""The model: the SD 1.x pipeline wrapper, its DDIM schedule, tokenizers and checkpoint loading."""
