"""Hybrid-latent one-shot re-enactment (Oorloff & Yacoob, ICCV 2023), our implementation.

Modules: ``config`` (TOML configs ``paper`` / ``tiny``), ``model`` (encoder + StyleGAN2,
Eqs. 1-4), ``tiny_pyramid`` (toy feature network), ``checkpoint`` (save / strict load),
``adapter`` (the ``hybrid*`` methods), ``losses``, ``masks``, ``pairs``, ``cma``, ``pti``
and the training code. Importing this package imports nothing else; see docs/hybrid.md.
"""
