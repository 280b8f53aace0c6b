"""Convert NVIDIA's official StyleGAN2 network pickles to rosinality's checkpoint layout.

Source: the ``G_ema`` generator of NVlabs/stylegan2-ada-pytorch (commit
d72cc7d041b42ec8e806021a205ed9349f87c6a4, ``training/networks.py``) or of NVlabs/stylegan3's
StyleGAN2 config (commit c233a919a6faee6e36a316ddd4eddababad1adf9,
``training/networks_stylegan2.py``; same parameter names), both under the NVIDIA Source
Code License (non-commercial). Target: rosinality/stylegan2-pytorch (commit
bef283a1c24087da704d16c30abc8e36e63efa0e, ``model.py`` ``Generator``; MIT), i.e. a torch
file ``{"g_ema": state_dict, "latent_avg": (style_dim,) float32}`` as
``stylegan2-ffhq-config-f.pt``. The code here is ours; only names and shapes follow upstream.

Safety: a network pickle is a pickle of Python objects whose classes carry their own source
code (``torch_utils.persistence``); NVIDIA's loader ``exec``s that code. We never do:
:class:`_SafeUnpickler` resolves only an allow-list of globals (tensor/storage rebuild
functions, ``collections.OrderedDict``, ``builtins.set``, numpy scalars/arrays/dtypes) and
replaces ``torch_utils.persistence._reconstruct_persistent_obj`` and ``dnnlib.EasyDict`` with
inert stand-ins that keep the pickled ``_parameters`` / ``_buffers`` / ``_modules`` dicts (the
``module_src`` string is dropped unread). Storages inside the pickle are read with
``torch.load(weights_only=True)``. Any other global (``os.system``, ``builtins.eval``, a
``torch.nn`` class, ...) raises :class:`~reenactbench.errors.InputError`.

Conversion rules (NVIDIA ``G_ema`` key -> rosinality key; ``k = log2(res) - 3``)::

    mapping.fc{i}.weight (w, w)          -> style.{i+1}.weight       copied
    mapping.fc{i}.bias   (w,)            -> style.{i+1}.bias         copied
    mapping.w_avg        (w,)            -> latent_avg (top level)   copied
    synthesis.b4.const   (C, 4, 4)       -> input.input (1, C, 4, 4)  unsqueeze(0)
    synthesis.b4.conv1.*                 -> conv1.*
    synthesis.b4.torgb.*                 -> to_rgb1.*
    synthesis.b{res}.conv0.* / conv1.*   -> convs.{2k}.* / convs.{2k+1}.*
    synthesis.b{res}.torgb.*             -> to_rgbs.{k}.*
    conv  .weight (O, I, 3, 3)           -> .conv.weight (1, O, I, 3, 3)  unsqueeze(0), no flip
    conv  .affine.weight (I, w)          -> .conv.modulation.weight       copied
    conv  .affine.bias (I,)              -> .conv.modulation.bias         copied, no +1
    conv  .noise_strength ()             -> .noise.weight (1,)            reshape
    conv  .bias (O,)                     -> .activate.bias (O,)           copied
    conv  .noise_const (r, r)            -> noises.noise_{j} (1, 1, r, r) reshape; j = 0 for
                                            b4.conv1, 2k+1 for conv0, 2k+2 for conv1
    torgb .weight (3, I, 1, 1)           -> .conv.weight (1, 3, I, 1, 1)  unsqueeze(0)
    torgb .affine.weight / .affine.bias  -> .conv.modulation.weight / .bias  copied
    torgb .bias (3,)                     -> .bias (1, 3, 1, 1)            reshape
    *.resample_filter (4, 4)             -> checked == [1,3,3,1] filter; rosinality's
                                            conv.blur.kernel / upsample.kernel buffers are
                                            written as that filter x 4 (up-sampling gain)

Why values are copied unchanged (each checked against both codes and by a numeric run of
both networks, see docs/stylegan2.md): both implementations store raw weights and apply the
equalised-learning-rate gains at run time. Mapping layers: NVIDIA ``weight_gain = lr/sqrt(in)``,
``bias_gain = lr``; rosinality ``scale = lr/sqrt(in)``, ``bias * lr_mul``, with lr = 0.01 in
both. Affines: gain ``1/sqrt(w)``, bias stored already initialised to 1 in both (the ``+1`` in
rosinality's ``convert_weight.py`` is for TensorFlow, which added 1 at run time). Up-sampling
convs: NVIDIA's ``conv2d_resample`` with ``flip_weight=False`` and ``up=2`` runs
``conv_transpose2d`` on the unflipped weight, as rosinality does (the TF converter's flip is
TF-specific). 3x3 conv weights: NVIDIA applies no gain (demodulation cancels it) while
rosinality multiplies by ``1/sqrt(I*9)`` before demodulating, so the only difference is where
demodulation's ``eps = 1e-8`` sits (relative effect ~1e-8). ToRGB: NVIDIA scales the styles
by ``1/sqrt(I)``, rosinality the weight: same product.

Not representable (refused with an error): conditional networks (``mapping.embed``), z_dim !=
w_dim, ``resnet``/``orig`` synthesis architectures, networks without noise inputs, channel
layouts other than rosinality's (``min(channel_base / res, 512)`` must equal 512 up to 32 px
and ``256 * m * 64 / res`` above), StyleGAN3 ``T``/``R`` generators, TensorFlow pickles.
Ignored at conversion: ``conv_clamp`` (run-time clamp to +-256 in NVIDIA's training configs;
rosinality has none) and ``num_fp16_res`` (NVIDIA runs the top blocks in fp16 on CUDA).
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reenactbench.errors import InputError
from reenactbench.nn.loading import safe_load, save_atomic

__all__ = [
    "rosinality_generator_shapes",
    "rosinality_channels",
    "infer_rosinality_config",
    "read_nvidia_generator",
    "convert_nvidia_state_dict",
    "convert_nvidia_pickle",
    "RESAMPLE_FILTER",
]

#: NVIDIA's ``upfirdn2d.setup_filter([1, 3, 3, 1])``: outer product normalised to sum 1, (4, 4).
RESAMPLE_FILTER: Tensor = (
    torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64
)


def rosinality_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """Feature channels per resolution of rosinality's ``Generator`` (4 .. ``size``)."""
    log = _log2(size, "size")
    return {
        2**i: 512 if 2**i <= 32 else 256 * channel_multiplier * 64 // 2**i
        for i in range(2, log + 1)
    }


def rosinality_generator_shapes(
    size: int, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2
) -> dict[str, tuple[int, ...]]:
    """Every key and shape of rosinality's ``Generator(size, style_dim, n_mlp, m).state_dict()``.

    In state-dict order (parameters and buffers, including the blur/upsample ``kernel``
    buffers and the ``noises.noise_{i}`` buffers).

    Args:
        size: output resolution, a power of two >= 4.
        style_dim: width of z, w and the mapping layers.
        n_mlp: number of mapping layers.
        channel_multiplier: rosinality's ``channel_multiplier`` (config-f: 2).

    Returns:
        ``{key: shape}``.
    """
    ch = rosinality_channels(size, channel_multiplier)
    out: dict[str, tuple[int, ...]] = {}
    for i in range(1, n_mlp + 1):
        out[f"style.{i}.weight"] = (style_dim, style_dim)
        out[f"style.{i}.bias"] = (style_dim,)
    out["input.input"] = (1, ch[4], 4, 4)

    def styled(name: str, cin: int, cout: int, up: bool) -> None:
        out[f"{name}.conv.weight"] = (1, cout, cin, 3, 3)
        if up:
            out[f"{name}.conv.blur.kernel"] = (4, 4)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)
        out[f"{name}.noise.weight"] = (1,)
        out[f"{name}.activate.bias"] = (cout,)

    def torgb(name: str, cin: int, up: bool) -> None:
        out[f"{name}.bias"] = (1, 3, 1, 1)
        if up:
            out[f"{name}.upsample.kernel"] = (4, 4)
        out[f"{name}.conv.weight"] = (1, 3, cin, 1, 1)
        out[f"{name}.conv.modulation.weight"] = (cin, style_dim)
        out[f"{name}.conv.modulation.bias"] = (cin,)

    styled("conv1", ch[4], ch[4], up=False)
    torgb("to_rgb1", ch[4], up=False)
    res = sorted(ch)[1:]
    for k, r in enumerate(res):
        styled(f"convs.{2 * k}", ch[r // 2], ch[r], up=True)
        styled(f"convs.{2 * k + 1}", ch[r], ch[r], up=False)
    for k, r in enumerate(res):
        torgb(f"to_rgbs.{k}", ch[r], up=True)
    for j in range(2 * len(res) + 1):
        r = 2 ** ((j + 5) // 2)
        out[f"noises.noise_{j}"] = (1, 1, r, r)
    return out


def infer_rosinality_config(state_dict: Mapping[str, Tensor]) -> tuple[int, int, int, int]:
    """``(size, style_dim, n_mlp, channel_multiplier)`` of a rosinality ``g_ema`` state dict.

    ``channel_multiplier`` is 2 when the network is 32 px or smaller (it changes no shape).

    Raises:
        InputError: when the keys are not a rosinality generator's.
    """
    if "input.input" not in state_dict or "style.1.weight" not in state_dict:
        raise InputError("not a rosinality StyleGAN2 g_ema state dict (no input.input/style.1)")
    n_mlp = sum(1 for k in state_dict if re.fullmatch(r"style\.\d+\.weight", k))
    style_dim = int(state_dict["style.1.weight"].shape[1])
    n_rgb = sum(1 for k in state_dict if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
    size = 4 * 2**n_rgb
    mult = 2
    if size >= 64:
        mult = int(state_dict["convs.6.conv.weight"].shape[1]) // 256
    return size, style_dim, n_mlp, mult


# --------------------------------------------------------------------------- safe unpickling


class _PersistentRecord:
    """Inert stand-in for a ``torch_utils.persistence`` object: class name and pickled state."""

    def __init__(self, class_name: str, state: Mapping[str, Any]) -> None:
        self.class_name = class_name
        self.state = state


class _EasyDict(dict):  # stand-in for dnnlib.EasyDict (a dict subclass)
    pass


def _reconstruct_persistent(meta: Mapping[str, Any]) -> _PersistentRecord:
    # meta: {type, version, module_src, class_name, state}; module_src is never looked at.
    if not isinstance(meta, Mapping) or meta.get("type") != "class":
        raise pickle.UnpicklingError("unexpected torch_utils.persistence record")
    state = meta.get("state") or {}
    if not isinstance(state, Mapping):
        raise pickle.UnpicklingError("persistence record without a state dict")
    return _PersistentRecord(str(meta.get("class_name")), state)


def _load_storage(data: bytes) -> Any:
    # torch pickles each storage as torch.save bytes; read them without executing code.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_parameter(data: Tensor, requires_grad: bool, backward_hooks: Any) -> Tensor:
    return data


def _rebuild_parameter_with_state(
    data: Tensor, requires_grad: bool, backward_hooks: Any, state: Any
) -> Tensor:
    return data


def _numpy_scalar(dtype: np.dtype, data: Any = None) -> Any:
    if not isinstance(data, bytes) or dtype.hasobject:
        raise pickle.UnpicklingError("numpy object scalars are not read")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_core() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 / numpy 1.x
    return core.multiarray


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_core()._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_core()._reconstruct,
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`_ALLOWED` globals; never imports or runs code."""

    def find_class(self, module: str, name: str) -> Any:
        fn = _ALLOWED.get((module, name))
        if fn is None:
            raise _ForbiddenGlobal(module, name)
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported in network pickles")


def _flatten(rec: _PersistentRecord, prefix: str, out: dict[str, Tensor], src: Path) -> None:
    """Module state -> flat ``state_dict``-style keys (parameters, persistent buffers)."""
    state = rec.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    for kind in ("_parameters", "_buffers"):
        for name, value in (state.get(kind) or {}).items():
            if value is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(value, Tensor):
                raise InputError(f"{src}: {prefix}{name} is not a tensor; not a network pickle")
            out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PersistentRecord):
            raise InputError(f"{src}: module {prefix}{name} is not a persistent NVIDIA module")
        _flatten(child, f"{prefix}{name}.", out, src)


def read_nvidia_generator(src: Path) -> dict[str, Tensor]:
    """Read the ``G_ema`` parameters and buffers of an NVIDIA network file, running no code.

    Accepted: a network pickle of stylegan2-ada-pytorch / stylegan3 (a dict with ``G_ema``,
    or a pickled generator itself), or a torch file holding ``{"G_ema": state_dict}`` or the
    state dict itself (export one with ``torch.save({"G_ema": G_ema.state_dict()}, path)``).

    Args:
        src: the file.

    Returns:
        Flat ``{key: tensor}`` as ``G_ema.state_dict()`` would give (float32, CPU).

    Raises:
        InputError: unreadable file, a forbidden global in the pickle, or no ``G_ema``.
    """
    src = Path(src)
    if not src.is_file():
        raise InputError(f"{src}: no such file (give an NVIDIA network .pkl or a state dict .pt)")
    if zipfile.is_zipfile(src):
        return _from_torch_file(src)
    with open(src, "rb") as f:
        try:
            data = _SafeUnpickler(f).load()
        except _ForbiddenGlobal as e:
            if e.module.startswith("dnnlib.tflib"):
                raise InputError(
                    f"{src}: TensorFlow StyleGAN2 pickle; convert it with NVIDIA's "
                    "stylegan2-ada-pytorch legacy.py or rosinality's convert_weight.py first"
                ) from None
            raise InputError(
                f"{src}: refusing to unpickle global {e.module}.{e.name}: only tensors and "
                "NVIDIA persistence records are read, no code is run; export "
                "torch.save({'G_ema': G_ema.state_dict()}, PATH) and convert that"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as e:
            raise InputError(f"{src}: not a readable network pickle ({e})") from None
    if isinstance(data, int):  # legacy (non-zip) torch.save file: first record is a magic number
        return _from_torch_file(src)
    if isinstance(data, Mapping) and "G_ema" in data:
        data = data["G_ema"]
    if not isinstance(data, _PersistentRecord):
        raise InputError(f"{src}: no G_ema network in this pickle (expected NVIDIA's dict)")
    out: dict[str, Tensor] = {}
    _flatten(data, "", out, src)
    return out


def _from_torch_file(src: Path) -> dict[str, Tensor]:
    data = safe_load(src, "torch state dict of a NVIDIA generator")
    if isinstance(data, Mapping) and "G_ema" in data:
        data = data["G_ema"]
    if not isinstance(data, Mapping) or "mapping.w_avg" not in data:
        raise InputError(
            f"{src}: expected {{'G_ema': state_dict}} or a G_ema state dict (mapping.w_avg missing)"
        )
    return {str(k): v for k, v in data.items()}


# --------------------------------------------------------------------------- conversion


def convert_nvidia_state_dict(
    sd: Mapping[str, Tensor], size: int | None = None, source: str = "state dict"
) -> tuple[dict[str, Tensor], Tensor]:
    """Map an NVIDIA ``G_ema`` state dict to rosinality's ``g_ema`` layout (module docstring).

    Every source key must be used and every target key produced; the result's shapes are
    checked against :func:`rosinality_generator_shapes`.

    Args:
        sd: NVIDIA ``G_ema.state_dict()`` (float tensors).
        size: expected output resolution, or ``None`` to take it from the network.
        source: name of the file, for error messages.

    Returns:
        ``(g_ema, latent_avg)``: the state dict in rosinality's key order and ``(w,)`` w_avg.

    Raises:
        InputError: when the network has no rosinality equivalent or keys are missing/extra.
    """
    keys = set(sd)
    if any(k.startswith(("synthesis.input.", "synthesis.L")) for k in keys):
        raise InputError(f"{source}: StyleGAN3 (T/R) generator; only StyleGAN2 networks convert")
    if any(k.startswith("mapping.embed.") for k in keys):
        raise InputError(f"{source}: conditional generator (mapping.embed); not representable")
    for need in ("mapping.w_avg", "mapping.fc0.weight", "synthesis.b4.const"):
        if need not in keys:
            raise InputError(f"{source}: {need} missing; not a StyleGAN2 G_ema state dict")
    used: set[str] = set()

    def take(key: str) -> Tensor:
        if key not in sd:
            raise InputError(f"{source}: {key} missing; not a complete StyleGAN2 G_ema")
        used.add(key)
        return sd[key].detach().to("cpu", torch.float32).clone()

    n_mlp = sum(1 for k in keys if re.fullmatch(r"mapping\.fc\d+\.weight", k))
    w_dim = int(sd["mapping.w_avg"].shape[0])
    if tuple(sd["mapping.fc0.weight"].shape) != (w_dim, w_dim):
        raise InputError(f"{source}: z_dim differs from w_dim; rosinality needs them equal")
    resolutions = sorted(
        int(m.group(1)) for k in keys if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k))
    )
    top = resolutions[-1] if resolutions else 4
    if resolutions != [2**i for i in range(2, _log2(top, "resolution") + 1)]:
        raise InputError(f"{source}: synthesis blocks {resolutions} are not 4, 8, ..., {top}")
    if size is not None and size != top:
        raise InputError(f"{source}: network is {top}x{top}, not {size}x{size} as requested")
    if any(re.fullmatch(r"synthesis\.b\d+\.skip\.weight", k) for k in keys):
        raise InputError(f"{source}: resnet synthesis architecture; rosinality uses 'skip'")
    if top >= 64:
        c64 = int(sd["synthesis.b64.conv1.weight"].shape[0])
        mult = max(c64 // 256, 1)
    else:
        mult = 2
    target = rosinality_generator_shapes(top, w_dim, n_mlp, mult)

    out: dict[str, Tensor] = {}
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = take(f"mapping.fc{i}.weight")
        out[f"style.{i + 1}.bias"] = take(f"mapping.fc{i}.bias")
    out["input.input"] = take("synthesis.b4.const").unsqueeze(0)
    noises: dict[int, Tensor] = {}

    def check_filter(key: str) -> None:
        if key in sd:
            f = take(key)
            if f.shape != RESAMPLE_FILTER.shape or not torch.allclose(f, RESAMPLE_FILTER):
                raise InputError(f"{source}: {key} is not the [1,3,3,1] filter rosinality uses")

    def styled(src: str, dst: str, noise_index: int, up: bool) -> None:
        check_filter(f"{src}.resample_filter")
        out[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        if up:
            out[f"{dst}.conv.blur.kernel"] = RESAMPLE_FILTER * 4
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")
        if f"{src}.noise_strength" not in sd:
            raise InputError(f"{source}: {src} has no noise input; rosinality always has one")
        out[f"{dst}.noise.weight"] = take(f"{src}.noise_strength").reshape(1)
        out[f"{dst}.activate.bias"] = take(f"{src}.bias")
        const = take(f"{src}.noise_const")
        noises[noise_index] = const.reshape(1, 1, *const.shape)

    def torgb(src: str, dst: str, up: bool) -> None:
        out[f"{dst}.bias"] = take(f"{src}.bias").reshape(1, -1, 1, 1)
        if up:
            out[f"{dst}.upsample.kernel"] = RESAMPLE_FILTER * 4
        out[f"{dst}.conv.weight"] = take(f"{src}.weight").unsqueeze(0)
        out[f"{dst}.conv.modulation.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.conv.modulation.bias"] = take(f"{src}.affine.bias")

    check_filter("synthesis.b4.resample_filter")
    styled("synthesis.b4.conv1", "conv1", 0, up=False)
    torgb("synthesis.b4.torgb", "to_rgb1", up=False)
    for k, r in enumerate(resolutions[1:]):
        check_filter(f"synthesis.b{r}.resample_filter")
        styled(f"synthesis.b{r}.conv0", f"convs.{2 * k}", 2 * k + 1, up=True)
        styled(f"synthesis.b{r}.conv1", f"convs.{2 * k + 1}", 2 * k + 2, up=False)
    for k, r in enumerate(resolutions[1:]):
        torgb(f"synthesis.b{r}.torgb", f"to_rgbs.{k}", up=True)
    for j in sorted(noises):
        out[f"noises.noise_{j}"] = noises[j]
    latent_avg = take("mapping.w_avg")

    extra = sorted(keys - used)
    if extra:
        raise InputError(f"{source}: keys with no rosinality equivalent: {', '.join(extra[:5])}")
    got = {k: tuple(v.shape) for k, v in out.items()}
    if got != target:
        bad = sorted(k for k in set(got) | set(target) if got.get(k) != target.get(k))
        raise InputError(
            f"{source}: channel layout has no rosinality equivalent (first mismatches: "
            f"{', '.join(f'{k} {got.get(k)} vs {target.get(k)}' for k in bad[:3])})"
        )
    return {k: out[k] for k in target}, latent_avg


def convert_nvidia_pickle(src: Path, dst: Path, size: int | None = None) -> Path:
    """Convert an NVIDIA StyleGAN2 network file to a rosinality checkpoint.

    Args:
        src: network pickle (``.pkl``) or torch file with ``{"G_ema": state_dict}``.
        dst: output file, or an existing folder (then ``dst / f"{src.stem}.pt"``).
        size: expected resolution, or ``None`` to accept the network's.

    Returns:
        The written file: a torch file ``{"g_ema": state_dict, "latent_avg": (w,) float32}``
        that ``Generator(size, w, n_mlp, channel_multiplier)`` loads with ``strict=True``
        (:func:`infer_rosinality_config` gives those arguments).

    Raises:
        InputError: see :func:`read_nvidia_generator` and :func:`convert_nvidia_state_dict`.
    """
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        dst = dst / f"{src.stem}.pt"
    g_ema, latent_avg = convert_nvidia_state_dict(read_nvidia_generator(src), size, str(src))
    return save_atomic(dst, {"g_ema": g_ema, "latent_avg": latent_avg})


def _log2(n: int, what: str) -> int:
    log = int(math.log2(n)) if n > 0 else -1
    if n < 4 or 2**log != n:
        raise InputError(f"{what} {n} is not a power of two >= 4")
    return log
