"""A small, pickle-free container for named numpy arrays (session state on the wire)."""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"ZTSS"
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length
_ALLOWED = {"<f8", "<f4", "<i8", "<i2", "|u1", "|i1", "<u2"}
_MAX_NDIM = 4
# a scorer's state is ~60 KB; decoding copies each array once, so with byte ranges that tile the body exactly the
# memory decode takes is bounded by the blob's own size, and this bounds that
MAX_STATE_BYTES = 16 * 1024 * 1024


def encode(arrays: dict[str, np.ndarray], version: int) -> bytes:
    header = {}
    chunks = []
    offset = 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == "=" else a.dtype
        raw = a.astype(dt, copy=False).tobytes()
        header[name] = [dt.str, list(a.shape), offset, len(raw)]
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, version, len(head)) + head + b"".join(chunks)


def decode(data: bytes, version: int) -> dict[str, np.ndarray]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError("state must be bytes")
    if len(data) > MAX_STATE_BYTES:
        raise ValueError(f"session state over {MAX_STATE_BYTES} bytes")
    data = bytes(data)
    if len(data) < _PREFIX.size:
        raise ValueError("state too short")
    magic, ver, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ValueError("not a ztgate session state")
    if ver != version:
        raise ValueError(f"session state version {ver} is not supported (expected {version})")
    body_start = _PREFIX.size + head_len
    try:
        header = json.loads(data[_PREFIX.size : body_start])
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd numbers, absurd nesting
        raise ValueError("corrupt session state header") from exc
    if not isinstance(header, dict):
        raise ValueError("corrupt session state header: not a mapping")
    body = data[body_start:]
    entries = [(name, *_entry(name, value)) for name, value in header.items()]
    # the arrays' byte ranges must tile the body, as encode writes them: no overlap (2,000 names pointing at one
    # 1 MiB range made decode allocate 2 GiB from a 1 MiB blob), no gap, nothing past the end
    end = 0
    for _, _, _, offset, size in sorted(entries, key=lambda e: (e[3], e[4])):
        if offset != end:
            raise ValueError("session state arrays overlap or leave gaps")
        end = offset + size
    if end != len(body):
        raise ValueError("session state arrays do not cover its body")
    out = {}
    for name, dt, shape, offset, size in entries:
        a = np.frombuffer(body, dtype=dt, count=size // dt.itemsize, offset=offset)
        out[name] = a.reshape(shape).copy()
    return out


def _entry(name: str, value) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """(dtype, shape, offset, size) of one header entry, checked for type and consistency."""
    if not isinstance(value, list) or len(value) != 4:
        raise ValueError(f"{name}: header entry is not [dtype, shape, offset, size]")
    dt, shape, offset, size = value
    if not isinstance(dt, str) or dt not in _ALLOWED:
        raise ValueError(f"{name}: dtype {dt!r} not allowed")
    if not isinstance(shape, list) or len(shape) > _MAX_NDIM or not all(_is_count(d) for d in shape):
        raise ValueError(f"{name}: shape must be a list of at most {_MAX_NDIM} non-negative integers")
    if not (_is_count(offset) and _is_count(size)):
        raise ValueError(f"{name}: offset and size must be non-negative integers")
    dtype = np.dtype(dt)
    elements = 1
    for d in shape:
        elements *= d  # Python integers: a huge shape cannot wrap around
    if elements * dtype.itemsize != size:
        raise ValueError(f"{name}: shape does not match its data")
    return dtype, tuple(shape), offset, size


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
