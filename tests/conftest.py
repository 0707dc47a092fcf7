"""Shared test fixtures (others may add fixtures here; keep each one small and documented)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Exported models are cached here (gitignored) so the default model is exported once and then
# reused across test runs and by CI.
TEST_PYPATCH_HOME = REPO_ROOT / ".pypatch-home"


@pytest.fixture(scope="session")
def pypatch_home() -> Path:
    """The PYPATCH_HOME used by the test session (set for the whole session)."""
    return TEST_PYPATCH_HOME


@pytest.fixture(scope="session", autouse=True)
def _test_pypatch_home(pypatch_home):
    old = os.environ.get("PYPATCH_HOME")
    os.environ["PYPATCH_HOME"] = str(pypatch_home)
    yield
    if old is None:
        os.environ.pop("PYPATCH_HOME", None)
    else:
        os.environ["PYPATCH_HOME"] = old


@pytest.fixture(scope="session")
def default_model_path(_test_pypatch_home) -> Path:
    """The offline default model (efficientnet_lite0, real ImageNet weights) as an ONNX file,
    exported on first use into ``<repo>/.pypatch-home``."""
    from pypatch.models import resolve_model

    return resolve_model(None)


@pytest.fixture(scope="session")
def default_model_card(default_model_path) -> dict:
    from pypatch.models import read_model_card

    return read_model_card(default_model_path)


@pytest.fixture(scope="module")
def embedder(default_model_path):
    """The default model's Embedder on 2 threads, one per test module (a module may override)."""
    from pypatch import Embedder

    return Embedder(default_model_path, num_threads=2)


@pytest.fixture(scope="module")
def flat_index(photo_dir, embedder):
    """A flat float32 L2 ImageIndex of the requesting module's own ``photo_dir`` fixture
    (every module that asks for it defines which photos)."""
    from pypatch import ImageIndex

    return ImageIndex.build(photo_dir, regions="L2", store="flat", embedder=embedder,
                            progress=False)
