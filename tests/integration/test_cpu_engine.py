"""The OpenVINO CPU engine (core/cpu_engine.py, docs/cpu.md) on the tiny models: the same inputs and
seed give the same picture as PyTorch (UNet noise prediction relative error < 1e-3 in fp32, final
image PSNR >= 30 dB also in the CPU's own precision), the engine is converted once and read back
after, a damaged cache is rebuilt, and BACKDROP_CPU_BACKEND=torch keeps the PyTorch path."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install -r requirements.txt)")

from core import cpu_engine, inpaint, weights  # noqa: E402
from core.spec import Generation  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fast_weights(tiny_inpaint, weights_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny-lcm", "fast"), weights.download("tiny-taesd", "fast")


def _photo():
    rng = np.random.default_rng(0)
    rgb = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[:, 64:] = 255
    return rgb, mask


def _run(monkeypatch, backend: str, mode: str):
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", backend)
    m = inpaint.ModelManager()
    try:
        inp = m.get("tiny", device="cpu", mode=mode)
        rgb, mask = _photo()
        gen = (Generation.for_mode("fast", model="tiny", prompt="a beach", seed=3) if mode == "fast"
               else Generation("a beach", model="tiny", seed=3, steps=6))
        return inp, inp.inpaint(rgb, mask, gen)[0].image
    finally:
        m.unload()


def _psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_same_picture_as_torch(monkeypatch, fast_weights, mode):
    inp_t, ref = _run(monkeypatch, "torch", mode)
    inp_o, out = _run(monkeypatch, "openvino", mode)
    assert _psnr(out, ref) >= 30, _psnr(out, ref)


def test_unet_noise_prediction_matches(fast_weights, tmp_path, monkeypatch):
    from diffusers import StableDiffusionInpaintPipeline
    path = weights.resolve("tiny", "inpaint")
    pipe = StableDiffusionInpaintPipeline.from_pretrained(str(path), safety_checker=None)
    x, t, ehs = torch.randn(2, 9, 12, 16), torch.tensor(500), torch.randn(2, 77, 32)
    with torch.no_grad():
        ref = pipe.unet(x, t, encoder_hidden_states=ehs, return_dict=False)[0]
        assert cpu_engine.use_for(pipe, model_path=path, prec="f32", size=(128, 96))
        out = pipe.unet(x, t, encoder_hidden_states=ehs, return_dict=False)[0]
    rel = float((out - ref).norm() / ref.norm())
    assert rel < 1e-3, rel


def test_converted_once_then_read_back(monkeypatch, fast_weights, caplog):
    caplog.set_level(logging.INFO, "backdrop.cpu_engine")
    _run(monkeypatch, "openvino", "fast")       # converts (or finds the earlier test's engine)
    caplog.clear()
    _, out = _run(monkeypatch, "openvino", "fast")
    assert not [r for r in caplog.records if "preparing the CPU engine" in r.getMessage()]
    assert cpu_engine.cache_size_bytes() > 0


def test_damaged_cache_is_rebuilt(monkeypatch, fast_weights, caplog):
    _, ref = _run(monkeypatch, "openvino", "fast")
    for xml in cpu_engine.cache_dir().glob("unet-*/model.xml"):
        xml.write_text("<not a model")
    caplog.set_level(logging.INFO, "backdrop.cpu_engine")
    _, out = _run(monkeypatch, "openvino", "fast")
    damaged = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) >= 1 and all("\n" not in r.getMessage() for r in damaged)
    assert np.array_equal(out, ref)
    caplog.clear()
    _run(monkeypatch, "openvino", "fast")
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


def test_torch_setting_keeps_pytorch(monkeypatch, fast_weights):
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "torch")
    m = inpaint.ModelManager()
    try:
        inp = m.get("tiny", device="cpu", mode="fast")
        assert not hasattr(inp._pipe.unet, "openvino") and not hasattr(inp._pipe.vae, "openvino")
    finally:
        m.unload()
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "auto")
    m = inpaint.ModelManager()
    try:
        inp = m.get("tiny", device="cpu", mode="fast")
        assert hasattr(inp._pipe.unet, "openvino") and hasattr(inp._pipe.vae, "openvino")
    finally:
        m.unload()
