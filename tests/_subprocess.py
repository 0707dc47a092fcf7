"""Run Python in a child process the way a user would: outside the source tree, so that
`import pypatch` finds the installed package with its compiled core (the checkout's
pypatch/ has no _core when pypatch was installed non-editable, as CI does)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def run_python(*args: str, timeout: float = 120, env: dict | None = None
               ) -> subprocess.CompletedProcess:
    """``python *args`` with ``env`` added to this process's environment."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=tempfile.gettempdir(),
                          env={**os.environ, **(env or {})})
