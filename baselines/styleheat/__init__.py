"""StyleHEAT (Yin et al., ECCV 2022) on the shared StyleGAN2."""
