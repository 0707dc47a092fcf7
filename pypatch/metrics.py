"""Retrieval metrics (mAP with junk, mAP@k, LocScore, recall@k, IoU), public as ``pypatch.metrics``.

They live in :mod:`pypatch.evaluation.metrics`; this module is where users and the README reach
them, so it re-exports exactly that module's public names.
"""
from pypatch.evaluation.metrics import *  # noqa: F401,F403
from pypatch.evaluation.metrics import __all__  # noqa: F401
