"""What ``pypatch serve`` was told, checked once at start (so requests never meet a bad setting)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from pypatch._checks import as_int, as_number
from pypatch.errors import InvalidArgumentError

#: a server default far below Pillow's 89 Mpx: every request decodes in its own thread, and
#: 25 Mpx of RGB is 75 MB each
DEFAULT_MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class Settings:
    index: str  # the index file (re-read on reload)
    host: str = "127.0.0.1"
    port: int = 8080
    threads: Optional[int] = None  # native scan and ONNX threads (None: the cores available)
    max_batch: int = 64  # queries gathered into one batched call (1: one call per request)
    max_wait_ms: float = 2.0  # how long a batch waits for more after its first query
    # query images per onnxruntime run inside a batch: on 2 vCPUs a run of 12 cost 53 ms per
    # image against 31-36 alone (benchmarks/README.md, Serving), so batches are scanned
    # together but embedded one by one unless told otherwise
    onnx_batch: int = 1
    max_queue: int = 1024  # queued queries beyond this are refused at once (503)
    allow_paths: Optional[str] = None  # real path of the one folder image_path may read from
    api_key: Optional[str] = None
    max_body_bytes: int = 20 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    timeout_s: float = 30.0
    max_k: int = 1000
    max_vectors: int = 1024  # rows of one /search/vectors request
    # --ray: a sharded folder searched by shard-holding Ray actors (pypatch[ray])
    ray: bool = False
    ray_address: Optional[str] = None  # None: start (or reuse) a local Ray instance
    # how long a query waits for a shard actor (e.g. one restarting) before the whole query
    # fails with 503; below timeout_s, so the client hears why instead of a bare 504
    ray_timeout_s: float = 20.0

    def __post_init__(self):
        if not isinstance(self.index, str) or not self.index:
            raise InvalidArgumentError("index: expected an index file path")
        as_int(self.port, "--port", 0, 65535)
        if self.threads is not None:
            as_int(self.threads, "--threads", 1)
        as_int(self.max_batch, "--max-batch", 1, 4096)
        as_number(self.max_wait_ms, "--max-wait-ms", 0.0, 1000.0)
        as_int(self.onnx_batch, "--onnx-batch", 1, 4096)
        as_int(self.max_queue, "--max-queue", 1)
        as_int(self.max_body_bytes, "--max-body-bytes", 1024)
        as_int(self.max_pixels, "--max-pixels", 1)
        as_number(self.timeout_s, "--timeout-s", 0.001, 3600.0)
        as_int(self.max_k, "max_k", 1)
        as_int(self.max_vectors, "max_vectors", 1)
        as_number(self.ray_timeout_s, "--ray-timeout-s", 0.001, 3600.0)
        if self.ray_address is not None and not self.ray:
            raise InvalidArgumentError("--ray-address: only with --ray")


def read_api_key(path: str) -> str:
    """The key in ``path`` (surrounding whitespace stripped); an empty file is an error, not
    an open server."""
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise InvalidArgumentError(f"--api-key-file {path}: the file is empty")
    if any(c.isspace() for c in key) or not key.isprintable():
        raise InvalidArgumentError(f"--api-key-file {path}: the key must be one printable word")
    return key


def allowed_root(path: str) -> str:
    """``--allow-paths DIR`` -> its real path (symlinks resolved), which must be a folder."""
    real = os.path.realpath(path)
    if not os.path.isdir(real):
        raise InvalidArgumentError(f"--allow-paths {path}: not a folder")
    return real
