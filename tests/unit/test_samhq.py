"""core.segment.samhq: SAM-HQ (transformers SamHQModel) as a two-phase segmenter, offline.

The `tiny-sam-hq` model is a random-initialised SamHQModel built in code (core.tiny), saved with
save_pretrained where the registry expects it and loaded back through `get_segmenter`, the code
path of syscv-community/sam-hq-vit-base.
"""
from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from core import segment as seg
from core import weights
from core.errors import InvalidOptionError, MissingWeightsError
from core.segment import Click, SegmentRequest, Segmenter, get_segmenter
from core.segment.samhq import SamHQSegmenter, load_sam_hq

NAME = "tiny-sam-hq"


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One intra-op thread on the small shared CPU (see tests/test_segment.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_sam_hq(weights_dir):
    """Folder of the tiny SAM-HQ, built through the registry's download path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download(NAME, "segment")


@pytest.fixture
def hq(tiny_sam_hq):
    return get_segmenter(NAME)


@pytest.fixture
def fresh(hq):
    """A segmenter over the same (shared) tiny model with an empty cache and counters."""
    return SamHQSegmenter(NAME, hq.model, hq.processor)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def _syscv_reference(model, processor, rgb, points, labels, box, multimask):
    """transformers' own pipeline (processor -> full forward -> post_process_masks), with the two-way
    transformer's image output routed into the mask upscaling, as in SysCV's SAM-HQ decoder (and in
    transformers' SAM); transformers' SamHQMaskDecoder upscales the pre-transformer embedding."""
    import torch

    dec = model.mask_decoder
    seen = {}

    def keep_keys(module, args, output):
        seen["keys"] = output[1]                                        # (1, 1, HW, C)

    def use_keys(module, args):
        keys = seen["keys"]
        b, p, hw, c = keys.shape
        n = int(round(hw ** 0.5))
        return (keys.transpose(2, 3).reshape(b * p, c, n, n),)

    kwargs = {}
    if points is not None:
        kwargs["input_points"], kwargs["input_labels"] = [[points]], [[labels]]
    if box is not None:
        kwargs["input_boxes"] = [[box]]
    inputs = processor(images=rgb, return_tensors="pt", **kwargs)
    hooks = [dec.transformer.register_forward_hook(keep_keys), dec.upscale_conv1.register_forward_pre_hook(use_keys)]
    try:
        with torch.inference_mode():
            out = model(pixel_values=inputs["pixel_values"], multimask_output=multimask,
                        **{k: inputs[k] for k in ("input_points", "input_labels", "input_boxes") if k in inputs})
    finally:
        for h in hooks:
            h.remove()
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])
    return inputs, out.pred_masks[0, 0], masks[0][0].numpy(), out.iou_scores[0, 0].numpy()


# ----------------------------------------------------------------------------- registry / loading
def test_registry_entries():
    spec = weights.get_spec("sam-hq-vit-b", "segment")
    assert spec.kind == "sam-hq" and spec.repo_id == "syscv-community/sam-hq-vit-base" and spec.size_bytes
    assert weights.get_spec("sam-hq-vit-l", "segment").repo_id == "syscv-community/sam-hq-vit-large"
    assert weights.get_spec("sam-hq-vit-h", "segment").repo_id == "syscv-community/sam-hq-vit-huge"
    assert {"sam-hq-vit-b", "sam-hq-vit-l", "sam-hq-vit-h", NAME} <= set(seg.SEGMENTERS)
    assert weights.get_spec(NAME, "segment").kind.startswith("tiny")    # hidden in the app unless tiny


def test_tiny_model_is_built_in_code_and_loaded_through_the_registry(tiny_sam_hq, weights_dir, hq):
    from transformers import SamHQModel

    assert tiny_sam_hq == weights_dir / NAME == weights.resolve(NAME, "segment")
    assert {"config.json", "model.safetensors"} <= {p.name for p in tiny_sam_hq.iterdir()}
    assert isinstance(hq, SamHQSegmenter) and isinstance(hq, Segmenter)
    assert isinstance(hq.model, SamHQModel) and not hq.model.training and hq.fast
    assert get_segmenter(NAME) is hq


def test_build_is_deterministic_and_leaves_global_rng_alone():
    import torch
    from core import tiny

    torch.manual_seed(7)
    before = torch.rand(3)
    torch.manual_seed(7)
    a, b = tiny.build_tiny_sam_hq_model(), tiny.build_tiny_sam_hq_model()
    assert torch.equal(torch.rand(3), before)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_missing_weights_name_the_folder_size_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    for name, size in (("sam-hq-vit-b", "380.0 MB"), ("sam-hq-vit-h", "2.57 GB")):
        with pytest.raises(MissingWeightsError) as e:
            get_segmenter(name)
        msg = str(e.value)
        assert "\n" not in msg and size in msg and str(tmp_path / name) in msg
        assert f"python -m core models download {name}" in msg
    with pytest.raises(MissingWeightsError, match="models download tiny-sam-hq"):
        get_segmenter(NAME)


def test_corrupt_folder_is_a_missing_weights_error(tmp_path, monkeypatch, tiny_sam_hq):
    folder = tmp_path / "sam-hq-vit-b"
    shutil.copytree(tiny_sam_hq, folder)
    (folder / "model.safetensors").write_bytes(b"truncated")
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(MissingWeightsError) as e:
        get_segmenter("sam-hq-vit-b")
    msg = str(e.value)
    assert "\n" not in msg and "not a SAM-HQ folder" in msg and "models download sam-hq-vit-b" in msg


# ----------------------------------------------------------------------------- masks
def test_click_gives_masks_at_image_size_and_out_size(hq, chelsea):
    h, w = chelsea.shape[:2]
    request = SegmentRequest((Click(220, 150), Click(20, 280, 0)))
    full = hq.segment(chelsea, request)
    small = hq.segment(chelsea, request, out_size=(113, 75))
    assert full.masks.shape == (3, h, w) and full.masks.dtype == bool
    assert small.masks.shape == (3, 75, 113) and full.scores.dtype == np.float32
    assert full.best == int(np.argmax(full.scores))
    assert full.mask.shape == (h, w) and full.mask.dtype == np.uint8 and set(np.unique(full.mask)) <= {0, 255}
    box = hq.segment(chelsea, SegmentRequest(box=(50, 20, 400, 290), multimask=False))
    assert box.masks.shape == (1, h, w) and box.best == 0


def test_embedding_is_computed_once_per_image(fresh, astronaut, coffee):
    calls = []
    hook = fresh.model.vision_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        fresh.prepare(astronaut)
        for k in range(4):
            fresh.segment(astronaut, SegmentRequest((Click(100 + 50 * k, 200),)), out_size=(64, 64))
        fresh.segment(astronaut.copy(), SegmentRequest(box=(10, 10, 300, 300)))   # same pixels, same key
        assert fresh.encoder_calls == 1 and len(calls) == 1
        fresh.segment(coffee, SegmentRequest((Click(300, 200),)))
        assert fresh.encoder_calls == 2 and len(calls) == 2
    finally:
        hook.remove()
    emb = fresh._embedding(astronaut)
    assert emb.hq_features is not None and tuple(emb.hq_features.shape[-2:]) == (256, 256)


@pytest.mark.parametrize("points, labels, box, multimask", [
    ([[220, 150]], [1], None, True),
    ([[220, 150], [20, 280], [400, 40]], [1, 0, 1], None, False),
    (None, None, [50, 20, 400, 290], False),
    ([[220, 150]], [1], [50, 20, 400, 290], True),
])
def test_click_path_equals_transformers_with_syscv_upscaling(fresh, chelsea, points, labels, box, multimask):
    import torch

    clicks = tuple(Click(x, y, lab) for (x, y), lab in zip(points or [], labels or []))
    got = fresh.segment(chelsea, SegmentRequest(clicks, box=tuple(box) if box else None, multimask=multimask))
    inputs, ref_low, ref_masks, ref_scores = _syscv_reference(fresh.model, fresh.processor, chelsea, points,
                                                              labels, box, multimask)
    assert got.masks.shape == ref_masks.shape == (3 if multimask else 1, *chelsea.shape[:2])
    np.testing.assert_allclose(got.scores, ref_scores, rtol=1e-4, atol=1e-6)
    # the low-res logits of the click path (cached HQ features) are the reference's
    with torch.inference_mode():
        sparse, dense = fresh.model.prompt_encoder(
            input_points=inputs.get("input_points"), input_labels=inputs.get("input_labels"),
            input_boxes=inputs.get("input_boxes"), input_masks=None)
        low, _ = fresh._decode(fresh._embedding(chelsea), sparse, dense, multimask)
    np.testing.assert_allclose(low.numpy(), ref_low.numpy(), rtol=1e-4, atol=1e-4)
    # full-size masks: one resampling here, two (to 1024, then to the photo) in post_process_masks;
    # the random model's speckled logits make the borders between them differ a little
    assert _agreement(got.masks, ref_masks) > 0.98


def test_scores_equal_transformers_own_forward(fresh, chelsea):
    import torch

    inputs = fresh.processor(images=chelsea, input_points=[[[[220, 150], [20, 280]]]], input_labels=[[[1, 0]]],
                             return_tensors="pt")
    with torch.inference_mode():
        out = fresh.model(**{k: inputs[k] for k in ("pixel_values", "input_points", "input_labels")})
    got = fresh.segment(chelsea, SegmentRequest((Click(220, 150), Click(20, 280, 0))))
    np.testing.assert_allclose(got.scores, out.iou_scores[0, 0].numpy(), rtol=1e-4, atol=1e-6)


def test_falls_back_to_the_models_own_decoder_when_parts_are_missing(tiny_sam_hq, chelsea, caplog):
    own = load_sam_hq(weights.get_spec(NAME, "segment"), tiny_sam_hq, device="cpu")
    part = own.model.mask_decoder.hq_mask_mlp
    del own.model.mask_decoder.hq_mask_mlp              # as if a transformers change renamed a part
    with caplog.at_level(logging.WARNING, logger="core.segment.samhq"):
        s = SamHQSegmenter(NAME, own.model, own.processor)
    assert not s.fast and "hq_mask_mlp" in caplog.text
    own.model.mask_decoder.hq_mask_mlp = part           # (the model's own forward still needs it)
    result = s.segment(chelsea, SegmentRequest((Click(220, 150),)), out_size=(90, 60))
    assert result.masks.shape == (3, 60, 90) and s.encoder_calls == 1
    s.segment(chelsea, SegmentRequest((Click(100, 100),)))
    assert s.encoder_calls == 1


@pytest.mark.parametrize("request_, message", [
    (SegmentRequest(), "nothing to segment"),
    (SegmentRequest((Click(10, 10, 0),)), "only 'not subject' clicks"),
    (SegmentRequest((Click(600, 10),)), r"click \(600, 10\) is outside the 600x400 image"),
])
def test_bad_requests_are_rejected_before_any_work(fresh, coffee, request_, message):
    with pytest.raises(InvalidOptionError, match=message):
        fresh.segment(coffee, request_)
    assert fresh.encoder_calls == 0


def test_offline_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from core.errors import DownloadError

    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(DownloadError) as e:          # HF_HUB_OFFLINE=1 (conftest): never any network
        weights.download("sam-hq-vit-b", "segment")
    msg = str(e.value)
    assert "\n" not in msg and "syscv-community/sam-hq-vit-base" in msg and "380.0 MB" in msg
    assert list(tmp_path.iterdir()) == []
