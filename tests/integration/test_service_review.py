"""`batch --auto` in team mode (BACKDROP_SERVER_URL): the service answers how sure each subject it
found is, so OUT/review.json and the list of photos to review are the same as a batch run on this
machine (tests/conftest.py `service`: one Ray cluster, tiny models; the subject is found by the
no-weights studio method on both sides)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.catalogue import make_shot
from cli_kit import cli
from core.images import save_image
from serve_kit import TOKEN

pytest.importorskip("httpx")


def test_batch_auto_review_list_is_the_same_through_the_service(service, monkeypatch, tmp_path):
    shots = tmp_path / "review-shoot"
    shots.mkdir()
    for i in range(2):
        save_image(make_shot(i, (400, 300)).image, shots / f"s{i}.jpg")
    args = ("--auto", "--background", "color:#ffffff", "--review-below", "1.01")
    here = cli("batch", shots, "--out", tmp_path / "here", *args, "--no-history")

    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    there = cli("batch", shots, "--out", tmp_path / "there", *args)
    mine = json.loads((tmp_path / "here" / "review.json").read_text())
    theirs = json.loads((tmp_path / "there" / "review.json").read_text())
    assert sorted(mine["review"]) == ["s0.jpg", "s1.jpg"]            # every photo is below 1.01
    assert theirs == mine                                            # the same confidences
    assert "to review (2" in there.stdout and "to review (2" in here.stdout

    # the API says it too, also when a repeat is answered with the run already recorded
    from core.service.client import ServiceClient
    from core.spec import RunSpec
    spec = RunSpec.from_json({"subject": {"auto": True}, "background": "color:#ffffff"})
    photo = (shots / "s0.jpg").read_bytes()
    with ServiceClient() as client:
        first = client.replace(spec, photo=photo, source_name="review-api.jpg", reuse=True)
        again = client.replace(spec, photo=photo, source_name="review-api.jpg", reuse=True)
        given = client.replace(RunSpec.from_json({"background": "color:#ffffff"}), photo=photo,
                               mask=np.full((300, 400), 255, np.uint8), source_name="review-mask.jpg")
    assert again["reused"] and again["run_id"] == first["run_id"]
    assert first["auto_confidence"] == again["auto_confidence"] == mine["confidence"]["s0.jpg"]
    assert given["auto_confidence"] is None                          # a subject given: no confidence
