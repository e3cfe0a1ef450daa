"""The image encoders of the first click through OpenVINO (core/cpu_encoders.py, docs/cpu.md), on the
tiny SAM, SAM 2.1 and SAM-HQ built in code and loaded through the registry (get_segmenter): the
embeddings match PyTorch's (relative error < 1e-4 in fp32, < 3e-2 in the CPU's own precision, bf16
here), a click gives the same masks (IoU >= 0.99), the encoder is converted once and read back after,
a damaged cache is rebuilt, an engine that cannot be saved leaves PyTorch (one warning line), and
BACKDROP_CPU_BACKEND=torch keeps PyTorch. The same for the auto subject's BiRefNet (core.salient,
tiny model): fp32 output relative error < 1e-4; in the CPU's own precision the subject mask IoU >=
0.97 (the tiny model's x300 output layer flips a few border pixels)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install -r requirements.txt)")

from core import cpu_encoders, cpu_engine, tiny, weights  # noqa: E402
from core.segment import Click, SegmentRequest, clear_segmenters, get_segmenter  # noqa: E402
from tiny_sam2 import build_tiny_sam2  # noqa: E402

MODELS = ["tiny", "sam2-tiny", "tiny-sam-hq"]
COMPONENT = {"tiny": "sam-encoder", "sam2-tiny": "sam2-encoder", "tiny-sam-hq": "samhq-encoder"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")     # tests/integration/conftest.py


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A weights folder with the three tiny segmenters (and, once converted, their engines)."""
    root = tmp_path_factory.mktemp("encoder-weights")
    tiny.build_tiny_sam(root / "sam_tiny.pth")
    build_tiny_sam2(root / "sam2-tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKDROP_WEIGHTS_DIR", str(root))
        weights.download("tiny-sam-hq", "segment")
        weights.download("tiny", "subject")            # the auto subject's tiny BiRefNet
    return root


@pytest.fixture
def load(root, isolated_env, monkeypatch):
    """load(name, backend): a freshly loaded segmenter under BACKDROP_CPU_BACKEND=backend."""
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(root))

    def load(name: str, backend: str):
        monkeypatch.setenv("BACKDROP_CPU_BACKEND", backend)
        clear_segmenters()
        return get_segmenter(name)

    yield load
    clear_segmenters()


def _embedding(seg, rgb) -> list:
    """The per-image tensors a click reads: SAM's features, SAM 2.1's three maps, SAM-HQ's two."""
    emb = seg._embedding(rgb)
    if hasattr(emb, "hq_features"):
        return [emb.embeddings, emb.hq_features]
    return list(emb.features) if isinstance(emb.features, list) else [emb.features]


def _rel(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def _on_openvino(seg) -> bool:
    m = seg.model
    return any(hasattr(x, "openvino") for x in (m, getattr(m, "image_encoder", None),
                                               getattr(m, "vision_encoder", None)) if x is not None)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


REQUEST = SegmentRequest((Click(220, 150), Click(20, 280, 0)))


@pytest.mark.parametrize("name", MODELS)
def test_same_embeddings_and_masks_as_torch(load, name, chelsea):
    ref = load(name, "torch")
    assert not _on_openvino(ref)
    ref_emb, ref_masks = _embedding(ref, chelsea), ref.segment(chelsea, REQUEST).masks
    seg = load(name, "openvino")
    assert _on_openvino(seg)
    for a, b in zip(_embedding(seg, chelsea), ref_emb):
        assert a.shape == b.shape and _rel(a, b) < 3e-2, (name, _rel(a, b), cpu_engine.precision())
    masks = seg.segment(chelsea, REQUEST).masks
    assert masks.shape == ref_masks.shape
    for a, b in zip(masks, ref_masks):
        assert _iou(a, b) >= 0.99, (name, _iou(a, b))


@pytest.mark.parametrize("name", ["tiny", "sam2-tiny"])
def test_fp32_embeddings_match_to_rounding(load, name):
    """In fp32 the converted encoder is the same computation: relative error < 1e-4."""
    model = load(name, "torch").model
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        if name == "tiny":
            ref = [model.image_encoder(x)]
            assert cpu_encoders.use_for_sam(model, None, "cpu", prec="f32", force=True)
            out = [model.image_encoder(x)]
        else:
            ref = model.get_image_embeddings(x)
            assert cpu_encoders.use_for_sam2(model, None, "cpu", prec="f32", force=True)
            out = model.get_image_embeddings(x)
    for a, b in zip(out, ref):
        assert _rel(a, b) < 1e-4, _rel(a, b)


@pytest.mark.parametrize("name", ["tiny", "sam2-tiny"])
def test_converted_once_then_read_back(load, name, caplog):
    caplog.set_level(logging.INFO, "backdrop.cpu_engine")
    load(name, "openvino")                  # converts (or finds the earlier test's engine)
    caplog.clear()
    seg = load(name, "openvino")
    assert _on_openvino(seg)
    assert not [r for r in caplog.records if "preparing the CPU engine" in r.getMessage()]
    assert list(cpu_engine.cache_dir().glob(f"{COMPONENT[name]}-*/model.xml"))


@pytest.mark.parametrize("name", ["tiny", "sam2-tiny"])
def test_damaged_cache_is_rebuilt(load, name, chelsea, caplog):
    before = _embedding(load(name, "openvino"), chelsea)
    xmls = list(cpu_engine.cache_dir().glob(f"{COMPONENT[name]}-*/model.xml"))
    assert xmls
    for xml in xmls:
        xml.write_text("<not a model")
    caplog.set_level(logging.INFO, "backdrop.cpu_engine")
    seg = load(name, "openvino")
    damaged = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(damaged) == 1 and "\n" not in damaged[0].getMessage()
    assert _on_openvino(seg)
    for a, b in zip(_embedding(seg, chelsea), before):
        assert torch.equal(a, b)
    caplog.clear()
    load(name, "openvino")
    assert not [r for r in caplog.records if "damaged" in r.getMessage() or "preparing" in r.getMessage()]


@pytest.mark.parametrize("name", MODELS)
def test_an_engine_that_cannot_be_saved_leaves_pytorch_with_one_warning_line(load, root, name, chelsea,
                                                                             tmp_path, monkeypatch, caplog):
    """The weights folder's cpu-engine links to a drive that is not mounted, so the converted encoder
    cannot be saved: the segmenter stays on PyTorch, a click gives PyTorch's masks, and the log has
    one warning line of Backdrop's, without a traceback."""
    ref = load(name, "torch").segment(chelsea, REQUEST).masks
    folder = tmp_path / "weights"
    folder.mkdir()
    for model in root.iterdir():                              # the tiny models, not their engines
        if model.name != "cpu-engine":
            (folder / model.name).symlink_to(model)
    (folder / "cpu-engine").symlink_to(tmp_path / "unmounted-drive" / "cpu-engine")
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(folder))
    caplog.set_level(logging.INFO, "backdrop")
    seg = load(name, "openvino")
    assert not _on_openvino(seg)
    assert np.array_equal(seg.segment(chelsea, REQUEST).masks, ref)
    warned = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("backdrop")]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    line = warned[0].getMessage()
    assert f"the {COMPONENT[name]} stays on PyTorch" in line and "cpu-engine" in line
    assert "\n" not in line and "Traceback" not in line and warned[0].exc_info is None


@pytest.mark.parametrize("name", MODELS)
def test_torch_setting_keeps_pytorch(load, name):
    assert not _on_openvino(load(name, "torch"))
    assert _on_openvino(load(name, "auto"))


def test_birefnet_same_subject_as_torch_and_read_back(load, root, caplog):
    """The auto subject's BiRefNet: the same mask as PyTorch's, the engine read back on a new load."""
    from core import salient
    rng = np.random.default_rng(0)
    photo = (rng.random((120, 181, 3)) * 60 + 180).astype(np.uint8)
    photo[30:90, 60:130] = (180, 40, 30)

    def predict(backend):
        load("tiny", backend)           # sets the backend (and the weights folder)
        salient._load.cache_clear()
        return salient.load("tiny"), salient.predict(photo, "tiny")

    model, ref = predict("torch")
    assert not hasattr(model, "openvino")
    caplog.set_level(logging.INFO, "backdrop.cpu_engine")
    model, prob = predict("openvino")
    assert hasattr(model, "openvino")
    # the CPU's own precision (bf16 here) on a model whose output layer is scaled x300 (core.salient.tiny):
    # a few border pixels flip
    diff = np.abs(prob - ref)
    assert float(diff.mean()) < 1e-2, (float(diff.mean()), float(diff.max()))
    assert _iou(prob > 0.5, ref > 0.5) >= 0.97, _iou(prob > 0.5, ref > 0.5)
    caplog.clear()
    model, again = predict("openvino")              # a new load reads the engine back
    assert hasattr(model, "openvino") and np.array_equal(again, prob)
    assert not [r for r in caplog.records if "preparing the CPU engine" in r.getMessage()]

    # in fp32 the converted model is the same computation
    model, _ = predict("torch")
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(x)
        assert cpu_encoders.use_for_birefnet(model, None, "cpu", 64, prec="f32", force=True)
        assert _rel(model(x), ref) < 1e-4, _rel(model(x), ref)
    salient._load.cache_clear()
