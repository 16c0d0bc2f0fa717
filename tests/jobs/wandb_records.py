"""Read W&B's offline run file (run-<id>.wandb) back: the records a `wandb sync` would upload.

The file is a header (":W&B", the magic 0xBEE1, version 0) and then a LevelDB-style log of
32 KiB blocks: each chunk has a 7-byte header (CRC32C 4 bytes, length 2, type 1: full, first,
middle, last) and a record split over chunks is joined again. Each record is a
wandb_internal_pb2.Record. wandb 0.31 ships no reader in Python (its core, in Go, has one)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def chunks(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, "not a .wandb file"
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # the block's tail is padding
            pos += room
            continue
        length, kind = struct.unpack("<HB", data[pos + 4:pos + 7])
        body = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
            pending = b""
        elif kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK
        else:
            raise ValueError(f"chunk type {kind} at byte {pos}")


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    for body in chunks(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(body)
        yield record


def history(path: Path) -> list[dict[str, str]]:
    """Each logged row: key -> the value's JSON text."""
    return [{item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
            for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_record(path: Path):
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
