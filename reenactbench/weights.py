"""Weight registry: one entry per file in its official upstream format (design §4).

Files live in ``$REENACTBENCH_HOME/weights/`` (default ``~/.cache/reenactbench``) under
their official names, or are given per run with ``--weights NAME=PATH``. Nothing is ever
downloaded implicitly: only ``reenactbench weights fetch NAME`` opens a URL. A missing
file raises :class:`WeightsMissing`, which metrics and methods turn into
``skipped: weights missing (...)``.

Checksums: ``sha256`` is what upstream publishes. For pytorch-fid and torchvision that
is the 8-hex-digit sha256 prefix in the file name, so a prefix is accepted; ``None``
means upstream publishes nothing (the file is "unpinned" and its sha256 is recorded).
A file whose hash differs from the pinned one may still be used, but every run records
it as ``mismatch`` in run.json and the tables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reenactbench.errors import InputError, ReenactbenchError, WeightsMissing

__all__ = [
    "WeightSpec",
    "WEIGHTS",
    "get_spec",
    "weights_home",
    "cached_path",
    "weight_path",
    "sha256_file",
    "check_file",
    "weight_record",
    "fetch",
    "check_format",
    "import_file",
]


@dataclass(frozen=True)
class WeightSpec:
    """One weight file.

    Attributes:
        name: registry key, kebab-case.
        filename: the official upstream file name, unchanged.
        sha256: published sha256 or its published prefix; ``None`` = unpinned.
        url: direct download URL for ``weights fetch``, or ``None`` (manual download).
        page: where a person gets the file (release page, README).
        license: licence of the weights.
        format: file format, e.g. "torch state_dict", "onnx", "torchscript".
        used_by: metrics / methods that need it.
        member: for a zip download, the archive member that is the file.
    """

    name: str
    filename: str
    sha256: str | None
    url: str | None
    page: str
    license: str
    format: str
    used_by: str
    member: str | None = None


WEIGHTS: dict[str, WeightSpec] = {
    w.name: w
    for w in (
        WeightSpec(
            "fid-inception",
            "pt_inception-2015-12-05-6726825d.pth",
            "6726825d",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid",
            "Apache-2.0 (pytorch-fid); weights ported from TensorFlow's FID Inception",
            "torch state_dict (pytorch-fid FIDInceptionA/C/E layout)",
            "fid",
        ),
        WeightSpec(
            "lpips-alex",
            "alexnet-owt-7be5be79.pth",
            "7be5be79",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "https://pytorch.org/vision/stable/models/alexnet.html",
            "BSD-3-Clause (torchvision)",
            "torch state_dict (torchvision AlexNet)",
            "lpips",
        ),
        WeightSpec(
            "i3d",
            "i3d_torchscript.pt",
            None,
            "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1",
            "https://github.com/universome/stylegan-v (src/metrics/frechet_video_distance.py)",
            "Apache-2.0 (Kinetics-400 I3D, converted by StyleGAN-V)",
            "torchscript",
            "fvd, fvd_mouth",
        ),
        WeightSpec(
            "arcface-r50",
            "w600k_r50.onnx",
            None,
            "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip",
            "https://github.com/deepinsight/insightface/tree/master/python-package",
            "non-commercial research only (insightface model zoo)",
            "onnx",
            "id (insightface backend)",
            member="w600k_r50.onnx",
        ),
        WeightSpec(
            "ir-se50",
            "model_ir_se50.pth",
            None,
            None,
            "https://github.com/eladrich/pixel2style2pixel#pretrained-models (IR-SE50 Model)",
            "MIT (pSp); ArcFace weights from TreB1eN/InsightFace_Pytorch",
            "torch state_dict (pSp Backbone(112, 50, 'ir_se'))",
            "id (irse50 backend), hybrid",
        ),
        WeightSpec(
            "stylegan2-ffhq",
            "stylegan2-ffhq-config-f.pt",
            None,
            None,
            "https://github.com/rosinality/stylegan2-pytorch#pretrained-checkpoints",
            "Nvidia Source Code License-NC (StyleGAN2 weights)",
            "torch pickle dict: g_ema, latent_avg (rosinality layout)",
            "hybrid, styleheat",
        ),
        WeightSpec(
            "fomm-vox",
            "vox-cpk.pth.tar",
            None,
            None,
            "https://github.com/AliaksandrSiarohin/first-order-model#pre-trained-checkpoint",
            "CC BY-NC 4.0 (FOMM)",
            "torch pickle dict: generator, kp_detector, discriminator, optimizer_* (2 read)",
            "fomm",
        ),
        WeightSpec(
            "lia-vox",
            "vox.pt",
            None,
            None,
            "https://github.com/wyhsirius/LIA#pretrained-models",
            "CC BY-NC 4.0 (LIA, Inria)",
            "torch pickle dict: gen, dis, g_optim, d_optim, args (argparse.Namespace)",
            "lia",
        ),
        WeightSpec(
            "pirenderer-vox",
            "epoch_00190_iteration_000400000_checkpoint.pt",
            None,
            None,
            "https://github.com/RenYurui/PIRender#pretrained-model",
            "CC BY-NC 4.0 (PIRender)",
            "torch pickle dict: net_G, net_G_ema, opt_G, sch_G, current_epoch, "
            "current_iteration (net_G_ema read, strict)",
            "pirenderer",
        ),
        WeightSpec(
            "deep3d-recon",
            "epoch_20.pth",
            None,
            "https://github.com/FeiiYin/StyleHEAT/releases/download/styleheat/epoch_20.pth",
            "https://github.com/sicxu/Deep3DFaceRecon_pytorch#inference-with-a-pre-trained-model"
            " (the released model's epoch_20.pth, Google Drive link in that README section;"
            " StyleHEAT's release mirrors it, the URL `weights fetch` uses)",
            "MIT (Deep3DFaceRecon_pytorch); extraction uses no Basel Face Model file",
            "torch pickle dict: net_recon (ResNet-50 state dict, read), opt_00, sched_00",
            "pirenderer, styleheat (reenactbench.faces.deep3d)",
        ),
        WeightSpec(
            "styleheat",
            "StyleHEAT_visual.pt",
            None,
            "https://github.com/FeiiYin/StyleHEAT/releases/download/styleheat/StyleHEAT_visual.pt",
            "https://github.com/OpenTalker/StyleHEAT#pretrained-models (bash/download.sh)",
            "MIT (StyleHEAT)",
            "torch pickle dict: net_G_ema (video_warper.* + calibrator.*, read, strict), "
            "net_G, opt_G, sch_G, ...",
            "styleheat",
        ),
        WeightSpec(
            "styleheat-e4e",
            "Encoder_e4e.pth",
            None,
            "https://github.com/FeiiYin/StyleHEAT/releases/download/styleheat/Encoder_e4e.pth",
            "https://github.com/OpenTalker/StyleHEAT#pretrained-models (bash/download.sh)",
            "MIT (StyleHEAT; e4e: MIT)",
            "torch pickle dict: encoder (e4e Encoder4Editing state dict, strict), latent_avg",
            "styleheat",
        ),
        WeightSpec(
            "styleheat-hfgi",
            "hfgi.pth",
            None,
            "https://github.com/FeiiYin/StyleHEAT/releases/download/styleheat/hfgi.pth",
            "https://github.com/OpenTalker/StyleHEAT#pretrained-models (bash/download.sh)",
            "MIT (StyleHEAT; HFGI: MIT)",
            "torch pickle dict: aligner, encoder (HFGI state dicts, strict)",
            "styleheat",
        ),
        WeightSpec(
            "styleheat-stylegan",
            "StyleGAN_e4e.pth",
            None,
            "https://github.com/FeiiYin/StyleHEAT/releases/download/styleheat/StyleGAN_e4e.pth",
            "https://github.com/OpenTalker/StyleHEAT#pretrained-models (bash/download.sh)",
            "MIT (StyleHEAT); FFHQ StyleGAN2 weights (NVIDIA's, converted by rosinality)",
            "torch pickle: a bare rosinality Generator(1024) state dict (strict)",
            "styleheat",
        ),
        WeightSpec(
            "fs-vid2vid-face",
            "ampO1-1F_22ctFmo553nRHy1d_BX7aorc9zk9cF.pt",
            None,
            None,
            "imaginaire's inference.py downloads it (Google Drive id"
            " 1F_22ctFmo553nRHy1d_BX7aorc9zk9cF, pretrained_weight of"
            " configs/projects/fs_vid2vid/face_forensics/ampO1.yaml;"
            " https://github.com/NVlabs/imaginaire/tree/master/projects/fs_vid2vid)",
            "NVIDIA Source Code License for Imaginaire (non-commercial)",
            "torch pickle dict: net_G (module.averaged_model.* read, strict), net_D, opt_G, ...",
            "fs-vid2vid",
        ),
        WeightSpec(
            "hybrid-hdtf",
            "hybrid-hdtf.pt",
            None,
            None,
            "train it: reenactbench train hybrid (docs/hybrid.md)",
            "weights you train",
            "torch dict (reenactbench hybrid checkpoint)",
            "hybrid, hybrid-no-cma, hybrid-pti",
        ),
        WeightSpec(
            "hybrid-hdtf-no-idreg",
            "hybrid-hdtf-no-idreg.pt",
            None,
            None,
            "train it: reenactbench train hybrid with [loss] idreg = false (docs/hybrid.md)",
            "weights you train",
            "torch dict (reenactbench hybrid checkpoint)",
            "hybrid-no-idreg (ablation)",
        ),
        WeightSpec(
            "hybrid-hdtf-no-hybrid",
            "hybrid-hdtf-no-hybrid.pt",
            None,
            None,
            "train it: reenactbench train hybrid with [latent] hybrid = false (docs/hybrid.md)",
            "weights you train",
            "torch dict (reenactbench hybrid checkpoint)",
            "hybrid-no-hybrid (ablation)",
        ),
        WeightSpec(
            "hybrid-hdtf-sf-forward",
            "hybrid-hdtf-sf-forward.pt",
            None,
            None,
            'train it: reenactbench train hybrid with [latent] sf_layers = "forward"'
            " (docs/hybrid.md)",
            "weights you train",
            "torch dict (reenactbench hybrid checkpoint)",
            "hybrid-sf-forward (ablation: the other reading of the first 10 SS layers)",
        ),
    )
}


def get_spec(name: str) -> WeightSpec:
    """The spec of ``name``; unknown names raise :class:`InputError` listing the known."""
    try:
        return WEIGHTS[name]
    except KeyError:
        raise InputError(
            f"unknown weight {name!r}; known: {', '.join(WEIGHTS)} (reenactbench weights list)"
        ) from None


def weights_home() -> Path:
    """``$REENACTBENCH_HOME/weights`` (default ``~/.cache/reenactbench/weights``)."""
    root = os.environ.get("REENACTBENCH_HOME") or Path.home() / ".cache" / "reenactbench"
    return Path(root) / "weights"


def cached_path(name: str) -> Path:
    """Where the cache keeps ``name`` (whether or not it is there)."""
    return weights_home() / get_spec(name).filename


def weight_path(name: str, overrides: Mapping[str, Path] | None = None) -> Path:
    """The file to use for ``name``: an override (``--weights``) or the cached file.

    Raises:
        WeightsMissing: neither exists; the message says how to bring the file.
        InputError: an override points to a missing file, or the name is unknown.
    """
    spec = get_spec(name)
    if overrides and name in overrides:
        path = Path(overrides[name])
        if not path.is_file():
            raise InputError(f"--weights {name}={path}: no such file")
        return path
    path = weights_home() / spec.filename
    if not path.is_file():
        how = "reenactbench weights fetch " + name if spec.url else f"get it from {spec.page}"
        raise WeightsMissing(
            name,
            f"weights missing: {name} ({spec.filename}; {how}, then "
            f"reenactbench weights import {name} FILE)",
        )
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_file(name: str, path: Path) -> str:
    """``"ok"`` (matches the pinned hash), ``"mismatch"`` or ``"unpinned"``."""
    pinned = get_spec(name).sha256
    if pinned is None:
        return "unpinned"
    return "ok" if sha256_file(path).startswith(pinned) else "mismatch"


def weight_record(name: str, path: Path) -> dict[str, str]:
    """What run.json records about a weight file: path, sha256 and check status."""
    return {"path": str(path), "sha256": sha256_file(path), "status": check_file(name, path)}


def check_format(name: str, path: Path) -> None:
    """Check that ``path`` is a file of the format ``name`` needs before it is installed
    (never by unpickling it): a torch checkpoint loads with ``weights_only=True``, a
    TorchScript file is a zip holding ``constants.pkl``, an ONNX file a protobuf
    ``ModelProto`` (starts with its ``ir_version`` field).

    Raises:
        InputError: anything else (a text file, an HTML error page, another format).
    """
    import argparse

    spec = get_spec(name)
    fmt = spec.format.split(" ")[0]
    path = Path(path)
    expected = f"is not a {name} file ({spec.format}; {spec.filename} from {spec.page})"
    if fmt == "onnx":
        with path.open("rb") as f:
            head = f.read(2)
        if len(head) < 2 or head[0] != 0x08:
            raise InputError(f"{path}: {expected}")
    elif fmt == "torchscript":
        if not zipfile.is_zipfile(path) or not any(
            n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()
        ):
            raise InputError(f"{path}: {expected}")
    else:
        from reenactbench.nn.loading import safe_load

        try:
            safe_load(path, f"{name} file", [argparse.Namespace], mmap=zipfile.is_zipfile(path))
        except InputError as e:
            detail = str(e).split(": ", 1)[-1]
            raise InputError(f"{path}: {expected}; {detail}") from None


def import_file(name: str, file: Path, force: bool = False) -> Path:
    """Copy ``file`` into the cache under the official name of ``name``.

    Raises:
        InputError: missing file, or a hash mismatch with the pinned one (unless
            ``force``: the file is then imported and flagged ``mismatch`` in every run).
    """
    spec = get_spec(name)
    file = Path(file)
    if not file.is_file():
        raise InputError(f"{file}: no such file")
    check_format(name, file)
    if not force and check_file(name, file) == "mismatch":
        raise InputError(
            f"{file}: sha256 {sha256_file(file)[:16]}... does not match the published "
            f"{spec.sha256} of {name} ({spec.filename}); pass --force to use it anyway "
            "(flagged in runs)"
        )
    dest = weights_home() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".importing")
    shutil.copyfile(file, tmp)
    os.replace(tmp, dest)
    return dest


def _download(
    url: str, part: Path, on_progress: Callable[[int, int], object], timeout: float
) -> None:
    """Download ``url`` into ``part``, resuming what it already holds (HTTP Range).

    A server answers 416 (range not satisfiable) when ``part`` is already complete: then
    nothing is downloaded (the caller verifies it); if its size disagrees with the
    server's, it is downloaded again from the start."""
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not done:
            raise
        total = (e.headers.get("Content-Range") or "").rpartition("/")[2]
        if total.isdigit() and int(total) == done:
            on_progress(done, done)
            return  # complete already
        part.unlink()
        _download(url, part, on_progress, timeout)
        return
    with response:
        if done and response.status != 206:  # server ignored the range: start over
            done = 0
        total = done + int(response.headers.get("Content-Length") or 0)
        with part.open("ab" if done else "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                on_progress(done, max(total, done))


def fetch(
    name: str,
    on_progress: Callable[[str, int, int], None] | None = None,
    url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``name`` into the cache: resumable (HTTP Range on a ``.part`` file),
    verified against the pinned hash, then moved into place atomically. Zip downloads
    keep only the official member.

    Args:
        name: registry key.
        on_progress: ``(name, bytes_done, bytes_total)``.
        url: download from here instead (mirrors, tests).
        timeout: seconds per network operation.

    Raises:
        ReenactbenchError: no URL known (manual download), network failure, or a hash
            mismatch (the partial file is deleted).
    """
    spec = get_spec(name)
    url = url or spec.url
    if url is None:
        raise ReenactbenchError(
            f"{name} has no direct download; get {spec.filename} from {spec.page}, then "
            f"reenactbench weights import {name} FILE"
        )
    dest = weights_home() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        _download(url, part, lambda done, total: on_progress and on_progress(name, done, total),
                  timeout)  # fmt: skip
    except OSError as e:  # URLError, HTTPError, timeouts: the .part file is kept to resume
        raise ReenactbenchError(
            f"downloading {name} from {url} failed ({e}); run the same command to resume"
        ) from None
    payload = part
    if spec.member and zipfile.is_zipfile(part):
        extracted = dest.with_name(dest.name + ".member")
        with zipfile.ZipFile(part) as z:
            members = [m for m in z.namelist() if Path(m).name == spec.member]
            if not members:
                raise ReenactbenchError(f"{url}: archive has no {spec.member}")
            with z.open(members[0]) as src, extracted.open("wb") as out:
                shutil.copyfileobj(src, out)
        payload = extracted
    try:
        check_format(name, payload)
    except InputError:
        part.unlink(missing_ok=True)
        payload.unlink(missing_ok=True)
        raise
    if check_file(name, payload) == "mismatch":
        got = sha256_file(payload)
        part.unlink(missing_ok=True)
        payload.unlink(missing_ok=True)
        raise ReenactbenchError(
            f"{name}: downloaded file has sha256 {got[:16]}..., expected {spec.sha256}; "
            "deleted it. Check the URL"
        )
    os.replace(payload, dest)
    part.unlink(missing_ok=True)
    return dest
