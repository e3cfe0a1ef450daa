"""The two engines agree: the same clicks on the same photo give the same masks in this process
(LocalEngine) and through the service (RemoteEngine against tests/conftest.py `service`, the same
tiny SAM weights), and the same run gives the same pixels, each recorded in its own history."""
from __future__ import annotations

import numpy as np
import pytest

from serve_kit import TOKEN

pytest.importorskip("httpx")


def test_both_engines_give_the_same_mask_and_run(service, tiny_sam, chelsea, monkeypatch):
    from core.engine import get_engine
    from core.engine.local import LocalEngine
    from core.engine.remote import RemoteEngine
    from core.images import LoadedImage
    from core.jobs import JobRequest
    from core.segment import SegmentRequest, loaded_segmenters
    from core.spec import RunSpec

    local = get_engine()
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    remote = get_engine()
    assert isinstance(local, LocalEngine) and isinstance(remote, RemoteEngine)

    session: dict = {}
    assert remote.embed(chelsea, "tiny", session) == local.embed(chelsea, "tiny")
    assert loaded_segmenters() == ["tiny"]          # the remote embedding loaded nothing more here
    for clicks in (((225.0, 150.0, 1),), ((225.0, 150.0, 1), (40.0, 40.0, 0))):
        request = SegmentRequest(clicks=clicks, multimask=True)
        mine = local.segment(chelsea, request, "tiny", size=(226, 150))
        theirs = remote.segment(chelsea, request, "tiny", size=(226, 150), session=session)
        assert theirs.masks.shape == mine.masks.shape and theirs.best == mine.best
        assert np.array_equal(theirs.masks, mine.masks), clicks
        assert np.allclose(theirs.scores, mine.scores, atol=1e-4)

    rgb = np.ascontiguousarray(chelsea[::2, ::2])
    mask = np.zeros(rgb.shape[:2], np.uint8)
    mask[40:120, 60:160] = 255
    job = JobRequest(image=LoadedImage(rgb=rgb, format="PNG"), mask=mask, source_name="same.png",
                     spec=RunSpec(background="color:#00ff00"))
    here, there = local.run(job), remote.run(job)
    assert np.array_equal(here.outputs[0], there.outputs[0])
    assert local.get_run(here.run_id)["source_name"] == remote.get_run(there.run_id)["source_name"] == "same.png"
    assert any(r["id"] == there.run_id for r in remote.runs(limit=20))
