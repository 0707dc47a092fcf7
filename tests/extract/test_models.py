"""Model resolution, model-card reading and the no-torch guarantee (pypatch.models)."""
from __future__ import annotations

import hashlib
import json
import sys

import pytest
from _subprocess import run_python

from pypatch import models
from pypatch.errors import InvalidArgumentError, InvalidTypeError, ModelNotFoundError


def test_default_resolves_into_pypatch_home(default_model_path, pypatch_home):
    assert default_model_path == pypatch_home / "models" / "efficientnet_lite0-224-gem.onnx"
    assert default_model_path.is_file()
    assert models.resolve_model("efficientnet_lite0") == default_model_path


def test_resolving_again_reuses_the_cached_file(default_model_path):
    before = default_model_path.stat().st_mtime_ns
    assert models.resolve_model() == default_model_path
    assert default_model_path.stat().st_mtime_ns == before


def test_onnx_path_resolves_to_itself(default_model_path):
    assert models.resolve_model(default_model_path) == default_model_path
    assert models.resolve_model(str(default_model_path)) == default_model_path


def test_missing_file_and_unknown_name_are_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="nothere.onnx"):
        models.resolve_model(tmp_path / "nothere.onnx")
    with pytest.raises(ModelNotFoundError, match="resnet_imaginary"):
        models.resolve_model("resnet_imaginary")
    with pytest.raises(InvalidTypeError, match="model must be"):
        models.resolve_model(42)


def test_cache_location_follows_pypatch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("PYPATCH_HOME", str(tmp_path / "home"))
    assert models.cached_model_path("efficientnet_lite0", 320, "avg") == (
        tmp_path / "home" / "models" / "efficientnet_lite0-320-avg.onnx")
    monkeypatch.delenv("PYPATCH_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / ".cache" / "pypatch"


def test_without_the_export_extra_the_error_gives_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PYPATCH_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "torch", None)  # torch not installed, as far as import goes
    assert not models.export_available()
    with pytest.raises(ModelNotFoundError) as err:
        models.resolve_model()
    msg = str(err.value)
    assert 'pip install "pypatch[export]"' in msg
    assert "pypatch export --model efficientnet_lite0" in msg
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_registry_entries_are_complete():
    reg = models.registry()
    assert models.DEFAULT_MODEL in reg
    for name, entry in reg.items():
        assert entry["family"] in ("cnn", "vit"), name
        assert entry["pool"] in ("gem", "avg", "cls"), name
        assert entry["weights"] in ("package", "timm-hub"), name
        assert isinstance(entry["input_size"], int) and entry["timm_name"].startswith(name)
    assert reg[models.DEFAULT_MODEL]["weights"] == "package"  # the default works offline


def test_file_sha256_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 9000  # spans several read blocks
    (tmp_path / "f.bin").write_bytes(data)
    assert models.file_sha256(tmp_path / "f.bin") == hashlib.sha256(data).hexdigest()


def _tiny_onnx(path, props=None):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["embedding"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    if props:
        helper.set_model_props(proto, props)
    onnx.save(proto, path)
    return path


def test_card_reading_refuses_bad_files(tmp_path, default_model_card):
    with pytest.raises(ModelNotFoundError, match="missing.onnx"):
        models.read_model_card(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00 not a protobuf \xff" * 10)
    with pytest.raises(InvalidArgumentError, match="junk.onnx"):
        models.read_model_card(tmp_path / "junk.onnx")
    with pytest.raises(InvalidArgumentError, match="no pypatch model card"):
        models.read_model_card(_tiny_onnx(tmp_path / "nocard.onnx"))
    bad = {models.CARD_KEY: "{not json"}
    with pytest.raises(InvalidArgumentError, match="not valid JSON"):
        models.read_model_card(_tiny_onnx(tmp_path / "badjson.onnx", bad))
    partial = {k: v for k, v in default_model_card.items() if k != "mean"}
    with pytest.raises(InvalidArgumentError, match="lacks mean"):
        models.read_model_card(_tiny_onnx(tmp_path / "p.onnx",
                                          {models.CARD_KEY: json.dumps(partial)}))
    future = dict(default_model_card, format=2)
    with pytest.raises(InvalidArgumentError, match="format 2"):
        models.read_model_card(_tiny_onnx(tmp_path / "f.onnx",
                                          {models.CARD_KEY: json.dumps(future)}))


def _run_python(code: str, *args) -> str:
    res = run_python("-c", code, *map(str, args))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_reading_a_card_and_resolving_never_import_torch(default_model_path, default_model_card):
    code = (
        "import sys, json, pypatch, pypatch.models as m\n"
        "p = m.resolve_model(sys.argv[1]); card = m.read_model_card(p)\n"
        "heavy = sorted(k for k in ('torch', 'timm', 'torchvision', 'ray') if k in sys.modules)\n"
        "print(json.dumps({'card': card, 'heavy': heavy}))\n"
    )
    out = json.loads(_run_python(code, default_model_path))
    assert out["heavy"] == [] and out["card"] == default_model_card


def test_card_is_read_by_onnxruntime_when_onnx_is_absent(default_model_path, default_model_card):
    code = (
        "import sys, json\n"
        "sys.modules['onnx'] = None  # only onnxruntime, as in a plain install\n"
        "import pypatch.models as m\n"
        "print(json.dumps(m.read_model_card(sys.argv[1])))\n"
    )
    assert json.loads(_run_python(code, default_model_path)) == default_model_card
