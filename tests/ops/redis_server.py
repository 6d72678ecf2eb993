"""A Redis of the test's own on a free loopback port, which the test may stop and start again (an outage).

No persistence (`--save "" --appendonly no`): a restart comes back empty, the hardest case for revocations.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from tests.support.processes import free_port, wait_until


class OwnRedis:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_until(self._answers, timeout=10, what=f"redis-server on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            time.sleep(0.05)
            return False
