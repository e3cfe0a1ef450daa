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


pytestmark = pytest.mark.usefixtures("one_torch_thread")     # tests/integration/conftest.py


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


def _tiny_pipe():
    from diffusers import StableDiffusionInpaintPipeline
    path = weights.resolve("tiny", "inpaint")
    return path, StableDiffusionInpaintPipeline.from_pretrained(str(path), safety_checker=None)


def test_text_encoder_prompt_embeddings_match(fast_weights):
    """The prompt's embeddings (what the UNet is conditioned on) from the converted CLIP text
    encoder are PyTorch's within 1e-4 relative error (fp32), through the pipeline's own encode_prompt."""
    path, pipe = _tiny_pipe()
    with torch.no_grad():
        ref, ref_neg = pipe.encode_prompt("a quiet harbour at dusk", "cpu", 1, True, "blurry")
        assert cpu_engine.use_for(pipe, model_path=path, prec="f32", size=(128, 96))
        assert hasattr(pipe.text_encoder, "openvino")
        out, out_neg = pipe.encode_prompt("a quiet harbour at dusk", "cpu", 1, True, "blurry")
    for a, b in ((out, ref), (out_neg, ref_neg)):
        assert a.shape == b.shape and a.dtype == b.dtype
        assert float((a - b).norm() / b.norm()) < 1e-4
    assert list(cpu_engine.cache_dir().glob("text-encoder-*/model.xml"))


def test_conversion_reports_its_progress_once(fast_weights, tmp_path, monkeypatch):
    """A load that has to convert tells the listener "preparing the CPU engine, once (~N s)" with
    each component (1 of 4 .. 4 of 4) and a fraction that only grows; a load from the cache says
    nothing."""
    import shutil
    for part in (*fast_weights, weights.resolve("tiny", "inpaint")):     # no engine cached there
        shutil.copytree(part, tmp_path / "w" / part.name)
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path / "w"))
    heard: list[tuple[str, float]] = []
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "openvino")
    m = inpaint.ModelManager()
    with cpu_engine.progress_to(lambda text, fraction: heard.append((text, fraction))):
        m.get("tiny", device="cpu", mode="fast")
        m.unload()
        texts = sorted({t for t, _ in heard})
        assert all(t.startswith("preparing the CPU engine, once (~") for t in texts), texts
        assert [t.split(": ")[1] for t in texts] == ["UNet, 1 of 4", "image decoder, 4 of 4",
                                                     "image encoder, 3 of 4", "text encoder, 2 of 4"]
        fractions = [f for _, f in heard]
        assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] < 1
        heard.clear()
        m.get("tiny", device="cpu", mode="fast")
        m.unload()
    assert heard == []


def test_int8_weights_smaller_and_close(monkeypatch, fast_weights):
    """BACKDROP_CPU_BACKEND=openvino-int8: its own cached engine with int8 weights (a smaller
    UNet file), and a picture still close to PyTorch's (PSNR >= 25 dB on the tiny model)."""
    _, ref = _run(monkeypatch, "torch", "fast")
    _run(monkeypatch, "openvino", "fast")
    _, out = _run(monkeypatch, "openvino-int8", "fast")
    sizes = sorted((p / "model.bin").stat().st_size for p in cpu_engine.cache_dir().glob("unet-*")
                   if (p / "model.bin").exists())
    assert len(sizes) >= 2 and sizes[0] < 0.5 * sizes[-1], sizes
    assert _psnr(out, ref) >= 25, _psnr(out, ref)


def test_int8_without_nncf_is_one_line(monkeypatch, fast_weights, tmp_path):
    import sys
    from core.errors import InvalidOptionError
    monkeypatch.setitem(sys.modules, "nncf", None)        # as if not installed: import fails
    path, pipe = _tiny_pipe()
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))   # nothing cached: it must convert
    with pytest.raises(InvalidOptionError) as err:
        cpu_engine.use_for(pipe, model_path=path, int8=True, size=(128, 96))
    assert str(err.value) == cpu_engine.NO_NNCF and "\n" not in str(err.value)
