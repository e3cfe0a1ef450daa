"""Fixtures shared by the integration tests of the diffusion pipeline (test_fast.py,
test_cpu_engine.py, test_app_cpu_engine.py); the session-wide ones are in tests/conftest.py."""
from __future__ import annotations

import pytest
import torch

from core import weights


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module (`pytestmark = pytest.mark.usefixtures(...)`): the
    CPU is shared, and OpenMP threads spin-waiting on an oversubscribed machine make a tiny run
    crawl. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fast_weights(tiny_inpaint, weights_dir):
    """The tiny model, its LoRA and tiny autoencoder, built where the registry expects them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny-lcm", "fast"), weights.download("tiny-taesd", "fast")
