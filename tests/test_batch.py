"""`python -m core batch`: every photo of a folder, resumable, a bad photo reported and skipped."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.history import open_store
from core.masks import grow
from test_cli import assert_one_line_error, cli


def _ellipse(h, w):
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


@pytest.fixture
def folder(tmp_path, chelsea, coffee):
    photos, masks = tmp_path / "shoot", tmp_path / "masks"
    photos.mkdir(), masks.mkdir()
    for name, img in (("cat", chelsea[:200, :300]), ("cup", coffee[:180, :240])):
        Image.fromarray(img).save(photos / f"{name}.png")
        Image.fromarray(_ellipse(*img.shape[:2])).save(masks / f"{name}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (photos / "notes.txt").write_text("not a photo")
    return photos, masks


def test_a_folder_is_done_photo_by_photo_and_a_rerun_skips_what_is_done(folder, tmp_path, chelsea):
    photos, masks = folder
    out = tmp_path / "out"
    first = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00",
                check=False)
    assert first.returncode == 1                                   # one photo failed
    assert "broken.jpg" in first.stderr and "Traceback" not in first.stderr
    assert "2 done, 0 already done, 1 failed" in first.stdout
    assert sorted(p.name for p in out.iterdir()) == ["cat.png", "cup.png"]
    cat = np.asarray(Image.open(out / "cat.png"))
    inside = grow(_ellipse(200, 300), -10) == 255        # the CLI feathers the edge by default
    assert np.array_equal(cat[inside], chelsea[:200, :300][inside])
    assert (cat[0, 0] == (0, 255, 0)).all()
    runs = open_store().list_runs(limit=10)
    assert sorted(r.source_name for r in runs) == ["shoot/cat.png", "shoot/cup.png"]

    (out / "cup.png").unlink()                                     # e.g. killed while writing it
    again = cli("batch", photos, "--out", out, "--masks", masks, "--background", "color:#00ff00",
                check=False)
    assert "1 done, 1 already done, 1 failed" in again.stdout
    assert len(open_store().list_runs(limit=10)) == 3              # only the missing one ran again


def test_relative_clicks_fit_every_photo_size(folder, tmp_path):
    photos, _ = folder
    (photos / "broken.jpg").unlink()
    out = tmp_path / "out"
    proc = cli("batch", photos, "--out", out, "--rel-box", "0.2,0.2,0.8,0.8", "--segmenter", "grabcut",
               "--background", "transparent", "--edge", "matte", "--name", "catalogue")
    assert "2 done" in proc.stdout
    for name in ("cat", "cup"):
        rgba = np.asarray(Image.open(out / f"{name}.png"))
        assert rgba.shape[2] == 4 and rgba[..., 3].max() == 255 and rgba[0, 0, 3] == 0
    runs = open_store().list_runs(limit=10)
    assert {r.source_name for r in runs} == {"catalogue/cat.png", "catalogue/cup.png"}
    assert all(r.spec.mask.edge == "matte:guided" and r.spec.subject.box for r in runs)


@pytest.mark.parametrize("args, fragment", [
    (("--rel-point", "1.5,0.5"), "relative point"),
    (("--rel-box", "0.8,0.2,0.2,0.9"), "relative box"),
    ((), "subject"),
    (("--point", "10,10"), "--rel-point"),
])
def test_bad_batch_arguments_are_one_line(folder, tmp_path, args, fragment):
    photos, _ = folder
    proc = cli("batch", photos, "--out", tmp_path / "out", "--background", "color:#fff", *args, check=False)
    assert proc.returncode == 2
    assert_one_line_error(proc, fragment)
