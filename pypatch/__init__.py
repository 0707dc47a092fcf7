"""pypatch: patch-wise instance-level image retrieval (Patchify) with a SIMD C++ core.

The package follows the data: ``extract`` (image -> boxes -> descriptors), ``index``
(descriptors -> codes -> file -> ranked, boxed hits), ``evaluation`` (metrics, datasets,
benchmark generator, harness, report); ``commands`` holds the CLI's sub-commands.

Public names are resolved lazily so that ``import pypatch`` is cheap and never pulls in
heavy optional packages (torch is never imported by the search path).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    # native core
    "ProductQuantizer": "pypatch.index.pq",
    "ResidualQuantizer": "pypatch.index.pq",
    "PatchIndex": "pypatch.index.patch_index",
    "simd_info": "pypatch._simd",
    "set_simd_level": "pypatch._simd",
    "set_num_threads": "pypatch._simd",
    "get_num_threads": "pypatch._simd",
    # extraction: backbones and regions
    "Embedder": "pypatch.extract.embedder",
    "PatchGrid": "pypatch.extract.grid",
    "PCAWhitening": "pypatch.extract.whitening",
    "PCATransform": "pypatch.index.transform",  # the one PCA (PCAWhitening and ImageIndex(pca_dim=))
    # image-level index
    "ImageIndex": "pypatch.index.image_index",
    "SearchHit": "pypatch.index.results",
    "SearchableIndex": "pypatch.index.searchable",
    "open_index": "pypatch.index.searchable",
    # sharded index (Ray only behind its own entry points)
    "ShardedIndex": "pypatch.distributed.sharded_index",
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
    "TooFewVectorsError": "pypatch.errors",
    "UnavailableError": "pypatch.errors",
}
# the rooms (extract, index, evaluation) and the public modules reached as pypatch.<name>
_SUBMODULES = {"extract", "index", "evaluation", "distributed", "metrics", "models", "errors", "cli"}

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
