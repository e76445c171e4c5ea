"""Reading container logs in the CRI format, as conmon writes them.

Each line of the file is one record:

    <RFC 3339 time with nanoseconds> <stdout|stderr> <F|P> <content>

`F` ends a line the container wrote; `P` is a part of a longer line and the
next record continues it. `LogDecoder` turns records into the bytes the
container wrote (optionally with the time before each line) and `tail_offset`
finds where the last N lines begin without reading the whole file. Pure
functions over bytes and open files; no I/O of their own beyond `f.read`.
"""

from __future__ import annotations

import os
from typing import BinaryIO

FULL, PARTIAL = b"F", b"P"
_BLOCK = 64 * 1024


def parse_record(raw: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """(time, stream, tag, content) of one record without its newline, or None
    when it is not a CRI record (a corrupt or foreign line is skipped)."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0], parts[1], parts[2]
    if stream not in (b"stdout", b"stderr"):
        return None
    content = parts[3] if len(parts) == 4 else b""
    if tag not in (FULL, PARTIAL):
        # Older writers had no tag: the rest is the content of a whole line.
        return ts, stream, FULL, (tag + b" " + content) if len(parts) == 4 else tag
    return ts, stream, tag, content


class LogDecoder:
    """Turns complete records (raw file lines, newline removed) into output bytes.

    Parts of a long line are held until its final record arrives, so output
    only ever holds whole lines; `flush()` gives out a held part (used when
    the container has exited and no final record will come).
    """

    def __init__(self, timestamps: bool = False):
        self.timestamps = timestamps
        self._pending: list[bytes] = []
        self._pending_ts = b""

    def feed(self, raw: bytes) -> bytes:
        rec = parse_record(raw)
        if rec is None:
            return b""
        ts, _stream, tag, content = rec
        if not self._pending:
            self._pending_ts = ts
        self._pending.append(content)
        if tag == PARTIAL:
            return b""
        return self._emit(newline=True)

    def flush(self) -> bytes:
        return self._emit(newline=False) if self._pending else b""

    def _emit(self, newline: bool) -> bytes:
        line = b"".join(self._pending)
        self._pending.clear()
        prefix = self._pending_ts + b" " if self.timestamps else b""
        return prefix + line + (b"\n" if newline else b"")


def tail_offset(f: BinaryIO, lines: int, end: int | None = None) -> int:
    """The offset in `f` where the last `lines` whole lines before `end` begin;
    0 when the file holds fewer. `lines` == 0 gives the end of the last
    complete record (where a follower starts reading).

    A whole line is the P records of a long line and the F record ending it,
    so the answer is just after the newline of the (lines + 1)-th F record
    from the end. Reads backwards a block at a time: the cost follows
    `lines`, not the file's size. An unfinished last record (no newline yet)
    is not counted.
    """
    if end is None:
        end = f.seek(0, os.SEEK_END)
    pos, buf = end, b""

    def read_back() -> bool:
        nonlocal pos, buf
        if pos == 0:
            return False
        step = min(_BLOCK, pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
        return True

    # Drop the unfinished record after the last newline.
    while (nl := buf.rfind(b"\n")) < 0:
        if not read_back():
            return 0
    buf = buf[:nl + 1]
    if lines <= 0:
        return pos + len(buf)
    seen = 0
    # Invariant: buf covers [pos, pos + len(buf)) and ends with a newline.
    while buf:
        prev = buf.rfind(b"\n", 0, len(buf) - 1)
        if prev < 0 and read_back():
            continue
        record = buf[prev + 1:-1]
        if _is_full(record):
            seen += 1
            if seen == lines + 1:
                return pos + len(buf)
        buf = buf[:prev + 1]
    return 0


def _is_full(record: bytes) -> bool:
    rec = parse_record(record)
    return rec is not None and rec[2] == FULL
