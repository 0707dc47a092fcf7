"""Benchmark loaders: revisitop (ROxford/RParis), ILIAS core, INSTRE and the generic
folder + ``benchmark.json`` format, all returning a :class:`Benchmark`.

``load(path)`` detects the layout: a ``.json`` file or a folder with ``benchmark.json`` is
generic, ``gnd_*.pkl`` is revisitop, ``image_ids/`` is ILIAS, ``gnd_instre.mat`` is INSTRE.
"""
from __future__ import annotations

import os
from pathlib import Path

from pypatch.evaluation.datasets.benchmark import Benchmark, DbImage, Positive, Query, load_generic
from pypatch.evaluation.datasets.ilias import load_ilias
from pypatch.evaluation.datasets.instre import load_instre
from pypatch.evaluation.datasets.revisitop import load_revisitop
from pypatch.errors import DatasetFormatError

__all__ = ["Benchmark", "Query", "DbImage", "Positive", "load", "detect_format", "load_generic",
           "load_revisitop", "load_ilias", "load_instre"]

FORMATS = ("generic", "revisitop", "ilias", "instre")


def detect_format(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "generic"
        if path.name.startswith("gnd_") and path.suffix == ".pkl":
            return "revisitop"
        if path.name == "gnd_instre.mat":
            return "instre"
        raise DatasetFormatError(f"{path}: not a recognised benchmark file")
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: no such file or directory")
    if (path / "benchmark.json").is_file():
        return "generic"
    if (path / "gnd_instre.mat").is_file():
        return "instre"
    if any(path.glob("gnd_*.pkl")):
        return "revisitop"
    if (path / "image_ids").is_dir():
        return "ilias"
    raise DatasetFormatError(
        f"{path}: no benchmark.json, gnd_*.pkl, gnd_instre.mat or image_ids/ found")


def load(path: str | os.PathLike, *, format: str = "auto", protocol: str = "medium",
         check_images: bool = True) -> Benchmark:
    """Load any supported benchmark; ``protocol`` applies to revisitop (easy/medium/hard)."""
    path = Path(path)
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DatasetFormatError(f"unknown benchmark format {format!r}; expected one of {FORMATS}")
    if fmt == "generic":
        return load_generic(path, check_images=check_images)
    root = path.parent if path.is_file() else path
    if fmt == "revisitop":
        dataset = path.stem[len("gnd_"):] if path.is_file() else None
        return load_revisitop(root, dataset, protocol, check_images=check_images)
    if fmt == "ilias":
        return load_ilias(root, check_images=check_images)
    return load_instre(root, check_images=check_images)
