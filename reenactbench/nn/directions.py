"""Latent edit directions: InterFaceGAN boundaries, GANSpace components, StyleSpace channels.

Pure tensor functions; no network is needed. File formats read (no pickles are loaded):

- **InterFaceGAN** (genforce/interfacegan at 8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb,
  ``utils/manipulator.py`` ``train_boundary`` writes ``(1, 512)`` float32; MIT):
  ``.npy`` float array, the unit normal of a linear boundary. ``(512,)`` or ``(1, 512)`` is a
  W (or Z) direction; ``(L, 512)`` or ``(1, L, 512)`` with ``L > 1`` is a W+ direction
  (one row per W+ layer, e.g. ``L = 18`` at 1024^2). Strength is a distance along that
  vector in latent units (InterFaceGAN's ``start_distance``/``end_distance``, typically -3..3).
- **GANSpace** (harskish/ganspace at 5a704c488ce9bd36d892c34ff78e4986f2850758,
  ``decomposition.py``; Apache-2.0): ``.npz`` with ``lat_comp`` ``(n, 1, 512)`` unit-norm
  principal directions in W, ``lat_mean`` ``(1, 512)`` and ``lat_stdev`` ``(n,)`` (the std of
  W samples projected on each component). GANSpace edits ``w + sigma * lat_stdev[i] *
  lat_comp[i]`` on W+ layers ``[start, end)``; :func:`load_ganspace` bakes ``lat_stdev[i]`` into
  the vector, so strength is in standard deviations (``sigma``).
- **StyleSpace** (Wu et al. 2021): single-channel edits ``(layer, channel, strength)`` on the
  list of style vectors in forward order (``reenactbench.nn.stylespace``: conv and toRGB
  layers interleaved, 26 layers at 1024^2; the paper's ``"6_501"`` notation is
  ``layer_channel`` in this order). With ``stds`` (the per-channel std of s over sampled
  w), strength is in standard deviations, otherwise in raw style units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from reenactbench.errors import InputError

__all__ = [
    "Direction",
    "StyleEdit",
    "load_interfacegan",
    "load_ganspace",
    "load_direction",
    "apply_direction",
    "apply_style_edits",
    "parse_style_edit",
]

Space = Literal["w", "w+"]


@dataclass(frozen=True)
class Direction:
    """One latent edit direction.

    Attributes:
        vector: ``(D,)`` float32 for ``space == "w"`` (added to every selected W+ row), or
            ``(L, D)`` float32 for ``space == "w+"`` (one row per W+ layer).
        space: ``"w"`` or ``"w+"``.
        name: label, e.g. the file stem or ``"ganspace:3"``.
        layers: default W+ rows ``[start, end)`` the edit applies to; ``None`` = all.
    """

    vector: Tensor
    space: Space
    name: str
    layers: tuple[int, int] | None = None


@dataclass(frozen=True)
class StyleEdit:
    """Add ``strength`` (x std when stds are given) to channel ``channel`` of style ``layer``."""

    layer: int
    channel: int
    strength: float


def load_interfacegan(path: Path, name: str | None = None) -> Direction:
    """Read an InterFaceGAN boundary ``.npy`` (see module docstring for shapes).

    Raises:
        InputError: unreadable file, object array, or a shape that is neither W nor W+.
    """
    path = Path(path)
    arr = _read_npy(path)
    a = arr[0] if arr.ndim == 3 and arr.shape[0] == 1 else arr
    if a.ndim == 1 or (a.ndim == 2 and a.shape[0] == 1):
        vec, space = a.reshape(-1), "w"
    elif a.ndim == 2:
        vec, space = a, "w+"
    else:
        raise InputError(
            f"{path}: boundary shape {arr.shape} is not (D,), (1, D), (L, D) or (1, L, D)"
        )
    return Direction(_tensor(vec, path), space, name or path.stem)  # type: ignore[arg-type]


def load_ganspace(
    path: Path,
    component: int,
    layers: tuple[int, int] | None = None,
    use_stdev: bool = True,
    name: str | None = None,
) -> Direction:
    """Read component ``component`` of a GANSpace ``.npz`` as a W direction.

    Args:
        path: ``.npz`` with ``lat_comp`` ``(n, 1, D)`` or ``(n, D)`` and ``lat_stdev`` ``(n,)``.
        component: index into the components, 0 = largest variance.
        layers: W+ rows ``[start, end)`` to edit by default (GANSpace's ``layer_start/end``).
        use_stdev: scale by ``lat_stdev[component]`` so that strength is in stds.
        name: label; default ``"{stem}:{component}"``.

    Raises:
        InputError: missing key, bad shapes, component out of range, or bad layer range.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable GANSpace .npz ({e})") from None
    if "lat_comp" not in data:
        raise InputError(f"{path}: no 'lat_comp' array; not a GANSpace component file")
    comp = data["lat_comp"]
    if comp.ndim == 3 and comp.shape[1] == 1:
        comp = comp[:, 0]
    if comp.ndim != 2:
        raise InputError(f"{path}: lat_comp shape {data['lat_comp'].shape} is not (n, 1, D)")
    n = comp.shape[0]
    if not 0 <= component < n:
        raise InputError(f"{path}: component {component} out of range (file has {n})")
    vec = comp[component].astype(np.float64)
    if use_stdev:
        std = data.get("lat_stdev")
        if std is None or std.reshape(-1).shape != (n,):
            raise InputError(f"{path}: lat_stdev missing or not ({n},); pass use_stdev=False")
        vec = vec * float(std.reshape(-1)[component])
    if layers is not None and not 0 <= layers[0] < layers[1]:
        raise InputError(f"{path}: layer range {layers} is not [start, end) with start < end")
    return Direction(_tensor(vec, path), "w", name or f"{path.stem}:{component}", layers)


def load_direction(path: Path, component: int = 0) -> Direction:
    """``.npy`` -> :func:`load_interfacegan`; ``.npz`` -> :func:`load_ganspace` (``component``)."""
    path = Path(path)
    if path.suffix == ".npy":
        return load_interfacegan(path)
    if path.suffix == ".npz":
        return load_ganspace(path, component)
    raise InputError(f"{path}: unknown direction format (use .npy boundaries or GANSpace .npz)")


def apply_direction(
    w_plus: Tensor,
    direction: Direction,
    strength: float | Tensor,
    layers: Sequence[int] | range | None = None,
) -> Tensor:
    """``w_plus + strength * direction`` on the selected W+ rows; a new tensor.

    Args:
        w_plus: ``(B, L, D)`` or ``(L, D)`` float W+ codes.
        direction: a W ``(D,)`` or W+ ``(L, D)`` direction.
        strength: scalar, or ``(B,)`` tensor (one strength per sample; needs batched input).
        layers: W+ rows to edit; ``None`` = ``direction.layers`` or all rows.

    Returns:
        Edited codes, same shape/dtype/device as ``w_plus``; unselected rows are unchanged.

    Raises:
        InputError: mismatched dimensions or rows out of range.
    """
    if w_plus.ndim not in (2, 3):
        raise InputError(f"w_plus must be (B, L, D) or (L, D), got {tuple(w_plus.shape)}")
    n_layers, dim = w_plus.shape[-2:]
    vec = direction.vector.to(w_plus.device, w_plus.dtype)
    if vec.shape[-1] != dim or (direction.space == "w+" and vec.shape[0] != n_layers):
        raise InputError(
            f"direction {direction.name!r} {tuple(vec.shape)} does not fit W+ ({n_layers}, {dim})"
        )
    rows = _rows(layers, direction.layers, n_layers)
    mask = torch.zeros(n_layers, 1, dtype=w_plus.dtype, device=w_plus.device)
    mask[rows] = 1
    delta = mask * (vec if vec.ndim == 2 else vec.expand(n_layers, dim))  # (L, D)
    s = torch.as_tensor(strength, dtype=w_plus.dtype, device=w_plus.device)
    if s.ndim == 1:
        if w_plus.ndim != 3 or s.shape[0] != w_plus.shape[0]:
            raise InputError(f"strength {tuple(s.shape)} needs w_plus (B, L, D) with B = {len(s)}")
        s = s.view(-1, 1, 1)
    elif s.ndim != 0:
        raise InputError(f"strength must be a scalar or (B,), got {tuple(s.shape)}")
    return w_plus + s * delta


def apply_style_edits(
    styles: Sequence[Tensor],
    edits: Sequence[StyleEdit],
    stds: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """Add single-channel StyleSpace edits; returns a new list (edited layers are copies).

    Args:
        styles: per-layer style vectors ``(B, C_k)`` in forward order.
        edits: edits to add (several on one channel add up).
        stds: per-layer ``(C_k,)`` channel stds; when given, strength is in stds.

    Returns:
        ``list[Tensor]``: same shapes; layers without edits are the input tensors themselves.

    Raises:
        InputError: layer or channel out of range, or ``stds`` not matching ``styles``.
    """
    out = list(styles)
    if stds is not None and len(stds) != len(styles):
        raise InputError(f"stds has {len(stds)} layers, styles has {len(styles)}")
    copied: set[int] = set()
    for e in edits:
        if not 0 <= e.layer < len(out):
            raise InputError(f"style edit layer {e.layer} out of range (0..{len(out) - 1})")
        n_ch = out[e.layer].shape[-1]
        if not 0 <= e.channel < n_ch:
            raise InputError(f"style edit channel {e.channel} out of range for layer {e.layer} "
                             f"({n_ch} channels)")  # fmt: skip
        if e.layer not in copied:
            out[e.layer] = out[e.layer].clone()
            copied.add(e.layer)
        step = torch.as_tensor(e.strength, dtype=out[e.layer].dtype, device=out[e.layer].device)
        if stds is not None:
            std = stds[e.layer]
            if std.shape != (n_ch,):
                raise InputError(f"stds[{e.layer}] is {tuple(std.shape)}, expected ({n_ch},)")
            step = step * std[e.channel].to(step)
        out[e.layer][..., e.channel] += step
    return out


def parse_style_edit(text: str) -> StyleEdit:
    """``"LAYER_CHANNEL:STRENGTH"`` (StyleSpace notation, e.g. ``"6_501:-3"``) -> StyleEdit."""
    try:
        where, strength = text.split(":")
        layer, channel = where.split("_")
        return StyleEdit(int(layer), int(channel), float(strength))
    except ValueError:
        raise InputError(
            f"style edit {text!r} is not LAYER_CHANNEL:STRENGTH, e.g. 6_501:-3"
        ) from None


def _rows(
    layers: Sequence[int] | range | None, default: tuple[int, int] | None, n: int
) -> list[int]:
    if layers is None:
        layers = range(n) if default is None else range(*default)
    rows = list(layers)
    bad = [r for r in rows if not 0 <= r < n]
    if bad:
        raise InputError(f"W+ rows {bad} out of range (0..{n - 1})")
    return rows


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npy boundary ({e})") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{path}: expected a float array")
    return arr


def _tensor(a: np.ndarray, path: Path) -> Tensor:
    if not np.isfinite(a).all():
        raise InputError(f"{path}: direction contains NaN or inf")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
