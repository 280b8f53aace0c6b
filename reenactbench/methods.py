"""Method adapter protocol, registry and loader (design §3).

A method is any class with the attributes and ``reenact`` method of :class:`Method`.
Built-in and third-party methods are registered through the ``reenactbench.methods``
entry-point group (``name = "package.module:Class"`` in pyproject.toml); any class can
also be named directly as ``package.module:Class``.

Constructor convention: ``Class(device="cpu", weights=None, **options)`` where
``weights`` maps weight names to files. A class may define a ``classmethod
unavailable() -> str | None`` that says why it cannot run here (a missing optional
dependency or weight file), or ``None``.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from reenactbench.errors import MethodError, MethodUnavailable

__all__ = [
    "ENTRY_POINT_GROUP",
    "Method",
    "MethodInfo",
    "registered_methods",
    "method_class",
    "method_info",
    "load_method",
    "check_options",
    "input_resolution",
    "method_options",
    "check_output_frame",
]

ENTRY_POINT_GROUP = "reenactbench.methods"
_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@runtime_checkable
class Method(Protocol):
    """What the runner needs from a re-enactment method."""

    name: str  #: registry name, kebab-case
    resolution: int  #: frames are given and returned at resolution x resolution
    weights: tuple[str, ...]  #: weight registry names the method needs

    def reenact(self, source: np.ndarray, driving: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Animate ``source`` with the motion of ``driving``.

        Args:
            source: ``(R, R, 3) uint8`` RGB, R = ``resolution``.
            driving: ``(R, R, 3) uint8`` RGB frames, consumed lazily.

        Yields:
            ``(R, R, 3) uint8`` RGB, exactly one frame per driving frame.
        """
        ...


def registered_methods() -> dict[str, str]:
    """Entry-point name -> ``module:Class`` for every installed method, sorted by name."""
    eps = entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep.value for ep in sorted(eps, key=lambda e: e.name)}


def method_class(name_or_path: str) -> type:
    """Import the class of a registered name or a ``package.module:Class`` path.

    Raises:
        MethodError: unknown name, bad path, import failure, or a class that does not
            have the Method attributes.
    """
    registry = registered_methods()
    if name_or_path in registry:
        target = registry[name_or_path]
    elif _PATH.match(name_or_path):
        target = name_or_path
    else:
        known = ", ".join(registry) or "none"
        raise MethodError(
            f"unknown method {name_or_path!r}; registered methods: {known} "
            "(or give a plug-in as package.module:Class)"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise MethodError(f"method {name_or_path!r}: cannot import {module_name} ({e})") from None
    cls = getattr(module, attr, None)
    if not inspect.isclass(cls):
        raise MethodError(f"method {name_or_path!r}: {module_name} has no class {attr}")
    missing = [a for a in ("name", "resolution", "weights", "reenact") if not hasattr(cls, a)]
    if missing:
        raise MethodError(
            f"method {name_or_path!r}: class {target} lacks {', '.join(missing)} "
            "(see docs/adapters.md)"
        )
    if not _NAME.match(str(cls.name)):
        raise MethodError(f"method {target}: name {cls.name!r} must be kebab-case")
    return cls


@dataclass(frozen=True)
class MethodInfo:
    """What ``reenactbench methods`` shows about one method."""

    name: str
    target: str
    resolution: int
    weights: tuple[str, ...]
    unavailable: str | None  #: why it cannot run here (dependency or weights), or None
    license: str = "-"  #: the class's ``license``, else its weights' licences


def method_info(name_or_path: str) -> MethodInfo:
    """Describe a method without instantiating it; import failures become ``unavailable``."""
    target = registered_methods().get(name_or_path, name_or_path)
    try:
        cls = method_class(name_or_path)
    except MethodError as e:
        return MethodInfo(name_or_path, target, 0, (), str(e))
    check = getattr(cls, "unavailable", None)
    reason = check() if callable(check) else None
    if reason is None:
        reason = _missing_weights(tuple(cls.weights))
    return MethodInfo(
        cls.name, target, int(cls.resolution), tuple(cls.weights), reason, _license(cls)
    )


def _license(cls: type) -> str:
    """The class's ``license`` attribute, else the licences of its weights (registry)."""
    own = getattr(cls, "license", None)
    if own:
        return str(own)
    from reenactbench.weights import WEIGHTS

    found = dict.fromkeys(WEIGHTS[w].license for w in cls.weights if w in WEIGHTS)
    return "; ".join(found) or "-"


def _missing_weights(names: tuple[str, ...]) -> str | None:
    """``"weights missing: a, b (reenactbench weights list)"`` or ``None``."""
    from reenactbench.errors import ReenactbenchError
    from reenactbench.weights import weight_path

    missing = []
    for name in names:
        try:
            weight_path(name)
        except ReenactbenchError:
            missing.append(name)
    if not missing:
        return None
    return f"weights missing: {', '.join(missing)} (reenactbench weights list)"


def load_method(
    name_or_path: str,
    device: str = "cpu",
    weights: dict[str, Path] | None = None,
    **options: Any,
) -> Method:
    """Instantiate a method.

    Args:
        name_or_path: registered name or ``package.module:Class``.
        device: torch device string for methods that use torch.
        weights: weight name -> file, overriding the weight cache.
        **options: method-specific options; unknown ones are an error.

    Raises:
        MethodError: unknown method or option, or a method that cannot run here.
        WeightsMissing: a weight file the method needs is absent.
    """
    cls = method_class(name_or_path)
    check = getattr(cls, "unavailable", None)
    reason = check() if callable(check) else None
    if reason:
        raise MethodUnavailable(f"method {cls.name!r} cannot run: {reason}")
    check_options(cls, options)
    method = cls(device=device, weights=weights, **options)
    return method


def method_options(cls: type) -> tuple[str, ...]:
    """The constructor options of a method class (besides ``device`` and ``weights``)."""
    params = inspect.signature(cls).parameters.values()
    return tuple(p.name for p in params if p.name not in ("device", "weights", "self"))


def check_options(cls: type, options: dict[str, Any]) -> None:
    """Check option names against the constructor of ``cls`` (values are the class's
    business), so that a typo fails before any work.

    Raises:
        MethodError: an unknown or missing option, naming the valid ones.
    """
    try:
        inspect.signature(cls).bind(device="cpu", weights=None, **options)
    except TypeError as e:
        known = ", ".join(method_options(cls)) or "none"
        raise MethodError(
            f"method {cls.name!r}: bad options {sorted(options)} ({e}); its options: {known}"
        ) from None


def input_resolution(method: object) -> int:
    """The side frames are given to ``method`` at: its optional ``input_resolution``
    attribute (a method whose networks read smaller frames than it writes, e.g. StyleHEAT:
    256 in, 1024 out, so frames are not upsampled only to be shrunk again), else its
    ``resolution``."""
    return int(getattr(method, "input_resolution", None) or method.resolution)  # type: ignore[attr-defined]


def check_output_frame(frame: object, method: Method) -> np.ndarray:
    """``frame`` if it is a ``(R, R, 3) uint8`` array (R = ``method.resolution``).

    Raises:
        MethodError: anything else, naming the method and what it yielded.
    """
    res = method.resolution
    if isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (res, res, 3):
        return frame
    got = getattr(frame, "shape", type(frame).__name__), getattr(frame, "dtype", "")
    raise MethodError(f"method {method.name!r} yielded {got}, expected ({res},{res},3) uint8")
