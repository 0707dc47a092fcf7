"""Model resolution and model cards: turn a model argument into an ONNX file, read its card.

Never imports torch: a model argument is an ``.onnx`` path or a registered name, and a name
resolves to ``<cache>/models/<name>-<input>-<pool>.onnx`` (cache = ``$PYPATCH_HOME`` or
``~/.cache/pypatch``). A missing cached file is exported on first use when the ``export`` extra
(torch, timm, onnx) is installed; otherwise the error says the one command that fixes it.
The exporter itself lives in ``models/export.py`` and is loaded only when exporting.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from pypatch.errors import InvalidArgumentError, ModelNotFoundError

DEFAULT_MODEL = "efficientnet_lite0"
CARD_KEY = "pypatch.model_card"
CARD_FORMAT = 1
CARD_KEYS = (
    "format", "name", "source", "input_size", "dynamic_size", "mean", "std", "interpolation",
    "crop_pct", "dim", "pooling", "gem_p", "l2_normalized", "feature_stride", "opset",
    "versions", "weights_sha256", "license",
)
# What an Embedder needs to preprocess, run and pool a model (a subset of CARD_KEYS).
RUNTIME_CARD_KEYS = ("input_size", "mean", "std", "interpolation", "dim", "pooling")
EXPORT_EXTRA = ("torch", "timm", "onnx")


def cache_dir() -> Path:
    """``$PYPATCH_HOME`` or ``~/.cache/pypatch``: where exported models are cached."""
    home = os.environ.get("PYPATCH_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "pypatch"


def _models_dir() -> Path | None:
    """The folder holding export.py and registry.json: installed as ``pypatch._export`` in a
    wheel, or ``<source checkout>/models`` when running from the repository."""
    try:
        spec = importlib.util.find_spec("pypatch._export")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    here = Path(__file__).resolve().parent.parent / "models"
    return here if (here / "registry.json").is_file() else None


def registry() -> dict:
    """Registered model names -> export settings (``models/registry.json``)."""
    folder = _models_dir()
    if folder is None:
        raise ModelNotFoundError(
            "the model registry (models/registry.json) is not installed; reinstall pypatch or "
            "pass the path of an exported .onnx file")
    with open(folder / "registry.json", encoding="utf-8") as f:
        return json.load(f)["models"]


def cached_model_path(name: str, input_size: int | None = None, pool: str | None = None) -> Path:
    """Where the export of a registered name lives in the cache (it may not exist yet)."""
    models = registry()
    if name not in models:
        raise ModelNotFoundError(
            f"unknown model {name!r}: not an existing .onnx file and not a registered name "
            f"({', '.join(sorted(models))})")
    entry = models[name]
    size = int(input_size or entry["input_size"])
    return cache_dir() / "models" / f"{name}-{size}-{pool or entry['pool']}.onnx"


def export_available() -> bool:
    """True when torch, timm and onnx are importable (checked without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in EXPORT_EXTRA)


def resolve_model(model=None, *, input_size: int | None = None, pool: str | None = None) -> Path:
    """Return the ONNX file for ``model``: None (the offline default), an ``.onnx`` path, or a
    registered name (exported into the cache on first use)."""
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, (str, os.PathLike)):
        from pypatch.errors import InvalidTypeError

        raise InvalidTypeError(f"model must be None, a registered name or an .onnx path, got "
                               f"{type(model).__name__}")
    path = Path(model)
    if isinstance(model, os.PathLike) or path.suffix.lower() == ".onnx" or os.sep in str(model):
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path}")
        return path
    target = cached_model_path(str(model), input_size, pool)
    if target.is_file():
        return target
    if not export_available():
        raise ModelNotFoundError(
            f"model {model!r} is not exported yet ({target} missing) and the exporter is not "
            f'installed; fix: pip install "pypatch[export]" && pypatch export --model {model} '
            f"--out {target}")
    print(f"pypatch: exporting {model} to {target} (first use, once)", file=sys.stderr)
    export_model(str(model), target, input_size=input_size, pool=pool)
    return target


def export_model(name: str, out, **kwargs) -> dict:
    """Export ``name`` to ``out`` with ``models/export.py`` (needs the ``export`` extra).

    Keyword arguments: input_size, pool, checkpoint, pretrained, seed, gem_p, model_kwargs.
    Returns the model card written into the file.
    """
    return _load_exporter().export_model(name, out, **kwargs)


def _load_exporter():
    if not export_available():
        raise ModelNotFoundError(
            'exporting needs torch, timm and onnx: pip install "pypatch[export]"')
    if "pypatch._export.export" in sys.modules:
        return sys.modules["pypatch._export.export"]
    folder = _models_dir()
    if folder is None or not (folder / "export.py").is_file():
        raise ModelNotFoundError("the exporter (models/export.py) is not installed with pypatch")
    spec = importlib.util.spec_from_file_location("pypatch._export.export", folder / "export.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_model_card(path) -> dict:
    """The JSON model card stored in an exported ONNX file's metadata (``pypatch.model_card``).

    Uses ``onnx`` when installed (parses only), else onnxruntime with optimisations off.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    return parse_model_card(_metadata_props(path), path)


def parse_model_card(props, path, required=CARD_KEYS) -> dict:
    """The model card in an ONNX model's metadata ``props`` (key -> string) of file ``path``.

    The card must be there, be a JSON object and hold the ``required`` keys; when ``format`` is
    required it must be the format this pypatch reads. ``Embedder`` passes its loaded session's
    metadata with :data:`RUNTIME_CARD_KEYS` (so the file is not parsed a second time)."""
    if CARD_KEY not in props:
        raise InvalidArgumentError(
            f"{path} has no pypatch model card (ONNX metadata key {CARD_KEY!r}); export the "
            "model with `pypatch export` so its preprocessing and pooling are known")
    try:
        card = json.loads(props[CARD_KEY])
    except ValueError as exc:
        raise InvalidArgumentError(f"{path}: model card is not valid JSON ({exc})") from exc
    missing = [k for k in required if not isinstance(card, dict) or k not in card]
    if missing:
        raise InvalidArgumentError(f"{path}: model card lacks {', '.join(missing)}")
    if not isinstance(card, dict):
        raise InvalidArgumentError(f"{path}: model card is not a JSON object")
    if "format" in required and card["format"] != CARD_FORMAT:
        raise InvalidArgumentError(f"{path}: model card format {card['format']!r} is not "
                                   f"supported (this pypatch reads format {CARD_FORMAT})")
    return card


def _metadata_props(path: Path) -> dict:
    if importlib.util.find_spec("onnx") is not None:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # protobuf raises its own DecodeError
            raise InvalidArgumentError(f"{path} is not a readable ONNX model ({exc})") from exc
        return {p.key: p.value for p in proto.metadata_props}
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own (non-OSError) exception types
        raise InvalidArgumentError(f"{path} is not a readable ONNX model ({exc})") from exc
    return dict(sess.get_modelmeta().custom_metadata_map)


__all__ = [
    "DEFAULT_MODEL", "CARD_KEY", "cache_dir", "registry", "cached_model_path", "resolve_model",
    "export_model", "export_available", "read_model_card", "parse_model_card", "file_sha256",
    "RUNTIME_CARD_KEYS",
]
