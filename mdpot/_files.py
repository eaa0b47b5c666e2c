"""Files that survive crashes and concurrent runs: atomic writes, temporary files that name their writer, removal
of the temporary files of dead writers, an exclusive lock on a run folder, and paths fit to be recorded in files
that travel to other machines.

Temporary files
    ``.NAME.PID@HOST.tmp`` next to ``NAME``: written completely, flushed to disk, then renamed over ``NAME``
    (``os.replace``, atomic on POSIX). A writer killed on the way leaves only its temporary file behind; the next
    writer of ``NAME`` removes it if its writer is dead: the host is this one and no process ``PID`` exists.
    A live writer's file, or one from another host (whose processes cannot be seen from here), is left alone.
    ``.NAME.PID.tmp`` (no host; written by mdpot 0.1) counts as this host's.

Folder locks
    :class:`FolderLock` holds ``fcntl.flock`` on ``FOLDER/.mdpot.lock`` and writes its holder (pid, host, start
    time, command) into it. The kernel drops the lock when the holder dies however it dies, so a lock that can be
    taken while the file still names a holder was left by a dead process: it is taken over and the caller is told
    so. A record naming another host is not taken over even then, because flock is not shared between hosts on
    every network file system and a process on another host cannot be checked from here: the error says to delete
    the lock file if that run is over. The holder deletes the lock file when it releases it.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Union

try:
    import fcntl
except ImportError:  # not POSIX: the holder record alone guards the folder
    fcntl = None

PathLike = Union[str, os.PathLike]

LOCK_NAME = ".mdpot.lock"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[^@/]+))?\.tmp$")


def hostname() -> str:
    """This machine's host name as temporary files and lock records carry it (no ``@`` or ``/``)."""
    return socket.gethostname().replace("@", "_").replace("/", "_") or "localhost"


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_path(path: PathLike) -> Path:
    """The temporary file this process writes ``path`` through: ``.NAME.PID@HOST.tmp`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}@{hostname()}.tmp")


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_write(path: PathLike) -> Iterator[Path]:
    """Write ``path`` all at once: yields the temporary path to write (and check) the content at, then renames it
    over ``path``. If the block raises, the temporary file is removed and ``path`` is untouched. Temporary files
    of earlier writers of ``path`` that died are removed first.

    Example
    -------
    >>> with atomic_write("metrics.csv") as tmp:
    ...     tmp.write_text("epoch,loss\\n1,0.5\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, [path.name])
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def stale_temps(folder: PathLike, names: Iterable[str]) -> List[Path]:
    """The temporary files in ``folder`` of writers of ``names`` that are dead (this host, no such process)."""
    folder, me = Path(folder), hostname()
    found = []
    for name in names:
        prefix = f".{name}."
        for entry in folder.glob(f".{_glob_escape(name)}.*.tmp"):
            m = _TEMP.match(entry.name)
            if m is None or not entry.name.startswith(prefix) or m["name"] != name:
                continue
            if (m["host"] in (None, me)) and not pid_alive(int(m["pid"])):
                found.append(entry)
    return sorted(found)


def remove_stale_temps(folder: PathLike, names: Iterable[str]) -> List[Path]:
    """Remove :func:`stale_temps`; returns what was removed."""
    removed = []
    for entry in stale_temps(folder, names):
        try:
            entry.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(entry)
    return removed


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def portable_path(path: PathLike, base: Optional[PathLike] = None) -> str:
    """``path`` as it may be recorded in a file that leaves this machine: relative to ``base`` (default: the
    working directory) when it lies inside it, else its name alone. Never an absolute path."""
    path, base = Path(path), Path(base if base is not None else os.getcwd())
    for p, b in ((Path(os.path.abspath(path)), Path(os.path.abspath(base))), (path.resolve(), base.resolve())):
        try:
            return p.relative_to(b).as_posix()
        except ValueError:
            continue
    return Path(os.path.abspath(path)).name


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock (or may: a record from another host)."""


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _describe(record: Dict[str, object]) -> str:
    return (f"pid {record.get('pid', '?')} on host {record.get('host', '?')}, "
            f"started {record.get('started', 'at an unknown time')}")


class FolderLock:
    """Exclusive lock on a folder for one process (see the module docstring for the rules).

    Parameters
    ----------
    folder : path
        Created (with parents) on :meth:`acquire` if missing; what this lock created is removed again on
        :meth:`release` if it is then empty (a run that failed before writing anything leaves no folder).
    what : str
        What holds the lock, for messages ("training").
    log : callable, optional
        Receives the one line said when a dead holder's lock is taken over.

    Example
    -------
    >>> with FolderLock("runs/cu", what="training"):
    ...     pass  # a second process entering here fails with FolderLockedError naming this one
    """

    def __init__(self, folder: PathLike, what: str = "process", log: Optional[Callable[[str], None]] = None) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self.log = log if log is not None else (lambda line: print(line, file=sys.stderr))
        self._fd: Optional[int] = None
        self._created: List[Path] = []
        self.taken_over: Optional[Dict[str, object]] = None

    def _read(self, fd: int) -> Dict[str, object]:
        try:
            raw = os.pread(fd, 1 << 16, 0)
            record = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "unreadable record"}
        return record if isinstance(record, dict) else {}

    def _read_holder(self) -> Dict[str, object]:
        """The record of a live holder; it may be a moment from writing it, so look a few times."""
        import time

        record: Dict[str, object] = {}
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                break
            try:
                record = self._read(fd)
            finally:
                os.close(fd)
            if record:
                break
            time.sleep(0.05)
        return record

    def _open_locked(self) -> "tuple[int, bool]":
        """Open the lock file and flock it; returns (fd, whether the OS lock is in force). Retries when the file
        it locked was deleted by the previous holder in between (then it is no longer the folder's lock)."""
        for _ in range(100):
            if not self.folder.is_dir():
                missing = [self.folder] + [p for p in self.folder.parents if not p.exists()]
                self.folder.mkdir(parents=True, exist_ok=True)
                self._created = self._created or missing
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder vanished (a previous holder removed it): make it again
                continue
            locked = False
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                except BlockingIOError:
                    os.close(fd)
                    holder = self._read_holder()
                    raise FolderLockedError(f"{self.folder} is in use by another {self.what} ({_describe(holder)}); "
                                            f"wait for it to finish or use another folder") from None
                except OSError as exc:
                    if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        os.close(fd)
                        raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd, locked
            os.close(fd)
        raise FolderLockedError(f"{self.folder}: could not take the lock {self.path} (it keeps being replaced)")

    def acquire(self) -> "FolderLock":
        """Take the lock or raise :class:`FolderLockedError` naming the holder (pid, host, start time)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this FolderLock")
        fd, os_locked = self._open_locked()
        try:
            previous = self._read(fd)
            if previous:
                host = previous.get("host")
                pid = previous.get("pid")
                if host not in (None, "?", hostname()):
                    raise FolderLockedError(
                        f"{self.folder} is locked by a {self.what} on another host ({_describe(previous)}) that cannot "
                        f"be checked from here; if it is no longer running, delete {self.path}")
                if not os_locked and isinstance(pid, int) and pid != os.getpid() and pid_alive(pid):
                    raise FolderLockedError(f"{self.folder} is in use by another {self.what} ({_describe(previous)}); "
                                            f"wait for it to finish or use another folder")
                self.taken_over = previous
                self.log(f"taking over the lock on {self.folder}: the {self.what} that held it ({_describe(previous)}) "
                         f"is no longer running")
            record = {"pid": os.getpid(), "host": hostname(), "started": _now(), "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])}
            data = (json.dumps(record) + "\n").encode("utf-8")
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Delete the lock file and drop the lock (and the folder, if this lock made it and it is empty)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None
        for folder in self._created:  # innermost first; each only if empty
            try:
                folder.rmdir()
            except OSError:
                break

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


__all__ = ["FolderLock", "FolderLockedError", "LOCK_NAME", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "hostname", "pid_alive", "portable_path", "remove_stale_temps", "sha256_file", "stale_temps", "temp_path"]
