"""Files that must survive a crash are written to a temporary name in the same folder and renamed (ARCHITECTURE.md,
"Conventions").

Also the lock that keeps a second process out of a run folder (`FolderLock`).

Layer 0: no menas imports, no torch.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Calls `write(tmp)` for a temporary file beside `path`, then renames it to `path`: readers see the old file
    or the whole new one, never a half-written one. The temporary file is removed if `write` fails. The
    temporary name keeps the suffix (some writers pick the format from it) and holds the process id (two processes
    writing the same file do not share a temporary)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """`data` as indented JSON, atomically."""
    return write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


class FolderLocked(OSError):
    """Another process holds a folder's lock; the message says who (pid, host, command, since when)."""


class FolderLock:
    """An exclusive `fcntl.flock` on `folder/name`, held while this object is open.

    The kernel drops the lock when the holding process dies (even by SIGKILL), so a crash never leaves a stale
    lock behind; the file itself stays and says who held it last. The holder writes its pid, host, command and
    start time into the file, so a second process can say who is in the way. The lock belongs to the open file
    description: a second `FolderLock` on the same folder conflicts even inside one process.
    """

    def __init__(self, folder: str | os.PathLike[str], command: str, name: str = "menas.lock") -> None:
        """Takes the lock at once, or raises `FolderLocked` naming the holder; never waits."""
        self.path = Path(folder) / name
        self._file = open(self.path, "a+")  # noqa: SIM115 - held open while locked; "a+" never truncates
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FolderLocked(
                f"{str(self.path.parent)!r} is in use by {self.holder(self.path)}; wait for it to "
                "end or stop that process first"
            ) from None
        except BaseException:
            self._file.close()
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps(info) + "\n")
        self._file.flush()

    @staticmethod
    def holder(path: str | os.PathLike[str]) -> str:
        """Who the lock file at `path` names, in words ("an unknown process" while it is being written)."""
        try:
            info = json.loads(Path(path).read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
            return f"pid {info['pid']} on {info['host']} ({info['command']}, since {since})"
        except (OSError, ValueError, KeyError, TypeError):
            return "an unknown process"

    @property
    def held(self) -> bool:
        return not self._file.closed

    def release(self) -> None:
        """Drops the lock (idempotent); the file stays for the record."""
        if not self._file.closed:
            self._file.close()  # closing the only descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
