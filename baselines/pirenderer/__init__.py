"""PIRenderer (Ren et al., ICCV 2021), vox-256 ``face`` configuration, our implementation.

Modules: ``model`` (mapping, warping and editing networks; state-dict compatible with the
``net_G_ema`` entry of upstream's ``epoch_00190_iteration_000400000_checkpoint.pt``;
``load_pirenderer``, ``to_input``, ``to_uint8``) and ``descriptor`` (the 73-d driving
descriptor over upstream's 27-frame window, ``find_crop_norm_ratio`` for cross-id).
Importing this package imports nothing else.
"""
