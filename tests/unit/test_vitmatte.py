"""core.vitmatte: learned alpha matting with ViTMatte (transformers), offline.

The `tiny` matte model is a random-initialised ViTMatte built in code (core.tiny), saved with
save_pretrained where the registry expects it and loaded back by the same `from_pretrained` code
as hustvl/vitmatte-small-composition-1k.
"""
from __future__ import annotations

import numpy as np
import pytest

from core import vitmatte, weights
from core.errors import InvalidOptionError, MissingWeightsError


@pytest.fixture(scope="module")
def tiny_vitmatte(weights_dir):
    """Folder of the tiny ViTMatte, built through the registry's download path."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(weights_dir))
        return weights.download("tiny", "matte")


def _trimap(h: int, w: int) -> np.ndarray:
    """Background outside, an unknown ring, sure subject in the middle."""
    t = np.zeros((h, w), np.uint8)
    t[h // 6: h - h // 6, w // 6: w - w // 6] = 128
    t[h // 3: h - h // 3, w // 3: w - w // 3] = 255
    return t


def _reference(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """transformers' own pipeline: processor (pads to 32) -> model -> crop."""
    import torch
    loaded = vitmatte.load("tiny")
    inputs = loaded.processor(images=image, trimaps=trimap, return_tensors="pt", input_data_format="channels_last")
    with torch.inference_mode():
        alphas = loaded.model(pixel_values=inputs["pixel_values"]).alphas
    h, w = trimap.shape
    return alphas[0, 0, :h, :w].numpy()


def test_registry_has_the_matte_task():
    assert "matte" in weights.TASKS
    spec = weights.get_spec(vitmatte.DEFAULT_MODEL, "matte")
    assert spec.repo_id == "hustvl/vitmatte-small-composition-1k" and spec.kind == "vitmatte"
    assert spec.size_bytes > 50_000_000
    rows = {r.name: r for r in weights.list_models("matte")}
    assert {"vitmatte-small", "tiny"} <= set(rows) and rows["tiny"].size_text == "built in code"
    with pytest.raises(InvalidOptionError, match="unknown matte model 'nope'; known: vitmatte-small"):
        weights.get_spec("nope", "matte")


def test_tiny_model_is_built_in_code_and_loaded_through_the_registry(tiny_vitmatte, weights_dir):
    from transformers import VitMatteForImageMatting, VitMatteImageProcessor

    assert tiny_vitmatte == weights_dir / "tiny-vitmatte" == weights.resolve("tiny", "matte")
    assert {"config.json", "preprocessor_config.json", "model.safetensors"} <= {
        p.name for p in tiny_vitmatte.iterdir()}
    assert vitmatte.available("tiny")
    loaded = vitmatte.load("tiny")
    assert isinstance(loaded.model, VitMatteForImageMatting) and not loaded.model.training
    assert isinstance(loaded.processor, VitMatteImageProcessor)
    assert vitmatte.load("tiny") is loaded                     # loaded once, shared
    assert "tiny" in vitmatte.loaded_models()


def test_build_is_deterministic_and_leaves_global_rng_alone():
    import torch
    from core import tiny

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a, b = tiny.build_tiny_vitmatte_model(), tiny.build_tiny_vitmatte_model()
    assert torch.equal(torch.rand(3), before)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_alpha_shape_dtype_range_and_it_depends_on_image_and_trimap(tiny_vitmatte, chelsea):
    h, w = chelsea.shape[:2]                                    # 300x451: not multiples of 32
    trimap = _trimap(h, w)
    alpha = vitmatte.predict_alpha(chelsea, trimap, "tiny")
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0 and alpha.std() > 0.01
    np.testing.assert_allclose(alpha, _reference(chelsea, trimap), atol=1e-6)
    swapped = np.choose(trimap // 127, [255, 128, 0]).astype(np.uint8)     # subject <-> background
    assert not np.allclose(vitmatte.predict_alpha(chelsea, swapped, "tiny"), alpha, atol=1e-3)
    assert not np.allclose(vitmatte.predict_alpha(chelsea[::-1].copy(), trimap, "tiny"), alpha, atol=1e-3)


def test_deterministic(tiny_vitmatte, coffee):
    trimap = _trimap(*coffee.shape[:2])
    a = vitmatte.predict_alpha(coffee, trimap, "tiny")
    b = vitmatte.predict_alpha(coffee.copy(), trimap.copy(), "tiny")
    assert np.array_equal(a, b)


@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (31, 17), (33, 65), (64, 96), (97, 150)])
def test_any_size_is_padded_and_cropped_back(tiny_vitmatte, astronaut, h, w):
    image = np.ascontiguousarray(astronaut[:h, :w])
    trimap = np.full((h, w), 128, np.uint8)
    alpha = vitmatte.predict_alpha(image, trimap, "tiny")
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, _reference(image, trimap), atol=1e-6)


def test_all_known_trimap_needs_no_model_run(tiny_vitmatte, chelsea):
    trimap = np.zeros(chelsea.shape[:2], np.uint8)
    trimap[100:200, 100:300] = 255
    loaded = vitmatte.load("tiny")
    calls = loaded.calls
    alpha = vitmatte.predict_alpha(chelsea, trimap, "tiny")
    assert loaded.calls == calls
    assert alpha.dtype == np.float32 and np.array_equal(alpha, trimap / np.float32(255))


def test_large_inputs_are_matted_in_overlapping_tiles(tiny_vitmatte, chelsea, monkeypatch):
    monkeypatch.setattr(vitmatte, "TILE", 128)
    monkeypatch.setattr(vitmatte, "OVERLAP", 32)
    h, w = chelsea.shape[:2]
    trimap = np.zeros((h, w), np.uint8)
    trimap[20:80, 20:200] = 128                                 # unknown only in the top rows
    loaded = vitmatte.load("tiny")
    calls = loaded.calls
    alpha = vitmatte.predict_alpha(chelsea, trimap, "tiny")
    assert alpha.shape == (h, w) and alpha.dtype == np.float32
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    # tiles start at x = 0, 96, 192, 288, 323 and y = 0, 96, 172: the unknown pixels touch the
    # first row's tiles at x 0, 96, 192; the other 12 tiles are not run
    assert loaded.calls - calls == 3
    # where only the first tile reaches, the alpha is that tile's own
    first = _reference(np.ascontiguousarray(chelsea[:128, :128]), np.ascontiguousarray(trimap[:128, :128]))
    np.testing.assert_allclose(alpha[:96, :96], first[:96, :96], atol=1e-6)
    # the untouched bottom rows are the trimap's known values
    assert np.array_equal(alpha[172:], trimap[172:] / np.float32(255))


def test_tile_origins_cover_every_pixel():
    assert vitmatte._starts(100, 128, 32) == [0]
    assert vitmatte._starts(128, 128, 32) == [0]
    assert vitmatte._starts(129, 128, 32) == [0, 1]
    assert vitmatte._starts(451, 128, 32) == [0, 96, 192, 288, 323]


@pytest.mark.parametrize("image, trimap, message", [
    (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), "image must be an RGB uint8 array"),
    (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8), "image must be an RGB uint8 array"),
    (np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8), "image must be an RGB uint8 array"),
    (np.zeros((0, 8, 3), np.uint8), np.zeros((0, 8), np.uint8), "image is empty"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.uint8), "trimap is 9x8 but must match the image 8x8"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), "trimap must be a uint8 array"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 1), np.uint8), "trimap must be a uint8 array"),
    (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), bool), "trimap must be a uint8 array"),
    (np.zeros((8, 8, 3), np.uint8), [[0]], "trimap must be a uint8 array"),
    (np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 7, np.uint8), "found 7"),
])
def test_bad_inputs_are_one_line_errors(image, trimap, message):
    with pytest.raises(InvalidOptionError) as e:
        vitmatte.predict_alpha(image, trimap, "tiny")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_model_name():
    image, trimap = np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 128, np.uint8)
    for bad in ("vitmatte-huge", 3):
        with pytest.raises(InvalidOptionError) as e:
            vitmatte.predict_alpha(image, trimap, bad)
        assert "\n" not in str(e.value)
    with pytest.raises(InvalidOptionError, match="known: vitmatte-small"):
        vitmatte.available("vitmatte-huge")


def test_missing_weights_name_the_folder_size_and_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path / "empty"))
    assert not vitmatte.available() and not vitmatte.available("tiny")
    image, trimap = np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 128, np.uint8)
    for t in (trimap, np.zeros_like(trimap)):       # missing weights fail even with nothing to matte
        with pytest.raises(MissingWeightsError) as e:
            vitmatte.predict_alpha(image, t)
        msg = str(e.value)
        assert "\n" not in msg and "103.0 MB" in msg and str(tmp_path / "empty" / "vitmatte-small") in msg
        assert "python -m core models download vitmatte-small" in msg
    with pytest.raises(MissingWeightsError, match="models download tiny"):
        vitmatte.predict_alpha(image, trimap, "tiny")


def test_corrupt_folder_is_a_missing_weights_error(tmp_path, monkeypatch, tiny_vitmatte):
    import shutil
    folder = tmp_path / "w" / "vitmatte-small"
    shutil.copytree(tiny_vitmatte, folder)
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path / "w"))
    assert vitmatte.available()                     # the files are there...
    with pytest.raises(MissingWeightsError) as e:   # ...but unreadable: delete and download again
        vitmatte.predict_alpha(np.zeros((8, 8, 3), np.uint8), np.full((8, 8), 128, np.uint8))
    msg = str(e.value)
    assert "\n" not in msg and "not a ViTMatte folder" in msg and "models download vitmatte-small" in msg


def test_offline_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from core.errors import DownloadError

    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(DownloadError) as e:          # HF_HUB_OFFLINE=1 (conftest): never any network
        weights.download(vitmatte.DEFAULT_MODEL, "matte")
    msg = str(e.value)
    assert "\n" not in msg and "hustvl/vitmatte-small-composition-1k" in msg and "103.0 MB" in msg
    assert list(tmp_path.iterdir()) == []
