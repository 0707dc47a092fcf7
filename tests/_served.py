"""A real ``pypatch serve`` process on 127.0.0.1 for the tests (tests/serve/, the Ray serving
test): started outside the checkout (cwd: the temp folder, so it imports the installed pypatch,
as CI installs it), waited for on ``/healthz``, stopped with SIGTERM."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time

import httpx


class Served:
    def __init__(self, index, *args):
        with socket.socket() as s:  # a free port (released just before the server binds it)
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pypatch", "serve", str(index), "--port", str(self.port),
             "--threads", "2", *map(str, args)],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}): {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server not up in 120 s: {self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def client(self, key=None, headers=None):
        headers = {**({"X-API-Key": key} if key else {}), **(headers or {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
