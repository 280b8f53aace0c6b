"""First Order Motion Model (Siarohin et al., NeurIPS 2019), vox-256, our implementation.

Modules: ``model`` (keypoint detector, dense motion network, occlusion-aware generator;
state-dict compatible with upstream's ``vox-cpk.pth.tar``) and ``adapter`` (the ``fomm``
method: ``load_fomm``, ``normalize_kp``, ``FOMMMethod``). Importing this package imports
nothing else.
"""
