"""pypatch: patch-wise instance-level image retrieval (Patchify) with a SIMD C++ core.

Public names are resolved lazily so that ``import pypatch`` is cheap and never pulls in
heavy optional packages (torch is never imported by the search path).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    # native core (issue 2)
    "ProductQuantizer": "pypatch.pq",
    "PatchIndex": "pypatch.index",
    "simd_info": "pypatch._simd",
    "set_simd_level": "pypatch._simd",
    "set_num_threads": "pypatch._simd",
    "get_num_threads": "pypatch._simd",
    # backbones and regions (issue 3)
    "Embedder": "pypatch.embedder",
    "PatchGrid": "pypatch.grid",
    "PCAWhitening": "pypatch.whitening",
    "PCATransform": "pypatch.transform",  # the one PCA (PCAWhitening and ImageIndex(pca_dim=))
    # image-level index (issue 5)
    "ImageIndex": "pypatch.image_index",
    "SearchHit": "pypatch.results",
    # errors
    "PypatchError": "pypatch.errors",
    "IndexFormatError": "pypatch.errors",
    "IndexVersionError": "pypatch.errors",
    "ModelMismatchError": "pypatch.errors",
    "ImageError": "pypatch.errors",
    "ModelNotFoundError": "pypatch.errors",
    "InvalidArgumentError": "pypatch.errors",
    "InvalidTypeError": "pypatch.errors",
    "NotTrainedError": "pypatch.errors",
    "DatasetFormatError": "pypatch.errors",
}
_SUBMODULES = {
    "metrics", "datasets", "grid", "embedder", "index", "pq", "errors", "cli", "evaluation",
    "benchgen", "models", "rerank", "refine", "whitening", "transform", "image_index", "report",
}

__all__ = sorted(set(_LAZY) | _SUBMODULES | {"__version__"})


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"pypatch.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'pypatch' has no attribute {name!r}")


def __dir__():
    return __all__
