"""The on-disk spool: where accepted batches wait while PostgreSQL is away.

One file per batch, named by a growing sequence number, so replay order is file order.
A batch is written to a temporary name, fsync'd, renamed and the directory fsync'd: once
``append`` returns, the batch survives a crash or SIGKILL. A file is removed only after its
batch is in the database, so a crash in between replays it again, which the write path's
idempotence makes harmless. Each file carries a CRC; one that fails it is moved aside to
``corrupt/`` and counted, never silently skipped.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from netmon.errors import SpoolError
from netmon.logs import get_logger

__all__ = ["Spool", "write_durably"]

log = get_logger(__name__)

_MAGIC = b"NMSP1"
_HEADER = struct.Struct(">5sII")  # magic, crc32, payload length
_SUFFIX = ".batch"


def write_durably(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``path`` whole or not at all, and make it survive a crash: a temporary file,
    fsync, rename over ``path``, fsync of the folder (the rename itself is metadata)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Spool:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for leftover in directory.glob("*.tmp"):  # never acknowledged: not accepted
                leftover.unlink()
            files = self.pending()
        except OSError as exc:
            raise SpoolError(f"spool directory {directory}: {exc.strerror}") from exc
        self._next = int(files[-1].stem) + 1 if files else 1
        self._bytes = sum(f.stat().st_size for f in files)
        self._count = len(files)
        self.corrupt = 0

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{_SUFFIX}"))

    def __len__(self) -> int:
        return self._count

    def append(self, payload: bytes) -> bool:
        """Store one batch durably. False (nothing stored) when the spool is full."""
        record = _HEADER.pack(_MAGIC, zlib.crc32(payload), len(payload)) + payload
        with self._lock:
            if self._bytes + len(record) > self.max_bytes:
                return False
            seq = self._next
            self._next += 1
            final = self.directory / f"{seq:016d}{_SUFFIX}"
            try:
                write_durably(final, record)
            except OSError as exc:
                raise SpoolError(f"cannot write spool file {final}: {exc.strerror}") from exc
            self._bytes += len(record)
            self._count += 1
            return True

    def read(self, path: Path) -> bytes | None:
        """The batch in ``path``, or None if the file is corrupt (it is moved aside)."""
        data = path.read_bytes()
        if len(data) >= _HEADER.size:
            magic, crc, length = _HEADER.unpack_from(data)
            payload = data[_HEADER.size :]
            if magic == _MAGIC and length == len(payload) and zlib.crc32(payload) == crc:
                return payload
        self.set_aside(path, "checksum or length mismatch")
        return None

    def set_aside(self, path: Path, reason: str) -> None:
        """Move an unusable file to ``corrupt/`` and count it, so replay can go on."""
        size = path.stat().st_size
        aside = self.directory / "corrupt"
        aside.mkdir(exist_ok=True)
        # Sequence numbers start again at 1 once the spool has drained, so an earlier
        # corrupt file of the same name may be there already: never overwrite it.
        target = aside / path.name
        n = 1
        while target.exists():
            target = aside / f"{path.name}.{n}"
            n += 1
        path.rename(target)
        with self._lock:
            self._bytes -= size
            self._count -= 1
            self.corrupt += 1
        log.error("corrupt spool file moved aside", file=str(target), reason=reason)

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        with self._lock:
            self._bytes -= size
            self._count -= 1
