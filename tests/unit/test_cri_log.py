"""Decoding CRI log files and finding where their last N lines begin."""

from __future__ import annotations

import io
import random

import pytest

from node_agent.node_service import cri_log
from node_agent.node_service.cri_log import LogDecoder, parse_record, tail_offset

TS = b"2024-05-01T10:00:00.123456789+00:00"


def rec(tag: bytes, text: bytes, stream: bytes = b"stdout") -> bytes:
    return TS + b" " + stream + b" " + tag + b" " + text + b"\n"


def decode(data: bytes, timestamps: bool = False) -> bytes:
    d = LogDecoder(timestamps)
    return b"".join(d.feed(r) for r in data.split(b"\n")[:-1])


@pytest.mark.parametrize("raw,want", [
    (TS + b" stdout F hello world", (TS, b"stdout", b"F", b"hello world")),
    (TS + b" stderr P part", (TS, b"stderr", b"P", b"part")),
    (TS + b" stdout F ", (TS, b"stdout", b"F", b"")),
    (TS + b" stdout F", (TS, b"stdout", b"F", b"")),
    (TS + b" stdout untagged line", (TS, b"stdout", b"F", b"untagged line")),
    (b"garbage", None),
    (TS + b" stdin F x", None),
], ids=["full", "partial", "empty-line", "no-space", "untagged", "garbage", "bad-stream"])
def test_parse_record(raw, want):
    assert parse_record(raw) == want


def test_partial_records_join_into_one_line_with_the_first_time():
    data = rec(b"P", b"abc") + rec(b"P", b"def", b"stderr") + rec(b"F", b"ghi") + rec(b"F", b"next")
    assert decode(data) == b"abcdefghi\nnext\n"
    assert decode(data, timestamps=True) == TS + b" abcdefghi\n" + TS + b" next\n"


def test_an_unfinished_line_is_held_until_flushed():
    d = LogDecoder()
    assert d.feed(rec(b"P", b"half")[:-1]) == b""
    assert d.flush() == b"half"
    assert d.flush() == b""


@pytest.mark.parametrize("block", [7, 64, 65536], ids=["tiny-blocks", "small-blocks", "one-block"])
def test_tail_offset_gives_the_last_n_whole_lines(monkeypatch, block):
    monkeypatch.setattr(cri_log, "_BLOCK", block)
    rng = random.Random(block)
    for _ in range(100):
        records, lines, current = [], [], b""
        for i in range(rng.randint(0, 30)):
            if rng.random() < 0.3:
                records.append(rec(b"P", b"p%d" % i))
                current += b"p%d" % i
            else:
                records.append(rec(b"F", b"f%d" % i))
                lines.append(current + b"f%d" % i)
                current = b""
        data = b"".join(records)
        if rng.random() < 0.5:
            data += TS + b" stdout F still being writ"  # no newline yet: not counted
        for n in range(1, len(lines) + 3):
            offset = tail_offset(io.BytesIO(data), n)
            got = decode(data[offset:]).split(b"\n")[:-1]
            assert got == lines[-n:], (n, data)


def test_tail_zero_starts_after_the_last_complete_record():
    data = rec(b"F", b"one") + rec(b"F", b"two") + TS + b" stdout F unfin"
    assert tail_offset(io.BytesIO(data), 0) == len(rec(b"F", b"one") + rec(b"F", b"two"))
    assert tail_offset(io.BytesIO(b""), 3) == 0
    assert tail_offset(io.BytesIO(b"no newline at all"), 0) == 0
