"""One writer per workdir: WORKDIR/run.lock, held by a training run from start to end.

The file records who holds it (host, pid, start time, command) and carries an exclusive
`flock`, which the kernel drops when the holder dies, however it dies. A second run on the
same workdir is refused with a message naming the holder. A lock whose holder is gone
(SIGKILL, a crash) is taken over with a warning: on the same host when its pid no longer
runs (or now names another process, or the machine rebooted since); a lock written on
another host cannot be checked from here, so it is refused unless the caller passes
`take_over=True` (main.py's --take_over_lock). Multi-host runs hold one lock, through
the chief process. Readers of finished runs (inference, evaluation) never need it.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from typing import Iterator

import jax

from ipcgan_jax import parallel
from ipcgan_jax.configlib import ConfigError

LOCK_FILE = "run.lock"


class WorkdirLockedError(RuntimeError):
    """Another run holds the workdir (or may: a lock of another host)."""


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), which tells a
    reused pid from the one recorded."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _holder_running(holder: dict) -> bool:
    """Whether the process that wrote `holder` (on this host) still runs."""
    pid = holder.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return False
    if holder.get("boot_id") and holder["boot_id"] != _boot_id():
        return False  # the machine rebooted: that pid is another process
    recorded = holder.get("process_start")
    return recorded is None or recorded == _process_start(pid)


def _describe(holder: dict) -> str:
    if not holder:
        return "another run (starting: its lock record is not written yet)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')!r} since {holder.get('started')} "
            f"({holder.get('command', '?')})")


def _read_holder(fd: int, path: str) -> dict | None:
    """The lock file's record; None when empty (new, or its writer was killed before
    writing: the record is one small write)."""
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    if not data.strip():
        return None
    try:
        holder = json.loads(data)
    except ValueError:
        holder = None
    if not isinstance(holder, dict) or not {"host", "pid"} <= set(holder):
        raise WorkdirLockedError(f"{path} is not a lock file of this project (no host and pid in it); "
                                 "move it away, it is not ours to overwrite")
    return holder


def _open_locked(path: str) -> int:
    """An open descriptor of `path` carrying our exclusive flock (retries when the holder
    removed the file between our open and our flock)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = _read_holder(fd, path) or {}
            finally:
                os.close(fd)
            raise WorkdirLockedError(f"{os.path.dirname(path)} is in use by {_describe(holder)}; wait for it "
                                     f"to finish or choose another --workdir (lock: {path})") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            return fd
        os.close(fd)


def acquire(workdir: str, *, take_over: bool = False) -> int:
    """Takes WORKDIR/run.lock for this process; returns the descriptor `release` needs."""
    path = os.path.join(workdir, LOCK_FILE)
    fd = _open_locked(path)
    try:
        holder = _read_holder(fd, path)
        if holder is not None:
            same_host = holder.get("host") == socket.gethostname()
            if same_host and _holder_running(holder) and not take_over:
                raise WorkdirLockedError(f"{workdir} is in use by {_describe(holder)}; wait for it to finish or "
                                         f"choose another --workdir (lock: {path})")
            if not same_host and not take_over:
                raise WorkdirLockedError(
                    f"{workdir} is locked by {_describe(holder)}, which cannot be checked from this host; if "
                    f"that run is gone (e.g. its node crashed), rerun with --take_over_lock (lock: {path})")
            why = "as asked (take_over)" if take_over else "which is no longer running"
            logging.getLogger(__name__).warning("taking over the lock of %s from %s, %s", workdir,
                                                _describe(holder), why)
        record = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                  "boot_id": _boot_id(), "command": " ".join(sys.argv),
                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record, indent=1) + "\n").encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(workdir: str, fd: int) -> None:
    """Removes the lock file, then drops the flock (in that order, so that no second run
    can lock the file while it is being removed)."""
    try:
        os.unlink(os.path.join(workdir, LOCK_FILE))
    finally:
        os.close(fd)


@contextlib.contextmanager
def workdir_lock(workdir: str, *, take_over: bool = False) -> Iterator[None]:
    """Holds WORKDIR/run.lock (see the module doc) on the chief process for the duration;
    every process raises WorkdirLockedError if the chief could not take it. Creates the
    workdir if needed and removes it again if it is still empty at the end (a run refused
    before writing anything leaves nothing behind)."""
    created = not os.path.isdir(workdir)
    fd, error = None, None
    if jax.process_index() == 0:
        try:
            os.makedirs(workdir, exist_ok=True)
            fd = acquire(workdir, take_over=take_over)
        except WorkdirLockedError as e:
            error = e
        except OSError as e:  # a regular file there, a read-only folder, ...
            error = ConfigError(f"--workdir {workdir} cannot be used: {e.strerror or e}"
                                + (f" ({e.filename})" if e.filename and e.filename != workdir else ""))
    if parallel.any_process(error is not None):
        raise error or WorkdirLockedError(f"{workdir} is in use by another run (the chief process was refused)")
    try:
        yield
    finally:
        if fd is not None:
            release(workdir, fd)
            if created and not os.listdir(workdir):
                os.rmdir(workdir)
