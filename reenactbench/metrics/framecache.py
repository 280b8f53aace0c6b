"""One cache of per-frame rows for the face networks of a run (temporal attributes,
identity embeddings, a method's 3DMM coefficients): each distinct frame is passed to the
network once, and (with :meth:`FrameCache.persist`) once across commands."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reenactbench.files import atomic_write_bytes

__all__ = ["FrameCache"]

SHARD_SUFFIX = ".rows.npz"


class FrameCache:
    """Per-frame rows (attributes, embeddings, coefficients), computed once per distinct
    frame (keyed by a blake2b digest of its bytes and its shape) and shared through
    ``ctx.shared`` by the metrics of one run: the driving frames recur for every method
    and every source of a robustness run, so their rows are computed once.

    Persistence (:meth:`persist`, :meth:`flush`): the rows can also live in a folder, as
    append-only *shards* (``<digest>.rows.npz``: ``keys`` (hex) and ``rows``), one per
    :meth:`flush` (a method flushes once per job, so a shard holds one video's new rows).
    Shards are written atomically under a name that is the digest of their keys, so
    processes (ranks) writing the same folder never collide; a shard that does not read
    back whole is ignored (its rows are computed again). The folder's name must say what
    made the rows (the caller keys it by the network's config: weights, code, dtype).

    Args:
        extract: ``(B, H, W, 3) uint8 -> (B, D) float64``.
        max_frames: cached rows kept in memory (oldest dropped first).
    """

    def __init__(
        self, extract: Callable[[np.ndarray], np.ndarray], max_frames: int = 50_000
    ) -> None:
        self.extract = extract
        self.max_frames = max_frames
        self.rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.computed = 0  # frames actually passed to ``extract``
        self.width = 22  #: row width (learned from the first rows; 22 attributes before)
        self._last: tuple[np.ndarray, np.ndarray] | None = None
        self.folder: Path | None = None
        self._stored: dict[bytes, np.ndarray] = {}  # rows of the folder's shards
        self._new: dict[bytes, np.ndarray] = {}  # computed since the last flush

    def persist(self, folder: Path) -> int:
        """Keep rows in ``folder`` too: read its shards now; :meth:`flush` writes new rows
        there. Returns the number of rows read."""
        self.folder = Path(folder)
        self._stored = {}
        for shard in sorted(self.folder.glob(f"*{SHARD_SUFFIX}")):
            self._stored.update(_read_shard(shard))
        return len(self._stored)

    def flush(self) -> None:
        """Write the rows computed since the last flush as one shard (no-op without a
        folder or new rows)."""
        if self.folder is None or not self._new:
            return
        keys = sorted(self._new)
        digest = hashlib.blake2b(b"".join(keys), digest_size=16).hexdigest()
        buf = io.BytesIO()
        np.savez(buf, keys=np.array([k.hex() for k in keys]),
                 rows=np.stack([self._new[k] for k in keys]))  # fmt: skip
        atomic_write_bytes(self.folder / f"{digest}{SHARD_SUFFIX}", buf.getvalue())
        self._stored.update(self._new)
        self._new = {}

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``(B, H, W, 3) uint8`` RGB -> ``(B, D) float64`` rows."""
        if self._last is not None and self._last[0] is frames:
            return self._last[1]
        keys = [
            hashlib.blake2b(np.ascontiguousarray(f).data, digest_size=16).digest()
            + repr(f.shape).encode()
            for f in frames
        ]
        todo: dict[bytes, int] = {}  # distinct uncached frames -> first index
        for i, k in enumerate(keys):
            if k in self.rows or k in todo:
                continue
            if k in self._stored:
                self.rows[k] = self._stored[k]
            else:
                todo[k] = i
        if todo:
            new = np.asarray(self.extract(frames[list(todo.values())]), dtype=np.float64)
            self.computed += len(todo)
            for k, row in zip(todo, new, strict=True):
                self.rows[k] = row
                if self.folder is not None:
                    self._new[k] = row
            self.width = new.shape[1]
        out = np.stack([self.rows[k] for k in keys]) if keys else np.zeros((0, self.width))
        for k in keys:
            self.rows.move_to_end(k)
        while len(self.rows) > self.max_frames:
            self.rows.popitem(last=False)
        self._last = (frames, out)
        return out


def _read_shard(path: Path) -> dict[bytes, np.ndarray]:
    """A shard's rows; ``{}`` if it does not read back whole (CRC, shape, format)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, rows = z["keys"], z["rows"]
        if keys.ndim != 1 or rows.ndim != 2 or len(keys) != len(rows):
            return {}
        rows = rows.astype(np.float64)
        return {bytes.fromhex(str(k)): row for k, row in zip(keys, rows, strict=True)}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}
