"""Catalogue runs end to end (core.jobs.run_job, core.batch.run_batch): framing and shadow from the
run spec, the automatic subject, presets carried by history, the batch's review list."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import presets
from core.batch import BatchSubject, run_batch
from core.errors import BackdropError, InvalidOptionError
from core.history import open_store
from core.images import LoadedImage, save_image
from core.jobs import JobRequest, run_job
from core.spec import Framing, RunSpec

WHITE = (255, 255, 255)


def product(w=300, h=200, box=(100, 50, 200, 150), touching=False):
    """A textured product (exact pixels to check) on a light grey backdrop, and its mask."""
    rng = np.random.default_rng(0)
    rgb = np.full((h, w, 3), 235, np.uint8)
    x1, y1, x2, y2 = box
    if touching:
        y2 = h
    rgb[y1:y2, x1:x2] = rng.integers(10, 120, (y2 - y1, x2 - x1, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[y1:y2, x1:x2] = 255
    return rgb, mask


def run(rgb, mask, background="color:#ffffff", **framing):
    spec = RunSpec(background=background, framing=framing)
    return run_job(JobRequest(LoadedImage(rgb), spec, mask=mask), record=False).outputs[0]


def dark_box(out, below=200):
    ys, xs = np.nonzero((out[..., :3] < below).any(-1))
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def test_defaults_leave_the_output_as_it_was():
    rgb, mask = product()
    spec = RunSpec(background="color:#ffffff")
    assert not spec.framing.active
    from core.compose import compose
    assert np.array_equal(run(rgb, mask), compose(rgb, mask, spec.background))


@pytest.mark.parametrize("frame, margin, align", [("400x400", 10, "center"), ("301x157", 5, "center"),
                                                  ("500x250", 0, "bottom"), ("257x433", 20, "bottom")])
def test_the_frame_places_the_subject_by_margin_and_alignment(frame, margin, align):
    rgb, mask = product()                                 # a 100x100 subject
    out = run(rgb, mask, frame=frame, margin=margin, align=align)
    fw, fh = map(int, frame.split("x"))
    assert out.shape == (fh, fw, 3)
    assert (out[0, 0] == WHITE).all() and (out[-1, -1] == WHITE).all()    # the colour fills the frame
    x1, y1, x2, y2 = dark_box(out)
    side = min(fw, fh) * (1 - 2 * margin / 100)           # a square subject fills the tighter side
    assert abs((x2 - x1) - side) <= 2 and abs((y2 - y1) - side) <= 2
    assert abs((x1 + x2) / 2 - fw / 2) <= 1.5             # centred across
    if align == "center":
        assert abs((y1 + y2) / 2 - fh / 2) <= 1.5
    else:
        assert abs(y2 - (fh - fh * margin / 100)) <= 1.5   # its base one margin above the bottom


def test_a_subject_touching_the_border_is_framed_whole():
    rgb, mask = product(touching=True)                    # cut by the photo's bottom edge
    out = run(rgb, mask, frame="400x400", margin=10)
    x1, y1, x2, y2 = dark_box(out)
    assert y1 > 30 and y2 < 370 and x1 > 30 and x2 < 370  # the margin all round, nothing cut off
    assert (out[-1] == WHITE).all()                       # the padding is the background


def test_unscaled_subject_pixels_are_the_photos_own_and_the_shadow_is_only_under_it():
    rgb, mask = product()
    # 100x100 subject, 100x100 frame less 0 margin: scale 1 -> moved and cropped only
    for kind in ("contact", "drop", "reflection"):
        out = run(rgb, mask, frame="100x150", margin=0, shadow=kind, shadow_strength=1.0)
        assert out.shape == (150, 100, 3)
        sub = out[25:125, :]                              # the subject, centred vertically
        assert np.array_equal(sub, rgb[50:150, 100:200])
        plain = run(rgb, mask, frame="100x150", margin=0)
        changed = np.nonzero((out != plain).any(-1))[0]
        assert changed.size, kind
        if kind == "drop":                                # offset down: mostly below the middle
            assert changed.mean() > 75
        else:                                             # drawn at/below the base only
            assert changed.min() >= 125 - 30, kind
    # no frame: the photo's own geometry, subject exact, shadow under it
    out = run(rgb, mask, shadow="contact", shadow_strength=1.0)
    assert np.array_equal(out[mask == 255], rgb[mask == 255])
    plain = run(rgb, mask)
    ys = np.nonzero((out != plain).any(-1))[0]
    assert ys.size and ys.min() >= 120


def test_framing_measures_the_subject_not_its_shadow():
    rgb, mask = product()
    a = run(rgb, mask, frame="400x400", margin=10)
    b = run(rgb, mask, frame="400x400", margin=10, shadow="drop", shadow_strength=1.0, shadow_softness=1.0)
    assert all(abs(v - w) <= 1 for v, w in zip(dark_box(a), (40, 40, 360, 360)))
    # the subject (inside its resampled rim) is where it was, pixel for pixel
    assert np.array_equal(a[50:350, 50:350], b[50:350, 50:350])


def test_scaled_transparent_export_keeps_the_shadow_semi_transparent():
    rgb, mask = product()
    out = run(rgb, mask, background="transparent", frame="400x400", margin=10, shadow="contact",
              shadow_strength=0.8)
    assert out.shape == (400, 400, 4)
    a = out[..., 3]
    assert (a == 255).sum() > 250 * 250                   # the scaled subject
    faint = (a > 0) & (a < 255)
    assert faint[340:, :].any()                           # the shadow under it, semi-transparent
    assert (out[faint & (np.arange(400)[:, None] > 365), :3] < 60).all()   # and dark


def test_auto_finds_the_subject_and_says_one_line_on_a_blank_or_all_subject_photo():
    from bench.catalogue import make_shot
    shot = make_shot(3, (480, 360))
    spec = RunSpec(subject={"auto": True}, background="color:#ffffff",
                   framing={"frame": "300x300", "shadow": "contact"})
    result = run_job(JobRequest(LoadedImage(shot.image), spec), record=False)
    assert result.outputs[0].shape == (300, 300, 3) and 0 < result.auto_confidence <= 1
    truth = shot.truth.astype(bool)
    iou = ((result.mask > 0) & truth).sum() / ((result.mask > 0) | truth).sum()
    assert iou > 0.9
    blank = np.full((300, 400, 3), 250, np.uint8)
    busy = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for photo in (blank, busy):
        with pytest.raises(BackdropError) as e:
            run_job(JobRequest(LoadedImage(photo), spec.replace(framing={})), record=False)
        assert "\n" not in str(e.value) and len(str(e.value)) < 200


def test_preset_values_with_explicit_overrides_round_trip_through_history():
    values = presets.resolve("amazon", {"margin": 4.0, "shadow": None})
    assert values["frame"] == "2000x2000" and values["margin"] == 4.0 and values["shadow"] == "contact"
    background = values.pop("background")
    rgb, mask = product()
    spec = RunSpec(background=background, framing=values)
    result = run_job(JobRequest(LoadedImage(rgb), spec, mask=mask))
    back = open_store().get_run(result.run_id).spec
    assert back == spec and back.framing.preset == "amazon"
    assert back.flat()["framing.frame"] == "2000x2000" and back.flat()["framing.margin"] == 4.0
    assert result.outputs[0].shape == (2000, 2000, 3)
    # a spec stored before framing existed still loads, unframed
    old = spec.to_json()
    del old["framing"]
    assert not RunSpec.from_json(old).framing.active


def test_amazon_subject_fills_at_least_85_percent():
    frame = presets.get("amazon")
    f = Framing(**{k: v for k, v in frame.items() if k != "background"})
    assert 1 - 2 * f.margin / 100 >= 0.85 and f.frame == "2000x2000" and f.shadow == "contact"


def test_user_presets_from_toml_and_a_bad_file_is_one_line(tmp_path):
    path = tmp_path / "presets.toml"
    path.write_text('[shop]\nbackground = "color:#f0f0f0"\nframe = "800x600"\nshadow = "drop"\n')
    assert presets.get("shop", path)["frame"] == "800x600" and "amazon" in presets.names(path)
    for text in ('[shop\nframe="1x1"', '[shop]\nframe = "big"\n', '[shop]\ncolour = "red"\n'):
        path.write_text(text)
        with pytest.raises(InvalidOptionError) as e:
            presets.get("shop", path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InvalidOptionError, match="unknown preset"):
        presets.get("nope")


def test_bad_framing_values_are_one_line():
    for bad, words in (({"frame": "2000"}, "WIDTHxHEIGHT"), ({"frame": "0x10"}, "frame side"),
                       ({"margin": 46}, "margin"), ({"align": "top"}, "align"),
                       ({"shadow": "soft"}, "shadow"), ({"shadow_strength": 2}, "shadow_strength")):
        with pytest.raises(InvalidOptionError, match=words):
            Framing(**bad)


def test_batch_lists_unsure_photos_for_review_and_keeps_them_across_a_rerun(tmp_path):
    from bench.catalogue import make_shot
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(3):
        save_image(make_shot(i, (400, 300)).image, shots / f"s{i}.png")
    spec = RunSpec(background="color:#ffffff", framing={"frame": "256x256", "shadow": "contact"})
    out = tmp_path / "out"
    report = run_batch(shots, out, spec, BatchSubject(auto=True), record=False, review_below=1.01)
    assert sorted(report.done) == ["s0.png", "s1.png", "s2.png"]
    assert sorted(n for n, _ in report.review) == ["s0.png", "s1.png", "s2.png"]
    confidences = [c for _, c in report.review]
    assert confidences == sorted(confidences)                  # least sure first
    data = json.loads((out / "review.json").read_text())
    assert sorted(data["review"]) == ["s0.png", "s1.png", "s2.png"]
    (out / "s1.png").unlink()                                  # as after a kill mid-batch
    again = run_batch(shots, out, spec, BatchSubject(auto=True), record=False, review_below=1.01)
    assert again.done == ["s1.png"] and sorted(again.skipped) == ["s0.png", "s2.png"]
    assert sorted(n for n, _ in again.review) == ["s0.png", "s1.png", "s2.png"]
    none = run_batch(shots, tmp_path / "o2", spec, BatchSubject(auto=True), record=False, review_below=0.0)
    assert none.review == []
