"""Few-shot vid2vid's generator (Wang et al., NeurIPS 2019), inference only, for NVIDIA
imaginaire's face model (``configs/projects/fs_vid2vid/face_forensics/ampO1.yaml``).

State-dict compatible with NVlabs/imaginaire at commit
c6f74845c699c58975fd12b778c375b72eb00e8d (NVIDIA Source Code License-NC): module names,
parameter shapes and inference math follow ``imaginaire/generators/fs_vid2vid.py``
(``Generator``, ``WeightGenerator``, ``WeightReshaper``) with the face config, so the
averaged (EMA) copy ``module.averaged_model.*`` of the released checkpoint's ``net_G``
loads with ``strict=True``. The code is ours; building blocks are in :mod:`.layers`.

Face config: 512x512, label maps of **1 channel** (dlib-68 landmarks drawn as edges,
``landmarks-dlib68`` with ``num_channels: 1``; the image is not concatenated to the label),
images ``(B,3,H,W)`` in ``[-1, 1]``, one reference frame (``initial_few_shot_K: 1``: upstream
builds no attention module, so only ``K == 1`` is supported) and ``num_frames_G: 2``, i.e.
**one** previous frame: ``prev_labels (B,1,1,H,W)`` = the previous driving label and
``prev_images (B,1,3,H,W)`` = the previous *generated* frame (upstream's ``get_data_t`` /
``concat_frames``; see :func:`.layers.concat_frames`). On the first frame both are ``None``.

Upstream's quirks, kept: the reference encoder of the weight generator uses 1x1 convs (the
SPADE kernel size overwrites the hyper kernel size before the blocks are built), and its
"up" convs do not upsample (all at H/32); ``flow_network_temp`` *is* ``flow_network_ref``
(one shared module, stored under both names); the raw (unwarped) output is not generated
(``generate_raw_output: False``), so ``fake_raw_images`` is ``None``.

State between calls (upstream's eval-mode behaviour): the hyper weights generated from the
reference (SPADE 1x1 convs of the 4 finest decoder blocks and the label embedder's 4 finest
decoder convs) are computed on the first frame (``prev_labels is None``) and reused for
later frames, even if another reference is passed; call :meth:`Generator.reset` at the start
of every sequence. Upstream crashes when a non-first frame comes without stored weights; here
they are then computed from the given reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, state_dict_problems

from .layers import (
    ConvBlock,
    FlowGenerator,
    LabelEmbedder,
    LinearBlock,
    ResBlock,
    concat_frames,
    fold_spectral_norm,
    resample,
)

__all__ = [
    "FACE",
    "PREFIX",
    "Generator",
    "WeightGenerator",
    "concat_frames",
    "load_fsvid2vid",
    "spectral_norm_layers",
]

#: the face config's numbers (``gen:`` and ``data:`` of ampO1.yaml, resolved).
FACE: dict[str, int] = dict(
    label_channels=1,  # landmarks-dlib68, num_channels 1
    image_channels=3,
    num_filters=32,
    max_filters=1024,
    num_downsamples=5,  # 512 -> 16
    num_hyper_layers=4,
    num_fc_layers=2,
    num_multi_spade_layers=2,
    flow_downsamples=3,
    flow_blocks=6,
    flow_multiplier=20,
    num_frames_G=2,  # current + 1 previous
    size=512,
)

#: where the EMA generator lives in the checkpoint's ``net_G`` (ModelAverage under DDP).
PREFIX = "module.averaged_model."


def _reshape_weight(x: Tensor, shape: list[int]) -> list[Tensor]:
    """Upstream's ``WeightReshaper.reshape_weight``: ``x (B, N)`` -> ``[weight (B, *shape),
    bias (B, shape[0])]`` with the bias the last ``shape[0]`` entries."""
    n = shape[0]
    return [x[:, :-n].reshape([x.shape[0], *shape]), x[:, -n:]]


class WeightGenerator(nn.Module):
    """Encodes the reference image/label and generates the hyper weights; embeds the
    target label (upstream's ``WeightGenerator`` with ``method_to_use_ref_labels: mul``)."""

    def __init__(self, cfg: Mapping[str, int]) -> None:
        super().__init__()
        nf, nd = cfg["num_filters"], cfg["num_downsamples"]
        self.n, self.num_hyper_layers = nd, cfg["num_hyper_layers"]
        self.ch = ch = [min(cfg["max_filters"], nf * 2**i) for i in range(nd + 2)]

        def conv(a: int, b: int, stride: int = 1) -> ConvBlock:  # 1x1, see module docstring
            return ConvBlock(a, b, 1, stride, 0, norm="instance", act="leakyrelu", sn=True)

        self.ref_img_first = conv(cfg["image_channels"], nf)
        self.ref_label_first = conv(cfg["label_channels"], nf)
        for i in range(nd):
            setattr(self, f"ref_img_down_{i}", conv(ch[i], ch[i + 1], 2))
            setattr(self, f"ref_img_up_{i}", conv(ch[i + 1], ch[i]))
            setattr(self, f"ref_label_down_{i}", conv(ch[i], ch[i + 1], 2))
            setattr(self, f"ref_label_up_{i}", conv(ch[i + 1], ch[i]))
        for i in range(self.num_hyper_layers):
            cin, cout = ch[i], ch[i + 1]
            outs = {  # SPADE kernel 1: (in * 1 + 1) per row, x2 for gamma and beta
                "fc_spade_0": (cin + 1) * 2,
                "fc_spade_1": (cin + 1) * (1 if cin != cout else 2),
                "fc_spade_s": (cin + 1) * 2,
                "fc_spade_e": cin * 9 + 1,  # label embedder's 3x3 decoder conv
            }
            for name, n_out in outs.items():
                fcs = [LinearBlock(cout, cout, "leakyrelu")]
                fcs += [
                    LinearBlock(cout, cout, "leakyrelu") for _ in range(1, cfg["num_fc_layers"])
                ]
                fcs += [LinearBlock(cout, n_out)]
                setattr(self, f"{name}_{i}", nn.Sequential(*fcs))
        self.label_embedding = LabelEmbedder(
            cfg["label_channels"], False, nf, nd, self.num_hyper_layers, cfg["max_filters"]
        )
        self.reset()

    def reset(self) -> None:
        """Forget the hyper weights of the last sequence."""
        self.embedding_weights: list | None = None
        self.norm_weights: list | None = None

    def encode_reference(self, ref_image: Tensor, ref_label: Tensor) -> tuple[Tensor, list]:
        """-> ``(x (B, 1024, H/32, W/32), [per-scale (B, C, C, 1) features, coarse first...])``
        as upstream: image and label streams, channel-softmaxed label, summed products."""
        x = self.ref_img_first(ref_image)
        x_label = self.ref_label_first(ref_label)
        for i in range(self.n):
            x = getattr(self, f"ref_img_down_{i}")(x)
            x_label = getattr(self, f"ref_label_down_{i}")(x_label)
        imgs, labels = [x], [x_label]
        for i in reversed(range(self.n)):
            imgs.append(getattr(self, f"ref_img_up_{i}")(imgs[-1]))
            labels.append(getattr(self, f"ref_label_up_{i}")(labels[-1]))
        encoded = []
        for conv, conv_label in zip(imgs, labels, strict=True):
            b, c, h, w = conv.shape
            conv_label = F.softmax(conv_label, dim=1)
            prod = conv.view(b, c, 1, h * w) * conv_label.view(b, 1, c, h * w)
            encoded.append(prod.sum(3, keepdim=True))
        return x, encoded[::-1]

    def norm_weights_at(self, feat: Tensor, i: int) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Layer ``i``: ``(embedding conv [w, b], [SPADE conv_0, conv_1, shortcut] [w, b])``."""
        cin, cout = self.ch[i], self.ch[i + 1]
        b = feat.shape[0]
        x = feat.reshape(b * feat.shape[1], -1)
        fc_e = getattr(self, f"fc_spade_e_{i}")(x).reshape(b, -1)[:, :-cin]
        embedding = _reshape_weight(fc_e, [cin, cout, 3, 3])
        norms = [
            _reshape_weight(
                getattr(self, f"fc_spade_{s}_{i}")(x).reshape(b, -1), [c * 2, cin, 1, 1]
            )
            for s, c in (("0", cout), ("1", cin), ("s", cout))
        ]
        return embedding, norms

    def forward(
        self, ref_image: Tensor, ref_label: Tensor, label: Tensor, is_first_frame: bool
    ) -> tuple[Tensor, list[Tensor], list]:
        """-> ``(x, encoded label per scale (finest first), SPADE hyper weights per layer)``."""
        x, encoded_ref = self.encode_reference(ref_image, ref_label)
        if self.training or is_first_frame or self.norm_weights is None:
            embedding, norms = [], []
            for i in range(self.num_hyper_layers):
                e, n = self.norm_weights_at(encoded_ref[min(len(encoded_ref) - 1, i + 1)], i)
                embedding.append(e)
                norms.append(n)
            if not self.training:
                self.embedding_weights, self.norm_weights = embedding, norms
        else:
            embedding, norms = self.embedding_weights, self.norm_weights
        return x, self.label_embedding(label, embedding), norms


class Generator(nn.Module):
    """Imaginaire's few-shot vid2vid ``Generator`` (face config), eval-mode inference.

    One step: ``forward(label, ref_labels, ref_images, prev_labels, prev_images)`` with
    ``label (B,1,H,W)`` in {0,1}, ``ref_labels (B,1,1,H,W)``, ``ref_images (B,1,3,H,W)`` in
    ``[-1, 1]`` and ``prev_labels (B,1,1,H,W)`` / ``prev_images (B,1,3,H,W)`` (``None`` on the
    first frame; the previous *label* and the previous *output*). Returns upstream's dict:
    ``fake_images (B,3,H,W)`` in ``[-1, 1]``, ``fake_flow_maps`` / ``fake_occlusion_masks`` /
    ``warped_images`` as ``[reference, previous]`` lists (``None`` where not computed),
    ``fake_raw_images``, ``attention_visualization``, ``ref_idx`` (``None``). Call
    :meth:`reset` before each sequence (see the module docstring)."""

    def __init__(self, cfg: Mapping[str, int] = FACE) -> None:
        super().__init__()
        self.cfg = dict(cfg)
        nf, nd = cfg["num_filters"], cfg["num_downsamples"]
        self.n, self.num_hyper_layers = nd, cfg["num_hyper_layers"]
        self.num_multi_spade_layers = cfg["num_multi_spade_layers"]
        self.num_frames_G = cfg["num_frames_G"]
        ch = [min(cfg["max_filters"], nf * 2**i) for i in range(nd + 2)]
        self.weight_generator = WeightGenerator(cfg)
        for i in reversed(range(nd + 1)):
            cond = [ch[i]] * (3 if i < self.num_multi_spade_layers else 1)
            block = ResBlock(ch[i + 1], ch[i], "spade", cond, i < self.num_hyper_layers)
            setattr(self, f"up_{i}", block)
        self.conv_img = ConvBlock(
            nf, cfg["image_channels"], 3, padding=1, order="AC", act="leakyrelu"
        )
        flow_in = cfg["label_channels"] * 2 + cfg["image_channels"]
        self.flow_network_ref = FlowGenerator(
            flow_in, nf, cfg["flow_downsamples"], cfg["flow_blocks"], cfg["flow_multiplier"]
        )
        self.ref_image_embedding = LabelEmbedder(cfg["image_channels"] + 1, True, nf, nd)
        self.flow_network_temp = self.flow_network_ref  # sep_prev_flow False, num_frames_G 2
        self.prev_image_embedding = LabelEmbedder(cfg["image_channels"] + 1, True, nf, nd)

    def reset(self) -> None:
        """Start a new sequence (drop the hyper weights kept from the last first frame)."""
        self.weight_generator.reset()

    def flow_generation(
        self,
        label: Tensor,
        ref_label: Tensor,
        ref_image: Tensor,
        prev_labels: Tensor | None,
        prev_images: Tensor | None,
    ) -> tuple[list, list, list, list]:
        """Flows/masks warping the reference and (when given) the previous output."""
        flow, mask, warp, cond = [None] * 2, [None] * 2, [None] * 2, [None] * 2
        flow[0], mask[0] = self.flow_network_ref(label, ref_label, ref_image)
        warp[0] = resample(ref_image, flow[0])[:, :3]
        cond[0] = torch.cat([warp[0], mask[0]], dim=1)
        if prev_labels is not None and prev_labels.shape[1] == self.num_frames_G - 1:
            b, _, _, h, w = prev_labels.shape
            flow[1], mask[1] = self.flow_network_temp(
                label, prev_labels.reshape(b, -1, h, w), prev_images.reshape(b, -1, h, w)
            )
            warp[1] = resample(prev_images[:, -1], flow[1])
            cond[1] = torch.cat([warp[1], mask[1]], dim=1)
        return flow, mask, warp, cond

    def forward(
        self,
        label: Tensor,
        ref_labels: Tensor,
        ref_images: Tensor,
        prev_labels: Tensor | None = None,
        prev_images: Tensor | None = None,
    ) -> dict[str, object]:
        if ref_images.shape[1] != 1 or ref_labels.shape[1] != 1:
            raise ValueError(
                f"the face model takes K=1 reference frame, got {tuple(ref_images.shape)}"
            )
        ref_image, ref_label = ref_images[:, 0], ref_labels[:, 0]
        x, encoded_label, norm_weights = self.weight_generator(
            ref_image, ref_label, label, prev_labels is None
        )
        flow, mask, warp, cond = self.flow_generation(
            label, ref_label, ref_image, prev_labels, prev_images
        )
        embedded = [
            None if cond[0] is None else self.ref_image_embedding(cond[0]),
            None if cond[1] is None else self.prev_image_embedding(cond[1]),
        ]
        conds: list[list[Tensor | None]] = [[e] for e in encoded_label]
        for i in range(self.num_multi_spade_layers):
            conds[i] += [None if e is None else e[i] for e in embedded]
        for i in range(self.n, -1, -1):
            nw = norm_weights[i] if i < self.num_hyper_layers else (None, None, None)
            x = getattr(self, f"up_{i}")(x, conds[i], nw)
            if i != 0:
                x = F.interpolate(x, scale_factor=2)
        return {
            "fake_images": torch.tanh(self.conv_img(x)),
            "fake_flow_maps": flow,
            "fake_occlusion_masks": mask,
            "fake_raw_images": None,
            "warped_images": warp,
            "attention_visualization": None,
            "ref_idx": None,
        }


def spectral_norm_layers(net: nn.Module) -> list[str]:
    """Names of the layers upstream wraps in spectral norm (their trained-copy weights are
    ``weight_orig``/``weight_u``/``weight_v``), in ``state_dict`` order, shared ones under
    every name."""
    names = []
    for key in net.state_dict():
        if key.endswith(".layers.conv.weight"):
            block = net.get_submodule(key[: -len(".layers.conv.weight")])
            if getattr(block, "sn", False):
                names.append(key[: -len(".weight")])
    return names


def load_fsvid2vid(path: Path | str, device: str | torch.device = "cpu") -> Generator:
    """The EMA generator (``net_G`` entries under ``module.averaged_model.``) of an imaginaire
    fs_vid2vid face checkpoint, strict, eval mode, on ``device``. Averaged weights that still
    carry spectral norm (``weight_orig``/``_u``/``_v``, ``remove_sn=False``) are folded as
    torch does in eval mode.

    Raises:
        InputError: unreadable file, no ``net_G`` or no averaged model, or a key/shape
            mismatch (one line naming the file).
    """
    path = Path(path)
    ckpt = safe_load(path, "fs-vid2vid face checkpoint (imaginaire fs_vid2vid face_forensics)")
    net_g = ckpt.get("net_G") if isinstance(ckpt, Mapping) else None
    if not isinstance(net_g, Mapping):
        keys = sorted(map(str, ckpt)) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise InputError(
            f"{path}: not an imaginaire fs_vid2vid checkpoint (needs 'net_G', has {keys})"
        )
    state = {k[len(PREFIX) :]: v for k, v in net_g.items() if k.startswith(PREFIX)}
    if not state:
        raise InputError(
            f"{path}: 'net_G' holds no averaged generator ('{PREFIX}*' keys); the model was "
            "trained without model averaging, which the released face model has"
        )
    state = fold_spectral_norm(state)
    net = Generator(FACE)
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        raise InputError(
            f"{path}: 'net_G' averaged model does not match fs_vid2vid's face generator "
            f"({'; '.join(problems)})"
        )
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False).to(device)
