"""inpaint: the tiny random-initialised pipeline, loaded through the same from_pretrained path as
real models. Shapes, seeds, cancel, progress, concurrency, OOM fallback, model manager, options."""
from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from core import inpaint as inpaint_mod
from core.compose import compose
from core.errors import CancelledError, InvalidOptionError, MissingWeightsError, OutOfMemoryError
from core.inpaint import (SCHEDULERS, InpaintRequest, ModelManager, Variant, get_inpainter,
                          processing_size)
from core.spec import FAST_SCHEDULERS


def subject_mask(h, w) -> np.ndarray:
    """255 = subject: an ellipse in the middle."""
    import cv2
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 4, h // 3), 0, 0, 360, 255, -1)
    return m


def region(mask: np.ndarray) -> np.ndarray:
    return 255 - mask


def req(**kw) -> InpaintRequest:
    kw.setdefault("steps", 2)
    kw.setdefault("seed", 0)
    return InpaintRequest(kw.pop("prompt", "a sunny beach"), **kw)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The CPU is shared with other jobs: OpenMP threads spin-waiting on an oversubscribed machine
    make a 0.3 s tiny run take 15 s. One intra-op thread keeps these tests fast and is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inp(one_torch_thread, tiny_inpaint, weights_dir):
    # module scope runs before the autouse env fixture: point the weights dir here too
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return get_inpainter("tiny")


@pytest.fixture(scope="module")
def cat(chelsea):
    return chelsea, subject_mask(*chelsea.shape[:2])


def test_tiny_loads_through_from_pretrained(inp, tiny_inpaint):
    assert inp.path == tiny_inpaint and inp.model == "tiny"
    assert type(inp._pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert inp.device == "cpu" and inp.dtype == "float32"
    assert inp.long_side == 64                      # unet sample_size 32 x vae scale 2
    assert get_inpainter("tiny") is inp             # loaded once, shared


@pytest.mark.parametrize("h, w", [(300, 451), (451, 300), (517, 333), (64, 64), (9, 1000)])
def test_output_size_is_input_size(inp, h, w):
    rgb = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = inp.inpaint(rgb, region(subject_mask(h, w)), req())
    assert len(out) == 1 and isinstance(out[0], Variant)
    assert out[0].image.shape == (h, w, 3) and out[0].image.dtype == np.uint8


def test_stage_timings_are_reported(inp, cat):
    rgb, mask = cat
    timings = {"earlier": 1.0}
    inp.inpaint(rgb, region(mask), req(variants=2), timings=timings)
    assert set(timings) == {"earlier", "resize", "diffusion", "upscale"}
    assert timings["diffusion"] > 0 and timings["resize"] >= 0 and timings["upscale"] >= 0


@pytest.mark.parametrize("size, long_side, expected", [
    ((4000, 3000), 512, (512, 384)), ((3000, 4000), 512, (384, 512)), ((451, 300), 64, (64, 40)),
    ((1024, 1024), 1024, (1024, 1024)), ((5000, 20), 512, (512, 8)), ((333, 517), 96, (64, 96)),
])
def test_processing_size_keeps_aspect_in_multiples_of_8(size, long_side, expected):
    got = processing_size(size, long_side)
    assert got == expected and got[0] % 8 == 0 and got[1] % 8 == 0


def test_subject_untouched_background_changed(inp, cat):
    rgb, mask = cat
    gen = inp.inpaint(rgb, region(mask), req(seed=1))[0].image
    out = compose(rgb, mask, "sd", feather=3, generated=gen)
    import cv2
    core = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))) > 0
    assert np.array_equal(out[core], rgb[core])
    bg = mask == 0
    assert np.abs(out[bg].astype(int) - rgb[bg].astype(int)).mean() > 10


def test_same_seed_same_bytes_other_seed_differs(inp, cat):
    rgb, mask = cat
    a = inp.inpaint(rgb, region(mask), req(seed=42))[0]
    b = inp.inpaint(rgb, region(mask), req(seed=42))[0]
    c = inp.inpaint(rgb, region(mask), req(seed=43))[0]
    assert a.seed == b.seed == 42 and c.seed == 43
    assert a.image.tobytes() == b.image.tobytes()
    assert not np.array_equal(a.image, c.image)


def test_variants_have_their_own_seeds_and_reproduce_alone(inp, cat):
    rgb, mask = cat
    seen = []
    out = inp.inpaint(rgb, region(mask), req(seed=7, variants=3), progress=lambda s, t: seen.append((s, t)))
    assert [v.seed for v in out] == [7, 8, 9]
    assert not np.array_equal(out[0].image, out[1].image)
    alone = inp.inpaint(rgb, region(mask), req(seed=8))[0]
    assert np.array_equal(alone.image, out[1].image)
    steps = [s for s, _ in seen]
    assert steps == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1]


def test_random_seed_leaves_global_rng_alone(inp, cat):
    rgb, mask = cat
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    out = inp.inpaint(rgb, region(mask), req(seed=None, variants=2))
    assert out[1].seed == out[0].seed + 1 and 0 <= out[0].seed < 2**32
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(np_state, np.random.get_state()[1])
    again = inp.inpaint(rgb, region(mask), req(seed=out[0].seed))[0]
    assert np.array_equal(again.image, out[0].image)


@pytest.mark.parametrize("name", sorted(set(SCHEDULERS) - set(FAST_SCHEDULERS)))
def test_named_schedulers(inp, cat, name):
    """Quality mode's samplers (lcm/tcd need their LoRA: fast mode, tests/test_fast.py)."""
    rgb, mask = cat
    a = inp.inpaint(rgb, region(mask), req(scheduler=name, seed=5))[0]
    b = inp.inpaint(rgb, region(mask), req(scheduler=name, seed=5))[0]
    assert a.image.shape == rgb.shape and np.array_equal(a.image, b.image)
    assert type(inp._pipe.scheduler).__name__ == inp.default_scheduler   # shared one untouched


def test_guidance_strength_negative_prompt_are_used(inp, cat):
    rgb, mask = cat
    base = inp.inpaint(rgb, region(mask), req(seed=3))[0].image
    for kw in ({"guidance": 1.0}, {"strength": 0.5, "steps": 4}, {"negative": "blurry"}, {"prompt": "snow"}):
        other = inp.inpaint(rgb, region(mask), req(seed=3, **kw))[0].image
        assert not np.array_equal(base, other), kw


def test_cancel_mid_run(inp, cat):
    rgb, mask = cat
    cancel = threading.Event()
    seen = []

    def progress(step, total):
        seen.append(step)
        if step == 1:
            cancel.set()

    with pytest.raises(CancelledError):
        inp.inpaint(rgb, region(mask), req(steps=5, variants=2), progress=progress, cancel=cancel)
    assert seen == [1]
    # the shared pipeline is fine afterwards
    assert inp.inpaint(rgb, region(mask), req())[0].image.shape == rgb.shape


def test_cancel_before_start(inp, cat):
    rgb, mask = cat
    cancel = threading.Event()
    cancel.set()
    seen = []
    with pytest.raises(CancelledError):
        inp.inpaint(rgb, region(mask), req(), progress=lambda s, t: seen.append(s), cancel=cancel)
    assert seen == []


def test_concurrent_generations_match_sequential(tiny_inpaint, cat):
    """Two runs at once on ONE shared pipeline (max_concurrent=2, so they really overlap: each call
    has its own scheduler and per-call state) give the same pixels as one after the other."""
    rgb, mask = cat
    manager = ModelManager(max_concurrent=2)
    try:
        inp = manager.get("tiny")
        jobs = [req(seed=11, steps=3, scheduler="euler_a"), req(seed=12, steps=3, prompt="a forest", variants=2)]
        sequential = [inp.inpaint(rgb, region(mask), j) for j in jobs]
        results: list = [None, None]
        errors = []
        barrier = threading.Barrier(2)

        def work(i):
            try:
                barrier.wait()
                results[i] = inp.inpaint(rgb, region(mask), jobs[i])
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        for seq, par in zip(sequential, results):
            assert [v.seed for v in seq] == [v.seed for v in par]
            for a, b in zip(seq, par):
                assert np.array_equal(a.image, b.image)
    finally:
        manager.unload()


def test_oom_retries_lighter_then_reports(tiny_inpaint, cat, monkeypatch):
    rgb, mask = cat
    manager = ModelManager()
    try:
        inp = manager.get("tiny")
        unet = inp._pipe.unet
        real_forward = unet.forward
        calls = {"n": 0}

        def flaky(*a, **k):
            calls["n"] += 1
            if calls["n"] == 1:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return real_forward(*a, **k)

        monkeypatch.setattr(unet, "forward", flaky)
        out = inp.inpaint(rgb, region(mask), req())
        assert out[0].image.shape == rgb.shape and inp.level == 1      # attention + VAE slicing

        def always(*a, **k):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        monkeypatch.setattr(unet, "forward", always)
        with pytest.raises(OutOfMemoryError) as e:
            inp.inpaint(rgb, region(mask), req())
        assert "\n" not in str(e.value) and "memory" in str(e.value)
    finally:
        manager.unload()


def test_manager_switch_frees_old_and_closed_inpainter_reloads(tiny_inpaint, tmp_path, cat):
    rgb, mask = cat
    other = tmp_path / "my-tiny"
    shutil.copytree(tiny_inpaint, other)
    manager = ModelManager(capacity=1)
    try:
        first = manager.get("tiny")
        assert manager.get("tiny") is first
        second = manager.get(str(other))                 # any local diffusers folder
        assert first.closed and not second.closed and manager.loaded() == [str(other)]
        a = second.inpaint(rgb, region(mask), req(seed=2))[0].image
        b = first.inpaint(rgb, region(mask), req(seed=2))[0].image   # reloads through the manager
        assert np.array_equal(a, b)                      # same weights, same seed
        assert second.closed and manager.loaded() == ["tiny"]
    finally:
        manager.unload()
    assert manager.loaded() == []


def test_manager_loads_once_under_concurrent_requests(tiny_inpaint):
    manager = ModelManager()
    got, barrier = [], threading.Barrier(3)

    def ask():
        barrier.wait()
        got.append(manager.get("tiny"))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(got) == 3 and got[0] is got[1] is got[2]
    finally:
        manager.unload()


def test_missing_weights_names_the_fix():
    with pytest.raises(MissingWeightsError) as e:
        get_inpainter("sd15-inpainting")
    msg = str(e.value)
    assert "\n" not in msg and "python -m core models download sd15-inpainting" in msg and "GB" in msg
    with pytest.raises(MissingWeightsError, match="models download someone/inpaint-model"):
        get_inpainter("someone/inpaint-model")


def test_corrupt_model_folder(tmp_path):
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionInpaintPipeline"}')
    with pytest.raises(MissingWeightsError) as e:
        ModelManager().get(str(tmp_path))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [
    {"steps": 0}, {"steps": 151}, {"steps": 2.5}, {"steps": True}, {"guidance": -1}, {"guidance": 31},
    {"guidance": float("nan")}, {"strength": 1.5}, {"strength": 0}, {"strength": 0.1, "steps": 5},
    {"variants": 0}, {"variants": 9}, {"seed": -1}, {"seed": 2**64}, {"seed": "7"},
    {"scheduler": "heun"}, {"prompt": None}, {"prompt": "x" * 5000},
])
def test_bad_options(kw):
    kw.setdefault("prompt", "a beach")
    with pytest.raises(InvalidOptionError) as e:
        InpaintRequest(**kw)
    assert "\n" not in str(e.value)


def test_bad_inputs(inp, cat):
    rgb, mask = cat
    with pytest.raises(InvalidOptionError, match="nothing to repaint"):
        inp.inpaint(rgb, np.zeros_like(mask), req())
    with pytest.raises(InvalidOptionError):
        inp.inpaint(rgb, mask[:10], req())
    with pytest.raises(InvalidOptionError):
        inp.inpaint(rgb.astype(np.float32), mask, req())
    with pytest.raises(InvalidOptionError):
        inp.inpaint(rgb, mask, {"prompt": "x"})
    out = inp.inpaint(rgb, region(mask) > 0, req())              # bool masks are accepted
    assert out[0].image.shape == rgb.shape


def test_build_tiny_is_deterministic_and_keeps_global_rng(tmp_path):
    state = torch.random.get_rng_state()
    a = inpaint_mod.build_tiny_pipeline()
    assert torch.equal(state, torch.random.get_rng_state())
    b = inpaint_mod.build_tiny_pipeline()
    for (n, p), (_, q) in zip(a.unet.named_parameters(), b.unet.named_parameters()):
        assert torch.equal(p, q), n
