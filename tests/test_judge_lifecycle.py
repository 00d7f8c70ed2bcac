"""The embedded judge server never outlives the process that started it, even after kill -9."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import os, sys
from hrlaif.judges.server import embedded_judge
with embedded_judge() as cfg:
    print(cfg.url, flush=True)
    sys.stdin.read()  # wait to be killed
"""


def _server_pids(url_port: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"hrlaif.judges.llama_launcher.*--port {url_port}"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_server_dies_with_killed_parent():
    p = subprocess.Popen([sys.executable, "-c", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = p.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:")
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert _server_pids(port), "server should be running while its parent lives"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.time() + 15
    while _server_pids(port) and time.time() < deadline:
        time.sleep(0.2)
    assert not _server_pids(port), "orphaned judge server after kill -9 of its parent"
