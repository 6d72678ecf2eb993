"""Fixed-size ring buffers: a session's memory does not grow with its length."""

from __future__ import annotations

import numpy as np


class Ring:
    """The last `size` values of one or more parallel columns."""

    __slots__ = ("columns", "pos", "count", "size")

    def __init__(self, size: int, dtypes: dict[str, str]):
        self.size = size
        self.columns = {name: np.zeros(size, dtype=dt) for name, dt in dtypes.items()}
        self.pos = 0  # next write position
        self.count = 0  # values held (<= size)

    def push(self, **values: np.ndarray) -> None:
        n = len(next(iter(values.values())))
        if n == 0:
            return
        if n >= self.size:
            for name, v in values.items():
                self.columns[name][:] = v[-self.size :]
            self.pos = 0
            self.count = self.size
            return
        end = self.pos + n
        for name, v in values.items():
            col = self.columns[name]
            if end <= self.size:
                col[self.pos : end] = v
            else:
                cut = self.size - self.pos
                col[self.pos :] = v[:cut]
                col[: end - self.size] = v[cut:]
        self.pos = end % self.size
        self.count = min(self.count + n, self.size)

    def get(self, name: str) -> np.ndarray:
        """The held values of one column, oldest first."""
        col = self.columns[name]
        if self.count < self.size:
            return col[: self.count]
        return np.concatenate((col[self.pos :], col[: self.pos]))

    def clear(self) -> None:
        self.pos = 0
        self.count = 0

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}.{name}": col for name, col in self.columns.items()}
        out[f"{prefix}.#"] = np.array([self.pos, self.count], dtype=np.int64)
        return out

    def load(self, prefix: str, state: dict[str, np.ndarray]) -> None:
        for name, col in self.columns.items():
            value = state[f"{prefix}.{name}"]
            if value.shape != col.shape:
                raise ValueError(f"{prefix}.{name}: wrong shape in saved state")
            self.columns[name] = value.astype(col.dtype, copy=True)
        pos, count = (int(v) for v in state[f"{prefix}.#"])
        if not (0 <= pos < self.size and 0 <= count <= self.size):
            raise ValueError(f"{prefix}: corrupt ring position")
        self.pos, self.count = pos, count
