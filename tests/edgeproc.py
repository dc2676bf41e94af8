"""Start a real edge daemon as a subprocess, for tests that kill or signal it by pid."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_edge(port: int, *extra: str, timeout_s: float = 120) -> subprocess.Popen:
    """`hybridsr-edge serve` with the tiny preset on `port`; returns once /healthz answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hybridsr.server", "serve", "--port", str(port), "--preset",
         "tiny", *extra],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                tail = proc.stderr.read().decode()[-2000:]
                raise RuntimeError(f"edge did not start: {tail}") from None
            time.sleep(0.2)
