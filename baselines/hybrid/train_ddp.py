"""Hybrid training under ``torchrun``: ranks, the DDP-wrapped encoder, and the averaged
gradients of the (not DDP-wrapped) latent discriminator. In one process every function
is a no-op or the identity.

Every rank samples its own stream ``(seed, rank)``; only rank 0 writes files; the batch
``train.batch`` is per rank.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["average_grads", "rank_world", "wrap_encoder"]


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` under torchrun (``torch.distributed`` initialised), else
    ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def wrap_encoder(encoder: nn.Module, device: torch.device) -> nn.Module:
    """``encoder`` in ``DistributedDataParallel`` when there are several ranks, else as is."""
    if rank_world()[1] == 1:
        return encoder
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(encoder, device_ids=ids)


def average_grads(module: nn.Module) -> None:
    """Under DDP, average ``module``'s gradients over ranks (D is not DDP-wrapped, so its
    copies would drift apart otherwise); a no-op in one process."""
    _, world = rank_world()
    if world == 1:
        return
    for p in module.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad.div_(world)
