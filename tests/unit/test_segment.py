"""core.segment: shapes, two-phase caching, concurrency, GrabCut on a real photo, loading and errors.

All offline: the tiny SAM is built in code by the `tiny_sam` fixture, saved where the registry
expects it and loaded back through the same code as the official checkpoints; a tiny SAM 2.1 is
built from a small Sam2Config and saved with save_pretrained.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest

from core import segment as seg
from core.errors import InvalidOptionError, MissingWeightsError
from core.segment import (Click, EmbeddingCache, GrabCutSegmenter, SamSegmenter, SegmentRequest,
                          SegmentResult, Segmenter, get_segmenter)
from tiny_sam2 import build_tiny_sam2  # tests/kit

ONE_CLICK = SegmentRequest((Click(220, 150),))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread: on a small shared CPU, two spinning OpenMP threads made the tiny model
    5-7x slower in wall time. Restored after this module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny(tiny_sam):
    """The shared tiny SAM segmenter, loaded through the registry (once; cached by get_segmenter)."""
    return get_segmenter("tiny")


@pytest.fixture
def fresh(tiny):
    """A segmenter over the same (shared) tiny model with an empty embedding cache and counter."""
    return SamSegmenter("tiny", tiny.model)


def _predictor_reference(model, rgb, requests):
    """segment_anything's own SamPredictor (one set_image): [(full-size masks, scores)] per request."""
    from segment_anything import SamPredictor

    p = SamPredictor(model)
    p.set_image(rgb)
    out = []
    for request in requests:
        kwargs = {}
        if request.clicks:
            kwargs["point_coords"] = np.array([[c.x, c.y] for c in request.clicks], dtype=float)
            kwargs["point_labels"] = np.array([c.label for c in request.clicks])
        if request.box is not None:
            kwargs["box"] = np.array(request.box, dtype=float)
        masks, scores, _ = p.predict(multimask_output=request.multimask, **kwargs)
        out.append((masks, scores))
    return out


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


# ----------------------------------------------------------------------------- loading / registry
def test_tiny_checkpoint_is_loaded_through_the_registry(tiny_sam, weights_dir, tiny):
    import torch

    assert tiny_sam == weights_dir / "sam_tiny.pth" and tiny_sam.is_file()
    assert isinstance(tiny, SamSegmenter) and isinstance(tiny, Segmenter)
    assert get_segmenter("tiny") is tiny                       # cached per name
    reference = seg.build_tiny_sam_model(seed=0).state_dict()  # same seed -> same weights
    loaded = tiny.model.state_dict()
    assert reference.keys() == loaded.keys()
    assert all(torch.equal(reference[k], loaded[k]) for k in reference)
    # the embedding has the official shape, so prompt encoder / decoder are unchanged
    emb = tiny._embedding(np.zeros((40, 60, 3), np.uint8))
    assert tuple(emb.features.shape) == (1, 256, 64, 64) and emb.input_size == (683, 1024)


def test_build_tiny_sam_is_deterministic_and_leaves_global_rng_alone(tmp_path):
    import torch

    state = torch.get_rng_state()
    a = seg.build_tiny_sam(tmp_path / "a.pth")
    b = seg.build_tiny_sam(tmp_path / "b.pth")
    assert torch.equal(torch.get_rng_state(), state)
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_unknown_segmenter_name():
    with pytest.raises(InvalidOptionError, match="unknown segmenter 'sam-vit-x'.*grabcut"):
        get_segmenter("sam-vit-x")


@pytest.mark.parametrize("name, filename", [
    ("sam-vit-b", "sam_vit_b_01ec64.pth"),
    ("sam-vit-h", "sam_vit_h_4b8939.pth"),
    ("sam2-tiny", "sam2-tiny"),
    ("sam2-small", "sam2-small"),
])
def test_missing_weights_name_the_file_and_the_fix(name, filename):
    with pytest.raises(MissingWeightsError) as e:
        get_segmenter(name)
    msg = str(e.value)
    assert filename in msg and f"python -m core models download {name}" in msg
    assert ("GB" in msg or "MB" in msg) and "\n" not in msg


def test_missing_and_corrupt_tiny_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="sam_tiny.pth"):
        get_segmenter("tiny")
    (tmp_path / "sam_tiny.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(MissingWeightsError, match=r"unreadable.*python -m core models download tiny"):
        get_segmenter("tiny")


# ----------------------------------------------------------------------------- masks and shapes
def test_masks_at_out_size_and_full_size(tiny, chelsea):
    h, w = chelsea.shape[:2]                                    # 300 x 451: odd width, landscape
    full = tiny.segment(chelsea, ONE_CLICK)
    small = tiny.segment(chelsea, ONE_CLICK, out_size=(226, 150))
    assert full.masks.shape == (3, h, w) and full.masks.dtype == bool
    assert small.masks.shape == (3, 150, 226) and small.size == (226, 150)
    assert full.scores.shape == (3,) and full.scores.dtype == np.float32
    assert full.best == int(np.argmax(full.scores))
    np.testing.assert_allclose(full.scores, small.scores)
    mask = full.mask
    assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask == 255, full.masks[full.best])


def test_prompts_and_embedding_match_sam_predictor(tiny, coffee):
    """Same scores as segment_anything's SamPredictor for points + box (prompts scaled into the
    model frame, embedding of the right image); masks differ at most where the random model's
    logits are near zero (one bilinear resampling here, two in SamPredictor; see the rectangle
    test for exact geometry)."""
    from segment_anything import SamPredictor

    request = SegmentRequest((Click(280, 150), Click(40, 350, 0)), box=(150.0, 10.0, 450.0, 390.0))
    p = SamPredictor(tiny.model)
    p.set_image(coffee)
    logits, ref_scores, _ = p.predict(point_coords=np.array([[280.0, 150.0], [40.0, 350.0]]),
                                      point_labels=np.array([1, 0]), box=np.array(request.box),
                                      multimask_output=True, return_logits=True)
    ours = tiny.segment(coffee, request)
    np.testing.assert_allclose(ours.scores, ref_scores, rtol=1e-4, atol=1e-5)
    assert ours.masks.shape == logits.shape
    differ = ours.masks != (logits > 0)
    assert differ.mean() < 0.02
    assert np.abs(logits[differ]).max() < np.median(np.abs(logits))


@pytest.mark.parametrize("clicks, box, multimask", [
    (((280, 150, 1),), None, True),
    (((280, 150, 1), (40, 350, 0), (500, 90, 1)), None, False),
    ((), (150.0, 10.0, 450.0, 390.0), True),
    (((300, 200, 1), (20, 20, 0)), (150.0, 10.0, 450.0, 390.0), False),
])
def test_click_path_decoder_equals_sams_own(tiny, coffee, clicks, box, multimask):
    """The click path's decoder (image-only half precomputed once per image, core.segment.decoder)
    gives the logits and scores of segment_anything's MaskDecoder on the same weights."""
    import torch

    assert tiny.decoder is not None                             # the real SAM decoder takes the fast path
    emb = tiny._embedding(coffee)
    sx = emb.input_size[1] / coffee.shape[1]
    coords = torch.tensor([[[x * sx, y * sx] for x, y, _ in clicks]], dtype=torch.float32)
    labels = torch.tensor([[lab for _, _, lab in clicks]], dtype=torch.int)
    boxes = torch.tensor([[v * sx for v in box]]) if box else None
    pe = tiny.model.prompt_encoder
    with torch.inference_mode():
        sparse, dense = pe(points=(coords, labels) if clicks else None, boxes=boxes, masks=None)
        ref, ref_iou = tiny.model.mask_decoder(image_embeddings=emb.features, image_pe=pe.get_dense_pe(),
                                               sparse_prompt_embeddings=sparse,
                                               dense_prompt_embeddings=dense, multimask_output=multimask)
    ours, iou = tiny.decoder.decode(emb.decoder_state, sparse, multimask)
    assert ours.shape == ref.shape == (1, 3 if multimask else 1, 256, 256)
    scale = ref.abs().max().item()
    torch.testing.assert_close(ours, ref, atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(iou, ref_iou, atol=1e-6, rtol=1e-4)


def test_click_path_decoder_with_sams_real_decoder_shape():
    """The same equality with SAM's real decoder configuration (two transformer layers, 8 heads,
    MLP 2048; the tiny test model has one small layer), so the layers after the first are covered."""
    import types

    import torch
    from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

    from core.segment import decoder as fast_decoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = types.SimpleNamespace(
            prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                         input_image_size=(1024, 1024), mask_in_chans=16),
            mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=256,
                                     transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                   num_heads=8)).eval())
        features = torch.randn(1, 256, 64, 64)
        coords, labels = torch.rand(1, 4, 2) * 1000, torch.tensor([[1, 0, 1, 1]])
    fast = fast_decoder.for_sam(model)
    assert fast is not None and len(fast.layers) == 2
    assert not model.mask_decoder.output_upscaling[0].weight.is_inference()   # the model is left usable
    state = fast.prepare(features)
    pe = model.prompt_encoder
    for boxes, multimask in [(None, True), (torch.tensor([[100.0, 80.0, 700.0, 900.0]]), False)]:
        with torch.inference_mode():
            sparse, dense = pe(points=(coords, labels), boxes=boxes, masks=None)
            ref, ref_iou = model.mask_decoder(image_embeddings=features, image_pe=pe.get_dense_pe(),
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=multimask)
        ours, iou = fast.decode(state, sparse, multimask)
        torch.testing.assert_close(ours, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-4)
        torch.testing.assert_close(iou, ref_iou, atol=1e-6, rtol=1e-4)
    with pytest.raises(ValueError, match="one prompt at a time"):
        fast.decode(state, torch.cat([sparse, sparse]), True)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_each_candidate_keeps_its_own_mask_when_resampled(n):
    """Candidates are resampled together; each must come out as itself, in its own place."""
    import torch

    low = torch.full((n, 256, 256), -10.0)
    for i in range(n):                                          # candidate i: a band of rows of its own
        low[i, 40 * i:40 * i + 30, 20:200] = 10.0
    masks = seg._masks_from_low_res(low, (256.0, 256.0), (300, 512))   # out (h, w): rows x 300/256
    assert masks.shape == (n, 300, 512) and masks.dtype == bool
    for i in range(n):
        rows = np.nonzero(masks[i].any(axis=1))[0]
        cols = np.nonzero(masks[i].any(axis=0))[0]
        assert abs(rows[0] - 40 * i * 300 / 256) <= 2 and abs(rows[-1] + 1 - (40 * i + 30) * 300 / 256) <= 2
        assert abs(cols[0] - 20 * 2) <= 2 and abs(cols[-1] + 1 - 200 * 2) <= 2


class _RectangleDecoder:
    """Stands in for SAM's mask decoder: logits +10 inside a known rectangle of the ORIGINAL image
    (mapped into the 256x256 low-res grid of the padded 1024x1024 frame), -10 elsewhere."""

    def __init__(self, rect, original_hw, img_size=1024):
        import torch

        x1, y1, x2, y2 = rect
        s = img_size / max(original_hw) / 4                   # original px -> low-res px
        centers = torch.arange(256, dtype=torch.float32) + 0.5
        inside_y = (centers >= y1 * s) & (centers < y2 * s)
        inside_x = (centers >= x1 * s) & (centers < x2 * s)
        grid = (inside_y[:, None] & inside_x[None, :]).float() * 20 - 10
        self.low_res = grid.expand(1, 3, 256, 256)

    def __call__(self, *, multimask_output, **_):
        import torch
        n = 3 if multimask_output else 1
        return self.low_res[:, :n], torch.tensor([[0.9, 0.5, 0.1][:n]])


def test_low_res_logits_land_in_the_right_place(tiny, coffee):
    """low-res -> padded 1024 frame -> crop to the resized image -> out_size keeps geometry: a
    rectangle known in original pixels comes out where it belongs at every output size (a missed
    or shifted padding crop would move or squash it)."""
    import copy

    model = copy.copy(tiny.model)                               # shallow: shares the encoder weights
    rect = (150, 100, 450, 300)                                 # x1, y1, x2, y2 in the 600x400 photo
    object.__setattr__(model, "mask_decoder", _RectangleDecoder(rect, coffee.shape[:2]))
    s = SamSegmenter("rect", model)
    for out_size in [(300, 200), (600, 400), (97, 64), (1024, 683), (1000, 300), None]:
        result = s.segment(coffee, ONE_CLICK, out_size=out_size)
        w, h = out_size or (600, 400)
        expected = np.zeros((h, w), bool)
        sx, sy = w / 600, h / 400
        expected[round(rect[1] * sy):round(rect[3] * sy), round(rect[0] * sx):round(rect[2] * sx)] = True
        got = result.masks[0]
        assert got.shape == (h, w) and result.best == 0
        rows, cols = np.nonzero(got)
        tol_y, tol_x = 4 * 600 / 1024 * sy + 1, 4 * 600 / 1024 * sx + 1    # one low-res cell + rounding
        assert abs(rows.min() - rect[1] * sy) <= tol_y and abs(rows.max() + 1 - rect[3] * sy) <= tol_y, out_size
        assert abs(cols.min() - rect[0] * sx) <= tol_x and abs(cols.max() + 1 - rect[2] * sx) <= tol_x, out_size
        assert _agreement(got, expected) > 0.97, out_size
        if out_size is None:                                    # SamPredictor's two-step upsampling
            (ref_masks, _), = _predictor_reference(model, coffee, [ONE_CLICK])
            assert _agreement(result.masks, ref_masks) > 0.999
    assert s.encoder_calls == 1


def test_multimask_off_returns_one_mask_and_box_only_works(tiny, astronaut):
    one = tiny.segment(astronaut, SegmentRequest((Click(250, 200),), multimask=False), out_size=(64, 64))
    assert one.masks.shape == (1, 64, 64) and one.scores.shape == (1,) and one.best == 0
    boxed = tiny.segment(astronaut, SegmentRequest(box=(100, 50, 400, 500)), out_size=(128, 128))
    assert boxed.masks.shape == (3, 128, 128) and boxed.best == int(np.argmax(boxed.scores))


# ----------------------------------------------------------------------------- two phases, caching
def test_embedding_is_computed_once_per_image(fresh, astronaut, coffee):
    rng = np.random.default_rng(0)
    clicks = [Click(float(x), float(y), int(i % 3 != 2))
              for i, (x, y) in enumerate(rng.uniform(0, 511, size=(10, 2)))]
    clicks[0] = Click(250, 250, 1)
    for k in range(1, 11):                                      # 10 clicks, growing point sets
        fresh.segment(astronaut, SegmentRequest(tuple(clicks[:k])), out_size=(128, 128))
    assert fresh.encoder_calls == 1
    fresh.prepare(coffee)
    fresh.segment(coffee, ONE_CLICK)
    assert fresh.encoder_calls == 2
    fresh.segment(np.array(astronaut), ONE_CLICK)              # a copy: same content, same key
    assert fresh.encoder_calls == 2 and len(fresh.cache) == 2


def test_segmenter_lru_evicts_the_oldest_image(tiny, astronaut, coffee):
    s = SamSegmenter("tiny", tiny.model, cache_size=1)
    s.segment(astronaut, ONE_CLICK, out_size=(32, 32))
    s.segment(coffee, ONE_CLICK, out_size=(32, 32))             # evicts astronaut
    s.segment(coffee, ONE_CLICK, out_size=(32, 32))
    assert s.encoder_calls == 2
    s.segment(astronaut, ONE_CLICK, out_size=(32, 32))          # re-embedded
    assert s.encoder_calls == 3 and len(s.cache) == 1


def test_embedding_cache_lru_order_and_capacity():
    cache = EmbeddingCache(capacity=3)
    for k in "abc":
        cache.get_or_compute(k, lambda k=k: k.upper())
    assert cache.get_or_compute("a", lambda: "recomputed") == "A"        # hit: a becomes newest
    cache.get_or_compute("d", lambda: "D")                                # evicts b, the oldest
    assert cache.keys() == ["c", "a", "d"] and "b" not in cache
    with pytest.raises(InvalidOptionError):
        EmbeddingCache(capacity=0)


def test_embedding_cache_is_single_flight_and_recovers_from_errors():
    cache = EmbeddingCache(capacity=4)
    calls, started = [], threading.Event()

    def slow():
        calls.append(1)
        started.set()
        threading.Event().wait(0.2)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("k", slow)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["value"] * 4 and len(calls) == 1

    def boom():
        raise RuntimeError("encoder failed")
    with pytest.raises(RuntimeError):
        cache.get_or_compute("x", boom)
    assert "x" not in cache and cache.get_or_compute("x", lambda: 1) == 1


def test_read_only_images_are_hashed_once(monkeypatch, astronaut):
    import core.images

    calls = []
    real = core.images.content_hash
    monkeypatch.setattr(core.images, "content_hash", lambda a: calls.append(1) or real(a))
    ro = np.array(astronaut)
    ro.flags.writeable = False
    keys = {seg.image_key(ro) for _ in range(3)}
    assert len(calls) == 1 and keys == {real(astronaut)}
    rw = np.array(astronaut)
    for _ in range(3):
        seg.image_key(rw)
    assert len(calls) == 4                                     # writable: may change, hashed each time


def test_two_threads_on_two_images_get_their_own_masks(fresh, astronaut, coffee):
    """Concurrent embedding + decoding of two images on one shared segmenter: no cross-talk."""
    jobs = {
        "astronaut": (astronaut, [Click(250, 200), Click(300, 300), Click(20, 20, 0)]),
        "coffee": (coffee, [Click(280, 150), Click(250, 60), Click(40, 350, 0)]),
    }
    barrier = threading.Barrier(len(jobs))
    got, errors = {}, []

    def work(name, rgb, clicks):
        try:
            barrier.wait(10)
            got[name] = [fresh.segment(rgb, SegmentRequest(tuple(clicks[:k])), out_size=None)
                         for k in range(1, len(clicks) + 1)]
        except Exception as e:   # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n, *job)) for n, job in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and fresh.encoder_calls == 2
    for name, (rgb, clicks) in jobs.items():
        requests = [SegmentRequest(tuple(clicks[:k])) for k in range(1, len(clicks) + 1)]
        refs = _predictor_reference(fresh.model, rgb, requests)    # independent: its own embedding
        for request, result, (_, ref_scores) in zip(requests, got[name], refs, strict=True):
            np.testing.assert_allclose(result.scores, ref_scores, rtol=1e-4, atol=1e-5)
            alone = fresh.segment(rgb, request)                    # the same call, sequentially
            assert np.array_equal(result.masks, alone.masks)
            np.testing.assert_array_equal(result.scores, alone.scores)
    assert not np.allclose(got["astronaut"][0].scores, got["coffee"][0].scores)


# ----------------------------------------------------------------------------- validation
@pytest.fixture(params=["tiny", "grabcut"])
def any_segmenter(request, tiny):
    return get_segmenter(request.param)


@pytest.mark.parametrize("request_, message", [
    (SegmentRequest(), "nothing to segment"),
    (SegmentRequest((Click(10, 10, 0),)), "only 'not subject' clicks"),
    (SegmentRequest((Click(600, 10),)), r"click \(600, 10\) is outside the 600x400 image"),
    (SegmentRequest((Click(10, -1),)), "outside"),
    (SegmentRequest(box=(0, 0, 601, 400)), "box .* is outside"),
])
def test_bad_requests_are_rejected_before_any_work(any_segmenter, coffee, request_, message):
    calls = getattr(any_segmenter, "encoder_calls", 0)
    with pytest.raises(InvalidOptionError, match=message):
        any_segmenter.segment(coffee, request_)
    assert getattr(any_segmenter, "encoder_calls", 0) == calls


@pytest.mark.parametrize("make, message", [
    (lambda: Click(1, 2, label=2), "label must be 1"),
    (lambda: Click(float("nan"), 2), "finite"),
    (lambda: SegmentRequest(box=(10, 10, 5, 20)), "empty"),
    (lambda: SegmentRequest(box=(1, 2, 3)), "four"),
    (lambda: SegmentRequest(clicks=("a",)), "click"),
])
def test_bad_clicks_and_boxes(make, message):
    with pytest.raises(InvalidOptionError, match=message):
        make()


@pytest.mark.parametrize("image, out_size, message", [
    (np.zeros((20, 30), np.uint8), None, "HxWx3"),
    (np.zeros((20, 30, 3), np.float32), None, "uint8"),
    (np.zeros((20, 30, 4), np.uint8), None, "HxWx3"),
    (np.zeros((20, 30, 3), np.uint8), (0, 10), "out_size"),
    (np.zeros((20, 30, 3), np.uint8), (10.5, 10), "out_size"),
    (np.zeros((20, 30, 3), np.uint8), "big", "out_size"),
])
def test_bad_images_and_sizes(any_segmenter, image, out_size, message):
    with pytest.raises(InvalidOptionError, match=message):
        any_segmenter.segment(image, SegmentRequest((Click(5, 5),)), out_size=out_size)


def test_request_clicks_become_a_tuple():
    r = SegmentRequest([Click(1, 2)], box=[0, 0, 5, 5])
    assert r.clicks == (Click(1, 2),) and r.box == (0.0, 0.0, 5.0, 5.0)
    assert hash(r) == hash(SegmentRequest((Click(1, 2),), (0, 0, 5, 5)))


# ----------------------------------------------------------------------------- GrabCut
def test_grabcut_one_click_on_the_cup(coffee):
    g = get_segmenter("grabcut")
    assert isinstance(g, GrabCutSegmenter) and get_segmenter("grabcut") is g
    result = g.segment(coffee, SegmentRequest((Click(280, 150),)), out_size=(300, 200))
    assert isinstance(result, SegmentResult) and result.masks.shape == (1, 200, 300) and result.best == 0
    m = result.masks[0]
    assert m[70:80, 135:145].mean() > 0.95                      # the clicked coffee
    assert m[25:35, 120:130].mean() > 0.9                       # the cup's white rim (not clicked)
    for corner in (m[:15, :15], m[:15, -15:], m[-15:, :15], m[-15:, -15:]):
        assert not corner.any()                                 # table, not subject
    assert 0.1 < m.mean() < 0.75


def test_grabcut_box_and_negative_click(coffee):
    g = GrabCutSegmenter()
    box = (170, 10, 420, 290)
    full = g.segment(coffee, SegmentRequest(box=box))          # out_size None: full size
    assert full.masks.shape == (1, 400, 600)
    m = full.masks[0]
    inside = np.zeros_like(m)
    inside[10:290, 170:420] = True
    assert m.sum() > 0.1 * inside.sum() and m[~inside].sum() == 0
    neg = g.segment(coffee, SegmentRequest((Click(280, 150), Click(150, 300, 0)))).masks[0]
    assert neg[150, 280] and not neg[295:305, 145:155].any()


# ----------------------------------------------------------------------------- SAM 2.1 (tiny, offline)
@pytest.fixture(scope="module")
def tiny_sam2_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam2-weights")
    build_tiny_sam2(root / "sam2-tiny")
    return root


def test_sam2_tiny_through_the_registry(tiny_sam2_dir, monkeypatch, chelsea):
    import torch

    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tiny_sam2_dir))
    s2 = get_segmenter("sam2-tiny")
    assert isinstance(s2, seg.Sam2Segmenter) and isinstance(s2, Segmenter)
    assert get_segmenter("sam2-tiny") is s2
    h, w = chelsea.shape[:2]
    request = SegmentRequest((Click(220, 150), Click(20, 280, 0)))
    full = s2.segment(chelsea, request)
    small = s2.segment(chelsea, request, out_size=(113, 75))
    assert full.masks.shape == (3, h, w) and small.masks.shape == (3, 75, 113)
    assert full.best == int(np.argmax(full.scores))
    for k in range(5):
        s2.segment(chelsea, SegmentRequest((Click(10 + 40 * k, 100),)), out_size=(64, 64))
    assert s2.encoder_calls == 1
    assert s2.segment(chelsea, SegmentRequest(box=(50, 20, 400, 290), multimask=False)).masks.shape == (1, h, w)

    # the same masks as transformers' own pipeline: processor -> full forward -> post_process_masks
    inputs = s2.processor(images=chelsea, input_points=[[[[220, 150], [20, 280]]]], input_labels=[[[1, 0]]],
                          return_tensors="pt")
    with torch.inference_mode():
        out = s2.model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                       input_labels=inputs["input_labels"], multimask_output=True)
    ref = s2.processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0].numpy()
    np.testing.assert_allclose(full.scores, out.iou_scores[0, 0].numpy(), rtol=1e-4, atol=1e-5)
    assert _agreement(full.masks, ref) > 0.999


@pytest.mark.parametrize("points, box, multimask, stable", [
    ([[220, 150]], None, True, None),
    ([[220, 150], [20, 280], [400, 40]], None, False, False),
    ([[220, 150], [20, 280], [400, 40]], None, False, True),
    (None, [50, 20, 400, 290], False, False),
    ([[200, 100], [10, 10]], [50, 20, 400, 290], True, None),
])
def test_sam2_click_path_decoder_equals_transformers(tiny_sam2_dir, monkeypatch, chelsea, points, box, multimask,
                                                     stable):
    """SAM 2.1's click path (image-only half of the decoder precomputed, core.segment.decoder) gives the
    logits and scores of Sam2Model's own forward on the same embedding, including the single-mask
    choice by stability both ways (the random model's single mask is unstable; a zero threshold
    makes it count as stable)."""
    import torch

    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tiny_sam2_dir))
    s2 = get_segmenter("sam2-tiny")
    assert s2.decoder is not None
    if stable:
        monkeypatch.setattr(s2.model.mask_decoder, "dynamic_multimask_stability_thresh", 0.0)
    emb = s2._embedding(chelsea)
    h, w = chelsea.shape[:2]
    scale = torch.tensor([1024 / w, 1024 / h])
    kwargs = {}
    if points:
        kwargs["input_points"] = (torch.tensor(points, dtype=torch.float32) * scale)[None, None]
        kwargs["input_labels"] = torch.tensor([[[1] + [0] * (len(points) - 1)]])
    if box:
        kwargs["input_boxes"] = (torch.tensor(box, dtype=torch.float32) * scale.repeat(2))[None, None]
    with torch.inference_mode():
        ref = s2.model(image_embeddings=emb.features, multimask_output=multimask, **kwargs)
        sparse, _ = s2.model.prompt_encoder(input_points=kwargs.get("input_points"),
                                            input_labels=kwargs.get("input_labels"),
                                            input_boxes=kwargs.get("input_boxes"), input_masks=None)
    ours, iou = s2.decoder.decode(emb.decoder_state, sparse[:, 0], multimask)
    expected = ref.pred_masks[:, 0]
    assert ours.shape == expected.shape == (1, 3 if multimask else 1, 256, 256)
    torch.testing.assert_close(ours, expected, atol=1e-5 * expected.abs().max().item(), rtol=1e-4)
    torch.testing.assert_close(iou, ref.iou_scores[:, 0], atol=1e-6, rtol=1e-4)


def test_sam2_loads_quietly(tiny_sam2_dir, capfd):
    """Loading SAM 2.1 prints no progress bar (stderr is the CLI's channel for one-line errors)."""
    from transformers.utils import logging as hf_logging

    from core import weights

    before = hf_logging.is_progress_bar_enabled()   # off where core.log.configure() ran in this process
    seg.load_sam2(weights.spec_for("sam2-tiny", "segment"), tiny_sam2_dir / "sam2-tiny")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert hf_logging.is_progress_bar_enabled() == before     # the global setting is restored


@pytest.mark.parametrize("owner, attribute, multimask", [
    ("modeling_sam2", "Sam2TwoWayTransformer", True),       # a private class renamed: the load failed
    ("modeling_sam2", "Sam2TwoWayTransformer", False),
    ("Sam2MaskDecoder", "_dynamic_multimask_via_stability", True),   # a private method: the click failed
])
def test_sam2_falls_back_to_its_own_decoder_when_transformers_changes(tiny_sam2_dir, monkeypatch, caplog, chelsea,
                                                                      owner, attribute, multimask):
    """The fast click path reads transformers' private names; if one is gone, setting up SAM 2.1
    still works: a warning is logged and the model's own decoder gives the masks (the same ones)."""
    from transformers.models.sam2 import modeling_sam2

    from core import weights

    spec, path = weights.spec_for("sam2-tiny", "segment"), tiny_sam2_dir / "sam2-tiny"
    request = SegmentRequest((Click(220, 150), Click(20, 280, 0)), multimask=multimask)
    fast = seg.load_sam2(spec, path)
    assert fast.decoder is not None
    expected = fast.segment(chelsea, request, out_size=(113, 75))

    # As if transformers had renamed it: the model is built (by the library's own new code), then
    # the segmenter sets up its click path.
    monkeypatch.delattr(modeling_sam2 if owner == "modeling_sam2" else getattr(modeling_sam2, owner), attribute)
    with caplog.at_level("WARNING", logger="core.segment.decoder"):
        s2 = seg.Sam2Segmenter("sam2-tiny", fast.model, fast.processor)
    assert s2.decoder is None
    assert any("model's own mask decoder" in r.getMessage() and r.exc_info for r in caplog.records)
    got = s2.segment(chelsea, request, out_size=(113, 75))
    assert got.masks.shape == expected.masks.shape == (3 if multimask else 1, 75, 113)
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-4, atol=1e-5)
    assert _agreement(got.masks, expected.masks) > 0.999


# ----------------------------------------------------------------------------- registry of loaded models
def test_segmenter_names_come_from_the_weights_registry():
    from core import weights

    assert seg.SEGMENTERS == tuple(s.name for s in weights.specs("segment"))


def test_loaded_segmenters_are_bounded_and_can_be_cleared(tiny_sam, monkeypatch):
    monkeypatch.setattr(seg, "MAX_LOADED", 2)
    seg.clear_segmenters()
    grabcut = get_segmenter("grabcut")
    tiny = get_segmenter("tiny")
    assert seg.loaded_segmenters() == ["grabcut", "tiny"]
    assert get_segmenter("grabcut") is grabcut                  # a hit makes it the most recent
    assert seg.loaded_segmenters() == ["tiny", "grabcut"]
    monkeypatch.setattr(seg, "MAX_LOADED", 1)
    assert get_segmenter("tiny") is tiny                        # a hit never evicts
    seg.clear_segmenters()
    assert seg.loaded_segmenters() == []
    assert get_segmenter("tiny") is not tiny                    # loaded anew after clear
    new_grabcut = get_segmenter("grabcut")                      # evicts tiny: only one fits
    assert new_grabcut is not grabcut and seg.loaded_segmenters() == ["grabcut"]
