"""core.engine: the one seam the app, the CLI and batch use. get_engine() picks the engine from the
settings once; LocalEngine embeds, segments, runs and reads the history in this process (tiny SAM,
GrabCut); RemoteEngine is made without touching the network or Ray (its requests are covered by
tests/integration/test_engine_service.py and the client-mode tests)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.engine import (CAN_CANCEL, CAN_IMAGE_BACKGROUND, CAN_LOCAL_MODELS, CAN_SKIP_HISTORY,
                         get_engine)
from core.engine.local import LocalEngine
from core.images import LoadedImage
from core.jobs import JobRequest
from core.segment import SegmentRequest, image_key
from core.spec import RunSpec


@pytest.fixture
def small(chelsea) -> JobRequest:
    """A run on a small photo with its subject mask given (nothing to segment: quick)."""
    rgb = np.ascontiguousarray(chelsea[::4, ::4])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[20:60, 30:80] = 255
    return JobRequest(image=LoadedImage(rgb=rgb, format="PNG"), mask=mask, source_name="cat.png",
                      spec=RunSpec(background="color:#0000ff"))


def test_the_settings_pick_the_engine_once(monkeypatch):
    engine = get_engine()
    assert isinstance(engine, LocalEngine) and get_engine() is engine
    assert all(engine.can(c) for c in (CAN_CANCEL, CAN_IMAGE_BACKGROUND, CAN_LOCAL_MODELS, CAN_SKIP_HISTORY))
    assert engine.where == "" and engine.parallel_runs == 1

    monkeypatch.setenv("BACKDROP_SERVER_URL", "http://alice:hunter2@gpu-box:8000/")
    remote = get_engine()
    from core.engine.remote import RemoteEngine
    assert isinstance(remote, RemoteEngine) and get_engine() is remote
    assert remote.where == "http://gpu-box:8000"          # no password in what messages show
    assert not any(remote.can(c) for c in (CAN_CANCEL, CAN_IMAGE_BACKGROUND, CAN_LOCAL_MODELS,
                                           CAN_SKIP_HISTORY))
    monkeypatch.delenv("BACKDROP_SERVER_URL")
    assert get_engine() is engine


def test_local_embed_and_segment_give_the_segmenters_masks(tiny_sam, chelsea):
    from core.segment import get_segmenter

    engine = LocalEngine()
    handle = engine.embed(chelsea, "tiny")
    assert handle == f"tiny:{image_key(chelsea)}"         # the service's handles look the same
    request = SegmentRequest(clicks=((225.0, 150.0, 1),), multimask=True)
    result = engine.segment(chelsea, request, "tiny", size=(226, 150))
    assert result.masks.shape[1:] == (150, 226) and result.masks.dtype == bool
    assert result.masks[result.best].any()
    direct = get_segmenter("tiny").segment(chelsea, request, out_size=(226, 150))
    assert np.array_equal(result.masks, direct.masks) and result.best == direct.best


def test_local_run_is_recorded_and_its_file_and_row_read_back(small):
    engine = LocalEngine()
    stages = []
    result = engine.run(small, progress=lambda stage, f: stages.append(stage),
                        original=b"ignored in this process", reuse=True)
    assert result.run_id is not None and stages
    (out,) = result.outputs
    assert (out[0, 0] == [0, 0, 255]).all()

    (row,) = engine.runs(limit=5)
    assert row["id"] == result.run_id and row["status"] == "succeeded" and row["source_name"] == "cat.png"
    assert engine.get_run(result.run_id) == row
    from core.history import open_store
    digest = open_store().get_run(result.run_id).outputs[0].hash
    stored = np.asarray(Image.open(io.BytesIO(engine.file(digest))))
    assert np.array_equal(stored[..., :3], out)


def test_a_run_without_history_is_not_recorded(small):
    engine = LocalEngine()
    assert engine.run(small, record=False).run_id is None and engine.runs() == []
