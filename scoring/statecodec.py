"""A small, pickle-free container for named numpy arrays (session state on the wire)."""

from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"ZTSS"
_PREFIX = struct.Struct("<4sHI")  # magic, version, header length
_ALLOWED = {"<f8", "<f4", "<i8", "<i2", "|u1", "|i1", "<u2"}


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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("corrupt session state header") from exc
    body = data[body_start:]
    out = {}
    for name, (dt, shape, offset, size) in header.items():
        if dt not in _ALLOWED:
            raise ValueError(f"{name}: dtype {dt} not allowed")
        if offset < 0 or offset + size > len(body):
            raise ValueError(f"{name}: truncated session state")
        a = np.frombuffer(body, dtype=np.dtype(dt), count=size // np.dtype(dt).itemsize, offset=offset)
        if int(np.prod(shape)) != len(a):
            raise ValueError(f"{name}: shape does not match its data")
        out[name] = a.reshape(shape).copy()
    return out
