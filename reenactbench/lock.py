"""The run-directory lock: one command (or one torchrun job) writes a run directory at a
time.

An advisory ``flock`` on ``OUT/.lock``, which also holds the holder's pid, host, start
time and command. The kernel drops the lock when its holder dies (SIGKILL included), so
a lock left by a dead process is simply taken over, with a message naming the previous
holder. On network file systems ``flock`` works where the mount supports it (NFSv4,
Lustre with ``-o flock``); where it is refused, the run goes on with a warning that
concurrent commands are not detected (docs/scaling.md).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from reenactbench.errors import InputError

__all__ = ["RunLock", "RunDirLocked", "LOCK_NAME"]

LOCK_NAME = ".lock"
_UNSUPPORTED = {errno.ENOLCK, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP}


class RunDirLocked(InputError):
    """Another live process holds the run directory's lock."""


def _describe(holder: dict[str, Any]) -> str:
    what = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if holder.get("world_size", 1) > 1:
        what += f" (torchrun, {holder['world_size']} ranks)"
    if holder.get("since"):
        what += f", since {holder['since']}"
    if holder.get("command"):
        what += f": {holder['command']}"
    return what


class RunLock:
    """Exclusive lock on a run directory, held from :meth:`acquire` to :meth:`release`.

    Args:
        run_dir: the run directory (created if needed).
        world_size: recorded for the message another process sees.
        say: receives notices (a stale lock taken over, no lock support).
    """

    def __init__(
        self, run_dir: Path, world_size: int = 1, say: Callable[[str], None] | None = None
    ) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.world_size = world_size
        self.say = say or (lambda _m: None)
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        """Take the lock.

        Raises:
            InputError: another live process holds it (named in the message).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise RunDirLocked(
                    f"{self.path.parent}: in use by {_describe(self._holder())}; wait for it "
                    "to finish, or pass another --out (shard one run over GPUs with torchrun, "
                    "docs/scaling.md)"
                ) from None
            if e.errno not in _UNSUPPORTED:
                os.close(fd)
                raise
            self.say(
                f"warning: {self.path.parent}: the file system refuses locks; a second command "
                "on this run directory would not be detected"
            )
        previous = self._holder()
        if previous.get("pid") and not previous.get("released"):
            self.say(f"taking over the lock of a process that is gone ({_describe(previous)})")
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "world_size": self.world_size,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        holder = {**self._holder(), "released": True}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(holder).encode(), 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
