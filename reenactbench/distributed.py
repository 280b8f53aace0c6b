"""The process group a run belongs to: one process, or the ranks that ``torchrun`` starts.

``torchrun --nproc-per-node N -m reenactbench run ...`` sets ``WORLD_SIZE``, ``RANK``,
``LOCAL_RANK`` and the rendezvous variables; :func:`current_world` then joins a gloo
process group (CPU collectives: only small Python objects cross it: errors, the job
list, timings) and every rank works on its own share of the jobs. Without those
variables (or with ``WORLD_SIZE=1``) the world is this process alone and every
collective is the identity, so the runner has one code path.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from reenactbench.errors import InputError, ReenactbenchError

__all__ = ["SharedError", "World", "current_world", "device_for_rank"]

T = TypeVar("T")

#: How long a rank waits for the others at a collective (a slow job on another rank).
TIMEOUT = timedelta(hours=24)


class SharedError(InputError):
    """An error every rank raises together (:meth:`World.agree`); rank 0 reports it."""

    shared = True


class World:
    """Rank, size and the few collectives the runner needs."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0) -> None:
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.host = socket.gethostname()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def label(self) -> str:
        return f"rank {self.rank} ({self.host})"

    # collectives: identities in a one-process world ------------------------------
    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def barrier(self) -> None:
        if self.distributed:
            self.gather(None)  # an object collective: works on gloo with any timeout

    def agree(self, step: Callable[[], T], main_only: bool = False) -> T | None:
        """Run ``step`` (on rank 0 only if ``main_only``) and make every rank fail alike:
        if it raised a :class:`ReenactbenchError` on any rank, every rank raises a
        :class:`SharedError` with the first failing rank's message, naming that rank
        when it is not rank 0. Returns ``step``'s result (rank 0's on every rank when
        ``main_only``)."""
        result: Any = None
        error: str | None = None
        if self.is_main or not main_only:
            try:
                result = step()
            except ReenactbenchError as e:
                if not self.distributed:
                    raise
                error = str(e)
        errors = self.gather(None if error is None else (error, self.host))
        for rank, failed in enumerate(errors):
            if failed is not None:
                message, host = failed
                raise SharedError(message if rank == 0 else f"rank {rank} ({host}): {message}")
        return self.broadcast(result) if main_only else result

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def current_world() -> World:
    """This process's world, from torchrun's environment variables.

    Raises:
        InputError: the variables are inconsistent or the rendezvous fails.
    """
    env = os.environ
    size = int(env.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    try:
        rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except (KeyError, ValueError):
        raise InputError(
            "WORLD_SIZE is set but RANK is not: start sharded runs with torchrun"
        ) from None
    import torch.distributed as dist

    if not dist.is_initialized():
        try:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as e:
            raise InputError(f"rank {rank}: cannot join the torchrun process group ({e})") from None
    return World(rank, size, local_rank)


def device_for_rank(device: str, world: World) -> str:
    """``cuda`` becomes ``cuda:<local rank>`` in a sharded run (one GPU per rank).

    Raises:
        InputError: a fixed ``cuda:i`` in a sharded run (all ranks would share one GPU).
    """
    if not world.distributed or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise InputError(
            f"--device {device} in a run sharded over {world.size} ranks: pass --device cuda "
            "and each rank takes the GPU of its LOCAL_RANK (CUDA_VISIBLE_DEVICES to choose GPUs)"
        )
    return f"cuda:{world.local_rank}"
