"""Batching of lazily read frames: the one helper that methods and metrics share."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TypeVar

__all__ = ["batched"]

T = TypeVar("T")


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items (the last may be shorter), read lazily, so a
    method holds one batch of driving frames at a time (``itertools.batched`` of 3.12)."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk
