"""Reading and writing checkpoint files, and what is wrong between a network and a state
dict: shared by every checkpoint reader and writer of reenactbench (methods, metrics, the
hybrid model and its training).

**No checkpoint is ever fully unpickled.** A weight file comes from the internet; a pickle
can run any code when it is loaded. :func:`safe_load` is the one door: it uses
``torch.load(weights_only=True)`` (tensors, dicts, lists, numbers, strings) plus an
explicit allow-list of classes per format (e.g. ``argparse.Namespace``, which upstream
training scripts store beside the weights). A file that needs anything else is refused
with one line naming it; there is no "trusted" fallback.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from reenactbench.errors import InputError
from reenactbench.files import atomic_write_bytes

__all__ = ["few", "safe_load", "save_atomic", "state_dict_problems"]


def save_atomic(path: Path | str, obj: object) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`reenactbench.files.atomic_write_bytes`
    (synced temp file, then rename): a killed writer never leaves half a checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def safe_load(
    path: Path | str,
    what: str,
    allow: Iterable[type] = (),
    mmap: bool = False,
) -> object:
    """``torch.load(path, weights_only=True)`` with ``allow`` added to the safe globals.

    Args:
        path: the file.
        what: what it should be, for messages (e.g. ``"FOMM checkpoint (vox-cpk.pth.tar)"``).
        allow: classes the format legitimately pickles (nothing that runs code on load).
        mmap: map the file instead of reading it (large files, zip format only).

    Raises:
        InputError: missing, unreadable, not a torch file, or holding other objects
            (the pickle's code is never run).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found is None:  # a broken or foreign pickle, not a refused class
            detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
            raise InputError(
                f"{path}: cannot be read as a {what} (not a torch checkpoint: "
                f"{detail.group(1).strip() if detail else _first_line(e)})"
            ) from None
        why = f"it pickles {found.group(1)}"
        raise InputError(
            f"{path}: refused: this {what} holds objects other than tensors ({why}); loading "
            "it could run code, so it is not loaded. Re-save its state dicts with torch.save, "
            "or get the official file"
        ) from None
    except Exception as e:  # corrupt, truncated, not a torch file
        raise InputError(
            f"{path}: cannot be read as a {what} ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: Exception) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:160]


def few(items: list[str], n: int = 5) -> str:
    """The first ``n`` items, comma-separated, plus ``and K more``."""
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def state_dict_problems(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> list[str]:
    """Missing keys, unexpected keys and shape mismatches of ``state`` against ``own``
    (a network's ``state_dict()``), each as a short phrase; empty when they match."""
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {few(missing)}")
    if extra:
        problems.append(f"unexpected keys {few(extra)}")
    if shapes:
        problems.append(
            "shape mismatch "
            + few([f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in shapes])
        )
    return problems
