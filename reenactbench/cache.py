"""The run directory's cache contract: job records, what identifies them, when to trust them.

A finished job (one method on one source/driving pair) is ONE file,
``OUT/cache/<method>/<pair>/job.npz``, written atomically (temp file, fsync, rename) as
the last step of the job. It holds everything the tables need from that job:

* ``__meta__``: JSON: format, fingerprint, the config ids it was made with, the job's
  inputs (frame keys), n_frames, each metric's job value and facts, kinds, runtime facts;
* ``values.<key>``: per-frame values of frame metrics (float64, lossless);
* ``fake.<key>`` / ``real.<key>``: feature rows (FID/FVD) or series (correlations);
* ``heatmap``: the per-pixel L1 map averaged over frames (robustness runs).

A record is used only if it reads back completely (zip CRCs, JSON) and its fingerprint
matches; anything else is recomputed, never trusted. The fingerprint is the sha256 of

* ``setup``: protocol, frames, resolution, resize rule, package versions of
  :data:`~reenactbench.codehash.NUMERIC_PACKAGES`;
* ``method``: name, class path, options (``batch_size`` excluded: it does not change
  numbers), dtype, its weights' sha256, the hash of its code (the class's module and
  what it imports, :func:`~reenactbench.codehash.code_hash`), its ``version`` attribute;
* ``metrics``: runnable metric keys, backend options, their weights' sha256, the hash of
  the scoring code (metrics, faces, video decoding/resizing, the job loop);
* the pair key.

The frames a job read are checked separately (:class:`InputKeys`): every record stores a
cheap *stat* key (file names, sizes, mtimes) and a *content* key (sha256 of the bytes) of
its driving and source frames. ``frames_key="stat"`` (default) trusts an unchanged stat
key and falls back to the content key when the stat key differs (data copied or moved),
so only really changed frames recompute; ``frames_key="content"`` always compares
content (catches edits that keep size and mtime). docs/caching.md has the whole story.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reenactbench.codehash import code_hash, package_versions
from reenactbench.files import atomic_write_bytes
from reenactbench.metrics.base import JobPart, job_value
from reenactbench.protocol import Pair
from reenactbench.video import frame_files

__all__ = [
    "FORMAT",
    "FRAMES_KEYS",
    "RECORD_NAME",
    "RUNTIME_OPTIONS",
    "SCORING_MODULES",
    "InputKeys",
    "JobRecord",
    "RecordError",
    "config_id",
    "job_fingerprint",
    "method_config",
    "method_cache_dir",
    "metric_config",
    "record_path",
    "setup_config",
]

FORMAT = 1
RECORD_NAME = "job.npz"
FRAMES_KEYS = ("stat", "content")
#: Method options that change speed or memory, never numbers: not fingerprinted.
RUNTIME_OPTIONS = frozenset({"batch_size"})
#: The modules that turn frames into numbers (with everything they import).
SCORING_MODULES = ("reenactbench.job", "reenactbench.scoring", "reenactbench.metrics")
_META = "__meta__"


class RecordError(Exception):
    """A job record that cannot be used (unreadable, torn, or of another format)."""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def config_id(config: Mapping[str, Any]) -> str:
    """The id of a config dict (its own ``id`` key excluded)."""
    return _digest({k: v for k, v in config.items() if k != "id"})


def setup_config(setup: Mapping[str, Any]) -> dict[str, Any]:
    """The run-level part of every fingerprint: ``setup`` (protocol, frames, resolution,
    resize; not the data's identity, which the inputs check covers per job) and the
    versions of the numeric packages."""
    keep = {k: v for k, v in setup.items() if k not in ("data", "pairs")}
    config = {"setup": keep, "packages": package_versions()}
    return {**config, "id": config_id(config)}


def method_config(
    cls: type, options: Mapping[str, Any], weights: Mapping[str, str]
) -> dict[str, Any]:
    """What identifies a method's numbers. ``weights``: name -> sha256 (or ``"missing"``)."""
    config = {
        "name": str(cls.name),
        "target": f"{cls.__module__}:{cls.__qualname__}",
        "options": {k: v for k, v in sorted(options.items()) if k not in RUNTIME_OPTIONS},
        "weights": dict(sorted(weights.items())),
        "code": code_hash([cls.__module__]),
        "version": str(getattr(cls, "version", "")),
    }
    return {**config, "id": config_id(config)}


def metric_config(
    specs: list[Any], options: Mapping[str, str], weights: Mapping[str, str]
) -> dict[str, Any]:
    """What identifies the scoring of a job: runnable metric keys (``specs``: their
    MetricSpecs), backend options, weight sha256s and the scoring code's hash (built-in
    modules plus the modules defining each metric, for plug-in metrics)."""
    modules = set(SCORING_MODULES)
    for spec in specs:
        for fn in (spec.fn, spec.build, spec.check):
            if fn is not None and getattr(fn, "__module__", None):
                modules.add(fn.__module__)
    config = {
        "metrics": sorted(s.key for s in specs),
        "options": dict(sorted(options.items())),
        "weights": dict(sorted(weights.items())),
        "code": code_hash(sorted(modules)),
    }
    return {**config, "id": config_id(config)}


def job_fingerprint(ids: Mapping[str, str], pair: Pair) -> str:
    """``ids``: ``{"setup", "method", "metrics"}`` config ids."""
    return _digest({"config": dict(sorted(ids.items())), "pair": pair.key})


def record_path(run_dir: Path, method: str, pair: Pair) -> Path:
    return Path(run_dir) / "cache" / method / pair.key / RECORD_NAME


def method_cache_dir(run_dir: Path, method: str, method_id: str) -> Path:
    """The folder a method may keep its own per-frame rows in across commands (the
    optional ``set_cache_dir`` hook, docs/adapters.md): ``cache/<method>/_rows/<id>``,
    keyed by the method's config id (weights, code, options, dtype), so rows made by
    other weights or code are never read. ``_rows`` cannot be a pair key (those hold
    ``__``)."""
    return Path(run_dir) / "cache" / method / "_rows" / method_id


class InputKeys:
    """Stat and content keys of the frames a job reads, memoised per process (a video is
    hashed once however many methods read it)."""

    def __init__(self) -> None:
        self._content: dict[tuple[str, int, int], str] = {}

    @staticmethod
    def _files(path: Path, start: int, count: int) -> list[Path]:
        """The files read for frames ``[start, start + count)``: a video file whole; of a
        frame folder the frames up to the last one read (earlier ones are decoded too)."""
        path = Path(path)
        return frame_files(path)[: start + count] if path.is_dir() else [path]

    def stat(self, path: Path, start: int, count: int) -> str:
        h = hashlib.sha256()
        for f in self._files(path, start, count):
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def content(self, path: Path, start: int, count: int) -> str:
        h = hashlib.sha256()
        for f in self._files(path, start, count):
            h.update(f"{f.name}\0{self._file_sha(f)}\n".encode())
        return h.hexdigest()[:16]

    def _file_sha(self, f: Path) -> str:
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in self._content:
            h = hashlib.sha256()
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            self._content[key] = h.hexdigest()
        return self._content[key]

    def keys(self, path: Path, start: int, count: int) -> dict[str, str]:
        return {"stat": self.stat(path, start, count), "content": self.content(path, start, count)}

    def matches(
        self, recorded: Mapping[str, str], path: Path, start: int, count: int, mode: str
    ) -> bool:
        """Whether the recorded keys still describe these frames (module doc)."""
        try:
            if mode == "stat" and recorded.get("stat") == self.stat(path, start, count):
                return True
            return recorded.get("content") == self.content(path, start, count)
        except OSError:
            return False  # frames gone or unreadable: the job cannot be trusted


@dataclass
class JobRecord:
    """One finished job, read back from (or just written to) its record file.

    ``parts`` hold per-frame values, series and facts; the feature rows of distribution
    metrics stay on disk until :meth:`full_part` reads them (memory stays flat with the
    number of jobs)."""

    meta: dict[str, Any]
    parts: dict[str, JobPart]
    path: Path

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    @property
    def pair(self) -> Pair:
        p = self.meta["pair"]
        return Pair(p["driving"], p["source"], int(p["source_frame"]))

    @property
    def n_frames(self) -> int:
        return int(self.meta["n_frames"])

    @property
    def config(self) -> dict[str, str]:
        return dict(self.meta["config"])

    def value(self, key: str) -> float:
        """The job value of metric ``key`` (stored when the job finished)."""
        return float(self.meta["job_values"][key])

    def full_part(self, key: str) -> JobPart:
        """The part of ``key`` with its feature rows, read from the record file."""
        part = self.parts[key]
        if part.fake is not None:
            return part
        with _open(self.path) as z:
            if _read_meta(z).get("fingerprint") != self.meta["fingerprint"]:
                raise RecordError(f"{self.path}: replaced while the run was reading it")
            fake, real = _array(z, f"fake.{key}"), _array(z, f"real.{key}")
        return JobPart(values=part.values, fake=fake, real=real, info=part.info)

    def heatmap(self) -> np.ndarray | None:
        with _open(self.path) as z:
            return _array(z, "heatmap")

    @classmethod
    def write(
        cls,
        path: Path,
        meta: Mapping[str, Any],
        parts: Mapping[str, JobPart],
        kinds: Mapping[str, str],
        heatmap: np.ndarray | None = None,
    ) -> JobRecord:
        """Compute the job values, write the record atomically, return it (with the
        distribution rows released from memory)."""
        arrays: dict[str, np.ndarray] = {}
        for key, part in parts.items():
            for name in ("values", "fake", "real"):
                value = getattr(part, name)
                if value is not None:
                    arrays[f"{name}.{key}"] = np.asarray(value)
        if heatmap is not None:
            arrays["heatmap"] = np.asarray(heatmap, dtype=np.float32)
        full = {
            **meta,
            "format": FORMAT,
            "heatmap": heatmap is not None,
            "kinds": {k: kinds[k] for k in parts},
            "job_values": {k: job_value(kinds[k], p) for k, p in parts.items()},
            "info": {k: p.info for k, p in parts.items()},
        }
        blob = np.frombuffer(json.dumps(full, sort_keys=True).encode(), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **{_META: blob}, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return cls(full, _released(parts, full["kinds"]), Path(path))

    @classmethod
    def read(cls, path: Path) -> JobRecord:
        """Read a record (per-frame values and series; rows stay on disk).

        Raises:
            RecordError: missing, torn, corrupt (CRC), or of another format.
        """
        try:
            with _open(path) as z:
                meta = _read_meta(z)
                if meta.get("format") != FORMAT:
                    raise RecordError(f"{path}: record format {meta.get('format')!r}")
                parts = {}
                for key, kind in meta["kinds"].items():
                    series = kind == "temporal"
                    parts[key] = JobPart(
                        values=_array(z, f"values.{key}"),
                        fake=_array(z, f"fake.{key}") if series else None,
                        real=_array(z, f"real.{key}") if series else None,
                        info=meta["info"].get(key, {}),
                    )
                    if kind == "distribution" and f"fake.{key}.npy" not in z.namelist():
                        raise RecordError(f"{path}: no feature rows for {key}")
        except RecordError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise RecordError(f"{path}: unreadable job record ({e})") from None
        return cls(meta, parts, Path(path))


def _released(parts: Mapping[str, JobPart], kinds: Mapping[str, str]) -> dict[str, JobPart]:
    return {
        k: JobPart(values=p.values, info=p.info)
        if kinds[k] == "distribution"
        else JobPart(values=p.values, fake=p.fake, real=p.real, info=p.info)
        for k, p in parts.items()
    }


def _open(path: Path) -> zipfile.ZipFile:
    if not os.path.isfile(path):
        raise RecordError(f"{path}: no record")
    return zipfile.ZipFile(path)


def _read_meta(z: zipfile.ZipFile) -> dict[str, Any]:
    blob = _array(z, _META)
    if blob is None:
        raise RecordError("no metadata")
    return json.loads(blob.tobytes().decode())


def _array(z: zipfile.ZipFile, name: str) -> np.ndarray | None:
    """Member ``name`` of an npz (``None`` if absent); reading checks its CRC."""
    member = f"{name}.npy"
    if member not in z.namelist():
        return None
    with z.open(member) as f:
        return np.lib.format.read_array(io.BytesIO(f.read()), allow_pickle=False)
