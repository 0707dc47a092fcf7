"""The onnxruntime side of the Embedder: which model file, how many threads, which session.

The session is configured on purpose: graph optimisations ALL, sequential, ``inter_op=1``,
``intra_op`` = ``num_threads`` or the physical cores this process may use, spinning off so idle
ORT threads do not burn the cores our search pool needs. The model card is read from the loaded
session's metadata with :func:`pypatch.models.parse_model_card`.
"""
from __future__ import annotations

import os
from typing import Any


from pypatch._checks import as_int
from pypatch.errors import InvalidArgumentError, InvalidTypeError, ModelNotFoundError
from pypatch.models import RUNTIME_CARD_KEYS, parse_model_card


def physical_cores() -> int:
    """Physical cores this process may run on (CPU affinity and cgroup quota aware), at least 1."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:  # hyper-threads of one core share (package, core_id)
        base = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
        try:
            with open(base + "core_id") as f1, open(base + "physical_package_id") as f2:
                cores.add((f2.read().strip(), f1.read().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    n = len(cores) or 1
    try:  # cgroup v2 CPU quota ("max 100000" means unlimited)
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def check_threads(num_threads: Any) -> int:
    """``num_threads`` as a positive int (None = :func:`physical_cores`)."""
    if num_threads is None:
        return physical_cores()
    return as_int(num_threads, "num_threads", 1)


def make_session(path: str, num_threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = num_threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise InvalidArgumentError(f"{path}: onnxruntime cannot load this model ({exc})") from None


def resolve_model_file(model: Any) -> str:
    """The ONNX file of a model argument: an existing path, or a name for pypatch.models."""
    if isinstance(model, (str, os.PathLike)):
        p = os.fspath(model)
        if p.endswith(".onnx") or os.path.sep in p or os.path.exists(p):
            if not os.path.isfile(p):
                raise ModelNotFoundError(f"model file not found: {p}")
            return p
    elif model is not None:
        raise InvalidTypeError(f"model must be an .onnx path, a registered name or None; got {type(model).__name__}")
    from pypatch.models import resolve_model

    return os.fspath(resolve_model(model))


def read_session_card(session, path: str) -> dict:
    """The model card of a loaded session (InvalidArgumentError naming ``path`` when the file
    has none, it is not JSON, or it lacks what the Embedder needs)."""
    return parse_model_card(session.get_modelmeta().custom_metadata_map, path,
                            required=RUNTIME_CARD_KEYS)
