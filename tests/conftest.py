"""Shared fixtures: every test runs offline, with its own data dir, and a session-wide weights dir
where the tiny random-initialised models are built on demand (never downloaded).

Markers (registered in pyproject.toml), set here by `pytest_collection_modifyitems`:
  browser  every test in tests/test_browser.py (a real Chromium through Playwright)
  slow     every test that uses the tiny Stable Diffusion pipeline (fixture `tiny_inpaint`, directly
           or through another fixture), i.e. runs diffusion
so `pytest -m "not slow and not browser"` is the quick inner loop."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


SLOW_FIXTURES = {"tiny_inpaint"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path, weights_dir):
    """Point data and weights at temp dirs so no test touches ./data or ./weights."""
    monkeypatch.setenv("BACKDROP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
    monkeypatch.delenv("BACKDROP_DATABASE_URL", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The app and CLI start in fast mode without a CUDA GPU; tests that want fast mode say so.
    monkeypatch.setenv("BACKDROP_MODE", "quality")


@pytest.fixture(scope="session")
def tiny_sam(weights_dir):
    """Path of the tiny SAM checkpoint, built in code and saved where the registry expects it."""
    from core.segment import build_tiny_sam
    return build_tiny_sam(weights_dir / "sam_tiny.pth")


@pytest.fixture(scope="session")
def tiny_inpaint(weights_dir):
    """Folder of the tiny diffusers inpainting pipeline, built in code and saved with save_pretrained."""
    from core.inpaint import build_tiny_inpaint
    return build_tiny_inpaint(weights_dir / "tiny-inpainting")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A real photograph (512x512 RGB uint8) bundled with scikit-image."""
    from skimage import data
    return data.astronaut()


@pytest.fixture(scope="session")
def chelsea() -> np.ndarray:
    """A real photograph of a cat (300x451 RGB uint8): landscape, odd size."""
    from skimage import data
    return data.chelsea()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    """A real photograph of a coffee cup (400x600 RGB uint8)."""
    from skimage import data
    return data.coffee()


@pytest.fixture(scope="session")
def tiny_fast(weights_dir, tiny_inpaint):
    """The tiny model's few-step LoRA and tiny autoencoder (task "fast"), built in code through
    the same registry download path as the real LCM-LoRA and TAESD."""
    from core import weights
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny-lcm", "fast"), weights.download("tiny-taesd", "fast")
