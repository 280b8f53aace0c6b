"""Network precision of methods (``--dtype``): fp32, or bf16 / fp16 through torch autocast.

Only the method's forward passes run inside :func:`autocast`; a method must leave the
context before it yields a frame, so the metrics that score the frame stay in fp32.
docs/scaling.md gives the measured effect of bf16 on the metric values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["DTYPES", "autocast", "check_dtype"]

#: ``--dtype`` values (metrics always run in fp32).
DTYPES = ("fp32", "bf16", "fp16")


def check_dtype(dtype: str, owner: str) -> str:
    """``dtype`` if it is one of :data:`DTYPES`.

    Raises:
        MethodError: anything else, naming ``owner``.
    """
    from reenactbench.errors import MethodError

    if dtype not in DTYPES:
        raise MethodError(f"{owner}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


@contextlib.contextmanager
def autocast(device: object, dtype: str) -> Iterator[None]:
    """torch autocast to ``dtype`` on ``device``'s type (a no-op for fp32)."""
    if dtype == "fp32":
        yield
        return
    import torch

    kind = torch.device(str(device)).type
    with torch.autocast(kind, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]):
        yield
