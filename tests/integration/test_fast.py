"""Fast mode, offline and real: the tiny inpainting model with a random LoRA built with peft (saved
with save_lora_weights) and a tiny AutoencoderTiny, both registry entries (task "fast") loaded by
the same code as LCM-LoRA and TAESD; the live preview; the one-line errors."""
from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch

from core import inpaint, weights
from core.errors import CancelledError, InvalidOptionError, MissingWeightsError
from core.spec import Generation


pytestmark = pytest.mark.usefixtures("one_torch_thread")     # tests/integration/conftest.py


@pytest.fixture(scope="module")
def photo(chelsea):
    import cv2
    h, w = chelsea.shape[:2]
    subject = np.zeros((h, w), np.uint8)
    cv2.ellipse(subject, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 255, -1)
    return chelsea, 255 - subject


@pytest.fixture
def manager(fast_weights):
    m = inpaint.ModelManager()
    yield m
    m.unload()


def fast(**kw) -> Generation:
    kw.setdefault("prompt", "a sunny beach")
    kw.setdefault("seed", 0)
    kw.setdefault("model", "tiny")
    return Generation.for_mode("fast", **kw)


def quality(**kw) -> Generation:
    kw.setdefault("steps", 2)
    return Generation(kw.pop("prompt", "a sunny beach"), seed=kw.pop("seed", 0), model="tiny", **kw)


def count_unet_calls(inp) -> tuple[list[int], object]:
    batches: list[int] = []
    hook = inp._pipe.unet.register_forward_hook(lambda m, args, out: batches.append(int(args[0].shape[0])))
    return batches, hook


# -- the registry ------------------------------------------------------------------------------

def test_fast_addons_are_registry_entries_of_their_own_task(fast_weights):
    names = {s.name for s in weights.specs("fast")}
    assert {"lcm-sd15", "lcm-sdxl", "tcd-sd15", "taesd", "taesdxl", "tiny-lcm", "tiny-taesd"} <= names
    assert not names & {s.name for s in weights.specs("inpaint")} - {"tiny"}   # never inpainting models
    lcm = weights.get_spec("lcm-sd15", "fast")
    assert lcm.repo_id == "latent-consistency/lcm-lora-sdv1-5" and lcm.size_bytes > 0 and lcm.family == "sd15"
    assert weights.get_spec("taesdxl", "fast").repo_id == "madebyollin/taesdxl"
    assert weights.fast_lora("sd15", "lcm") == "lcm-sd15" and weights.fast_lora("sdxl", "lcm") == "lcm-sdxl"
    assert weights.fast_lora("sd15", "tcd") == "tcd-sd15" and weights.fast_lora("sd2", "lcm") is None
    assert weights.tiny_autoencoder("sdxl") == "taesdxl" and weights.tiny_autoencoder("tiny") == "tiny-taesd"
    assert weights.model_family("sd15-inpainting") == "sd15" and weights.model_family("tiny") == "tiny"
    lora, tae = fast_weights
    assert (lora / "pytorch_lora_weights.safetensors").is_file() and (tae / "config.json").is_file()


def test_missing_addon_is_one_line_with_the_download_command(weights_dir):
    gen = fast(model="sd15-inpainting")
    with pytest.raises(MissingWeightsError) as e:
        inpaint.resolve_generation(gen)
    msg = str(e.value)
    assert "\n" not in msg and "python -m core models download lcm-sd15" in msg and "135.0 MB" in msg


def test_resolve_generation_names_the_lora_and_leaves_quality_alone(fast_weights):
    q = quality()
    assert inpaint.resolve_generation(q) is q
    g = fast()
    assert g.lora is None
    r = inpaint.resolve_generation(g)
    assert r.lora == "tiny-lcm" and r.model_copy(update={"lora": None}) == g
    assert inpaint.resolve_generation(r) is r
    with pytest.raises(InvalidOptionError, match="LoRA 'lcm-sd15' is for Stable Diffusion 1.x but model 'tiny'"):
        inpaint.resolve_generation(fast(lora="lcm-sd15"))
    with pytest.raises(InvalidOptionError, match="unknown fast model 'nope'"):
        inpaint.resolve_generation(fast(lora="nope"))


def test_model_family_without_a_lora_is_one_line(fast_weights, tiny_inpaint, tmp_path):
    """An SD 2.x-like folder (cross_attention_dim 1024): fast mode has no LoRA for it."""
    other = tmp_path / "sd2-like"
    shutil.copytree(tiny_inpaint, other)
    cfg = other / "unet" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "cross_attention_dim": 1024}))
    with pytest.raises(InvalidOptionError) as e:
        inpaint.resolve_generation(fast(model=str(other)))
    assert "\n" not in str(e.value)
    assert "no few-step LoRA" in str(e.value) and "Stable Diffusion 2.x" in str(e.value)
    assert "use mode quality" in str(e.value)


# -- the fast pipeline -------------------------------------------------------------------------

def test_fast_pipeline_lcm_4_steps_one_unet_pass_batch_1_tiny_autoencoder(manager, photo):
    rgb, region = photo
    inp = manager.get("tiny", mode="fast")
    assert inp.mode == "fast" and inp.lora == "tiny-lcm" and inp.family == "tiny"
    assert type(inp._pipe.vae).__name__ == "AutoencoderTiny"          # TAESD's class, same path
    assert type(inp._pipe.scheduler).__name__ == "LCMScheduler"
    assert not any("lora" in n for n, _ in inp._pipe.unet.named_modules())   # fused, layers gone
    batches, hook = count_unet_calls(inp)
    seen = []
    captured = {}
    step = inp._scheduler_for

    def spy(pipe, name):
        captured["scheduler"] = s = step(pipe, name)
        return s

    inp._scheduler_for = spy
    try:
        out = inp.inpaint(rgb, region, fast(), progress=lambda i, n: seen.append((i, n)))
    finally:
        hook.remove()
        del inp._scheduler_for
    assert type(captured["scheduler"]).__name__ == "LCMScheduler"
    assert batches == [1, 1, 1, 1]                   # guidance 1.0: no classifier-free guidance
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert out[0].image.shape == rgb.shape and out[0].image.dtype == np.uint8
    again = inp.inpaint(rgb, region, fast())[0].image
    assert np.array_equal(out[0].image, again)       # same seed, same bytes


def test_lora_changes_the_output(manager, photo, fast_weights, weights_dir, tmp_path, monkeypatch):
    """The same pipeline with a zero LoRA (fused: a no-op) differs from the tiny random LoRA."""
    rgb, region = photo
    with_lora = manager.get("tiny", mode="fast").inpaint(rgb, region, fast())[0].image
    from safetensors.torch import load_file, save_file
    zero = {k: torch.zeros_like(v) for k, v in load_file(str(fast_weights[0] / "pytorch_lora_weights.safetensors")).items()}
    wdir = tmp_path / "w"
    shutil.copytree(weights_dir / "tiny-taesd", wdir / "tiny-taesd")
    (wdir / "tiny-lcm-lora").mkdir(parents=True)
    save_file(zero, str(wdir / "tiny-lcm-lora" / "pytorch_lora_weights.safetensors"))
    shutil.copytree(weights_dir / "tiny-inpainting", wdir / "tiny-inpainting")
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(wdir))
    other = inpaint.ModelManager()
    try:
        without = other.get("tiny", mode="fast").inpaint(rgb, region, fast())[0].image
    finally:
        other.unload()
    assert not np.array_equal(with_lora, without)


def test_quality_mode_is_untouched_by_fast(manager, photo):
    rgb, region = photo
    q = manager.get("tiny")
    before = q.inpaint(rgb, region, quality())[0].image
    assert type(q._pipe.vae).__name__ == "AutoencoderKL" and q.mode == "quality" and q.lora is None
    batches, hook = count_unet_calls(q)
    try:
        q.inpaint(rgb, region, quality())
    finally:
        hook.remove()
    assert batches and set(batches) == {2}           # classifier-free guidance as before
    f = manager.get("tiny", mode="fast")             # capacity 1: the quality pipeline is freed
    assert q.closed and manager.loaded() == ["tiny"] and not f.closed
    f.inpaint(rgb, region, fast())
    after = manager.get("tiny").inpaint(rgb, region, quality())[0].image
    assert np.array_equal(before, after)


def test_a_request_of_the_other_mode_is_routed(manager, photo):
    rgb, region = photo
    q = manager.get("tiny")
    routed = q.inpaint(rgb, region, fast())[0].image
    direct = manager.get("tiny", mode="fast").inpaint(rgb, region, fast())[0].image
    assert np.array_equal(routed, direct)


# -- live preview ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fast", "quality"])
def test_preview_delivers_images_and_leaves_the_output_alone(manager, photo, monkeypatch, mode):
    rgb, region = photo
    monkeypatch.setattr(inpaint.preview, "PREVIEW_INTERVAL", 0.0)
    inp = manager.get("tiny", mode=mode)
    gen = fast() if mode == "fast" else quality(steps=4)
    shown, steps, timings = [], [], {}
    with_preview = inp.inpaint(rgb, region, gen, preview=shown.append, timings=timings,
                               progress=lambda i, n: steps.append(i))[0].image
    without = inp.inpaint(rgb, region, gen)[0].image
    assert np.array_equal(with_preview, without)     # same seed, same bytes
    assert len(shown) == len(steps) - 1 >= 3         # every step but the last (the result follows)
    for img in shown:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert max(img.shape[:2]) <= inpaint.PREVIEW_LONG_SIDE
    assert timings["preview"] > 0


def test_preview_is_throttled(manager, photo, monkeypatch):
    rgb, region = photo
    monkeypatch.setattr(inpaint.preview, "PREVIEW_INTERVAL", 3600.0)
    shown = []
    manager.get("tiny", mode="fast").inpaint(rgb, region, fast(), preview=shown.append)
    assert len(shown) == 1


def test_preview_stops_on_cancel(manager, photo, monkeypatch):
    rgb, region = photo
    monkeypatch.setattr(inpaint.preview, "PREVIEW_INTERVAL", 0.0)
    cancel = threading.Event()
    shown = []

    def progress(i, n):
        if i == 2:
            cancel.set()

    with pytest.raises(CancelledError):
        manager.get("tiny", mode="fast").inpaint(rgb, region, fast(steps=8), progress=progress,
                                                 cancel=cancel, preview=shown.append)
    assert len(shown) == 1                           # step 1 only


def test_a_failing_preview_does_not_stop_the_run(manager, photo, monkeypatch):
    rgb, region = photo
    monkeypatch.setattr(inpaint.preview, "PREVIEW_INTERVAL", 0.0)
    calls = []

    def broken(img):
        calls.append(1)
        raise RuntimeError("browser gone")

    out = manager.get("tiny", mode="fast").inpaint(rgb, region, fast(), preview=broken)
    assert out[0].image.shape == rgb.shape and calls == [1]


# -- bad LoRA files ----------------------------------------------------------------------------

def _swap_lora(weights_dir, payload) -> bytes:
    f = weights_dir / "tiny-lcm-lora" / "pytorch_lora_weights.safetensors"
    good = f.read_bytes()
    if isinstance(payload, bytes):
        f.write_bytes(payload)
    else:
        from safetensors.torch import save_file
        save_file(payload, str(f))
    return good


def _wrong_shapes() -> dict:
    """A LoRA made for a UNet with another cross-attention width (64, not 32)."""
    from diffusers import UNet2DConditionModel
    from core.tiny import tiny_lora_layers
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=64)
    return {f"unet.{k}": v for k, v in tiny_lora_layers(unet).items()}


@pytest.mark.parametrize("payload, error, words", [
    ("wrong shapes", InvalidOptionError, "does not fit model 'tiny'"),
    ("other keys", InvalidOptionError, "does not fit model 'tiny'"),
    (b"\x00garbage, not safetensors" * 10, MissingWeightsError, "python -m core models download tiny-lcm"),
])
def test_bad_lora_is_one_line_and_nothing_is_kept(manager, photo, weights_dir, payload, error, words):
    rgb, region = photo
    if payload == "wrong shapes":
        payload = _wrong_shapes()
    elif payload == "other keys":
        payload = {"unet.no.such.layer.lora.down.weight": torch.zeros(4, 8),
                   "unet.no.such.layer.lora.up.weight": torch.zeros(8, 4)}
    q = manager.get("tiny")
    before = q.inpaint(rgb, region, quality())[0].image
    good = _swap_lora(weights_dir, payload)
    try:
        with pytest.raises(error) as e:
            manager.get("tiny", mode="fast")
        assert "\n" not in str(e.value) and words in str(e.value)
        assert manager.loaded() == ["tiny"]                        # rolled back to the quality one
        assert all(inp.mode == "quality" for inp in manager._loaded.values())
        after = manager.get("tiny").inpaint(rgb, region, quality())[0].image
        assert np.array_equal(before, after)                       # the app keeps working
    finally:
        _swap_lora(weights_dir, good)
    assert manager.get("tiny", mode="fast").lora == "tiny-lcm"     # a good file loads again
