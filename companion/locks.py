"""One process per run directory: the lock that ``train``, ``reproduce`` and the chapters' runs hold.

Two processes training into one directory overwrite each other's checkpoint (one of them then fails
renaming a temporary file the other has already moved) and leave a history that belongs to neither.
``run_lock`` takes the operating system's lock on a file of the directory for the whole run; a second
process is refused at once with a message that names the first (process id, host, command, start
time). The lock is ``filelock``'s (a dependency of torch, so nothing more to install): it is released
when the process ends, however it ends, so a killed run leaves no stale lock behind.

This module imports only the standard library and ``filelock``, so that the command line can report
a busy directory without importing the models.

See: appendix "Running the course".
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["run_lock", "RunInUseError", "LOCK_FILE"]

LOCK_FILE = ".lock"


class RunInUseError(RuntimeError):
    """Another process is training or evaluating in this run directory."""


_HELD: dict[Path, list] = {}   # run directories this process holds: resolved path -> [lock, depth]


def _command() -> list[str]:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "companion":
        argv = ["python", "-m", "companion", *argv[1:]]
    return argv


@contextlib.contextmanager
def run_lock(out: str | os.PathLike, lock_file: str | os.PathLike | None = None):
    """Hold the exclusive lock of the run directory ``out`` (created if missing) for a block.

    Taking it again in the same process (``reproduce`` around ``run_vae``) is allowed; the lock is
    per process, not per thread.

    Arguments:
        out: the run directory.
        lock_file: where the lock lives (default ``out/.lock``); ``reproduce`` keeps it beside the
            directory, which it renames when the run is finished. The holder's process id, host,
            command and start time are written next to it, in ``<lock_file>-owner.json``.
    Raises:
        RunInUseError: if another process holds it; the message gives that process's id, host,
            command and start time.
    """
    from filelock import FileLock, Timeout

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key = out.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    lock_path = Path(lock_file) if lock_file is not None else out / LOCK_FILE
    owner_path = lock_path.with_name(lock_path.name + "-owner.json")
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            owner = json.loads(owner_path.read_text())
            who = (f"process {owner['pid']} on {owner['host']}, started {owner['started']}: "
                   f"{' '.join(owner['command'])}")
        except (OSError, ValueError, KeyError):
            who = "another process"
        raise RunInUseError(f"{out} is in use by {who}. Wait for it to finish (or stop it), or use another "
                            "directory; two runs writing one directory would corrupt it") from None
    try:
        _HELD[key] = [lock, 1]
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "command": _command(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        owner_path.write_text(json.dumps(owner, indent=2) + "\n")
        yield
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            owner_path.unlink()
        lock.release()
