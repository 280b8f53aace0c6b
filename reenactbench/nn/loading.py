"""What is wrong between a network and a state dict, as one readable line: shared by the
strict loaders of every network in ``reenactbench.nn``."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

__all__ = ["few", "state_dict_problems"]


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
