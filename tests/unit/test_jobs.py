"""core.jobs.run_job: one run end to end, always recorded — including failed and cancelled runs."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from core.errors import CancelledError, MissingWeightsError
from core.history import open_store
from core.images import LoadedImage
from core.jobs import JobRequest, run_job
from core.spec import Click, Generation, MaskOptions, RunSpec, Subject


@pytest.fixture
def cat(chelsea) -> LoadedImage:
    return LoadedImage(rgb=chelsea, format="PNG")


def ellipse_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


def test_sd_run_records_every_parameter_and_output(cat, tiny_inpaint):
    steps = []
    spec = RunSpec(mask=MaskOptions(feather=3), background="sd",
                   generation=Generation(prompt="a red barn", negative="blurry", steps=3, seed=11,
                                         variants=2, model="tiny"))
    req = JobRequest(image=cat, spec=spec, mask=ellipse_mask(*cat.rgb.shape[:2]), source_name="cat.png")
    result = run_job(req, progress=lambda stage, f: steps.append((stage, f)))
    assert [o.shape for o in result.outputs] == [cat.rgb.shape] * 2
    assert result.seeds == [11, 12]
    inner = result.mask == 255
    from core.masks import grow
    core_region = grow(result.mask, -3) == 255
    for out in result.outputs:
        assert np.array_equal(out[core_region], cat.rgb[core_region])  # subject untouched
        assert not np.array_equal(out[~inner], cat.rgb[~inner])       # background repainted
    assert any(stage == "diffusion" for stage, _ in steps) and steps[-1] == ("done", 1.0)

    run = open_store().get_run(result.run_id)
    assert run.status == "succeeded"
    assert run.spec == spec and run.source_name == "cat.png"
    assert [o.seed for o in run.outputs] == [11, 12]
    assert {"mask", "diffusion"} <= set(run.timings)


def test_a_run_is_in_a_batch_only_when_its_request_names_one(cat):
    """A "/" in a run's source name (a photo named "shoot-a/IMG_1.jpg") puts it in no batch; only
    JobRequest.batch (what core.batch sends) does."""
    spec, mask = RunSpec(background="color:#ffffff"), ellipse_mask(*cat.rgb.shape[:2])
    one = run_job(JobRequest(image=cat, spec=spec, mask=mask, source_name="shoot-a/IMG_1.jpg"))
    batch = run_job(JobRequest(image=cat, spec=spec, mask=mask, source_name="shoot-b/IMG_2.jpg",
                               batch="shoot-b"))
    store = open_store()
    assert store.get_run(one.run_id).batch is None and store.get_run(batch.run_id).batch == "shoot-b"
    assert store.batches() == [("shoot-b", 1)]


def test_cancelled_run_is_recorded_as_cancelled(cat, tiny_inpaint):
    cancel = threading.Event()

    def progress(stage, fraction):
        if stage == "diffusion" and fraction > 0:
            cancel.set()  # the person pressed Cancel after the first step

    req = JobRequest(image=cat, mask=ellipse_mask(*cat.rgb.shape[:2]),
                     spec=RunSpec(background="sd",
                                  generation=Generation(prompt="snow", steps=6, seed=1, model="tiny")))
    with pytest.raises(CancelledError):
        run_job(req, progress=progress, cancel=cancel)
    runs = list(open_store().list_runs())
    assert [r.status for r in runs] == ["cancelled"]
    assert runs[0].prompt == "snow" and runs[0].outputs == ()


def test_missing_weights_run_is_recorded_as_failed_with_the_message(cat):
    req = JobRequest(image=cat, spec=RunSpec(
        subject=Subject(clicks=[Click(200, 150)], segmenter="sam-vit-b"), background="blur:8"))
    with pytest.raises(MissingWeightsError) as err:
        run_job(req)
    run = list(open_store().list_runs())[0]
    assert run.status == "failed" and run.error == str(err.value)
    assert run.spec.subject.clicks == (Click(200, 150),)


def test_grabcut_clicks_to_colour_background(cat):
    req = JobRequest(image=cat, spec=RunSpec(
        subject=Subject(clicks=[Click(220, 150, 1)], segmenter="grabcut"), background="color:#0000ff"))
    result = run_job(req, record=False)
    assert result.run_id is None and list(open_store().list_runs()) == []
    out, mask = result.outputs[0], result.mask
    assert out.shape == cat.rgb.shape
    assert np.array_equal(out[mask == 255], cat.rgb[mask == 255])
    assert (out[0, 0] == [0, 0, 255]).all()
